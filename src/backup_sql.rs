//! The SQL face of backups: `backup_start()`, `backup_cancel()`, `backup_progress()` and
//! `backup_list()`, the views over them and the `strata_operator` role (its privileges: `permissions`).
//!
//! `backup_start` claims the single backup slot in shared memory, launches the worker and, with
//! `wait`, sleeps on its latch until the worker reports, so that its result (or ERROR) tells the truth
//! to whoever called it — psql or pg_cron. Cancelling the waiting statement cancels the backup.

use crate::backup_state::{self, Phase, BACKUP};
use crate::status;
use pgrx::bgworkers::{BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use strata_core::manifest::BackupKind;

/// How long a claimed slot may wait for its worker to start before another backup may take it.
const START_GRACE_SECS: i64 = 60;

fn now_pg() -> i64 {
    // SAFETY: main thread.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Takes a backup of `kind` (full, diff, incr) in a background worker and returns its label.
///
/// Not STRICT: a NULL argument is an error, not a silent NULL result with no backup (pg_cron's job
/// history would show success).
#[pg_extern(volatile)]
fn backup_start(
    kind: default!(Option<&str>, "'incr'"),
    wait: default!(Option<bool>, true),
    repo: default!(Option<i32>, 1),
) -> String {
    let (Some(kind), Some(wait), Some(repo)) = (kind, wait, repo) else {
        let which = if kind.is_none() {
            "kind"
        } else if wait.is_none() {
            "wait"
        } else {
            "repo"
        };
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("backup_start(): {which} must not be NULL; no backup was taken"),
            "Use kind 'full', 'diff' or 'incr', wait true or false, and repo 1 to 4."
        );
    };
    let repo = match u8::try_from(repo) {
        Ok(n) if (1..=strata_core::config::MAX_REPOS).contains(&n) => n,
        _ => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("backup_start(): repo {repo} does not exist; no backup was taken"),
                "Use a repository number from 1 to 4 that is configured (strata.repoN)."
            );
        }
    };
    let kind: BackupKind = match kind.parse() {
        Ok(k) => k,
        Err(_) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown backup kind '{kind}'"),
                "Use 'full', 'diff' or 'incr'."
            );
        }
    };
    if !status::available() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "backup_start() needs pg_strata in shared_preload_libraries",
            "Add pg_strata to shared_preload_libraries and restart the server."
        );
    }
    if let Err(e) = crate::repo_gucs::repo(repo) {
        crate::errors::raise("cannot take a backup", e);
    }
    let archive_mode = Spi::get_one::<String>("SELECT current_setting('archive_mode')")
        .ok()
        .flatten()
        .unwrap_or_default();
    if archive_mode == "off" {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "cannot take a backup: archive_mode is off, and a backup is only usable with its WAL archived",
            "Set archive_mode = on and archive_library = 'pg_strata', then restart."
        );
    }
    let generation = claim_slot(kind, repo);
    let worker = launch_worker(generation);
    wait_for_worker(generation, &worker, wait)
}

/// Claims the one backup slot, or raises an ERROR naming the backup that holds it.
fn claim_slot(kind: BackupKind, repo: u8) -> u64 {
    let mut s = BACKUP.exclusive();
    let phase = s.phase();
    let busy = phase.running()
        && (backup_state::pid_alive(s.worker_pid)
            || (s.worker_pid == 0 && now_pg() - s.started_at < START_GRACE_SECS * 1_000_000));
    if busy {
        let label = s.label().unwrap_or_else(|| "(label not chosen yet)".into());
        // The worker writes its pid when it has started: until then there is no pid to show.
        let worker = match s.worker_pid {
            pid if pid > 0 => format!("worker pid {pid}"),
            _ => "its worker is starting".to_string(),
        };
        drop(s);
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("a backup is already running: {label}, {worker}"),
            "Wait for it to finish (see backup_progress()) or cancel it with backup_cancel()."
        );
    }
    s.generation += 1;
    s.set_phase(Phase::Starting);
    s.cancel_requested = false;
    s.requested_kind = match kind {
        BackupKind::Full => 0,
        BackupKind::Diff => 1,
        BackupKind::Incr => 2,
    };
    s.repo = repo;
    s.worker_pid = 0;
    s.started_at = now_pg();
    s.files_total = 0;
    s.files_done = 0;
    s.bytes_total = 0;
    s.bytes_done = 0;
    s.set_label("");
    s.clear_failure();
    s.set_notice("");
    s.generation
}

