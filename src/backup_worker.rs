//! The backup background worker: one dynamic worker per backup, started by `backup_start()`.
//!
//! Its main thread is the only one that talks to PostgreSQL (SPI for the cluster's facts,
//! `pg_backup_start`/`pg_backup_stop`, shared memory for progress and outcome); the copying runs on
//! `strata.process_max` plain threads inside `strata_core::backup`. While they copy, the main thread
//! wakes every 10 ms to see whether they are done, to publish progress and to notice a cancellation: `backup_cancel()`,
//! `pg_cancel_backend` (SIGINT) or `pg_terminate_backend` (SIGTERM) all stop the copy threads, the
//! stored objects are deleted and the worker reports the backup as failed. Without a manifest nothing
//! is listed, so a killed worker (whose garbage the next backup removes) is safe too.

use crate::backup_state::{self, Phase, BACKUP};
use crate::errors::Raised;
use crate::gucs;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strata_core::backup::copy::CopyProgress;
use strata_core::backup::{BackupRun, ClusterFacts, StopFacts};
use strata_core::manifest::{BackupKind, Tablespace};
use strata_core::Error;

/// How often the main thread looks at the copy threads (and publishes their progress).
const COPY_POLL: Duration = Duration::from_millis(10);
/// How often the main thread looks for the backup's last WAL segment in the repository (a `stat` of
/// its `.ready` file; a repository request only once the archiver reported it).
const ARCHIVE_POLL: Duration = Duration::from_millis(10);

/// Entry point named in the worker's registration (`bgw_function_name`).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_strata_backup_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(
        SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM | SignalWakeFlags::SIGINT,
    );
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);

    let (generation, kind, repo) = {
        let mut s = BACKUP.exclusive();
        s.worker_pid = unsafe { pg_sys::MyProcPid };
        (s.generation, s.requested_kind, s.repo)
    };
    let kind = match kind {
        1 => BackupKind::Diff,
        2 => BackupKind::Incr,
        _ => BackupKind::Full,
    };
    let outcome = std::panic::catch_unwind(|| take_backup(generation, kind, repo))
        .unwrap_or_else(|payload| Err(caught_error(payload)));
    let mut s = BACKUP.exclusive();
    if s.generation == generation {
        match &outcome {
            Ok(label) => {
                s.set_phase(Phase::Done);
                s.set_label(label);
            }
            Err(e) => s.set_failure(e),
        }
    }
    drop(s);
    // The metrics' repository figures are out of date now.
    crate::metrics_cache::invalidate();
    if let Err(e) = outcome {
        log!("pg_strata: backup failed ({}): {}", e.sqlstate, e.message);
    }
}

