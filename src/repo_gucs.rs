//! The settings of several repositories: `strata.repo2` … `strata.repo4` (repo1 is in `gucs`), each
//! repository's S3 settings `strata.repoN_s3_*` and, for repo2 … repo4, its own retention policy
//! `strata.repoN_retention_*` (repo1's is the unnumbered `strata.retention_*`).
//!
//! All are reloadable strings checked by `strata_core` (`S3Options::set`, the retention parser), and
//! read back by name (`GetConfigOption`), so the server builds its `RepoSet` with the same reader as the
//! CLI. Secrets (`_s3_key`, `_s3_key_secret`) are `GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL`: a role
//! without superuser (or pg_read_all_settings) cannot `SHOW` them, they are not in `SHOW ALL` nor
//! `pg_settings`, and nobody but a superuser can set them (they are PGC_SIGHUP: config file or
//! ALTER SYSTEM only). A refused secret is reported without its value.
//!
//! As for `strata.repo1`: a bad value at server start (no old value to keep) is kept with a WARNING
//! rather than replaced by the default — a default endpoint (AWS) or no repo2 would silently archive
//! elsewhere or into fewer repositories; `repos()` then refuses until it is fixed.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::Cell;
use std::ffi::{CStr, CString};
use strata_core::config::repos::{MAX_REPOS, RETENTION_SETTINGS};
use strata_core::config::s3::S3_SETTINGS;
use strata_core::config::{RepoConfig, RepoSet};

type StrGuc = GucSetting<Option<CString>>;
const S3_COUNT: usize = 11;
const RETENTION_COUNT: usize = 7;

static URLS: [StrGuc; 3] = [const { StrGuc::new(None) }; 3];
static S3: [[StrGuc; S3_COUNT]; MAX_REPOS as usize] =
    [const { [const { StrGuc::new(None) }; S3_COUNT] }; MAX_REPOS as usize];
static RETENTION: [[StrGuc; RETENTION_COUNT]; 3] =
    [const { [const { StrGuc::new(None) }; RETENTION_COUNT] }; 3];

thread_local! {
    /// The setting being defined (its check hook runs inside the definition): named in the WARNING that
    /// keeps a bad start-up value.
    static DEFINING: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// A setting name built at run time, kept for the server's life (GUC names must be static).
pub(crate) fn leak(s: String) -> &'static CStr {
    Box::leak(
        CString::new(s)
            .expect("no NUL in setting names")
            .into_boxed_c_str(),
    )
}

pub fn register() {
    assert_eq!(S3_SETTINGS.len(), S3_COUNT);
    assert_eq!(RETENTION_SETTINGS.len(), RETENTION_COUNT);
    for n in 2..=MAX_REPOS {
        define(
            format!("strata.repo{n}"),
            c"Another repository URL: file:///absolute/path or s3://bucket/prefix.",
            &URLS[n as usize - 2],
            GucFlags::SUPERUSER_ONLY,
            Some(check_url),
        );
    }
    for n in 1..=MAX_REPOS {
        for (i, name) in S3_SETTINGS.iter().enumerate() {
            let secret = strata_core::config::repos::is_secret(name);
            let flags = if secret {
                GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL
            } else {
                GucFlags::SUPERUSER_ONLY
            };
            define(
                format!("strata.repo{n}_{name}"),
                c"An S3 setting of this repository (see the README).",
                &S3[n as usize - 1][i],
                flags,
                Some(S3_HOOKS[i]),
            );
        }
    }
    for n in 2..=MAX_REPOS {
        for (i, name) in RETENTION_SETTINGS.iter().enumerate() {
            define(
                format!("strata.repo{n}_{name}"),
                c"The retention policy of this repository (as strata.retention_* for repo1).",
                &RETENTION[n as usize - 2][i],
                GucFlags::default(),
                Some(RETENTION_HOOKS[i]),
            );
        }
    }
}

fn define(
    name: String,
    short: &'static CStr,
    setting: &'static StrGuc,
    flags: GucFlags,
    hook: pg_sys::GucStringCheckHook,
) {
    let name = leak(name);
    DEFINING.with(|d| d.set(name.to_str().ok()));
    // SAFETY: the hooks are pg_guard'ed extern functions that only read their arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short,
            c"",
            setting,
            GucContext::Sighup,
            flags,
            hook,
            None,
            None,
        );
    }
    DEFINING.with(|d| d.set(None));
}

/// The value of any setting by name (None: unset, empty or unknown).
pub fn setting(name: &str) -> Option<String> {
    let c = CString::new(name).ok()?;
    // SAFETY: main thread; GetConfigOption returns NULL for an unknown name with missing_ok, and a
    // string owned by guc.c otherwise, copied at once.
    unsafe {
        let p = pg_sys::GetConfigOption(c.as_ptr(), true, false);
        if p.is_null() {
            return None;
        }
        let v = CStr::from_ptr(p).to_string_lossy().into_owned();
        (!v.is_empty()).then_some(v)
    }
}

