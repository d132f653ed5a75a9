//! Archiving status in shared memory, written by the archiver after each attempt and read by
//! `archive_status()`: what a DBA checks (last archived segment and time, counts and bytes, failures and
//! the last error, summaries written and missing). Counters start at zero when the server starts, like
//! the cumulative statistics after a crash. Needs `shared_preload_libraries = 'pg_strata'`.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory};

const NAME_LEN: usize = 64;
const ERR_LEN: usize = 1024;

#[derive(Copy, Clone)]
pub struct ArchiveStats {
    pub archived_count: i64,
    pub duplicate_count: i64,
    pub stored_ahead_count: i64,
    pub bytes_original: i64,
    pub bytes_stored: i64,
    pub failed_count: i64,
    pub summaries_written: i64,
    pub summaries_missing: i64,
    pub last_archived_time: i64,
    pub last_failed_time: i64,
    last_archived_wal: [u8; NAME_LEN],
    last_failed_wal: [u8; NAME_LEN],
    last_error: [u8; ERR_LEN],
    last_summary_missing: [u8; ERR_LEN],
}

impl Default for ArchiveStats {
    fn default() -> Self {
        ArchiveStats {
            archived_count: 0,
            duplicate_count: 0,
            stored_ahead_count: 0,
            bytes_original: 0,
            bytes_stored: 0,
            failed_count: 0,
            summaries_written: 0,
            summaries_missing: 0,
            last_archived_time: 0,
            last_failed_time: 0,
            last_archived_wal: [0; NAME_LEN],
            last_failed_wal: [0; NAME_LEN],
            last_error: [0; ERR_LEN],
            last_summary_missing: [0; ERR_LEN],
        }
    }
}

// SAFETY: plain old data with no pointers.
unsafe impl PGRXSharedMemory for ArchiveStats {}

static STATS: PgLwLock<ArchiveStats> = unsafe { PgLwLock::new(c"pg_strata_archive_stats") };
static mut INITIALIZED: bool = false;

pub fn init_shared_memory() {
    pg_shmem_init!(STATS);
    // SAFETY: set once in the postmaster while loading shared_preload_libraries; inherited by children.
    unsafe { INITIALIZED = true };
}

pub fn available() -> bool {
    // SAFETY: written only in the postmaster before any child exists.
    unsafe { INITIALIZED }
}

/// A copy of the statistics, taken under the lock, for `strata_check()` and the metrics (zeros without
/// shared memory).
pub fn snapshot() -> ArchiveStats {
    if !available() {
        return ArchiveStats::default();
    }
    *STATS.share()
}

impl ArchiveStats {
    /// The WAL file archived last since the server started.
    pub fn last_archived_wal(&self) -> Option<String> {
        get_text(&self.last_archived_wal)
    }
}

pub fn put_text(buf: &mut [u8], s: &str) {
    buf.fill(0);
    let mut n = s.len().min(buf.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
}

pub fn get_text(buf: &[u8]) -> Option<String> {
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// What one archive attempt did, for the status.
pub enum Attempt<'a> {
    Archived {
        wal: &'a str,
        original: u64,
        stored: u64,
        duplicate: bool,
        /// Stored by a look-ahead worker before PostgreSQL asked for it.
        ahead: bool,
        summary: &'a strata_core::archive::SummaryReport,
    },
    Failed {
        wal: &'a str,
        error: &'a str,
    },
}

pub fn record(attempt: Attempt) {
    if !available() {
        return;
    }
    // SAFETY: called on the archiver's main thread.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut s = STATS.exclusive();
    match attempt {
        Attempt::Archived {
            wal,
            original,
            stored,
            duplicate,
            ahead,
            summary,
        } => {
            s.archived_count += 1;
            if duplicate {
                s.duplicate_count += 1;
            }
            if ahead {
                s.stored_ahead_count += 1;
            }
            s.bytes_original += original as i64;
            s.bytes_stored += stored as i64;
            s.last_archived_time = now;
            put_text(&mut s.last_archived_wal, wal);
            match summary {
                strata_core::archive::SummaryReport::Written { .. } => s.summaries_written += 1,
                strata_core::archive::SummaryReport::Missing(reason) => {
                    s.summaries_missing += 1;
                    put_text(&mut s.last_summary_missing, &format!("{wal}: {reason}"));
                }
                strata_core::archive::SummaryReport::NotApplicable => {}
            }
        }
        Attempt::Failed { wal, error } => {
            s.failed_count += 1;
            s.last_failed_time = now;
            put_text(&mut s.last_failed_wal, wal);
            put_text(&mut s.last_error, error);
        }
    }
}

pub fn ts(v: i64) -> Option<TimestampWithTimeZone> {
    (v != 0)
        .then(|| TimestampWithTimeZone::try_from(v).ok())
        .flatten()
}

/// Archiving status since the server started: one row.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn archive_status() -> TableIterator<
    'static,
    (
        name!(last_archived_wal, Option<String>),
        name!(last_archived_time, Option<TimestampWithTimeZone>),
        name!(archived_count, i64),
        name!(duplicate_count, i64),
        name!(bytes_original, i64),
        name!(bytes_stored, i64),
        name!(failed_count, i64),
        name!(last_failed_wal, Option<String>),
        name!(last_failed_time, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(summaries_written, i64),
        name!(summaries_missing, i64),
        name!(last_summary_missing, Option<String>),
        name!(stored_ahead_count, i64),
    ),
> {
    if !available() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "archive_status() needs pg_strata in shared_preload_libraries",
            "Add pg_strata to shared_preload_libraries and restart the server."
        );
    }
    let s = *STATS.share();
    TableIterator::once((
        get_text(&s.last_archived_wal),
        ts(s.last_archived_time),
        s.archived_count,
        s.duplicate_count,
        s.bytes_original,
        s.bytes_stored,
        s.failed_count,
        get_text(&s.last_failed_wal),
        ts(s.last_failed_time),
        get_text(&s.last_error),
        s.summaries_written,
        s.summaries_missing,
        get_text(&s.last_summary_missing),
        s.stored_ahead_count,
    ))
}

impl ArchiveStats {
    pub fn last_error_text(&self) -> Option<String> {
        get_text(&self.last_error)
    }

    pub fn last_failed_wal_name(&self) -> Option<String> {
        get_text(&self.last_failed_wal)
    }
}
