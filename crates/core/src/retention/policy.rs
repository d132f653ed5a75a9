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
    // As PostgreSQL reads an integer setting (`0x3`, `1.6`), since the server's are such settings.
    match crate::config::pg_int::parse_pg_int(v) {
        // As the server reads it: 0 is no limit.
        Some(0) => Ok(None),
        Some(n @ 1..=9_999_999) => Ok(Some(n as u32)),
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
#[path = "policy_tests.rs"]
mod tests;
