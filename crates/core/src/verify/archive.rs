//! Verifying the archive, per timeline: every archived WAL file read and checked (header, size,
//! digest), the segments continuous from the oldest backup's start to the newest segment (each gap as
//! an LSN range, with the backups whose point-in-time recovery it breaks), a block-change summary
//! readable for every archived segment (a segment without one is a warning: incrementals across it use
//! the page-LSN method), and the history file of every timeline after the first.

use super::{Finding, Progress};
use crate::manifest::ManifestHead;
use crate::paths::{RepoKey, RepoKeys};
use crate::repo::Repo;
use crate::retention::WalNeed;
use crate::summary::Summary;
use crate::Result;
use pgformat::lsn::{segment_file_name, Lsn, WalFileName};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A run of missing segments on a timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    pub first_missing: String,
    pub last_missing: String,
    pub from_lsn: String,
    pub to_lsn: String,
    /// Backups that can no longer be recovered past this gap.
    pub breaks_pitr_of: Vec<String>,
    /// Left by the retention policy (`strata.retention_archive`): reported, not an error.
    pub expected: bool,
}

/// What the archive holds for one timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineResult {
    pub timeline: u32,
    pub first: Option<String>,
    pub last: Option<String>,
    pub segments: u64,
    pub gaps: Vec<Gap>,
    pub summaries_missing: u64,
    pub findings: Vec<Finding>,
}

/// A file to read, with its stored size (for the progress).
enum Job {
    Wal(String, u64),
    Summary(RepoKey, u64),
}

