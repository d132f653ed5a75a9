//! The archive module (`archive_library = 'pg_strata'`): PostgreSQL's archiver calls `archive_file` for
//! each WAL file to archive. It returns true only when the file is durable in every configured
//! repository (`strata.repo1` … `strata.repo4`, written in parallel; see `strata_core::archive::multi`). Any failure
//! (storage down, disk full, bad settings, even a panic) is a WARNING and `false`: PostgreSQL keeps the
//! file and retries, nothing is lost. An ERROR here would make the archiver exit (FATAL in PG 15).

use crate::status;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CStr;
use std::path::Path;
use strata_core::archive::{MultiPusher, ServerFacts, SummaryReport};

thread_local! {
    /// The archiver's long-lived pusher: open repositories and summarizers carried across segments.
    static PUSHER: RefCell<Option<MultiPusher>> = const { RefCell::new(None) };
}

/// # Safety
/// Called by PostgreSQL with a valid callbacks struct to fill.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn _PG_archive_module_init(cb: *mut pg_sys::ArchiveModuleCallbacks) {
    // SAFETY: PostgreSQL passes a valid, writable struct.
    unsafe {
        (*cb).check_configured_cb = Some(check_configured);
        (*cb).archive_file_cb = Some(archive_file);
        (*cb).shutdown_cb = Some(shutdown);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_configured() -> bool {
    crate::repo_gucs::any_repo_set()
}

#[pg_guard]
unsafe extern "C-unwind" fn shutdown() {
    PUSHER.with(|p| p.borrow_mut().take());
}

#[pg_guard]
unsafe extern "C-unwind" fn archive_file(
    file: *const std::ffi::c_char,
    path: *const std::ffi::c_char,
) -> bool {
    // SAFETY: PostgreSQL passes two valid C strings.
    let (file, path) = unsafe {
        (
            CStr::from_ptr(file).to_string_lossy().into_owned(),
            CStr::from_ptr(path).to_string_lossy().into_owned(),
        )
    };
    let config = crate::repo_gucs::repos();
    // SAFETY: plain reads of server facts on the main thread.
    let facts = unsafe {
        ServerFacts {
            system_identifier: pg_sys::GetSystemIdentifier(),
            pg_version: pg_sys::PG_VERSION_NUM / 10000,
            wal_segment_size: pg_sys::wal_segment_size as u32,
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        push(&file, &path, config, facts)
    }));
    let result = match outcome {
        Ok(r) => r,
        Err(panic) => {
            // Do not keep state that a panic may have left half-updated.
            PUSHER.with(|p| p.borrow_mut().take());
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(strata_core::Error::Internal(msg).to_string())
        }
    };
    match result {
        Ok(report) => {
            if let SummaryReport::Missing(reason) = &report.summary {
                warning!(
                    "pg_strata: block-change summary of WAL file \"{file}\" could not be computed: {reason}; \
                     incremental backups will read whole relation files for this WAL range"
                );
            }
            debug1!(
                "pg_strata: archived \"{file}\" as {} ({} -> {} bytes)",
                report.key,
                report.original_bytes,
                report.stored_bytes
            );
            status::record(status::Attempt::Archived {
                wal: &file,
                original: report.original_bytes,
                stored: report.stored_bytes,
                duplicate: report.already_archived,
                ahead: report.stored_ahead,
                summary: &report.summary,
            });
            true
        }
        Err(error) => {
            warning!("pg_strata: could not archive WAL file \"{file}\": {error}");
            status::record(status::Attempt::Failed {
                wal: &file,
                error: &error,
            });
            false
        }
    }
}

fn push(
    file: &str,
    path: &str,
    repos: strata_core::Result<strata_core::config::RepoSet>,
    facts: ServerFacts,
) -> Result<strata_core::archive::PushReport, String> {
    let repos = repos.map_err(|e| e.to_string())?;
    PUSHER.with(|cell| {
        let mut slot = cell.borrow_mut();
        // One segment at a time needs no workers; N at once, N workers (the call only checks what
        // they stored and makes the summaries, in order).
        let workers = match crate::gucs::archive_process_max() {
            1 => 0,
            n => n,
        };
        let reuse = matches!(&*slot,
            Some(p) if p.same_target(&repos) && p.look_ahead_workers() == workers);
        if !reuse {
            // The old pusher (and its look-ahead workers) goes first.
            slot.take();
            *slot = Some(MultiPusher::new(&repos, facts).with_look_ahead(&repos, workers));
        }
        let pusher = slot.as_mut().expect("set above");
        let report = pusher
            .push(Path::new(path), file)
            .map_err(|e| e.to_string())?;
        report
            .reports
            .into_iter()
            .next()
            .map(|(_, r)| r)
            .ok_or_else(|| "no repository is configured".to_string())
    })
}
