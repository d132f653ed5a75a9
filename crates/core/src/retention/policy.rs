//! Retention policies and the choice of what to keep: pure functions over the backups' manifest heads
//! (no repository access), so that a dry run and the real run decide the same thing.
//!
//! Policies (several may be set; a backup is kept when any of them keeps it — the union):
//! - count (`retention_full = N`, pgBackRest's `repo-retention-full-type=count`): the N newest fulls;
//! - time (`retention_full_type = 'time'`: `retention_full` is days): every full that ended within the
//!   last N days, and the newest full that ended before that, so the whole period stays restorable;
//! - differential count (`retention_diff = N`): the N newest of the differentials and fulls (a full
//!   counts as one, as in pgBackRest), each with what it is built on;
//! - recovery window (`retention_window = '7 days'`, Barman's): every backup that ended within the
//!   window, and the newest one that ended before it (the base for PITR at the window's start);
//! - minimum redundancy (`retention_min_full = N`, Barman's): the N newest fulls, whatever the rest says.
//!
//! Incrementals go with their base: an incr is kept when a count, time or diff policy keeps the newest
//! full or diff of its chain, never alone. Whatever a kept backup is built on is kept too (its
//! `references`: the chain in the manifests decides, not the labels).

use crate::manifest::{BackupKind, Label, ManifestHead};
use crate::{Error, Result};
use chrono::{DateTime, Duration, Utc};
use pgformat::lsn::Lsn;
use std::collections::{BTreeMap, BTreeSet};

/// How `retention_full` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FullType {
    #[default]
    Count,
    /// `retention_full` is a number of days.
    Time,
}

/// The retention settings (`strata.retention_*`). All unset: nothing is ever expired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub full: Option<u32>,
    pub full_type: FullType,
    pub diff: Option<u32>,
    pub window: Option<Duration>,
    pub min_full: u32,
    /// `retention_archive`: keep the WAL for point-in-time recovery only from the start of the N newest
    /// kept backups of `archive_type` (older kept backups keep the WAL from their start to their stop:
    /// they restore to their end only). Unset: from the oldest kept backup's start.
    pub archive: Option<u32>,
    pub archive_type: BackupKind,
}

fn bad(name: &str, value: &str, reason: &str) -> Error {
    Error::BadSetting {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn count(name: &str, value: &str) -> Result<Option<u32>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<u32>() {
        // As the server reads it: 0 is no limit.
        Ok(0) => Ok(None),
        Ok(n) if n <= 9_999_999 => Ok(Some(n)),
        _ => Err(bad(
            name,
            value,
            "expected a whole number from 1 to 9999999",
        )),
    }
}

/// Parses an interval as PostgreSQL writes simple ones: `7 days`, `2 weeks`, `1 month`, `36 hours`,
/// `90 minutes`, `30 seconds`, `1 year` (a month is 30 days, a year 365).
pub fn parse_interval(name: &str, value: &str) -> Result<Option<Duration>> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        bad(
            name,
            value,
            "expected a number and a unit, like '7 days', '2 weeks', '1 month' or '36 hours'",
        )
    };
    // "7 days" or "7days", as PostgreSQL reads intervals.
    let sign = usize::from(v.starts_with(['-', '+']));
    let digits = sign + v[sign..].chars().take_while(char::is_ascii_digit).count();
    let (n, unit) = v.split_at(digits);
    let unit = unit.trim();
    if unit.contains(char::is_whitespace) {
        return Err(malformed());
    }
    let unit = (!unit.is_empty()).then_some(unit);
    let n: i64 = n.parse().map_err(|_| malformed())?;
    if n <= 0 || n > 100_000 {
        return Err(bad(
            name,
            value,
            "the interval must be positive (and under 100000 units)",
        ));
    }
    let unit = unit.unwrap_or("days");
    let d = match unit.strip_suffix('s').unwrap_or(unit) {
        "second" | "sec" => Duration::seconds(n),
        "minute" | "min" => Duration::minutes(n),
        "hour" | "h" => Duration::hours(n),
        "day" | "d" => Duration::days(n),
        "week" | "w" => Duration::weeks(n),
        "month" | "mon" => Duration::days(30 * n),
        "year" | "y" => Duration::days(365 * n),
        _ => return Err(malformed()),
    };
    Ok(Some(d))
}

