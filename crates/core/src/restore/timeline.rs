//! Which timeline recovery follows (`recovery_target_timeline`), decided before anything is written.
//!
//! PostgreSQL 15 follows `latest` by default: the highest timeline with a history file in the archive.
//! That fails to start ("requested timeline N is not a child of this server's history") when the
//! stanza also holds a timeline that forked before the restored backup ended — e.g. a copy restored
//! from an earlier backup and promoted, archiving into the same stanza, while the original goes on
//! on timeline 1. So the restore decides:
//! - `--type immediate`: the backup's own timeline (`current`): nothing after the backup is replayed;
//! - otherwise: the latest timeline whose history contains the backup's stop point (written out only
//!   when it is not what `latest` would pick);
//! - an operator's `--target-timeline` is checked the same way and refused, with the reason and the
//!   timelines that would work, when recovery could not follow it.

use super::target::RecoveryTarget;
use super::RestoreOptions;
use crate::chain::TimelineHistory;
use crate::manifest::Manifest;
use crate::paths::RepoKeys;
use crate::repo::Repo;
use crate::{Error, Result};
use pgformat::lsn::{TimeLineId, WalFileName};

/// Timelines with a history file in the archive (timeline 1 has none and is always there).
fn archived_timelines(repo: &Repo, seg: u32) -> Result<Vec<TimeLineId>> {
    let mut tlis = vec![1];
    // History files sit at the archive's top level, beside the segment directories.
    for (key, _) in repo.storage().list_shallow(&repo.keys().archive_root())? {
        if let Some(WalFileName::History { timeline }) = RepoKeys::parse_archive_key(&key, seg) {
            tlis.push(timeline);
        }
    }
    tlis.sort_unstable();
    tlis.dedup();
    Ok(tlis)
}

/// The timelines recovery of `m` can follow (in ascending order) among `histories`.
fn followable(
    m: &Manifest,
    histories: &[(TimeLineId, Option<TimelineHistory>)],
) -> Vec<TimeLineId> {
    histories
        .iter()
        .filter(|(t, h)| {
            *t == m.timeline
                || h.as_ref()
                    .is_some_and(|h| h.contains_backup(m.timeline, m.stop_lsn))
        })
        .map(|(t, _)| *t)
        .collect()
}

/// The `recovery_target_timeline` to write for restoring `m` (None: PostgreSQL's default works).
pub fn choose(repo: &Repo, m: &Manifest, opts: &RestoreOptions) -> Result<Option<String>> {
    let requested = opts.target_timeline.as_deref();
    if requested == Some("current") {
        return Ok(Some("current".into()));
    }
    if requested.is_none() && opts.target == RecoveryTarget::Immediate {
        return Ok(Some("current".into()));
    }
    let mut histories = Vec::new();
    for t in archived_timelines(repo, m.wal_segment_size)? {
        histories.push((t, repo.timeline_history(t)?));
    }
    if !histories.iter().any(|(t, _)| *t == m.timeline) {
        histories.push((m.timeline, None));
    }
    let latest = histories
        .iter()
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(m.timeline);
    let ok = followable(m, &histories);
    let choices = || {
        ok.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let refuse = |asked: &str, why: String| {
        Err(Error::BadSetting {
            name: "--target-timeline".into(),
            value: asked.into(),
            reason: format!(
                "{why}; backup {} (timeline {}, ended at {}) can be recovered along timeline(s) {} \
                 (or `current`)",
                m.label,
                m.timeline,
                m.stop_lsn,
                choices()
            ),
        })
    };
    match requested {
        None => {
            let best = ok.iter().copied().max().unwrap_or(m.timeline);
            Ok((best != latest).then(|| best.to_string()))
        }
        Some("latest") => {
            if ok.contains(&latest) {
                Ok(Some("latest".into()))
            } else {
                refuse(
                    "latest",
                    format!(
                        "the latest timeline in the archive, {latest}, branched off before the \
                         backup ended"
                    ),
                )
            }
        }
        Some(n) => {
            let t: TimeLineId = match n.parse() {
                Ok(t) if t > 0 => t,
                _ => return refuse(n, "not a timeline number".into()),
            };
            if ok.contains(&t) {
                Ok(Some(t.to_string()))
            } else if !histories.iter().any(|(x, _)| *x == t) {
                refuse(
                    n,
                    format!("timeline {t} does not exist in the archive (no {t:08X}.history)"),
                )
            } else {
                refuse(
                    n,
                    format!("timeline {t} branched off before the backup ended"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgformat::lsn::Lsn;

    #[test]
    fn only_timelines_that_contain_the_backup_are_followable() {
        let mut m = crate::manifest::tests::sample();
        m.timeline = 1;
        m.stop_lsn = Lsn(0x0500_0000);
        // Timeline 2 forked from 1 at 0/3000000 (before the backup ended), 3 from 1 at 0/6000000.
        let h2 = TimelineHistory::parse(2, "1\t0/3000000\tr\n").unwrap();
        let h3 = TimelineHistory::parse(3, "1\t0/6000000\tr\n").unwrap();
        let histories = vec![(1, None), (2, Some(h2)), (3, Some(h3))];
        assert_eq!(followable(&m, &histories), vec![1, 3]);
    }
}
