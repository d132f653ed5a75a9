//! pg_strata, the PostgreSQL extension: thin glue between PostgreSQL and `strata_core`.
//!
//! `_PG_init` registers the `strata.*` settings (and, when preloaded, the shared memory for status);
//! `_PG_archive_module_init` makes the library usable as `archive_library`; with
//! `strata.metrics_listen` set, a background worker serves the metrics over HTTP. Everything that does not
//! need a server lives in the plain crates under `crates/`.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod archiver;
mod backup_sql;
mod backup_state;
mod backup_worker;
mod check_sql;
mod cipher_gucs;
mod errors;
mod gucs;
mod latch;
mod metrics_cache;
mod metrics_sql;
mod metrics_worker;
mod permissions;
mod rekey_sql;
mod repo_gucs;
mod retention_sql;
mod status;
mod verify_sql;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    hide_backtraces();
    gucs::register();
    // SAFETY: reading a PostgreSQL global on the main thread.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        status::init_shared_memory();
        backup_state::init_shared_memory();
        metrics_cache::init_shared_memory();
        gucs::register_preloaded();
        metrics_worker::register();
        // Every setting is defined now (`strata_core::config::names` lists them): any other
        // `strata.*` name is a typo, which PostgreSQL then reports (a WARNING at start, a LOG line
        // on each reload, an ERROR for SET) instead of keeping it as a placeholder that nothing
        // reads. Only when preloaded: a library loaded later has not defined
        // `strata.metrics_listen`, and would call a correct line of postgresql.conf invalid.
        // SAFETY: PostgreSQL's GUC code, called on the main thread during `_PG_init`.
        unsafe { pg_sys::MarkGUCPrefixReserved(c"strata".as_ptr()) };
    }
}

/// pgrx puts a Rust backtrace (70 lines of frames with build paths) into the DETAIL of any PostgreSQL
/// error that crosses Rust code — a cancelled `backup_start()` for one — whenever the server's
/// environment has `RUST_BACKTRACE` set. Client messages must not carry them: `RUST_LIB_BACKTRACE=0`
/// turns off `Backtrace::capture` (which pgrx uses) and takes precedence over `RUST_BACKTRACE`, which
/// still gives backtraces of real panics on stderr (the server log).
fn hide_backtraces() {
    // SAFETY of set_var: `_PG_init` runs while the process is single-threaded (postmaster start or
    // library load in a backend, before any of our threads exist).
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn settings_have_documented_defaults() {
        let get = |name: &str| {
            Spi::get_one::<String>(&format!("SELECT current_setting('{name}')")).expect("SPI")
        };
        assert_eq!(get("strata.compress_type").as_deref(), Some("zstd"));
        assert_eq!(get("strata.compress_level").as_deref(), Some("3"));
        assert_eq!(get("strata.stanza").as_deref(), Some("main"));
        assert_eq!(get("strata.process_max").as_deref(), Some("2"));
        assert_eq!(get("strata.repo1").as_deref(), Some(""));
        // No retention policy by default: nothing is ever expired.
        assert_eq!(get("strata.retention_full").as_deref(), Some("0"));
        assert_eq!(get("strata.retention_full_type").as_deref(), Some("count"));
        assert_eq!(get("strata.retention_diff").as_deref(), Some("0"));
        assert_eq!(get("strata.retention_window").as_deref(), Some(""));
        assert_eq!(get("strata.retention_min_full").as_deref(), Some("0"));
    }

    /// `strata_core::config::names` (what the CLI accepts) and the GUCs the server defines are the
    /// same list.
    #[pg_test]
    fn the_defined_settings_are_the_shared_list() {
        let known = strata_core::config::names::all_setting_names();
        for name in &known {
            // Hidden settings (secrets) are not in pg_settings, but a superuser can read them.
            let defined = Spi::get_one::<bool>(&format!(
                "SELECT current_setting('{name}', true) IS NOT NULL"
            ));
            assert_eq!(defined, Ok(Some(true)), "{name} is listed but not defined");
        }
        // Every defined one, hidden ones included (pg_settings leaves those out).
        // SAFETY: PostgreSQL's GUC array, read on the backend's main thread; `name` is a C string.
        let defined: Vec<String> = unsafe {
            let vars = pg_sys::get_guc_variables();
            (0..pg_sys::GetNumConfigOptions() as usize)
                .map(|i| {
                    std::ffi::CStr::from_ptr((**vars.add(i)).name)
                        .to_string_lossy()
                        .into_owned()
                })
                .filter(|name| name.starts_with("strata."))
                .collect()
        };
        for name in &defined {
            assert!(known.contains(name), "{name} is defined but not listed");
        }
        assert_eq!(defined.len(), known.len(), "{defined:?}");
    }

    /// The prefix is reserved: a misspelt setting is refused, not kept as a placeholder.
    #[pg_test(error = "invalid configuration parameter name \"strata.repo1_cipher_pas\"")]
    fn a_misspelt_setting_is_refused() {
        Spi::run("SET strata.repo1_cipher_pas = 'x'").expect("SPI");
    }

    #[pg_test]
    fn archive_status_has_one_row_when_preloaded() {
        let n = Spi::get_one::<i64>("SELECT count(*) FROM archive_status()").expect("SPI");
        assert_eq!(n, Some(1));
        let failed = Spi::get_one::<i64>("SELECT failed_count FROM archive_status()").expect("SPI");
        assert_eq!(failed, Some(0));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_strata'"]
    }
}