/// Checks the whole archive; `backups` are the stanza's sound backups, `need` what the retention policy
/// keeps (gaps it leaves are expected).
pub fn check(
    repo: &Repo,
    backups: &[ManifestHead],
    need: Option<&WalNeed>,
    threads: usize,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<TimelineResult>> {
    let id = repo.identity()?;
    let (seg, sysid) = (id.wal_segment_size, id.system_identifier);
    let seg64 = u64::from(seg);
    let mut segments: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut histories: BTreeSet<u32> = BTreeSet::new();
    let mut jobs = Vec::new();
    for (key, size) in repo.storage().list(&repo.keys().archive_root())? {
        let Some(parsed) = RepoKeys::parse_archive_key(&key, seg) else {
            continue;
        };
        match parsed {
            WalFileName::Segment { timeline, segno } => {
                segments.entry(timeline).or_default().insert(segno);
            }
            WalFileName::History { timeline } => {
                histories.insert(timeline);
            }
            _ => {}
        }
        progress.bytes_total.fetch_add(size, Ordering::Relaxed);
        jobs.push(Job::Wal(key.file_name().to_string(), size));
    }
    let mut summaries: BTreeMap<u32, Vec<(Lsn, Lsn)>> = BTreeMap::new();
    for (key, size) in repo.storage().list(&repo.keys().summary_root())? {
        if let Some((tli, start, end)) = RepoKeys::parse_summary_key(&key) {
            summaries.entry(tli).or_default().push((start, end));
            progress.bytes_total.fetch_add(size, Ordering::Relaxed);
            jobs.push(Job::Summary(key, size));
        }
    }

    // Every archived file and summary read and checked, in parallel.
    let found: Mutex<Vec<(u32, Finding)>> = Mutex::new(Vec::new());
    let missing_marked: Mutex<BTreeMap<u32, Vec<(Lsn, Lsn)>>> = Mutex::new(BTreeMap::new());
    let note = |tli: u32, f: Finding| {
        found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tli, f))
    };
    crate::parallel::run(
        threads,
        stop,
        jobs,
        || Ok(()),
        |_, job| {
            let size = match &job {
                Job::Wal(_, size) | Job::Summary(_, size) => *size,
            };
            progress.bytes_done.fetch_add(size, Ordering::Relaxed);
            match job {
                Job::Wal(name, _) => {
                    let tli = match WalFileName::parse(&name, seg) {
                        Some(WalFileName::Segment { timeline, .. })
                        | Some(WalFileName::Partial { timeline, .. })
                        | Some(WalFileName::BackupHistory { timeline, .. })
                        | Some(WalFileName::History { timeline }) => timeline,
                        None => 0,
                    };
                    match repo.fetch_wal(&name, seg) {
                        Ok(Some((_, plain))) => {
                            // A segment's first page must carry its address and this cluster.
                            if let Some(WalFileName::Segment { segno, .. }) =
                                WalFileName::parse(&name, seg)
                            {
                                let start = Lsn(segno * u64::from(seg));
                                let header = pgformat::wal::PageHeader::parse(start, &plain);
                                let sound = plain.len() as u64 == u64::from(seg)
                                    && header.is_ok_and(|h| h.sysid == Some(sysid));
                                if !sound {
                                    note(
                                        tli,
                                        Finding::error(
                                            &name,
                                            format!(
                                                "{} bytes, or a first page that is not this \
                                                 segment's of cluster {sysid}",
                                                plain.len()
                                            ),
                                        ),
                                    );
                                }
                            }
                        }
                        Ok(None) => note(
                            tli,
                            Finding::error(&name, "disappeared while verifying".into()),
                        ),
                        Err(e) => note(tli, Finding::error(&name, e.to_string())),
                    }
                }
                Job::Summary(key, _) => {
                    let tli = RepoKeys::parse_summary_key(&key).map_or(0, |(t, _, _)| t);
                    match repo.storage().get(&key) {
                        Ok(Some(bytes)) => match repo.unseal(&key, bytes).and_then(|b| {
                            Summary::decode(key.as_str(), &b).map_err(|e| {
                                crate::Error::CorruptObject {
                                    key: key.to_string(),
                                    reason: e.to_string(),
                                }
                            })
                        }) {
                            Ok(s) => {
                                if s.missing.is_some() {
                                    missing_marked
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .entry(tli)
                                        .or_default()
                                        .push((s.start, s.end));
                                }
                            }
                            Err(e) => note(tli, Finding::error(key.as_str(), e.to_string())),
                        },
                        Ok(None) => note(
                            tli,
                            Finding::error(key.as_str(), "disappeared while verifying".into()),
                        ),
                        Err(e) => note(tli, Finding::error(key.as_str(), e.to_string())),
                    }
                }
            }
            Ok(())
        },
        |_| Ok(()),
    )?;
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    let missing_marked = missing_marked
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());

    let timelines: BTreeSet<u32> = segments
        .keys()
        .copied()
        .chain(backups.iter().map(|m| m.timeline))
        .collect();
    let mut results = Vec::new();
    for tli in timelines {
        let empty = BTreeSet::new();
        let segs = segments.get(&tli).unwrap_or(&empty);
        let on_tli: Vec<&ManifestHead> = backups.iter().filter(|m| m.timeline == tli).collect();
        let mut r = TimelineResult {
            timeline: tli,
            first: segs.first().map(|&n| segment_file_name(tli, n, seg)),
            last: segs.last().map(|&n| segment_file_name(tli, n, seg)),
            segments: segs.len() as u64,
            gaps: Vec::new(),
            summaries_missing: 0,
            findings: Vec::new(),
        };
        r.findings.extend(
            found
                .iter()
                .filter(|(t, _)| *t == tli)
                .map(|(_, f)| f.clone()),
        );
        found.retain(|(t, _)| *t != tli);
        if tli > 1 && !histories.contains(&tli) {
            let name = pgformat::lsn::history_file_name(tli);
            r.findings.push(Finding::error(
                &name,
                format!(
                    "timeline {tli} has no history file in the archive: recovery cannot follow it"
                ),
            ));
        }
        // Continuity from the oldest backup's start (or the first segment) to the newest segment.
        let from = on_tli
            .iter()
            .map(|m| m.start_lsn.0 / seg64)
            .min()
            .or(segs.first().copied());
        if let (Some(from), Some(&to)) = (from, segs.last()) {
            let mut n = from;
            while n <= to {
                if segs.contains(&n) {
                    n += 1;
                    continue;
                }
                let first = n;
                while n <= to && !segs.contains(&n) {
                    n += 1;
                }
                let last = n - 1;
                let (from_lsn, to_lsn) = (Lsn(first * seg64), Lsn((last + 1) * seg64));
                let expected = need.is_some_and(|w| !w.needs(from_lsn, to_lsn));
                let breaks: Vec<String> = on_tli
                    .iter()
                    .filter(|m| m.stop_lsn < from_lsn)
                    .map(|m| m.label.to_string())
                    .collect();
                let gap = Gap {
                    first_missing: segment_file_name(tli, first, seg),
                    last_missing: segment_file_name(tli, last, seg),
                    from_lsn: from_lsn.to_string(),
                    to_lsn: to_lsn.to_string(),
                    breaks_pitr_of: breaks.clone(),
                    expected,
                };
                if !expected {
                    r.findings.push(Finding::error(
                        &gap.first_missing,
                        format!(
                            "WAL missing from {} to {} ({} to {}): {}",
                            gap.from_lsn,
                            gap.to_lsn,
                            gap.first_missing,
                            gap.last_missing,
                            if breaks.is_empty() {
                                "no backup can be recovered across it".to_string()
                            } else {
                                format!("breaks point-in-time recovery of {}", breaks.join(", "))
                            }
                        ),
                    ));
                }
                r.gaps.push(gap);
            }
        }
        // A summary for every archived segment from the oldest backup's start.
        let mut covered: Vec<(Lsn, Lsn)> = summaries.get(&tli).cloned().unwrap_or_default();
        let marked = missing_marked.get(&tli).cloned().unwrap_or_default();
        covered.retain(|r| !marked.contains(r));
        covered.sort();
        let mut first_uncovered = None;
        for &n in segs.range(from.unwrap_or(0)..) {
            let (a, b) = (Lsn(n * seg64), Lsn((n + 1) * seg64));
            if !is_covered(&covered, a, b) {
                r.summaries_missing += 1;
                first_uncovered.get_or_insert(n);
            }
        }
        if let Some(n) = first_uncovered {
            r.findings.push(Finding::warning(
                &segment_file_name(tli, n, seg),
                format!(
                    "{} archived segments from this one have no block-change summary: \
                     incrementals across them use the page-LSN method (slower, still complete)",
                    r.summaries_missing
                ),
            ));
        }
        results.push(r);
    }
    Ok(results)
}

/// Whether sorted ranges cover `[a, b)` without a hole.
fn is_covered(ranges: &[(Lsn, Lsn)], a: Lsn, b: Lsn) -> bool {
    let mut reached = a;
    for &(s, e) in ranges {
        if e <= reached {
            continue;
        }
        if s > reached {
            return false;
        }
        reached = e;
        if reached >= b {
            return true;
        }
    }
    reached >= b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_needs_ranges_without_holes() {
        let r = |a: u64, b: u64| (Lsn(a), Lsn(b));
        assert!(is_covered(&[r(0, 10), r(10, 20)], Lsn(5), Lsn(20)));
        assert!(is_covered(&[r(0, 12), r(8, 20)], Lsn(0), Lsn(20)));
        assert!(!is_covered(&[r(0, 10), r(11, 20)], Lsn(0), Lsn(20)));
        assert!(!is_covered(&[r(0, 10)], Lsn(0), Lsn(20)));
        assert!(!is_covered(&[], Lsn(0), Lsn(1)));
    }
}
