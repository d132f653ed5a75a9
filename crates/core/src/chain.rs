//! Backup chains: a diff or incr is restorable only together with the backups it is built on (its
//! `prior`, that one's prior, ... back to a full). This module chooses the reference of a new backup and
//! loads and checks a chain before a restore writes anything.
//!
//! Timelines: a backup on timeline T can be built on a backup of an older timeline R only if T descends
//! from R and branched off at or after the reference's stop LSN (before that point the two histories
//! differ). The branch points come from the archived timeline history files (`0000000T.history`).

use crate::catalog;
use crate::manifest::{BackupKind, Label, Manifest, ManifestHead};
use crate::repo::Repo;
use crate::{Error, ErrorClass, Result};
use pgformat::lsn::{Lsn, TimeLineId};

/// A timeline's ancestry: each ancestor with the LSN where the next timeline branched off it, oldest
/// first, then the timeline itself with no end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistory {
    pub entries: Vec<(TimeLineId, Option<Lsn>)>,
}

impl TimelineHistory {
    /// The history of a timeline with no known ancestors (timeline 1, or a history file not found).
    pub fn alone(timeline: TimeLineId) -> TimelineHistory {
        TimelineHistory {
            entries: vec![(timeline, None)],
        }
    }

    /// Parses a timeline history file ("parent TLI <tab> switch LSN <tab> reason" per line).
    pub fn parse(timeline: TimeLineId, text: &str) -> Result<TimelineHistory> {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let bad = || Error::CorruptObject {
                key: pgformat::lsn::history_file_name(timeline),
                reason: format!("cannot read line '{line}'"),
            };
            let tli: TimeLineId = fields.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
            let lsn: Lsn = fields.next().and_then(|l| l.parse().ok()).ok_or_else(bad)?;
            entries.push((tli, Some(lsn)));
        }
        entries.push((timeline, None));
        Ok(TimelineHistory { entries })
    }

    /// Where this history leaves timeline `tli` (None: never, it is the current one), or whether `tli`
    /// is not in the history at all (outer None).
    pub fn end_of(&self, tli: TimeLineId) -> Option<Option<Lsn>> {
        self.entries
            .iter()
            .find(|(t, _)| *t == tli)
            .map(|(_, e)| *e)
    }

    /// Whether a backup of timeline `tli` that ended at `stop` is part of this history.
    pub fn contains_backup(&self, tli: TimeLineId, stop: Lsn) -> bool {
        match self.end_of(tli) {
            None => false,
            Some(None) => true,
            Some(Some(end)) => stop <= end,
        }
    }

    /// The pieces of `[from, to)` on each timeline of this history, `from` being on timeline `from_tli`.
    pub fn ranges(&self, from_tli: TimeLineId, from: Lsn, to: Lsn) -> Vec<(TimeLineId, Lsn, Lsn)> {
        let mut out = Vec::new();
        let mut start = from;
        let mut on = false;
        for (tli, end) in &self.entries {
            on |= *tli == from_tli;
            if !on {
                continue;
            }
            let stop = end.map_or(to, |e| e.min(to));
            if stop > start {
                out.push((*tli, start, stop));
                start = stop;
            }
        }
        out
    }
}

/// The backup a new `kind` backup on `timeline` is built on: the newest full (diff) or the newest
/// backup of any kind (incr) that is part of the timeline's history. None when there is none (the
/// caller takes a full), with the reason.
pub fn choose_reference(
    backups: &[ManifestHead],
    kind: BackupKind,
    history: Option<&TimelineHistory>,
    timeline: TimeLineId,
) -> std::result::Result<ManifestHead, String> {
    let fits_kind = |m: &&ManifestHead| kind == BackupKind::Incr || m.kind == BackupKind::Full;
    let mut newest_any = backups.iter().filter(fits_kind).collect::<Vec<_>>();
    newest_any.sort_by(|a, b| a.stop_lsn.cmp(&b.stop_lsn).then(a.label.cmp(&b.label)));
    let Some(newest) = newest_any.last() else {
        return Err(format!(
            "there is no prior {} backup",
            if kind == BackupKind::Diff {
                "full"
            } else {
                "full or incremental"
            }
        ));
    };
    let on_history = |m: &ManifestHead| {
        m.timeline == timeline || history.is_some_and(|h| h.contains_backup(m.timeline, m.stop_lsn))
    };
    newest_any
        .iter()
        .rev()
        .find(|m| on_history(m))
        .map(|m| (*m).clone())
        .ok_or_else(|| {
            format!(
                "no prior backup is on the history of timeline {timeline} (the newest, {}, is on \
                 timeline {} and ended at {}{})",
                newest.label,
                newest.timeline,
                newest.stop_lsn,
                if history.is_none() {
                    "; the timeline's history file is not in the archive"
                } else {
                    ""
                }
            )
        })
}