/// The configured repositories (strata.repo1 … strata.repo4 with their settings).
pub fn repos() -> strata_core::Result<RepoSet> {
    RepoSet::from_settings(&setting)
}

/// Repository `number`, or why it cannot be used.
pub fn repo(number: u8) -> strata_core::Result<RepoConfig> {
    repos()?.get(number).cloned()
}

/// The retention policy of repository `number`.
pub fn retention_policy(number: u8) -> strata_core::Result<strata_core::retention::Policy> {
    strata_core::config::repos::retention_policy(number, &setting)
}

/// Whether any repository is set (the archive module's "configured" check).
pub fn any_repo_set() -> bool {
    (1..=MAX_REPOS).any(|n| setting(&format!("strata.repo{n}")).is_some())
}

fn hook_value<'a>(newval: *mut *mut std::ffi::c_char) -> &'a str {
    // SAFETY: guc.c hands a valid pointer to a (possibly NULL) C string.
    unsafe {
        let p = *newval;
        if p.is_null() {
            ""
        } else {
            CStr::from_ptr(p).to_str().unwrap_or("\u{1}")
        }
    }
}

/// Refuses a value (the detail says why; for a secret the message does not show the value) — or, while
/// the setting is being defined at start, keeps it with a WARNING (see the module comment).
fn refuse(detail: &str, secret: bool) -> bool {
    if let Some(name) = DEFINING.with(|d| d.get()) {
        warning!(
            "pg_strata: invalid value for {name}: {detail}; nothing is archived nor backed up until it is \
             fixed in the configuration and reloaded"
        );
        return true;
    }
    let c = CString::new(detail.replace('\0', " ")).unwrap_or_default();
    // SAFETY: read by guc.c right after the hook returns false; pstrdup copies into the current memory
    // context as guc.c expects.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(c.as_ptr());
        if secret {
            pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
                c"invalid value for a secret setting (the value is not shown)".as_ptr(),
            );
        }
    }
    false
}

/// The reason of a refused setting, without the name and value the message already has.
fn reason(e: strata_core::Error) -> String {
    match e {
        strata_core::Error::BadSetting { reason, .. } => reason,
        e => e.to_string(),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_url(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match hook_value(newval) {
        "" => true,
        v => match strata_core::config::RepoUrl::parse("strata.repoN", v) {
            Ok(_) => true,
            Err(e) => refuse(&reason(e), false),
        },
    }
}

fn check_s3(name: &str, newval: *mut *mut std::ffi::c_char) -> bool {
    let mut o = strata_core::config::S3Options::default();
    match o.set(&format!("strata.repoN_{name}"), hook_value(newval)) {
        Ok(()) => true,
        Err(e) => refuse(&reason(e), strata_core::config::repos::is_secret(name)),
    }
}

fn check_retention(name: &str, newval: *mut *mut std::ffi::c_char) -> bool {
    let value = hook_value(newval).to_string();
    let full = format!("strata.{name}");
    match strata_core::retention::Policy::from_settings(|n| (n == full).then(|| value.clone())) {
        Ok(_) => true,
        Err(e) => refuse(&reason(e), false),
    }
}

macro_rules! hooks {
    ($check:ident, $table:ident, $($f:ident = $i:expr),* $(,)?) => {
        $(
            #[pg_guard]
            unsafe extern "C-unwind" fn $f(
                newval: *mut *mut std::ffi::c_char,
                _extra: *mut *mut std::ffi::c_void,
                _source: pg_sys::GucSource::Type,
            ) -> bool {
                $check($table[$i], newval)
            }
        )*
    };
}

const S3_NAMES: &[&str] = S3_SETTINGS;
const RETENTION_NAMES: &[&str] = RETENTION_SETTINGS;

hooks!(
    check_s3,
    S3_NAMES,
    s3_0 = 0,
    s3_1 = 1,
    s3_2 = 2,
    s3_3 = 3,
    s3_4 = 4,
    s3_5 = 5,
    s3_6 = 6,
    s3_7 = 7,
    s3_8 = 8,
    s3_9 = 9,
    s3_10 = 10
);
hooks!(
    check_retention,
    RETENTION_NAMES,
    r_0 = 0,
    r_1 = 1,
    r_2 = 2,
    r_3 = 3,
    r_4 = 4,
    r_5 = 5,
    r_6 = 6
);

type Hook = unsafe extern "C-unwind" fn(
    *mut *mut std::ffi::c_char,
    *mut *mut std::ffi::c_void,
    pg_sys::GucSource::Type,
) -> bool;

static S3_HOOKS: [Hook; S3_COUNT] = [
    s3_0, s3_1, s3_2, s3_3, s3_4, s3_5, s3_6, s3_7, s3_8, s3_9, s3_10,
];
static RETENTION_HOOKS: [Hook; RETENTION_COUNT] = [r_0, r_1, r_2, r_3, r_4, r_5, r_6];
