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
        let repos = crate::repo_gucs::repos()?;
        for r in repos.repos() {
            crate::repo_gucs::retention_policy(r.number)?;
        }
        Ok::<_, strata_core::Error>((repos, gucs::max_ages()?))
    })();
    let (repos, ages) = match settings {
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
    rows.push(archiver_state());
    // With several repositories, each repository's rows are named after it ("repo2 repository").
    let several = repos.repos().len() > 1;
    let named = |number: u8, mut row: Row| {
        if several {
            row.check = format!("repo{number} {}", row.check);
        }
        row
    };
    // SAFETY: reads the control file's copy in shared memory.
    let sysid = unsafe { pg_sys::GetSystemIdentifier() };
    let mut reachable = Vec::new();
    let mut all_writable = true;
    for config in repos.repos() {
        let n = config.number;
        let repo = match strata_core::Repo::open_config(config) {
            Ok(r) => r,
            Err(e) => {
                rows.push(named(
                    n,
                    Row::new("repository", Status::Error, e.to_string()),
                ));
                all_writable = false;
                continue;
            }
        };
        let writable = check::repository_writable(&repo);
        let identity = check::stanza_identity(&repo, Some(sysid));
        all_writable &= writable.status == Status::Ok && identity.status == Status::Ok;
        rows.push(named(n, writable));
        rows.push(named(n, identity));
        match strata_core::catalog::list_backups(&repo) {
            Ok(backups) => rows.extend(
                check::backup_ages(&backups, &ages, chrono::Utc::now())
                    .into_iter()
                    .map(|r| named(n, r)),
            ),
            Err(e) => rows.push(named(n, Row::new("backups", Status::Error, e.to_string()))),
        }
        rows.extend(
            check::repository_usage(&repo, gucs::REPO_USAGE_WARN.get().clamp(1, 100) as u32)
                .map(|r| named(n, r)),
        );
        rows.push(named(n, check::last_verify(&repo, chrono::Utc::now())));
        reachable.push((n, repo));
    }
    // Archiving reports a segment done only when every repository has it: one switch, checked in each.
    if archiving_ok && all_writable && wal_timeout > 0 {
        rows.extend(
            wal_switch(&reachable, wal_timeout)
                .into_iter()
                .map(|(n, r)| named(n, r)),
        );
    }
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
/// every repository: archiving works end to end. One row per repository.
fn wal_switch(repos: &[(u8, strata_core::Repo)], timeout: u64) -> Vec<(u8, Row)> {
    let name = "wal_archived";
    let failed = |why: String| -> Vec<(u8, Row)> {
        repos
            .iter()
            .map(|(n, _)| (*n, Row::new(name, Status::Error, why.clone())))
            .collect()
    };
    let Some((_, first)) = repos.first() else {
        return Vec::new();
    };
    let seg_size = match first.identity() {
        Ok(id) => id.wal_segment_size,
        Err(e) => return failed(e.to_string()),
    };
    // A record to switch away from (non-transactional: written now), then the switch.
    let file = Spi::get_one::<String>(
        "SELECT pg_walfile_name(pg_switch_wal()) \
         FROM (SELECT pg_logical_emit_message(false, 'pg_strata', 'check')) AS m",
    );
    let file = match file {
        Ok(Some(f)) => f,
        other => return failed(format!("cannot switch to a new WAL segment: {other:?}")),
    };
    let Some(pgformat::lsn::WalFileName::Segment { timeline, segno }) =
        pgformat::lsn::WalFileName::parse(&file, seg_size)
    else {
        return failed(format!("unexpected WAL file name {file}"));
    };
    let (start, end) = (
        pgformat::lsn::Lsn(segno * u64::from(seg_size)),
        pgformat::lsn::Lsn((segno + 1) * u64::from(seg_size)),
    );
    let started = Instant::now();
    // Per repository: archived, summarized, and when both were seen.
    let mut seen = vec![(false, false, None::<f64>); repos.len()];
    while started.elapsed() < Duration::from_secs(timeout) {
        for ((_, repo), state) in repos.iter().zip(seen.iter_mut()) {
            if state.2.is_some() {
                continue;
            }
            state.0 = state.0 || repo.wal_exists(&file, seg_size).unwrap_or(false);
            if state.0 && !state.1 {
                state.1 = repo
                    .storage()
                    .list(&repo.keys().summary_dir(timeline))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|(k, _)| strata_core::paths::RepoKeys::parse_summary_key(k))
                    .any(|(_, s, e)| s <= start && e >= end);
            }
            if state.0 && state.1 {
                state.2 = Some(started.elapsed().as_secs_f64());
            }
        }
        if seen.iter().all(|s| s.2.is_some()) {
            break;
        }
        crate::latch::wait(200);
        check_for_interrupts!();
    }
    repos
        .iter()
        .zip(seen)
        .map(|((n, _), (archived, _, done))| {
            let row = match done {
                Some(secs) => Row::new(
                    name,
                    Status::Ok,
                    format!(
                        "WAL file {file} and its summary reached the repository in {secs:.1} s"
                    ),
                ),
                None => {
                    let what = if archived {
                        "was archived but its block-change summary was not stored"
                    } else {
                        "was not archived"
                    };
                    Row::new(
                        name,
                        Status::Error,
                        format!(
                            "WAL file {file} {what} within {timeout} s: see SELECT * FROM \
                             archive_status() (last_error) and the server log"
                        ),
                    )
                }
            };
            (*n, row)
        })
        .collect()
}
