//! `backup_verify()`: `strata verify` from SQL (so that pg_cron can schedule it). The verification is
//! plain Rust and calls nothing of PostgreSQL, so it runs on threads of the calling backend while the
//! backend waits on its latch; a cancel (or pg_terminate_backend) stops the threads first, then raises
//! as usual. The result is kept in the repository for monitoring, like the CLI's.

use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use strata_core::verify::{self, Options, Progress, Severity};

/// Verifies the stanza (or one backup with its chain): one row per finding (`scope` backup or
/// timeline, its `name`, `severity`, the `object` and the `reason`), one row per backup or timeline
/// without any (`severity` NULL), and a last row with `scope` 'verify': `status` ok, warning or error
/// and the counts. Cancel stops it.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn backup_verify(
    set: default!(Option<&str>, "NULL"),
    process_max: default!(Option<i32>, 2),
    repo: default!(Option<i32>, 1),
) -> TableIterator<
    'static,
    (
        name!(scope, String),
        name!(name, String),
        name!(status, String),
        name!(severity, Option<String>),
        name!(object, Option<String>),
        name!(reason, Option<String>),
    ),
> {
    let Some(process_max) = process_max.filter(|n| (1..=64).contains(n)) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("backup_verify(): process_max {process_max:?} is out of range"),
            "Use 1 to 64 parallel readers."
        );
    };
    let (repo, policy) = (|| {
        let number = u8::try_from(repo.unwrap_or(1)).unwrap_or(0);
        let repo = strata_core::Repo::open_config(&crate::repo_gucs::repo(number)?)?;
        Ok::<_, strata_core::Error>((repo, crate::repo_gucs::retention_policy(number)?))
    })()
    .unwrap_or_else(|e| crate::errors::raise("cannot verify", e));
    let opts = Options {
        set: set.map(str::to_string),
        process_max: process_max as usize,
        policy: Some(policy),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (repo, stop) = (repo.clone(), stop.clone());
        std::thread::spawn(move || verify::run(&repo, &opts, &Progress::default(), &stop))
    };
    while !worker.is_finished() {
        if crate::latch::wait(100) {
            // Stop the readers before the ERROR unwinds this frame.
            stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    let outcome = worker.join();
    if stop.load(Ordering::Relaxed) {
        check_for_interrupts!();
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
            "backup_verify() was cancelled"
        );
    }
    let report = outcome
        .unwrap_or_else(|_| {
            Err(strata_core::Error::Internal(
                "the verification panicked".into(),
            ))
        })
        .unwrap_or_else(|e| crate::errors::raise("cannot verify", e));
    if let Err(e) = verify::record(&repo, &report.last_result()) {
        warning!("pg_strata: the verify result could not be kept in the repository: {e}");
    }
    // The metrics' last-verification figures are out of date now.
    crate::metrics_cache::invalidate();
    let severity = |s: Severity| match s {
        Severity::Error => "error".to_string(),
        Severity::Warning => "warning".to_string(),
    };
    let mut rows = Vec::new();
    for b in &report.backups {
        if b.findings.is_empty() {
            rows.push((
                "backup".into(),
                b.label.clone(),
                b.status.into(),
                None,
                None,
                None,
            ));
        }
        for f in &b.findings {
            rows.push((
                "backup".into(),
                b.label.clone(),
                b.status.into(),
                Some(severity(f.severity)),
                Some(f.object.clone()),
                Some(f.reason.clone()),
            ));
        }
    }
    for t in &report.timelines {
        let status = if t.findings.iter().any(|f| f.severity == Severity::Error) {
            "error"
        } else if t.findings.is_empty() {
            "ok"
        } else {
            "warning"
        };
        if t.findings.is_empty() {
            rows.push((
                "timeline".into(),
                t.timeline.to_string(),
                status.into(),
                None,
                None,
                None,
            ));
        }
        for f in &t.findings {
            rows.push((
                "timeline".into(),
                t.timeline.to_string(),
                status.into(),
                Some(severity(f.severity)),
                Some(f.object.clone()),
                Some(f.reason.clone()),
            ));
        }
    }
    rows.push((
        "verify".into(),
        report.stanza.clone(),
        report.status.into(),
        None,
        None,
        Some(format!(
            "{} errors, {} warnings; {} backups, {:.1} MB read in {:.1} s",
            report.errors,
            report.warnings,
            report.backups.len(),
            report.bytes_read as f64 / 1e6,
            report.seconds
        )),
    ));
    TableIterator::new(rows)
}