fn launch_worker(generation: u64) -> DynamicBackgroundWorker {
    // SAFETY: main thread; globals of this backend.
    let (dboid, my_pid) = unsafe { (pg_sys::MyDatabaseId, pg_sys::MyProcPid) };
    let launched = BackgroundWorkerBuilder::new("pg_strata backup")
        .set_type("pg_strata backup")
        .set_library("pg_strata")
        .set_function("pg_strata_backup_worker_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(u32::from(dboid) as usize)))
        .set_notify_pid(my_pid)
        .set_restart_time(None)
        .load_dynamic();
    match launched {
        Ok(w) => w,
        Err(e) => {
            fail(generation, "could not start the backup worker");
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                format!("could not start the backup worker ({e:?})"),
                "Raise max_worker_processes (a restart is needed)."
            );
        }
    }
}

fn fail(generation: u64, msg: &str) {
    let mut s = BACKUP.exclusive();
    if s.generation == generation && s.phase().running() {
        s.set_failure(&crate::errors::Raised {
            sqlstate: "XX000".into(),
            message: msg.into(),
            hint: Some("see the server log".into()),
        });
    }
}

fn wait_for_worker(generation: u64, worker: &DynamicBackgroundWorker, wait: bool) -> String {
    loop {
        if crate::latch::wait(100) {
            let mut s = BACKUP.exclusive();
            if s.generation == generation {
                s.cancel_requested = true;
            }
        }
        check_for_interrupts!();
        let s = backup_state::snapshot();
        if s.generation != generation {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                "the backup slot was taken over by another backup"
            );
        }
        match s.phase() {
            Phase::Done => {
                for line in s.notice().unwrap_or_default().lines() {
                    notice!("{line}");
                }
                if let Some(w) = s.message() {
                    warning!("{w}");
                }
                return s.label().unwrap_or_default();
            }
            Phase::Failed => match s.label() {
                Some(l) => crate::errors::raise(&format!("backup {l} failed"), s.failure()),
                None => crate::errors::raise("backup failed", s.failure()),
            },
            _ if !wait => {
                if let Some(label) = s.label() {
                    return label;
                }
            }
            _ => {}
        }
        if let Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied) =
            worker.pid()
        {
            // Re-read: the worker may have reported just before it exited.
            let s = backup_state::snapshot();
            if s.generation == generation && s.phase().running() {
                fail(
                    generation,
                    "the backup worker exited without finishing (see the server log)",
                );
            }
        }
    }
}

/// Asks the running backup to stop. Returns false when no backup is running.
#[pg_extern(volatile)]
fn backup_cancel() -> bool {
    let mut s = BACKUP.exclusive();
    if !s.phase().running() {
        return false;
    }
    s.cancel_requested = true;
    let pid = s.worker_pid;
    drop(s);
    if pid > 0 {
        // SAFETY: wakes the worker's latch wait at once; it checks the flag.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    true
}

/// The running (or last) backup's progress: one row, none before the first backup since start-up.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn backup_progress() -> TableIterator<
    'static,
    (
        name!(label, Option<String>),
        name!(phase, String),
        name!(pid, i32),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(files_done, i64),
        name!(files_total, i64),
        name!(bytes_done, i64),
        name!(bytes_total, i64),
        name!(percent_done, f64),
        name!(error, Option<String>),
    ),
> {
    if !status::available() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "backup_progress() needs pg_strata in shared_preload_libraries",
            "Add pg_strata to shared_preload_libraries and restart the server."
        );
    }
    let s = backup_state::snapshot();
    if s.generation == 0 {
        return TableIterator::new(vec![]);
    }
    let percent = if s.bytes_total > 0 {
        (s.bytes_done as f64 * 100.0 / s.bytes_total as f64 * 10.0).round() / 10.0
    } else {
        0.0
    };
    TableIterator::once((
        s.label(),
        s.phase().name().to_string(),
        s.worker_pid,
        status::ts(s.started_at),
        s.files_done,
        s.files_total,
        s.bytes_done,
        s.bytes_total,
        percent,
        (s.phase() == Phase::Failed).then(|| s.message()).flatten(),
    ))
}

