//! `strata_check()`: everything `strata check` checks, plus what only the server can: its settings
//! (archive_mode, archive_library, shared_preload_libraries, wal_level), that this cluster is the
//! stanza's, a WAL switch archived end to end within a timeout (the segment and its summary in the
//! repository), and the archiver's backlog and last failure. One row per check: ok, warning or error,
//! and a message that says what to fix. Never raises for a failed check (it is a row).

use crate::{gucs, status};
use pgrx::prelude::*;
use std::time::{Duration, Instant};
use strata_core::check::{self, Row, Status};

/// More `.ready` files than this is a backlog worth a warning.
const READY_WARN: usize = 16;

/// Runs every check; `wal_timeout` seconds for the WAL switch to reach the repository (0 skips it).
#[pg_extern(volatile)]
fn strata_check(
    wal_timeout: default!(Option<i32>, 60),
) -> TableIterator<
    'static,
    (
        name!(check, String),
        name!(status, String),
        name!(message, String),
    ),
> {
    let rows = run(wal_timeout.unwrap_or(60).clamp(0, 3600) as u64);
    TableIterator::new(
        rows.into_iter()
            .map(|r| (r.check, r.status.name().to_string(), r.message)),
    )
}

fn setting(name: &str) -> String {
    Spi::get_one::<String>(&format!("SELECT current_setting('{name}', true)"))
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn run(wal_timeout: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let settings = (|| {
        let config = gucs::repo_config()?;
        gucs::retention_policy()?;
        Ok::<_, strata_core::Error>((config, gucs::max_ages()?))
    })();
    let (config, ages) = match settings {
        Ok(s) => {
            rows.push(Row::new(
                "settings",
                Status::Ok,
                "the strata.* settings are valid",
            ));
            s
        }
        Err(e) => {
            rows.push(Row::new("settings", Status::Error, e.to_string()));
            rows.extend(server_settings());
            return rows;
        }
    };
    let archiving_ok = {
        let server = server_settings();
        let ok = server.iter().all(|r| r.status == Status::Ok);
        rows.extend(server);
        ok
    };
    let repo = match strata_core::Repo::open_config(&config) {
        Ok(r) => r,
        Err(e) => {
            rows.push(Row::new("repository", Status::Error, e.to_string()));
            return rows;
        }
    };
    let writable = check::repository_writable(&repo);
    let can_write = writable.status == Status::Ok;
    rows.push(writable);
    // SAFETY: reads the control file's copy in shared memory.
    let sysid = unsafe { pg_sys::GetSystemIdentifier() };
    let identity = check::stanza_identity(&repo, Some(sysid));
    let stanza_ok = identity.status == Status::Ok;
    rows.push(identity);
    rows.push(archiver_state());
    if archiving_ok && can_write && stanza_ok && wal_timeout > 0 {
        rows.push(wal_switch(&repo, wal_timeout));
    }
    match strata_core::catalog::list_backups(&repo) {
        Ok(backups) => rows.extend(check::backup_ages(&backups, &ages, chrono::Utc::now())),
        Err(e) => rows.push(Row::new("backups", Status::Error, e.to_string())),
    }
    rows.extend(check::repository_usage(
        &repo,
        gucs::REPO_USAGE_WARN.get().clamp(1, 100) as u32,
    ));
    rows.push(check::last_verify(&repo, chrono::Utc::now()));
    rows
}

/// The server settings archiving through pg_strata needs.
fn server_settings() -> Vec<Row> {
    let mut rows = Vec::new();
    let mode = setting("archive_mode");
    rows.push(if mode == "on" || mode == "always" {
        Row::new("archive_mode", Status::Ok, format!("archive_mode = {mode}"))
    } else {
        Row::new(
            "archive_mode",
            Status::Error,
            format!(
                "archive_mode = {mode}: set it to on (a restart is needed); nothing is archived"
            ),
        )
    });
    let library = setting("archive_library");
    rows.push(if library == "pg_strata" {
        Row::new(
            "archive_library",
            Status::Ok,
            "archive_library = 'pg_strata'",
        )
    } else {
        Row::new(
            "archive_library",
            Status::Error,
            format!(
                "archive_library = '{library}': set it to 'pg_strata' (and reload) so that the \
                 server archives through pg_strata"
            ),
        )
    });
    let preload = setting("shared_preload_libraries");
    let loaded = preload
        .split(',')
        .any(|l| l.trim().trim_matches('"') == "pg_strata");
    rows.push(if loaded {
        Row::new(
            "shared_preload_libraries",
            Status::Ok,
            "pg_strata is in shared_preload_libraries",
        )
    } else {
        Row::new(
            "shared_preload_libraries",
            Status::Error,
            format!(
                "shared_preload_libraries = '{preload}': add pg_strata (a restart is needed): backups \
                 and archiving statistics need it"
            ),
        )
    });
    let level = setting("wal_level");
    rows.push(if level == "replica" || level == "logical" {
        Row::new("wal_level", Status::Ok, format!("wal_level = {level}"))
    } else {
        Row::new(
            "wal_level",
            Status::Error,
            format!("wal_level = {level}: set it to replica (a restart is needed)"),
        )
    });
    rows
}

/// The archiver's last failure and the `.ready` backlog.
fn archiver_state() -> Row {
    let name = "archiver";
    let ready = std::fs::read_dir(format!(
        "{}/pg_wal/archive_status",
        setting("data_directory")
    ))
    .map(|d| {
        d.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
            .count()
    })
    .unwrap_or(0);
    if !status::available() {
        return Row::new(
            name,
            Status::Error,
            "pg_strata is not in shared_preload_libraries: the archiver's state is unknown",
        );
    }
    let s = status::snapshot();
    if s.last_failed_time > s.last_archived_time {
        return Row::new(
            name,
            Status::Error,
            format!(
                "archiving fails: the last attempt ({}) failed with: {}; {ready} segments wait \
                 (PostgreSQL keeps them until archiving works again)",
                s.last_failed_wal_name().unwrap_or_default(),
                s.last_error_text().unwrap_or_default()
            ),
        );
    }
    if ready > READY_WARN {
        Row::new(
            name,
            Status::Warning,
            format!(
                "{ready} segments wait to be archived: archiving is behind the WAL rate (pg_wal \
                 grows meanwhile)"
            ),
        )
    } else {
        Row::new(
            name,
            Status::Ok,
            format!(
                "{ready} segments waiting; {} archived since the server started",
                s.archived_count
            ),
        )
    }
}

/// Switches to a new WAL segment and waits until the finished one and its block-change summary are in
/// the repository: archiving works end to end.
fn wal_switch(repo: &strata_core::Repo, timeout: u64) -> Row {
    let name = "wal_archived";
    let seg_size = match repo.identity() {
        Ok(id) => id.wal_segment_size,
        Err(e) => return Row::new(name, Status::Error, e.to_string()),
    };
    // A record to switch away from (non-transactional: written now), then the switch.
    let file = Spi::get_one::<String>(
        "SELECT pg_walfile_name(pg_switch_wal()) \
         FROM (SELECT pg_logical_emit_message(false, 'pg_strata', 'check')) AS m",
    );
    let file = match file {
        Ok(Some(f)) => f,
        other => {
            return Row::new(
                name,
                Status::Error,
                format!("cannot switch to a new WAL segment: {other:?}"),
            )
        }
    };
    let Some(pgformat::lsn::WalFileName::Segment { timeline, segno }) =
        pgformat::lsn::WalFileName::parse(&file, seg_size)
    else {
        return Row::new(
            name,
            Status::Error,
            format!("unexpected WAL file name {file}"),
        );
    };
    let (start, end) = (
        pgformat::lsn::Lsn(segno * u64::from(seg_size)),
        pgformat::lsn::Lsn((segno + 1) * u64::from(seg_size)),
    );
    let started = Instant::now();
    let (mut archived, mut summarized) = (false, false);
    while started.elapsed() < Duration::from_secs(timeout) {
        archived = archived || repo.wal_exists(&file, seg_size).unwrap_or(false);
        if archived && !summarized {
            summarized = repo
                .storage()
                .list(&repo.keys().summary_dir(timeline))
                .unwrap_or_default()
                .iter()
                .filter_map(|(k, _)| strata_core::paths::RepoKeys::parse_summary_key(k))
                .any(|(_, s, e)| s <= start && e >= end);
        }
        if archived && summarized {
            return Row::new(
                name,
                Status::Ok,
                format!(
                    "WAL file {file} and its summary reached the repository in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        crate::latch::wait(200);
        check_for_interrupts!();
    }
    let what = if archived {
        "was archived but its block-change summary was not stored"
    } else {
        "was not archived"
    };
    Row::new(
        name,
        Status::Error,
        format!(
            "WAL file {file} {what} within {timeout} s: see SELECT * FROM archive_status() \
             (last_error) and the server log"
        ),
    )
}