impl Policy {
    /// Reads the policy from `strata.retention_*` settings (name → value; absent or empty: unset).
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Policy> {
        let get = |n: &str| get(n).unwrap_or_default();
        let full_type = match get("strata.retention_full_type")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "count" => FullType::Count,
            "time" => FullType::Time,
            other => {
                return Err(bad(
                    "strata.retention_full_type",
                    other,
                    "expected 'count' or 'time'",
                ))
            }
        };
        let min_full = count(
            "strata.retention_min_full",
            &get("strata.retention_min_full"),
        )?
        .unwrap_or(0);
        let archive_type = match get("strata.retention_archive_type")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "full" => BackupKind::Full,
            "diff" => BackupKind::Diff,
            "incr" => BackupKind::Incr,
            other => {
                return Err(bad(
                    "strata.retention_archive_type",
                    other,
                    "expected 'full', 'diff' or 'incr'",
                ))
            }
        };
        Ok(Policy {
            archive: count("strata.retention_archive", &get("strata.retention_archive"))?,
            archive_type,
            full: count("strata.retention_full", &get("strata.retention_full"))?,
            full_type,
            diff: count("strata.retention_diff", &get("strata.retention_diff"))?,
            window: parse_interval("strata.retention_window", &get("strata.retention_window"))?,
            min_full,
        })
    }

    /// Whether any policy is set (without one nothing is expired).
    pub fn is_set(&self) -> bool {
        self.full.is_some() || self.diff.is_some() || self.window.is_some()
    }

    /// The policy in words, for listings and logs.
    pub fn describe(&self) -> String {
        if !self.is_set() {
            return "none (the repository grows without limit)".into();
        }
        let mut parts = Vec::new();
        match (self.full, self.full_type) {
            (Some(n), FullType::Count) => parts.push(format!("{n} full backups")),
            (Some(n), FullType::Time) => parts.push(format!("full backups of the last {n} days")),
            (None, _) => {}
        }
        if let Some(n) = self.diff {
            parts.push(format!("{n} differential backups"));
        }
        if let Some(w) = self.window {
            parts.push(format!("a recovery window of {}", describe_duration(w)));
        }
        if self.min_full > 0 {
            parts.push(format!("at least {} full backups", self.min_full));
        }
        if let Some(n) = self.archive {
            let kinds = match self.archive_type {
                BackupKind::Full => "full backups",
                BackupKind::Diff => "full or differential backups",
                BackupKind::Incr => "backups",
            };
            parts.push(format!(
                "WAL for point-in-time recovery from the {n} newest {kinds} only"
            ));
        }
        parts.join(", ")
    }
}

fn describe_duration(d: Duration) -> String {
    if d.num_days() > 0 && d == Duration::days(d.num_days()) {
        format!("{} days", d.num_days())
    } else if d.num_hours() > 0 && d == Duration::hours(d.num_hours()) {
        format!("{} hours", d.num_hours())
    } else {
        format!("{} minutes", d.num_minutes())
    }
}

/// Why a backup is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Pinned (`backup_keep`, `strata annotate --keep`).
    Pinned,
    /// A restore running (or the recovery after it) holds a lease on it (see `lease`).
    Leased,
    /// A policy keeps it (which one).
    Policy(String),
    /// Another kept backup is built on it.
    Base(Label),
}

/// What to keep and what to expire, newest first in `expire` (dependents before what they build on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub keep: BTreeMap<Label, Keep>,
    /// Backups to expire, each with why, in the order to remove them (newest first).
    pub expire: Vec<(Label, String)>,
}

