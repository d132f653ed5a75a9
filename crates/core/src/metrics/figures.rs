//! The numbers behind the metrics, in two groups:
//!
//! - `RepoFigures`: what the repository says (backups per kind and the newest of each, sizes, the
//!   recoverability point per timeline, the newest archived segment, the last verification). Reading
//!   them lists the stanza (backup heads, archive, summaries), so callers cache them (`RepoReport` is
//!   the cached form: serializable, with when it was read and why it could not be);
//! - `ServerFigures`: what only the running server knows (counters since it started, the archiver's
//!   backlog, the WAL insert position), filled by the extension from shared memory.

use crate::manifest::BackupKind;
use crate::repo::Repo;
use crate::{catalog, paths::RepoKeys, verify, Result};
use pgformat::lsn::WalFileName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kinds of backup, in the order metrics list them.
pub const KINDS: [BackupKind; 3] = [BackupKind::Full, BackupKind::Diff, BackupKind::Incr];

/// At most this many timelines are reported (the newest); older ones rarely matter and the cached form
/// must stay small.
pub const MAX_TIMELINES: usize = 32;

/// The newest backup of a kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastBackup {
    pub label: String,
    /// When it stopped (unix seconds).
    pub stop_time: f64,
    pub duration_seconds: f64,
    pub stored_bytes: u64,
    pub read_bytes: u64,
    pub database_bytes: u64,
}

/// Backups of one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindFigures {
    pub kind: BackupKind,
    pub count: u64,
    pub last: Option<LastBackup>,
}

/// The stanza's last verification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyFigures {
    pub finished: f64,
    pub seconds: f64,
    pub errors: u64,
    pub warnings: u64,
}

/// What the repository says about a stanza.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoFigures {
    /// One entry per kind, in `KINDS` order.
    pub backups: Vec<KindFigures>,
    /// Backups whose manifest exists but cannot be read.
    pub damaged_backups: u64,
    pub backup_bytes: u64,
    pub wal_bytes: u64,
    pub summary_bytes: u64,
    /// Complete WAL segments archived, per timeline.
    pub wal_segments: Vec<(u32, u64)>,
    /// The end LSN of the newest archived segment (any timeline).
    pub archived_up_to_lsn: Option<u64>,
    /// Per timeline (newest `MAX_TIMELINES`), the oldest point a restore can reach: the stop time of
    /// the timeline's oldest backup (unix seconds).
    pub recoverable_from: Vec<(u32, f64)>,
    /// The last verification, when one was recorded and readable.
    pub verify: Option<VerifyFigures>,
    /// The PostgreSQL major version the stanza holds.
    pub pg_version: u32,
}

/// Repository figures as cached: when they were read and what was read, or why they could not be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoReport {
    /// When the figures were read (unix seconds).
    pub collected_at: f64,
    pub figures: Option<RepoFigures>,
    pub error: Option<String>,
}

impl RepoReport {
    /// Reads the figures now; a failure is kept in the report (the metrics say the repository is
    /// down rather than failing as a whole).
    pub fn collect(repo: &Repo, now: f64) -> RepoReport {
        match RepoFigures::collect(repo) {
            Ok(f) => RepoReport {
                collected_at: now,
                figures: Some(f),
                error: None,
            },
            Err(e) => RepoReport {
                collected_at: now,
                figures: None,
                error: Some(e.to_string()),
            },
        }
    }
}

