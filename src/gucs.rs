//! The `strata.*` settings. All are reloadable (PGC_SIGHUP). Values are validated by check hooks that
//! call the same checks as the CLI (`strata_core::config`), so a bad value is refused with a message that
//! names the setting and the fix, and the old value stays in force.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::{CStr, CString};
use strata_core::compress::CompressType;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum CompressTypeGuc {
    #[name = c"zstd"]
    Zstd,
    #[name = c"lz4"]
    Lz4,
    #[name = c"none"]
    None,
}

impl From<CompressTypeGuc> for CompressType {
    fn from(v: CompressTypeGuc) -> CompressType {
        match v {
            CompressTypeGuc::Zstd => CompressType::Zstd,
            CompressTypeGuc::Lz4 => CompressType::Lz4,
            CompressTypeGuc::None => CompressType::None,
        }
    }
}

pub static REPO1: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static STANZA: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"main"));
pub static COMPRESS_TYPE: GucSetting<CompressTypeGuc> =
    GucSetting::<CompressTypeGuc>::new(CompressTypeGuc::Zstd);
pub static COMPRESS_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static PROCESS_MAX: GucSetting<i32> = GucSetting::<i32>::new(2);

pub fn register() {
    // SAFETY: the hooks are pg_guard'ed extern functions that only read their arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"strata.repo1",
            c"Repository URL: file:///absolute/path.",
            c"Where WAL and backups are stored. Archiving is not configured until this is set.",
            &REPO1,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
            Some(check_repo1),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"strata.stanza",
            c"Name of this cluster inside the repository.",
            c"One repository can hold several clusters, each under its own stanza.",
            &STANZA,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_stanza),
            None,
            None,
        );
    }
    GucRegistry::define_enum_guc(
        c"strata.compress_type",
        c"Compression of stored WAL and backup files: zstd, lz4 or none.",
        c"",
        &COMPRESS_TYPE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    let levels = strata_core::compress::ZSTD_LEVELS;
    GucRegistry::define_int_guc(
        c"strata.compress_level",
        c"zstd compression level (ignored by lz4 and none).",
        c"",
        &COMPRESS_LEVEL,
        *levels.start(),
        *levels.end(),
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"strata.process_max",
        c"Parallel copy/compress threads of a backup.",
        c"",
        &PROCESS_MAX,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// Sets the detail PostgreSQL prints when a check hook refuses a value.
fn refuse(detail: &str) -> bool {
    let c = CString::new(detail.replace('\0', " ")).unwrap_or_default();
    // SAFETY: GUC_check_errdetail_string is read by guc.c right after the hook returns false; pstrdup
    // copies into the current memory context as guc.c expects.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(c.as_ptr());
    }
    false
}

fn hook_value<'a>(newval: *mut *mut std::ffi::c_char) -> Option<&'a str> {
    // SAFETY: guc.c hands a valid pointer to a (possibly NULL) C string.
    unsafe {
        let p = *newval;
        if p.is_null() {
            None
        } else {
            CStr::from_ptr(p).to_str().ok()
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_repo1(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match hook_value(newval) {
        None | Some("") => true, // unset: archiving reports "not configured"
        Some(v) => match strata_core::config::RepoUrl::parse("strata.repo1", v) {
            Ok(_) => true,
            Err(e) => refuse(&e.to_string()),
        },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_stanza(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match strata_core::config::check_stanza(hook_value(newval).unwrap_or("")) {
        Ok(()) => true,
        Err(e) => refuse(&e.to_string()),
    }
}

/// The current settings as a repository configuration, or why archiving is not configured.
pub fn repo_config() -> Result<strata_core::config::RepoConfig, String> {
    let repo = REPO1
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "strata.repo1 is not set".to_string())?;
    let stanza = STANZA
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_default();
    strata_core::config::RepoConfig::new(
        &repo,
        &stanza,
        COMPRESS_TYPE.get().into(),
        COMPRESS_LEVEL.get(),
    )
    .map_err(|e| e.to_string())
}

/// `strata.process_max`: parallel copy threads of a backup.
pub fn process_max() -> usize {
    PROCESS_MAX.get().max(1) as usize
}