/// Decides what `policy` keeps of `backups` (heads, any order) at `now`; `pinned` backups are kept
/// whatever the policy.
pub fn decide(
    backups: &[ManifestHead],
    policy: &Policy,
    pinned: &[Label],
    now: DateTime<Utc>,
) -> Decision {
    let mut sorted: Vec<&ManifestHead> = backups.iter().collect();
    sorted.sort_by(|a, b| {
        a.stop_time
            .cmp(&b.stop_time)
            .then(a.stop_lsn.cmp(&b.stop_lsn))
            .then(a.label.cmp(&b.label))
    });
    let mut keep: BTreeMap<Label, Keep> = BTreeMap::new();
    for m in &sorted {
        if pinned.contains(&m.label) {
            keep.insert(m.label.clone(), Keep::Pinned);
        }
    }
    let mut kept_by = |m: &ManifestHead, why: &str| {
        keep.entry(m.label.clone())
            .or_insert_with(|| Keep::Policy(why.to_string()));
    };
    if !policy.is_set() {
        for m in &sorted {
            kept_by(m, "no retention policy");
        }
        return Decision {
            keep,
            expire: Vec::new(),
        };
    }
    let fulls: Vec<&ManifestHead> = sorted
        .iter()
        .copied()
        .filter(|m| m.kind == BackupKind::Full)
        .collect();
    // The fulls (and diffs) a count or time policy keeps, with everything built on them.
    let mut kept_bases: BTreeSet<Label> = BTreeSet::new();
    match (policy.full, policy.full_type) {
        (Some(n), FullType::Count) => {
            for m in fulls.iter().rev().take(n as usize) {
                kept_bases.insert(m.label.clone());
            }
        }
        (Some(days), FullType::Time) => {
            let cut = now - Duration::days(i64::from(days));
            let mut older_kept = false;
            for m in fulls.iter().rev() {
                if m.stop_time >= cut {
                    kept_bases.insert(m.label.clone());
                } else if !older_kept {
                    kept_bases.insert(m.label.clone());
                    older_kept = true;
                }
            }
        }
        (None, _) => {}
    }
    for m in fulls.iter().rev().take(policy.min_full as usize) {
        kept_bases.insert(m.label.clone());
    }
    // With a diff policy, the N newest of the diffs and fulls (a full counts as one); a diff beyond
    // them expires even when its full is kept, and the incrementals built on it with it.
    let kept_diffs: Option<BTreeSet<Label>> = policy.diff.map(|n| {
        sorted
            .iter()
            .rev()
            .filter(|m| matches!(m.kind, BackupKind::Full | BackupKind::Diff))
            .take(n as usize)
            .map(|m| m.label.clone())
            .collect()
    });
    for m in &sorted {
        let full = m.references.first().unwrap_or(&m.label);
        let base = nearest_base(m).unwrap_or(&m.label);
        let keeps = match &kept_diffs {
            None => kept_bases.contains(full),
            Some(diffs) => match m.kind {
                BackupKind::Full => kept_bases.contains(&m.label) || diffs.contains(&m.label),
                BackupKind::Diff => diffs.contains(&m.label),
                BackupKind::Incr => {
                    diffs.contains(base)
                        || (base.kind() == BackupKind::Full && kept_bases.contains(base))
                }
            },
        };
        if keeps {
            if m.kind == BackupKind::Full {
                kept_by(m, "retention policy");
            } else {
                kept_by(m, "built on a backup the policy keeps");
            }
        }
    }
    if let Some(window) = policy.window {
        let cut = now - window;
        let mut base_kept = false;
        for m in sorted.iter().rev() {
            if m.stop_time >= cut {
                kept_by(m, "inside the recovery window");
            } else if !base_kept {
                kept_by(m, "the base for the start of the recovery window");
                base_kept = true;
            }
        }
    }
    // Whatever a kept backup is built on is kept: the references decide (to a fixed point, not
    // trusting any one manifest's list to be its whole chain).
    let by_label: BTreeMap<&Label, &ManifestHead> = sorted.iter().map(|m| (&m.label, *m)).collect();
    let mut todo: Vec<Label> = keep.keys().cloned().collect();
    while let Some(label) = todo.pop() {
        if let Some(m) = by_label.get(&label) {
            for r in m.references.iter().chain(&m.prior) {
                if !keep.contains_key(r) {
                    keep.insert(r.clone(), Keep::Base(label.clone()));
                    todo.push(r.clone());
                }
            }
        }
    }
    // Dependents before what they are built on: a longer chain first (it grows along a chain, whatever
    // the clocks said), then the newest.
    let mut expiring: Vec<&&ManifestHead> = sorted
        .iter()
        .filter(|m| !keep.contains_key(&m.label))
        .collect();
    expiring.sort_by(|a, b| {
        b.references
            .len()
            .cmp(&a.references.len())
            .then(b.stop_time.cmp(&a.stop_time))
            .then(b.label.cmp(&a.label))
    });
    let expire = expiring
        .into_iter()
        .map(|m| {
            (
                m.label.clone(),
                format!("not kept by the retention policy ({})", policy.describe()),
            )
        })
        .collect();
    Decision { keep, expire }
}