/// Takes the backup; returns its label or the reason it failed.
fn take_backup(generation: u64, requested: BackupKind, repo: u8) -> Result<String, Raised> {
    let config = crate::repo_gucs::repo(repo)?;
    let process_max = gucs::process_max();
    let facts = BackgroundWorker::transaction(cluster_facts)?;
    let begun = Instant::now();
    let run = BackupRun::begin(config, facts, requested, process_max)?;
    for notice in &run.notices {
        log!("pg_strata: {notice}");
    }
    // backup_start() repeats them to its caller.
    set_progress(generation, |s| s.set_notice(&run.notices.join("\n")));
    for (label, why) in &run.cleanup.removed {
        log!("pg_strata: removed unfinished backup {label}: {why}");
    }
    for (label, who) in &run.cleanup.kept {
        log!("pg_strata: kept unfinished backup {label}, {who}: it may still be running");
    }
    set_progress(generation, |s| {
        s.set_label(&run.label);
        s.set_phase(Phase::Starting);
    });
    let result = copy_between_start_and_stop(generation, &run);
    match result {
        Ok((copied, stop)) => {
            let label = run.label.to_string();
            let mut notices = run.notices.clone();
            let manifest = run.complete(copied, stop)?;
            if let Some(reason) = &manifest.method_reason {
                let notice = format!(
                    "backup {label}: {reason}; relation files were copied by page LSN (every page \
                     read, those changed since {} kept), which is safe but reads everything",
                    manifest.prior.as_deref().unwrap_or("the reference")
                );
                log!("pg_strata: {notice}");
                notices.push(notice);
                set_progress(generation, |s| s.set_notice(&notices.join("\n")));
            }
            log!(
                "pg_strata: backup {label} ({}, method {}) completed: {} files, {} bytes, {} bytes read, \
                 {} bytes stored, in {:.1} s, peak memory {:.1} MB{}",
                manifest.kind,
                manifest.method.name(),
                manifest.files.len(),
                manifest.database_size,
                manifest.read_size,
                manifest.stored_size,
                begun.elapsed().as_secs_f64(),
                peak_memory_mb(),
                checksum_summary(manifest.page_checksum_error_count)
            );
            if manifest.page_checksum_error_count > 0 {
                let warning = format!(
                    "backup {label}: {} data pages failed their checksum twice (corrupt on disk): {}",
                    manifest.page_checksum_error_count,
                    manifest
                        .page_checksum_errors
                        .iter()
                        .map(|e| format!("{} blocks {:?}", e.path, e.blocks))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                warning!("pg_strata: {warning}");
                // backup_start() repeats it to its caller.
                set_progress(generation, |s| s.set_message(&warning));
            }
            expire_after_backup(&label, repo);
            Ok(label)
        }
        Err(e) => {
            run.abandon();
            Err(e)
        }
    }
}

/// Runs expiry after a successful backup, while this worker still holds the backup slot (so no other
/// backup of this server runs). A failure is a WARNING: the backup itself succeeded.
fn expire_after_backup(label: &str, number: u8) {
    let run = || -> strata_core::Result<Option<strata_core::retention::ExpiryReport>> {
        let policy = crate::repo_gucs::retention_policy(number)?;
        if !policy.is_set() {
            return Ok(None);
        }
        let repo = strata_core::Repo::open_config(&crate::repo_gucs::repo(number)?)?;
        strata_core::retention::expire_now(&repo, &policy, false).map(Some)
    };
    match run() {
        Ok(Some(report)) => crate::retention_sql::log_expiry(&report, number),
        Ok(None) => {}
        Err(e) => warning!("pg_strata: backup {label} succeeded, but expiry failed: {e}"),
    }
}

/// Peak resident memory of this worker process, in MB.
fn peak_memory_mb() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn checksum_summary(errors: u64) -> String {
    if errors == 0 {
        String::new()
    } else {
        format!(", {errors} page checksum errors")
    }
}

/// `pg_backup_start`, the parallel copy, `pg_backup_stop`.
fn copy_between_start_and_stop(
    generation: u64,
    run: &BackupRun,
) -> Result<(strata_core::backup::copy::Copied, StopFacts), Raised> {
    let label = run.label.clone();
    let (start_lsn, start_file) = BackgroundWorker::transaction(move || {
        Spi::get_two::<String, String>(&format!(
            "SELECT l::text, pg_walfile_name(l) FROM pg_backup_start('{label}', true) AS l"
        ))
    })
    .map_err(spi_error)?;
    let start_lsn = start_lsn.ok_or_else(|| internal("pg_backup_start returned no LSN"))?;
    let start_lsn = start_lsn
        .parse()
        .map_err(|e| internal(&format!("pg_backup_start returned {start_lsn}: {e:?}")))?;
    let start_timeline = timeline_of(&start_file.unwrap_or_default())?;
    set_progress(generation, |s| s.set_phase(Phase::Copying));

    let progress = CopyProgress::default();
    let cancel = AtomicBool::new(false);
    let copied = std::thread::scope(|scope| {
        let copier = scope.spawn(|| run.copy(start_lsn, start_timeline, &progress, &cancel));
        while !copier.is_finished() {
            // The copy threads cannot set this process's latch (only the main thread may call
            // PostgreSQL), so the end of the copy is seen by polling: often, since a small incr
            // copies in a few milliseconds and a 200 ms nap was most of its time.
            let alive = BackgroundWorker::wait_latch(Some(COPY_POLL));
            let interrupted = !alive || BackgroundWorker::sigint_received();
            let requested = backup_state::snapshot().cancel_requested;
            if interrupted || requested {
                cancel.store(true, Ordering::Relaxed);
            }
            set_progress(generation, |s| {
                s.files_total = progress.files_total.load(Ordering::Relaxed) as i64;
                s.files_done = progress.files_done.load(Ordering::Relaxed) as i64;
                s.bytes_total = progress.bytes_total.load(Ordering::Relaxed) as i64;
                s.bytes_done = progress.bytes_done.load(Ordering::Relaxed) as i64;
            });
        }
        copier
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("a copy thread panicked".into())))
    })?;

    set_progress(generation, |s| s.set_phase(Phase::Stopping));
    // pg_backup_stop(true) would wait for archiving in 1-second sleeps; we wait ourselves, polling the
    // repository (pg_backup_stop switches to a new segment either way).
    let (lsn, label_file, map_file) = BackgroundWorker::transaction(|| {
        Spi::get_three::<String, String, String>(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)",
        )
    })
    .map_err(spi_error)?;
    let stop_lsn = lsn.ok_or_else(|| internal("pg_backup_stop returned no LSN"))?;
    let stop = StopFacts {
        stop_lsn: stop_lsn
            .parse()
            .map_err(|e| internal(&format!("pg_backup_stop returned {stop_lsn}: {e:?}")))?,
        backup_label: label_file
            .ok_or_else(|| internal("pg_backup_stop returned no backup_label"))?,
        tablespace_map: map_file,
    };
    wait_for_archiving(run, &stop)?;
    Ok((copied, stop))
}

