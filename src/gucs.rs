//! The `strata.*` settings. All are reloadable (PGC_SIGHUP). Values are validated by check hooks that
//! call the same checks as the CLI (`strata_core::config`), so a bad value is refused with a message that
//! names the setting and the fix, and the old value stays in force.
//!
//! Except at start: there is no old value then, and PostgreSQL would fall back to the default — a bad
//! `strata.stanza` would silently archive into `main`, someone else's stanza perhaps. So while the
//! settings are being defined (server start, or the library's first load in a process), a bad
//! `strata.repo1` or `strata.stanza` is kept with a WARNING, and `repo_config` (which validates again on
//! every use) refuses to archive or back up anything until it is fixed and reloaded.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
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
pub static ARCHIVE_PROCESS_MAX: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static BACKUP_ARCHIVE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(600);

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum RetentionFullTypeGuc {
    #[name = c"count"]
    Count,
    #[name = c"time"]
    Time,
}

pub static RETENTION_FULL: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static RETENTION_FULL_TYPE: GucSetting<RetentionFullTypeGuc> =
    GucSetting::<RetentionFullTypeGuc>::new(RetentionFullTypeGuc::Count);
pub static RETENTION_DIFF: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static RETENTION_WINDOW: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static RETENTION_MIN_FULL: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static RETENTION_ARCHIVE: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static BACKUP_MAX_AGE_FULL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static BACKUP_MAX_AGE_DIFF: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static BACKUP_MAX_AGE_INCR: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static REPO_USAGE_WARN: GucSetting<i32> = GucSetting::<i32>::new(80);
pub static RETENTION_ARCHIVE_TYPE: GucSetting<RetentionArchiveTypeGuc> =
    GucSetting::<RetentionArchiveTypeGuc>::new(RetentionArchiveTypeGuc::Full);

/// `strata.retention_archive_type`: which backups `strata.retention_archive` counts.
#[derive(Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum RetentionArchiveTypeGuc {
    #[name = c"full"]
    Full,
    #[name = c"diff"]
    Diff,
    #[name = c"incr"]
    Incr,
}

pub static METRICS_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static METRICS_CACHE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(60);

/// True while `register` defines the settings: the configured values are applied then (see the module
/// comment).
static DEFINING: AtomicBool = AtomicBool::new(false);