/// One row of `backup_list()`.
type ListRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<i64>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<bool>,
    i32,
);

/// The backups of every configured repository (strata.repo1 … strata.repo4, strata.stanza), oldest
/// first, with the repository's number in `repo`. A backup whose manifest cannot be read is listed too,
/// with only its label, the kind its label says and `error` (why); the others are listed as usual
/// (`error` NULL). A repository that cannot be listed is a WARNING when others can (an ERROR when none
/// can).
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn backup_list() -> TableIterator<
    'static,
    (
        name!(label, String),
        name!(kind, Option<String>),
        name!(requested_kind, Option<String>),
        name!(prior, Option<String>),
        name!(start_time, Option<TimestampWithTimeZone>),
        name!(stop_time, Option<TimestampWithTimeZone>),
        name!(start_lsn, Option<String>),
        name!(stop_lsn, Option<String>),
        name!(timeline, Option<i64>),
        name!(database_size, Option<i64>),
        name!(stored_size, Option<i64>),
        name!(file_count, Option<i64>),
        name!(page_checksum_errors, Option<i64>),
        name!(method, Option<String>),
        name!(method_reason, Option<String>),
        name!(references, Option<Vec<String>>),
        name!(read_size, Option<i64>),
        name!(error, Option<String>),
        name!(pinned, Option<bool>),
        name!(note, Option<String>),
        name!(retention, Option<String>),
        name!(pitr, Option<bool>),
        name!(repo, i32),
    ),
> {
    let repos = crate::repo_gucs::repos()
        .unwrap_or_else(|e| crate::errors::raise("cannot list backups", e));
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for config in repos.repos() {
        match list_repo(config) {
            Ok(r) => rows.extend(r),
            Err(e) => failed.push(e.in_repo(config.number)),
        }
    }
    if rows.is_empty() && failed.len() == repos.repos().len() {
        let e = failed.remove(0);
        // One repository: its error as it is.
        let e = if repos.repos().len() == 1 {
            match e {
                strata_core::Error::InRepo { error, .. } => *error,
                e => e,
            }
        } else {
            e
        };
        crate::errors::raise("cannot list backups", e);
    }
    for e in failed {
        warning!("pg_strata: cannot list the backups of {e}");
    }
    // Labels sort by time.
    rows.sort_by(|a, b| (&a.0, a.22).cmp(&(&b.0, b.22)));
    TableIterator::new(rows)
}