/// Which archived WAL and summaries the kept backups need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalNeed {
    /// Every segment from this LSN on is kept: point-in-time recovery from the backups started here
    /// or later.
    pub pitr_from: Lsn,
    /// Summaries are kept from here: `pitr_from`, or the newest kept full's start if older (the next
    /// differential is built on that full and reads the summaries from its start).
    pub summaries_from: Lsn,
    /// The kept backups older than `pitr_from`, each kept with the WAL from its start to its stop only
    /// (it restores to its end, not to a point after): LSN ranges `[start, stop]`.
    pub consistency: Vec<(Label, Lsn, Lsn)>,
}

impl WalNeed {
    /// Whether WAL covering `[from, to)` is needed by a kept backup.
    pub fn needs(&self, from: Lsn, to: Lsn) -> bool {
        to > self.pitr_from
            || self
                .consistency
                .iter()
                .any(|(_, start, stop)| from <= *stop && to > *start)
    }
}

/// The WAL the `kept` backups need under `policy` (`None` when nothing is kept). Without
/// `retention_archive`, every segment from the oldest kept backup's start; with it, every segment from
/// the start of the N newest kept backups of `archive_type` (a full counts as a diff, and both as an
/// incr, as in pgBackRest), and the older kept backups' own start-to-stop WAL.
pub fn wal_need(kept: &[&ManifestHead], policy: &Policy) -> Option<WalNeed> {
    let oldest_start = kept.iter().map(|m| m.start_lsn).min()?;
    let counts = |m: &ManifestHead| match policy.archive_type {
        BackupKind::Full => m.kind == BackupKind::Full,
        BackupKind::Diff => m.kind != BackupKind::Incr,
        BackupKind::Incr => true,
    };
    let pitr_from = match policy.archive {
        None => oldest_start,
        Some(n) => {
            let mut of_type: Vec<&&ManifestHead> = kept.iter().filter(|m| counts(m)).collect();
            of_type.sort_by(|a, b| b.stop_lsn.cmp(&a.stop_lsn).then(b.label.cmp(&a.label)));
            if of_type.len() <= n as usize {
                oldest_start
            } else {
                of_type[..n as usize]
                    .iter()
                    .map(|m| m.start_lsn)
                    .min()
                    .unwrap_or(oldest_start)
            }
        }
    };
    let newest_full_start = kept
        .iter()
        .filter(|m| m.kind == BackupKind::Full)
        .max_by_key(|m| m.stop_lsn)
        .map(|m| m.start_lsn);
    let summaries_from = newest_full_start.map_or(pitr_from, |s| s.min(pitr_from));
    let mut consistency: Vec<(Label, Lsn, Lsn)> = kept
        .iter()
        .filter(|m| m.start_lsn < pitr_from)
        .map(|m| (m.label.clone(), m.start_lsn, m.stop_lsn))
        .collect();
    consistency.sort_by_key(|c| c.1);
    Some(WalNeed {
        pitr_from,
        summaries_from,
        consistency,
    })
}