/// Whether PostgreSQL still has WAL file `name` waiting to be archived (its `.ready` status file; the
/// server's working directory is the data directory). A segment counts as archived once the archiver
/// reported it, not merely once an object of its name is in the repository: a look-ahead worker may
/// have stored it while an earlier segment is refused, and the object there may be another cluster's.
fn waiting_for_archiver(name: &str) -> bool {
    strata_core::archive::ready_file(std::path::Path::new("pg_wal"), name).exists()
}

/// Waits until every WAL segment from the backup's start to its stop is reported archived by the
/// server's archiver and is in the repository.
fn wait_for_archiving(run: &BackupRun, stop: &StopFacts) -> Result<(), Raised> {
    let label = pgformat::backup_label::BackupLabel::parse(&stop.backup_label)
        .map_err(|e| internal(&format!("cannot read the backup_label: {e}")))?;
    let waiting_since = Instant::now();
    let mut warned_at = Instant::now();
    // Listed once; then only the first file still missing is polled (one request per wake-up):
    // segments are archived in order.
    let mut missing = run.missing_wal(stop.stop_lsn, &label.start_wal_file)?;
    loop {
        while let Some(first) = missing.first() {
            if waiting_for_archiver(first) || !run.wal_archived(first)? {
                break;
            }
            missing.remove(0);
        }
        let Some(first) = missing.first() else {
            return Ok(());
        };
        // Read each time: a reload may change it while we wait.
        if BackgroundWorker::sighup_received() {
            // SAFETY: main thread; what PostgreSQL's own processes do on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if let Some(limit) = gucs::backup_archive_timeout() {
            if waiting_since.elapsed() > limit {
                return Err(Error::StateChanged(format!(
                    "WAL segment {first} was not archived within strata.backup_archive_timeout ({} s); \
                     the backup needs it: see archive_status() and the server log for why archiving \
                     fails, fix it, then take the backup again",
                    limit.as_secs()
                ))
                .into());
            }
        }
        if warned_at.elapsed() > Duration::from_secs(60) {
            warning!(
                "pg_strata: backup {} still waits for WAL {first} to be archived ({} s); check archive_status()",
                run.label,
                waiting_since.elapsed().as_secs()
            );
            warned_at = Instant::now();
        }
        let alive = BackgroundWorker::wait_latch(Some(ARCHIVE_POLL));
        if !alive
            || BackgroundWorker::sigint_received()
            || backup_state::snapshot().cancel_requested
        {
            return Err(Raised {
                sqlstate: "57014".into(),
                message: format!("cancelled while waiting for WAL {first} to be archived"),
                hint: None,
            });
        }
    }
}