fn list_repo(config: &strata_core::config::RepoConfig) -> strata_core::Result<Vec<ListRow>> {
    let number = config.number;
    let repo = strata_core::Repo::open_config(config)?;
    let listing = strata_core::catalog::list_backups_tolerant(&repo)?;
    let labels = listing.sound.iter().map(|m| &m.label);
    let annotations = strata_core::retention::pin::annotations(&repo, labels);
    // A stanza not created yet (nothing archived) has no backups: an empty list, not an error.
    let (segments, seg) = match repo.identity() {
        Ok(id) => {
            let seg = id.wal_segment_size;
            (strata_core::catalog::archived_segments(&repo, seg)?, seg)
        }
        Err(strata_core::Error::StanzaMissing { .. })
            if listing.sound.is_empty() && listing.damaged.is_empty() =>
        {
            (Default::default(), pgformat::lsn::DEFAULT_WAL_SEGMENT_SIZE)
        }
        Err(e) => return Err(e),
    };
    // What the current policy keeps, and why (as `strata info` says it).
    let retention_of = {
        let decision = crate::repo_gucs::retention_policy(number).map(|policy| {
            let pins = strata_core::retention::pin::pinned(&annotations);
            strata_core::retention::decide_now(&listing.sound, &policy, &pins)
        });
        move |label: &strata_core::manifest::Label| {
            use strata_core::retention::Keep;
            match &decision {
                Err(e) => format!("unknown: {e}"),
                Ok(d) => match d.keep.get(label) {
                    Some(Keep::Pinned) => "kept: pinned".to_string(),
                    Some(Keep::Leased) => "kept: a restore holds a lease on it".to_string(),
                    Some(Keep::Policy(why)) => format!("kept: {why}"),
                    Some(Keep::Base(by)) => format!("kept: {by} is built on it"),
                    None => "expires at the next expiry".to_string(),
                },
            }
        }
    };
    // Whether the archive continues without a hole after the backup's end.
    let pitr_of = |m: &strata_core::manifest::ManifestHead| {
        let seg = u64::from(seg);
        segments.get(&m.timeline).is_none_or(|s| {
            strata_core::catalog::first_hole(s, m.stop_lsn.0 / seg + 1, None).is_none()
        })
    };
    let mut rows: Vec<ListRow> = listing
        .sound
        .into_iter()
        .map(|m| {
            let errors = m.page_checksum_error_count as i64;
            let annotation = annotations.get(&m.label);
            let (retention, pitr) = (Some(retention_of(&m.label)), Some(pitr_of(&m)));
            let (pinned, note) = (
                Some(annotation.is_some_and(|a| a.keep)),
                annotation.and_then(|a| a.note.clone()),
            );
            (
                m.label.to_string(),
                Some(m.kind.name().to_string()),
                Some(m.requested_kind.name().to_string()),
                m.prior.map(String::from),
                time_to_pg(m.start_time),
                time_to_pg(m.stop_time),
                Some(m.start_lsn.to_string()),
                Some(m.stop_lsn.to_string()),
                Some(m.timeline as i64),
                Some(m.database_size as i64),
                Some(m.stored_size as i64),
                Some(m.file_count as i64),
                Some(errors),
                Some(m.method.name().to_string()),
                m.method_reason,
                Some(m.references.into_iter().map(String::from).collect()),
                Some(m.read_size as i64),
                None,
                pinned,
                note,
                retention,
                pitr,
                i32::from(number),
            )
        })
        .collect();
    for (label, why) in listing.damaged {
        let kind = label
            .parse::<strata_core::manifest::Label>()
            .ok()
            .map(|l| l.kind().name().to_string());
        rows.push((
            label,
            kind,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some(format!("damaged: {why}")),
            None,
            None,
            None,
            None,
            i32::from(number),
        ));
    }
    Ok(rows)
}

/// RFC 3339 text to a PostgreSQL timestamptz (microseconds since 2000-01-01 UTC).
pub(crate) fn time_to_pg(t: chrono::DateTime<chrono::Utc>) -> Option<TimestampWithTimeZone> {
    const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
    let micros =
        (t.timestamp() - PG_EPOCH_UNIX_SECS) * 1_000_000 + i64::from(t.timestamp_subsec_micros());
    TimestampWithTimeZone::try_from(micros).ok()
}

extension_sql!(
    r#"
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'strata_operator') THEN
        CREATE ROLE strata_operator NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE strata_operator IS 'pg_strata: may take, cancel and list backups and see archiving status';
CREATE VIEW strata_backups AS
    SELECT label, kind, requested_kind, prior, start_time, stop_time,
           start_lsn::pg_lsn AS start_lsn, stop_lsn::pg_lsn AS stop_lsn, timeline,
           database_size, stored_size, file_count, page_checksum_errors,
           method, method_reason, "references", read_size, error, pinned, note,
           retention, pitr, repo
    FROM backup_list();
CREATE VIEW strata_backup_progress AS SELECT * FROM backup_progress();
"#,
    name = "backup_role_and_views",
    requires = [backup_start, backup_cancel, backup_progress, backup_list],
);
