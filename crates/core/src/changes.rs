//! Which blocks changed on a timeline between two LSNs, from the archived block-change summaries: what
//! a diff or incr backup copies of the relation files (`backup::changed` follows a timeline's history
//! with it).
//!
//! The map is the union of every summary whose range overlaps `[from, to)`: summaries cover whole
//! segments, so the union may include changes just outside the range, which is safe (a block copied for
//! nothing) where the opposite would not be. What the summaries cannot vouch for is reported as gaps,
//! never silently skipped: a stretch of LSNs no summary covers (WAL not archived by us, or not archived
//! yet) and summaries stored "missing" (a segment that could not be decoded). A backup must fall back
//! to reading pages for the ranges of a gap.
//!
//! Memory stays bounded whatever the churn: past `MAX_LISTED_BLOCKS` listed blocks, the forks with the
//! most are coarsened to "every block from the first changed one up" (their limit lowered), which makes
//! a backup copy more of them, never less.

use crate::paths::{RepoKey, RepoKeys};
use crate::repo::Repo;
use crate::summary::Summary;
use crate::{Error, Result};
use pgformat::lsn::{Lsn, TimeLineId};

/// Most changed blocks a map lists one by one (about 32 GB of changed data; tens of MB of memory).
pub const MAX_LISTED_BLOCKS: usize = 4 << 20;

/// Keeps `changes` under `max` listed blocks: first drops the blocks a fork's limit already covers,
/// then lowers the limit of the forks with the most blocks to their first changed block.
pub fn bound_listed_blocks(changes: &mut Summary, max: usize) {
    for f in changes.forks.values_mut() {
        if let Some(limit) = f.limit {
            f.blocks.retain(|&b| b < limit);
        }
    }
    let mut total = changes.block_count();
    while total > max {
        let Some((key, first, n)) = changes
            .forks
            .iter()
            .max_by_key(|(_, f)| f.blocks.len())
            .and_then(|(k, f)| f.blocks.first().map(|b| (*k, *b, f.blocks.len())))
        else {
            return;
        };
        changes.set_limit(key, first);
        total -= n;
    }
}

/// An LSN range the summaries do not vouch for, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub start: Lsn,
    pub end: Lsn,
    pub reason: String,
}

/// The changed blocks of a range, and where they cannot be trusted.
#[derive(Debug)]
pub struct ChangeMap {
    pub changes: Summary,
    pub gaps: Vec<Gap>,
}

impl ChangeMap {
    /// Whether the map covers the whole range with usable summaries.
    pub fn complete(&self) -> bool {
        self.gaps.is_empty()
    }
}