/// The facts a backup records about the cluster, from SQL.
fn cluster_facts() -> Result<ClusterFacts, Raised> {
    let get = |q: &str| -> Result<String, Raised> {
        Spi::get_one::<String>(q)
            .map_err(spi_error)?
            .ok_or_else(|| internal(&format!("{q} returned NULL")))
    };
    let sysid = get("SELECT system_identifier::text FROM pg_control_system()")?;
    let version = get("SELECT current_setting('server_version_num')")?;
    let seg = get("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")?;
    let num = |what: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| internal(&format!("{what} = {v}: not a number")))
    };
    // The catalog rows a backup records: tablespaces (besides pg_default and pg_global) and databases.
    let (tablespaces, databases) = Spi::connect(|client| {
        let mut tablespaces = Vec::new();
        let rows = client.select(
            "SELECT oid::int8, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
             WHERE oid NOT IN (1663, 1664) ORDER BY oid",
            None,
            &[],
        )?;
        for row in rows {
            tablespaces.push(Tablespace {
                oid: row.get::<i64>(1)?.unwrap_or_default() as u32,
                name: row.get::<String>(2)?.unwrap_or_default(),
                location: row.get::<String>(3)?.unwrap_or_default(),
            });
        }
        let mut databases = Vec::new();
        let rows = client.select(
            "SELECT oid::int8, datname::text FROM pg_database ORDER BY oid",
            None,
            &[],
        )?;
        for row in rows {
            databases.push(strata_core::manifest::Database {
                oid: row.get::<i64>(1)?.unwrap_or_default() as u32,
                name: row.get::<String>(2)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>((tablespaces, databases))
    })
    .map_err(spi_error)?;
    Ok(ClusterFacts {
        system_identifier: sysid
            .parse::<i64>()
            .map_err(|_| internal(&format!("system identifier {sysid}")))?
            as u64,
        pg_version_num: num("server_version_num", &version)? as u32,
        wal_segment_size: num("wal_segment_size", &seg)? as u32,
        data_checksums: get("SELECT current_setting('data_checksums')")? == "on",
        pgdata: get("SELECT current_setting('data_directory')")?.into(),
        tablespaces,
        databases,
        timeline: timeline_of(&get("SELECT pg_walfile_name(pg_current_wal_lsn())")?)?,
        // SAFETY: plain reads of globals on the main thread.
        postmaster_pid: unsafe { pg_sys::PostmasterPid },
        postmaster_start: get("SELECT pg_postmaster_start_time()::text")?,
        worker_pid: unsafe { pg_sys::MyProcPid },
    })
}

/// The timeline of a WAL file name the server gave.
fn timeline_of(wal_file: &str) -> Result<u32, Raised> {
    // SAFETY: a plain read of a server setting on the main thread.
    let seg_size = unsafe { pg_sys::wal_segment_size } as u32;
    match pgformat::lsn::WalFileName::parse(wal_file, seg_size) {
        Some(pgformat::lsn::WalFileName::Segment { timeline, .. }) => Ok(timeline),
        _ => Err(internal(&format!(
            "the server named WAL file '{wal_file}', not a segment"
        ))),
    }
}

/// A failure of pg_strata's own logic or of SQL it runs (never the user's to fix).
fn internal(msg: &str) -> Raised {
    Error::Internal(msg.to_string()).into()
}

fn spi_error(e: impl std::fmt::Display) -> Raised {
    internal(&e.to_string())
}

fn set_progress(generation: u64, f: impl FnOnce(&mut backup_state::BackupShared)) {
    let mut s = BACKUP.exclusive();
    if s.generation == generation {
        f(&mut s);
    }
}

/// The message of a caught PostgreSQL error or Rust panic.
/// A caught PostgreSQL ERROR keeps its SQLSTATE and hint (an ERROR of pg_backup_start, say); a Rust
/// panic is an internal error.
pub fn caught_error(payload: Box<dyn std::any::Any + Send>) -> Raised {
    use pgrx::pg_sys::panic::CaughtError;
    if let Some(e) = payload.downcast_ref::<CaughtError>() {
        return match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => Raised {
                sqlstate: crate::errors::sqlstate_text(r.sql_error_code()),
                message: r.message().to_string(),
                hint: r.hint().map(str::to_string),
            },
            CaughtError::RustPanic { ereport, .. } => internal(ereport.message()),
        };
    }
    if let Some(s) = payload.downcast_ref::<String>() {
        return internal(s);
    }
    if let Some(s) = payload.downcast_ref::<&str>() {
        return internal(s);
    }
    internal("the backup worker panicked")
}