/// The newest full or diff of a backup's chain (itself for a full or diff).
fn nearest_base(m: &ManifestHead) -> Option<&Label> {
    match m.kind {
        BackupKind::Full | BackupKind::Diff => Some(&m.label),
        BackupKind::Incr => m
            .references
            .iter()
            .rev()
            .find(|r| matches!(r.kind(), BackupKind::Full | BackupKind::Diff)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    fn t(day: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-{day:02}T02:00:00Z"))
            .unwrap()
            .to_utc()
    }

    /// A backup taken on day `day` of `kind`, built on `chain` (oldest first).
    fn backup(day: u32, kind: BackupKind, chain: &[&ManifestHead]) -> ManifestHead {
        let mut m = sample().head;
        let full = chain.first().map(|f| &f.label);
        m.label = Label::new(kind, full, t(day));
        m.kind = kind;
        m.references = chain.iter().map(|b| b.label.clone()).collect();
        m.prior = chain.last().map(|b| b.label.clone());
        m.start_time = t(day);
        m.stop_time = t(day) + Duration::minutes(5);
        m.start_lsn = Lsn(u64::from(day) << 24);
        m.stop_lsn = Lsn((u64::from(day) << 24) + 0x100);
        m
    }

    /// Four fulls (days 1, 8, 15, 22), each with an incr the next day, and a diff on day 24.
    fn history() -> Vec<ManifestHead> {
        let mut all = Vec::new();
        let mut last_full = None;
        for day in [1, 8, 15, 22] {
            let f = backup(day, BackupKind::Full, &[]);
            let i = backup(day + 1, BackupKind::Incr, &[&f]);
            all.push(f.clone());
            all.push(i);
            last_full = Some(f);
        }
        let f = last_full.unwrap();
        let d = backup(24, BackupKind::Diff, &[&f]);
        let i = backup(25, BackupKind::Incr, &[&f, &d]);
        all.push(d);
        all.push(i);
        all
    }

    fn expired_days(d: &Decision) -> Vec<String> {
        d.expire.iter().map(|(l, _)| l.to_string()).collect()
    }

    fn kept(d: &Decision, m: &ManifestHead) -> bool {
        d.keep.contains_key(&m.label)
    }

    #[test]
    fn without_a_policy_nothing_expires() {
        let all = history();
        let d = decide(&all, &Policy::default(), &[], t(30));
        assert!(d.expire.is_empty());
        assert_eq!(d.keep.len(), all.len());
        assert!(Policy::default().describe().contains("grows without limit"));
    }

    #[test]
    fn count_keeps_the_newest_fulls_with_everything_built_on_them() {
        let all = history();
        let policy = Policy {
            full: Some(2),
            ..Default::default()
        };
        let d = decide(&all, &policy, &[], t(30));
        // Fulls of days 1 and 8 and their incrs go, newest first; the rest stays.
        assert_eq!(
            expired_days(&d),
            // Dependents (longer chains) first, then the fulls, newest first.
            vec![
                all[3].label.to_string(),
                all[1].label.to_string(),
                all[2].label.to_string(),
                all[0].label.to_string()
            ]
        );
        for m in &all[4..] {
            assert!(kept(&d, m), "{}", m.label);
        }
        // Minimum redundancy wins over a smaller count.
        let d = decide(
            &all,
            &Policy {
                full: Some(1),
                min_full: 3,
                ..Default::default()
            },
            &[],
            t(30),
        );
        assert_eq!(d.expire.len(), 2);
    }

    #[test]
    fn diff_retention_counts_a_full_as_one_and_incrs_go_with_their_base() {
        let all = history();
        let d = decide(
            &all,
            &Policy {
                full: Some(2),
                diff: Some(1),
                ..Default::default()
            },
            &[],
            t(30),
        );
        // The diff is the newest of diffs and fulls: kept, with its incr and its full.
        assert!(kept(&d, &all[8]) && kept(&d, &all[9]) && kept(&d, &all[6]));
        // With diff = 1 alone (no full policy) only the diff, its base and its incr stay.
        let d = decide(
            &all,
            &Policy {
                diff: Some(1),
                ..Default::default()
            },
            &[],
            t(30),
        );
        let kept_labels: Vec<String> = d.keep.keys().map(|l| l.to_string()).collect();
        assert_eq!(
            kept_labels,
            vec![
                all[6].label.to_string(),
                all[8].label.to_string(),
                all[9].label.to_string()
            ]
        );
        // The incr of day 23, built on the kept full of day 22 but not on the diff, goes.
        assert!(!kept(&d, &all[7]));
    }

    #[test]
    fn time_keeps_the_newest_full_older_than_the_period() {
        let all = history();
        let policy = Policy {
            full: Some(10),
            full_type: FullType::Time,
            ..Default::default()
        };
        // Now day 30, 10 days: fulls of days 22 (inside) and 15 (the newest before day 20) stay.
        let d = decide(&all, &policy, &[], t(30));
        assert!(kept(&d, &all[4]) && kept(&d, &all[6]));
        assert!(!kept(&d, &all[2]) && !kept(&d, &all[0]));
        assert_eq!(d.expire.len(), 4);
    }

    #[test]
    fn the_recovery_window_keeps_its_base_and_chains() {
        let all = history();
        let policy = Policy {
            window: Some(Duration::days(5)),
            ..Default::default()
        };
        // Now day 26: the window starts on day 21; the newest backup ended before it is the incr of
        // day 16, kept with its full (day 15); everything older goes.
        let d = decide(&all, &policy, &[], t(26));
        assert!(kept(&d, &all[5]), "the base for the window's start");
        assert!(matches!(d.keep.get(&all[4].label), Some(Keep::Base(_))));
        for m in &all[..4] {
            assert!(!kept(&d, m), "{}", m.label);
        }
        // Two policies: the union (count 3 keeps the full of day 8 too).
        let d = decide(
            &all,
            &Policy {
                full: Some(3),
                ..policy.clone()
            },
            &[],
            t(26),
        );
        assert!(kept(&d, &all[2]) && kept(&d, &all[3]));
        assert!(!kept(&d, &all[0]));
    }

    #[test]
    fn a_pinned_backup_is_kept_with_its_chain_whatever_the_policy() {
        let all = history();
        let policy = Policy {
            full: Some(1),
            ..Default::default()
        };
        // The incr of day 2 pinned: it and its full stay; the full of day 8 and its incr go.
        let d = decide(&all, &policy, &[all[1].label.clone()], t(30));
        assert_eq!(d.keep.get(&all[1].label), Some(&Keep::Pinned));
        assert!(matches!(d.keep.get(&all[0].label), Some(Keep::Base(_))));
        assert!(!kept(&d, &all[2]) && !kept(&d, &all[3]));
    }

    #[test]
    fn settings_are_checked_naming_the_setting() {
        let conf = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (format!("strata.{k}"), v.to_string()))
                .collect();
            Policy::from_settings(move |n| {
                pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        let p = conf(&[("retention_full", "2"), ("retention_window", "2 weeks")]).unwrap();
        assert_eq!(p.full, Some(2));
        assert_eq!(p.window, Some(Duration::days(14)));
        assert!(p.describe().contains("2 full backups") && p.describe().contains("14 days"));
        let p = conf(&[
            ("retention_full", "0"),
            ("retention_window", "7days"),
            ("retention_full_type", "TIME"),
        ])
        .unwrap();
        assert_eq!(
            (p.full, p.window, p.full_type),
            (None, Some(Duration::days(7)), FullType::Time)
        );
        for (name, value) in [
            ("retention_full", "-1"),
            ("retention_window", "7 dayss"),
            ("retention_diff", "two"),
            ("retention_full_type", "weekly"),
            ("retention_window", "7 fortnights"),
            ("retention_window", "soon"),
            ("retention_window", "-3 days"),
            ("retention_min_full", "x"),
        ] {
            let e = conf(&[(name, value)]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("strata.{name}")) && e.contains(value),
                "{e}"
            );
        }
    }
}