/// Loads the chain of `target`, newest first (target, its prior, ..., the full), and checks it: every
/// backup present, one cluster, ordered in time and LSN, each prior on the history of the next one's
/// timeline.
pub fn load_chain(repo: &Repo, target: Manifest) -> Result<Vec<Manifest>> {
    let mut chain = vec![target];
    loop {
        let newer = chain.last().expect("never empty");
        let Some(prior_label) = newer.prior.clone() else {
            break;
        };
        if chain.len() > 10_000 || chain.iter().any(|m| m.label == prior_label) {
            return Err(chain_error(&chain[0], "its chain loops".into()));
        }
        let prior = catalog::load(repo, &prior_label).map_err(|e| match e.class() {
            ErrorClass::NotFound => chain_error(
                &chain[0],
                format!(
                    "backup {prior_label}, on which {} is built, is missing from the repository",
                    newer.label
                ),
            ),
            ErrorClass::Corrupt => chain_error(
                &chain[0],
                format!(
                    "backup {prior_label}, on which {} is built, is damaged: {e}",
                    newer.label
                ),
            ),
            // A storage error (perhaps transient) says nothing about the chain.
            _ => e,
        })?;
        check_link(repo, &chain[0], newer, &prior)?;
        chain.push(prior);
    }
    let target = &chain[0];
    let labels: Vec<Label> = chain
        .iter()
        .skip(1)
        .rev()
        .map(|m| m.label.clone())
        .collect();
    if chain.last().expect("never empty").kind != BackupKind::Full {
        return Err(chain_error(
            target,
            "it does not lead back to a full backup".into(),
        ));
    }
    if !target.references.is_empty() && target.references != labels {
        return Err(chain_error(
            target,
            format!(
                "its manifest lists the chain {:?} but the prior links give {:?}",
                target.references, labels
            ),
        ));
    }
    Ok(chain)
}

fn chain_error(target: &Manifest, reason: String) -> Error {
    Error::ChainBroken {
        label: target.label.to_string(),
        reason,
    }
}

fn check_link(repo: &Repo, target: &Manifest, newer: &Manifest, prior: &Manifest) -> Result<()> {
    if prior.system_identifier != newer.system_identifier {
        return Err(chain_error(
            target,
            format!(
                "{} belongs to cluster {} but the backup it is built on, {}, to cluster {}",
                newer.label, newer.system_identifier, prior.label, prior.system_identifier
            ),
        ));
    }
    if prior.stop_lsn > newer.start_lsn || prior.start_time > newer.start_time {
        return Err(chain_error(
            target,
            format!(
                "{} (start {}) does not come after the backup it is built on, {} (stop {})",
                newer.label, newer.start_lsn, prior.label, prior.stop_lsn
            ),
        ));
    }
    if newer.kind == BackupKind::Diff && prior.kind != BackupKind::Full {
        return Err(chain_error(
            target,
            format!(
                "differential {} is built on {}, which is not a full backup",
                newer.label, prior.label
            ),
        ));
    }
    if prior.timeline != newer.timeline {
        let history = repo.timeline_history(newer.timeline)?;
        if !history.is_some_and(|h| h.contains_backup(prior.timeline, prior.stop_lsn)) {
            return Err(chain_error(
                target,
                format!(
                    "{} on timeline {} is built on {} of timeline {}, which is not on its history",
                    newer.label, newer.timeline, prior.label, prior.timeline
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_ranges_follow_the_branch_points() {
        let h = TimelineHistory::parse(
            3,
            "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tbefore 2026-11-24\n",
        )
        .unwrap();
        assert_eq!(
            h.entries,
            vec![
                (1, Some(Lsn(0x300_0000))),
                (2, Some(Lsn(0x50_00A0))),
                (3, None)
            ]
        );
        // Malformed history: a clear error.
        assert!(TimelineHistory::parse(2, "x y z").is_err());
        let h = TimelineHistory::parse(3, "1\t0/3000000\tr\n2\t0/5000000\tr\n").unwrap();
        assert!(h.contains_backup(1, Lsn(0x300_0000)));
        assert!(!h.contains_backup(1, Lsn(0x300_0001)));
        assert!(h.contains_backup(3, Lsn(0x900_0000)));
        assert!(!h.contains_backup(4, Lsn(0)));
        assert_eq!(
            h.ranges(1, Lsn(0x100_0000), Lsn(0x600_0000)),
            vec![
                (1, Lsn(0x100_0000), Lsn(0x300_0000)),
                (2, Lsn(0x300_0000), Lsn(0x500_0000)),
                (3, Lsn(0x500_0000), Lsn(0x600_0000)),
            ]
        );
        assert_eq!(
            h.ranges(2, Lsn(0x400_0000), Lsn(0x600_0000)),
            vec![
                (2, Lsn(0x400_0000), Lsn(0x500_0000)),
                (3, Lsn(0x500_0000), Lsn(0x600_0000)),
            ]
        );
    }

    fn backup(label: &str, kind: BackupKind, tli: u32, stop: u64) -> ManifestHead {
        let mut m = crate::manifest::tests::sample().head;
        m.label = label.parse().unwrap();
        m.kind = kind;
        m.timeline = tli;
        m.start_lsn = Lsn(stop - 0x100);
        m.stop_lsn = Lsn(stop);
        m
    }

    #[test]
    fn reference_is_the_newest_fitting_backup_on_the_history() {
        use BackupKind::*;
        let all = vec![
            backup("20260101-000000F", Full, 1, 0x100_0000),
            backup("20260101-000000F_20260102-000000I", Incr, 1, 0x200_0000),
            backup("20260101-000000F_20260103-000000I", Incr, 1, 0x400_0000),
        ];
        let r = choose_reference(&all, Incr, None, 1).unwrap();
        assert_eq!(r.label, "20260101-000000F_20260103-000000I");
        assert_eq!(
            choose_reference(&all, Diff, None, 1).unwrap().label,
            "20260101-000000F"
        );
        // Timeline 2 branched at 0/3000000: the incr that ended at 0/4000000 is not its past.
        let h = TimelineHistory::parse(2, "1\t0/3000000\tr\n").unwrap();
        let r = choose_reference(&all, Incr, Some(&h), 2).unwrap();
        assert_eq!(r.label, "20260101-000000F_20260102-000000I");
        // Without the history file, nothing of timeline 1 can be trusted.
        let e = choose_reference(&all, Incr, None, 2).unwrap_err();
        assert!(e.contains("history file"), "{e}");
        assert!(choose_reference(&[], Diff, None, 1)
            .unwrap_err()
            .contains("no prior full"));
    }
}