/// The union of the summaries of `timeline` overlapping `[from, to)`, with the gaps in their coverage.
pub fn changes_between(repo: &Repo, timeline: TimeLineId, from: Lsn, to: Lsn) -> Result<ChangeMap> {
    let storage = repo.storage();
    let mut ranges: Vec<(Lsn, Lsn, RepoKey)> = storage
        .list(&repo.keys().summary_dir(timeline))?
        .into_iter()
        .filter_map(|(key, _)| {
            let (tli, start, end) = RepoKeys::parse_summary_key(&key)?;
            (tli == timeline && end > from && start < to).then_some((start, end, key))
        })
        .collect();
    ranges.sort();
    let mut changes = Summary::new(timeline, from, from);
    let mut gaps = Vec::new();
    let mut covered_to = from;
    for (start, end, key) in ranges {
        if start > covered_to {
            gaps.push(Gap {
                start: covered_to,
                end: start,
                reason: "no block-change summary (WAL not archived by pg_strata)".into(),
            });
        }
        let bytes = storage.get(&key)?.ok_or_else(|| Error::CorruptObject {
            key: key.to_string(),
            reason: "listed but cannot be read".into(),
        })?;
        let bytes = repo.unseal(&key, bytes)?;
        let summary = Summary::decode(key.as_str(), &bytes).map_err(|e| Error::CorruptObject {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        if let Some(reason) = &summary.missing {
            gaps.push(Gap {
                start,
                end,
                reason: format!("summary marked missing: {reason}"),
            });
        } else {
            changes.absorb(&summary);
            bound_listed_blocks(&mut changes, MAX_LISTED_BLOCKS);
        }
        covered_to = covered_to.max(end);
    }
    if covered_to < to {
        gaps.push(Gap {
            start: covered_to,
            end: to,
            reason: "not summarized yet (WAL not archived yet)".into(),
        });
    }
    changes.end = to;
    Ok(ChangeMap { changes, gaps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoUrl;
    use crate::summary::ForkKey;
    use pgformat::relfile::{ForkNumber, RelFileNode};

    const SEG: u64 = 16 << 20;

    fn store(repo: &Repo, s: &Summary) {
        repo.storage()
            .put_new(&repo.keys().summary(s.timeline, s.start, s.end), s.encode())
            .unwrap();
    }

    fn seg(n: u64) -> Lsn {
        Lsn(n * SEG)
    }

    #[test]
    fn a_map_too_large_copies_more_never_less() {
        let key = |rel| ForkKey::new(RelFileNode::new(1663, 5, rel), ForkNumber::Main);
        let mut s = Summary::new(1, seg(1), seg(2));
        for b in [10, 20, 30, 40] {
            s.mark_modified(key(1), b);
        }
        s.mark_modified(key(2), 7);
        s.mark_modified(key(2), 9);
        s.set_limit(key(3), 5);
        s.forks.get_mut(&key(3)).unwrap().blocks.insert(8); // regrew past its limit
        bound_listed_blocks(&mut s, 3);
        // Fork 3's block 8 is covered by its limit; fork 1 (most blocks) now copies from block 10 up.
        assert_eq!(s.forks[&key(1)].limit, Some(10));
        assert!(s.forks[&key(1)].blocks.is_empty());
        assert_eq!(s.forks[&key(2)].blocks.len(), 2);
        assert!(s.forks[&key(3)].blocks.is_empty());
        assert!(s.block_count() <= 3);
    }

    #[test]
    fn unions_overlapping_summaries_and_reports_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(&RepoUrl::Local(dir.path().into()), "st").unwrap();
        let key = ForkKey::new(RelFileNode::new(1663, 5, 16384), ForkNumber::Main);
        let mut s1 = Summary::new(1, seg(1), seg(2));
        s1.mark_modified(key, 3);
        let mut s2 = Summary::new(1, seg(2), seg(3));
        s2.mark_modified(key, 9);
        s2.set_limit(key, 5);
        let s4 = Summary::missing(1, seg(4), seg(5), "bad record at 0/4000100".into());
        let mut other_tli = Summary::new(2, seg(2), seg(3));
        other_tli.mark_modified(key, 77);
        for s in [&s1, &s2, &s4, &other_tli] {
            store(&repo, s);
        }

        // Fully covered range: the union; s2 truncated the fork to 5 blocks after writing block 9, so 9 is
        // covered by the limit (everything from block 5 up is copied) and only block 3 is listed.
        let m = changes_between(&repo, 1, Lsn(seg(1).0 + 40), seg(3)).unwrap();
        assert!(m.complete(), "{:?}", m.gaps);
        let f = &m.changes.forks[&key];
        assert_eq!(f.limit, Some(5));
        assert_eq!(f.blocks.iter().copied().collect::<Vec<_>>(), vec![3]);

        // Segment 3 has no summary, segment 4's is missing, segment 5 is not archived yet.
        let m = changes_between(&repo, 1, seg(1), Lsn(seg(5).0 + 100)).unwrap();
        let gaps: Vec<(Lsn, Lsn)> = m.gaps.iter().map(|g| (g.start, g.end)).collect();
        assert_eq!(
            gaps,
            vec![
                (seg(3), seg(4)),
                (seg(4), seg(5)),
                (seg(5), Lsn(seg(5).0 + 100))
            ]
        );
        assert!(m.gaps[1].reason.contains("bad record"), "{:?}", m.gaps);
        // The other timeline's summary is not mixed in.
        assert!(!m.changes.forks[&key].blocks.contains(&77));
    }
}