fn unix(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

impl RepoFigures {
    /// Reads the figures: the stanza's identity, the backups' manifest heads, one listing each of
    /// `backup/`, `archive/` and `summary/`, and the last verification.
    pub fn collect(repo: &Repo) -> Result<RepoFigures> {
        let identity = repo.identity()?.clone();
        let seg_size = identity.wal_segment_size;
        let listing = catalog::list_backups_tolerant(repo)?;
        let mut backups: Vec<KindFigures> = KINDS
            .iter()
            .map(|&kind| KindFigures {
                kind,
                count: 0,
                last: None,
            })
            .collect();
        let mut oldest: BTreeMap<u32, &crate::manifest::ManifestHead> = BTreeMap::new();
        for m in &listing.sound {
            let k = &mut backups[KINDS.iter().position(|&k| k == m.kind).unwrap_or(0)];
            k.count += 1;
            // Listed oldest first: the last one seen of a kind is its newest.
            k.last = Some(LastBackup {
                label: m.label.to_string(),
                stop_time: unix(m.stop_time),
                duration_seconds: (unix(m.stop_time) - unix(m.start_time)).max(0.0),
                stored_bytes: m.stored_size,
                read_bytes: m.read_size,
                database_bytes: m.database_size,
            });
            let e = oldest.entry(m.timeline).or_insert(m);
            if m.stop_lsn < e.stop_lsn {
                *e = m;
            }
        }
        let recoverable_from: Vec<(u32, f64)> = oldest
            .iter()
            .rev()
            .take(MAX_TIMELINES)
            .rev()
            .map(|(&tli, m)| (tli, unix(m.stop_time)))
            .collect();

        let storage = repo.storage();
        let keys = repo.keys();
        let total = |prefix| -> Result<u64> {
            Ok(storage.list(&prefix)?.iter().map(|(_, size)| size).sum())
        };
        let backup_bytes = total(keys.backup_root())?;
        let summary_bytes = total(keys.summary_root())?;
        let mut wal_bytes = 0;
        let mut segments: BTreeMap<u32, u64> = BTreeMap::new();
        let mut newest_segno: Option<u64> = None;
        for (key, size) in storage.list(&keys.archive_root())? {
            wal_bytes += size;
            if let Some(WalFileName::Segment { timeline, segno }) =
                RepoKeys::parse_archive_key(&key, seg_size)
            {
                *segments.entry(timeline).or_default() += 1;
                newest_segno = newest_segno.max(Some(segno));
            }
        }
        let wal_segments: Vec<(u32, u64)> = segments
            .into_iter()
            .rev()
            .take(MAX_TIMELINES)
            .rev()
            .collect();
        // An unreadable verify result is no verification to report (the verify command says why).
        let verify = verify::last(repo).ok().flatten().map(|v| VerifyFigures {
            finished: unix(v.finished),
            seconds: v.seconds,
            errors: v.errors,
            warnings: v.warnings,
        });
        Ok(RepoFigures {
            backups,
            damaged_backups: listing.damaged.len() as u64,
            backup_bytes,
            wal_bytes,
            summary_bytes,
            wal_segments,
            archived_up_to_lsn: newest_segno.map(|n| (n + 1) * u64::from(seg_size)),
            recoverable_from,
            verify,
            pg_version: identity.pg_version,
        })
    }
}

/// What only the running server knows; counters count since the server started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerFigures {
    /// The server's version, e.g. "15.20".
    pub pg_version: String,
    pub archived_segments: u64,
    pub archive_failures: u64,
    pub summaries_missing: u64,
    /// The last successful archiving (unix seconds), if any since the server started.
    pub last_archive_success: Option<f64>,
    /// WAL written but not yet archived (see `archive_lag`); None on a standby.
    pub archive_lag_bytes: Option<u64>,
    /// `.ready` files in `pg_wal/archive_status`.
    pub ready_files: Option<u64>,
    /// Failed backups per requested kind, in `KINDS` order.
    pub backup_failures: [u64; 3],
    pub backup_running: bool,
}

/// WAL not yet archived: the insert position minus the end of the newest archived segment, which is
/// the newer of the one this server archived last (`server_last`, a WAL file name) and the newest the
/// repository holds. Zero when archiving is ahead; None when nothing was ever archived.
pub fn archive_lag(
    insert_lsn: u64,
    wal_segment_size: u32,
    server_last: Option<&str>,
    repo_up_to: Option<u64>,
) -> Option<u64> {
    let server_up_to =
        server_last.and_then(|name| match WalFileName::parse(name, wal_segment_size) {
            Some(WalFileName::Segment { segno, .. }) => {
                Some((segno + 1) * u64::from(wal_segment_size))
            }
            _ => None,
        });
    let archived = server_up_to.max(repo_up_to)?;
    Some(insert_lsn.saturating_sub(archived))
}
