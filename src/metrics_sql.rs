//! The metrics inside the server: `strata_metrics()` (one row per sample: name, labels as jsonb,
//! value) and `strata_metrics_text()` (the Prometheus text, exactly what `GET /metrics` serves).
//! Server figures come from shared memory (archiving and backup counters), the WAL insert position
//! and `pg_wal/archive_status`; repository figures from the cache (`metrics_cache`).

use crate::{backup_state, gucs, metrics_cache, status};
use pgrx::prelude::*;
use strata_core::metrics::{self, RepoReport, ServerFigures, Source};

const PG_EPOCH_UNIX_SECS: f64 = 946_684_800.0;

/// The server's version, as `SHOW server_version` says it.
fn server_version() -> String {
    // SAFETY: main thread; GetConfigOption returns a pointer into the GUC's own storage (or NULL).
    unsafe {
        let p = pg_sys::GetConfigOption(c"server_version".as_ptr(), true, false);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// `.ready` files: WAL the archiver has not archived yet. The process's working directory is the
/// data directory.
fn ready_files() -> Option<u64> {
    let dir = std::fs::read_dir("pg_wal/archive_status").ok()?;
    Some(
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
            .count() as u64,
    )
}

/// What the running server knows; `repo_up_to` is the end of the newest segment in the repository.
pub fn server_figures(repo_up_to: Option<u64>) -> ServerFigures {
    let a = status::snapshot();
    let b = backup_state::snapshot();
    // SAFETY: main thread; plain reads of shared state (XLogCtl under its own spinlock).
    let (in_recovery, insert_lsn, seg_size) = unsafe {
        (
            pg_sys::RecoveryInProgress(),
            pg_sys::GetXLogInsertRecPtr(),
            pg_sys::wal_segment_size as u32,
        )
    };
    let last_wal = a.last_archived_wal();
    ServerFigures {
        pg_version: server_version(),
        archived_segments: a.archived_count.max(0) as u64,
        archive_failures: a.failed_count.max(0) as u64,
        summaries_missing: a.summaries_missing.max(0) as u64,
        last_archive_success: (a.last_archived_time != 0)
            .then(|| a.last_archived_time as f64 / 1e6 + PG_EPOCH_UNIX_SECS),
        archive_lag_bytes: if in_recovery {
            None
        } else {
            metrics::archive_lag(insert_lsn, seg_size, last_wal.as_deref(), repo_up_to)
        },
        ready_files: ready_files(),
        backup_failures: b.failures.map(|n| n.max(0) as u64),
        backup_running: b.phase().running() && backup_state::pid_alive(b.worker_pid),
    }
}

/// Everything, as families.
fn families() -> Vec<metrics::text::Family> {
    let report: RepoReport = metrics_cache::report();
    let server = server_figures(report.figures.as_ref().and_then(|f| f.archived_up_to_lsn));
    let stanza = gucs::stanza();
    let source = Source {
        stanza: &stanza,
        version: env!("CARGO_PKG_VERSION"),
        now: metrics_cache::unix_now(),
    };
    metrics::families(&source, Some(&server), &report)
}

/// The metrics as the endpoint serves them.
pub fn render_text() -> String {
    metrics::text::render(&families())
}

fn require_preload(what: &str) {
    if !status::available() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{what} needs pg_strata in shared_preload_libraries"),
            "Add pg_strata to shared_preload_libraries and restart the server."
        );
    }
}

/// The metrics, one row per sample (what `GET /metrics` serves, as rows).
#[pg_extern(volatile)]
fn strata_metrics() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(labels, pgrx::JsonB),
        name!(value, f64),
    ),
> {
    require_preload("strata_metrics()");
    let mut rows = Vec::new();
    for f in families() {
        for s in f.samples {
            let labels: serde_json::Map<String, serde_json::Value> = s
                .labels
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            rows.push((
                f.name.to_string(),
                pgrx::JsonB(serde_json::Value::Object(labels)),
                s.value,
            ));
        }
    }
    TableIterator::new(rows)
}

/// The metrics in the Prometheus text format (0.0.4), as `GET /metrics` serves them.
#[pg_extern(volatile)]
fn strata_metrics_text() -> String {
    require_preload("strata_metrics_text()");
    render_text()
}