pub fn register() {
    DEFINING.store(true, Ordering::Relaxed);
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
    DEFINING.store(false, Ordering::Relaxed);
    crate::cipher_gucs::register();
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
    GucRegistry::define_int_guc(
        c"strata.archive_process_max",
        c"WAL segments the archiver stores at once when it is behind (look-ahead).",
        c"1 stores one segment at a time; N stores the next N waiting segments on N worker threads, \
          so that PostgreSQL finds them stored when it asks.",
        &ARCHIVE_PROCESS_MAX,
        1,
        strata_core::archive::lookahead::MAX_WORKERS as i32,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"strata.backup_archive_timeout",
        c"How long a backup waits for the WAL it needs to be archived before it fails.",
        c"0 waits without limit.",
        &BACKUP_ARCHIVE_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"strata.retention_full",
        c"Full backups to keep (a number of days with retention_full_type = 'time'); 0: no limit.",
        c"Everything built on a kept full is kept with it.",
        &RETENTION_FULL,
        0,
        9_999_999,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"strata.retention_full_type",
        c"How strata.retention_full counts: count or time (days).",
        c"",
        &RETENTION_FULL_TYPE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"strata.retention_diff",
        c"Differential backups to keep (a full counts as one); 0: no limit.",
        c"",
        &RETENTION_DIFF,
        0,
        9_999_999,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: the hook is a pg_guard'ed extern function that only reads its arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"strata.retention_window",
            c"Keep every backup needed to restore to any point of this interval, e.g. '7 days'.",
            c"Empty: no recovery window.",
            &RETENTION_WINDOW,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_retention_window),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"strata.retention_min_full",
        c"Never keep fewer full backups than this, whatever the policy.",
        c"",
        &RETENTION_MIN_FULL,
        0,
        9_999_999,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"strata.retention_archive",
        c"Keep the WAL for point-in-time recovery only after this many newest backups of \
          strata.retention_archive_type; 0: after every kept backup.",
        c"Older kept backups keep the WAL from their start to their stop: they restore to their end only.",
        &RETENTION_ARCHIVE,
        0,
        9_999_999,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"strata.metrics_cache_seconds",
        c"How long repository figures of the metrics are reused before the repository is read again.",
        c"Counters from shared memory are always current; the repository is listed at most once per period.",
        &METRICS_CACHE_SECONDS,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    for (name, setting) in [
        (c"strata.backup_max_age_full", &BACKUP_MAX_AGE_FULL),
        (c"strata.backup_max_age_diff", &BACKUP_MAX_AGE_DIFF),
        (c"strata.backup_max_age_incr", &BACKUP_MAX_AGE_INCR),
    ] {
        // SAFETY: the hook is a pg_guard'ed extern function that only reads its arguments.
        unsafe {
            GucRegistry::define_string_guc_with_hooks(
                name,
                c"strata_check() reports an error when the newest backup of this kind (or a bigger \
                  one) is older than this interval, e.g. '8 days'.",
                c"Empty: no limit.",
                setting,
                GucContext::Sighup,
                GucFlags::default(),
                Some(check_max_age),
                None,
                None,
            );
        }
    }
    GucRegistry::define_int_guc(
        c"strata.repo_usage_warn",
        c"strata_check() warns when a local repository's file system is fuller than this percentage.",
        c"",
        &REPO_USAGE_WARN,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"strata.retention_archive_type",
        c"Which backups strata.retention_archive counts: full, diff (fulls and diffs) or incr (all).",
        c"",
        &RETENTION_ARCHIVE_TYPE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    crate::repo_gucs::register();
}

/// Settings that only the postmaster may define (PGC_POSTMASTER): called while
/// `shared_preload_libraries` is being loaded, never later (that would kill the process).
pub fn register_preloaded() {
    // SAFETY: the hook is a pg_guard'ed extern function that only reads its arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"strata.metrics_listen",
            c"Address (host:port) where a background worker serves GET /metrics; empty: no endpoint.",
            c"For example 127.0.0.1:9187. Binds only there; a restart is needed to change it.",
            &METRICS_LISTEN,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
            Some(check_metrics_listen),
            None,
            None,
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_metrics_listen(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match hook_value(newval).unwrap_or("") {
        "" => true,
        v => match v.parse::<std::net::SocketAddr>() {
            Ok(_) => true,
            Err(_) => refuse(&format!(
                "strata.metrics_listen = '{v}' is not an address and port such as 127.0.0.1:9187 or [::1]:9187"
            )),
        },
    }
}

/// `strata.metrics_listen`, when set.
pub fn metrics_listen() -> Option<std::net::SocketAddr> {
    METRICS_LISTEN
        .get()
        .and_then(|c| c.into_string().ok())
        .and_then(|s| s.parse().ok())
}

/// `strata.metrics_cache_seconds`.
pub fn metrics_cache_seconds() -> f64 {
    f64::from(METRICS_CACHE_SECONDS.get().max(1))
}

/// `strata.stanza` as set (for metric labels, even when the repository is not configured).
pub fn stanza() -> String {
    STANZA
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_default()
}

#[pg_guard]
unsafe extern "C-unwind" fn check_retention_window(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let value = hook_value(newval).unwrap_or("");
    match strata_core::retention::policy::parse_interval("strata.retention_window", value) {
        Ok(_) => true,
        Err(e) => refuse(&e.to_string()),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_max_age(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let value = hook_value(newval).unwrap_or("");
    match strata_core::retention::policy::parse_interval("strata.backup_max_age_*", value) {
        Ok(_) => true,
        Err(e) => refuse(&e.to_string()),
    }
}

/// `strata.backup_max_age_*` of the current settings.
pub fn max_ages() -> strata_core::Result<strata_core::check::MaxAges> {
    let text = |s: &GucSetting<Option<CString>>| {
        s.get()
            .and_then(|c| c.into_string().ok())
            .unwrap_or_default()
    };
    let (full, diff, incr) = (
        text(&BACKUP_MAX_AGE_FULL),
        text(&BACKUP_MAX_AGE_DIFF),
        text(&BACKUP_MAX_AGE_INCR),
    );
    strata_core::check::MaxAges::from_settings(|name| match name {
        "strata.backup_max_age_full" => Some(full.clone()),
        "strata.backup_max_age_diff" => Some(diff.clone()),
        "strata.backup_max_age_incr" => Some(incr.clone()),
        _ => None,
    })
}

/// Refuses a bad value — or, while the settings are being defined (no old value to keep), keeps it with
/// a WARNING so that nothing falls back to a default repository or stanza.
fn refuse_or_keep(name: &str, detail: &str) -> bool {
    if DEFINING.load(Ordering::Relaxed) {
        warning!(
            "pg_strata: {detail}; nothing is archived nor backed up until {name} is fixed in the \
             configuration and reloaded"
        );
        return true;
    }
    refuse(detail)
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
            Err(e) => refuse_or_keep("strata.repo1", &e.to_string()),
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
        Err(e) => refuse_or_keep("strata.stanza", &e.to_string()),
    }
}

/// Repository 1 (`strata.repo1` with its S3 settings), or why it cannot be used; all repositories:
/// `repo_gucs::repos()`.
pub fn repo_config() -> strata_core::Result<strata_core::config::RepoConfig> {
    crate::repo_gucs::repo(1)
}

/// `strata.backup_archive_timeout`; None: no limit.
pub fn backup_archive_timeout() -> Option<std::time::Duration> {
    let secs = BACKUP_ARCHIVE_TIMEOUT.get();
    (secs > 0).then(|| std::time::Duration::from_secs(secs as u64))
}

/// `strata.archive_process_max`: segments stored at once when the archiver is behind.
pub fn archive_process_max() -> usize {
    ARCHIVE_PROCESS_MAX.get().max(1) as usize
}

/// `strata.process_max`: parallel copy threads of a backup.
pub fn process_max() -> usize {
    PROCESS_MAX.get().max(1) as usize
}
