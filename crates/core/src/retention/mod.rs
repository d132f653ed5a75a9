//! Expiry: removing what the retention policy (`policy`) does not keep — backups, then the archived
//! WAL and block-change summaries that no kept backup needs.
//!
//! Crash-safe order. A backup is first marked (`backup/<label>/expiring`), then made invisible by
//! deleting its manifest (one atomic delete: from then on it is not listed and cannot be restored),
//! then its other objects are deleted. A crash anywhere leaves either a whole backup (still listed,
//! expired by the next run) or a directory without manifest carrying the mark, which the next expiry
//! removes first. Dependents go before what they are built on, so a listed backup's chain is always
//! whole. WAL and summaries go last, oldest first, and only below the start of the oldest kept backup:
//! every kept backup keeps the WAL from its start onwards (its consistency and its PITR range).
//!
//! Never racing a backup: while a backup of the stanza is unfinished (a directory without manifest
//! and without the mark), WAL and summaries are not expired (its reference's summaries and its WAL are
//! in use); backups are, since a running backup builds on the newest backup, which every policy keeps.

pub mod lease;
pub mod pin;
pub mod policy;

use crate::catalog;
use crate::manifest::Label;
use crate::paths::{RepoKey, RepoKeys};
use crate::repo::Repo;
use crate::Result;
use chrono::{DateTime, Utc};
use pgformat::lsn::{Lsn, WalFileName};
pub use policy::{decide, wal_need, Decision, Keep, Policy, WalNeed};
use std::collections::BTreeSet;

/// What an expiry removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    pub dry_run: bool,
    pub policy: String,
    /// Backups expired, newest first, with why.
    pub backups: Vec<(Label, String)>,
    /// Directories of backups whose earlier expiry was interrupted, removed now.
    pub leftovers: Vec<String>,
    /// Archived WAL files and summaries expired.
    pub wal_files: u64,
    pub summaries: u64,
    pub bytes: u64,
    /// The oldest LSN from which all WAL is kept (the start of the oldest kept backup, or with
    /// `retention_archive` of the oldest backup whose PITR WAL is kept), if any was.
    pub wal_kept_from: Option<Lsn>,
    /// Kept backups whose WAL after their stop was expired (`retention_archive`): they restore to
    /// their end only.
    pub end_only: Vec<Label>,
    /// Lapsed leases removed, and backups kept because a restore holds a lease on them.
    pub leases_removed: u64,
    pub leased: Vec<Label>,
    /// Why WAL was not expired, when it was not.
    pub wal_note: Option<String>,
}

/// What `policy` keeps now (see `decide`).
pub fn decide_now(
    backups: &[crate::manifest::ManifestHead],
    policy: &Policy,
    pinned: &[Label],
) -> Decision {
    decide(backups, policy, pinned, Utc::now())
}

/// Expires what `policy` does not keep now (see `expire`).
pub fn expire_now(repo: &Repo, policy: &Policy, dry_run: bool) -> Result<ExpiryReport> {
    expire(repo, policy, Utc::now(), dry_run)
}

/// Expires what `policy` does not keep at `now`; with `dry_run` nothing is removed and the report says
/// what would be.
pub fn expire(
    repo: &Repo,
    policy: &Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ExpiryReport> {
    let seg = repo.identity()?.wal_segment_size;
    let mut report = ExpiryReport {
        dry_run,
        policy: policy.describe(),
        ..Default::default()
    };
    if !policy.is_set() {
        report.wal_note = Some("no retention policy: nothing is expired".into());
        return Ok(report);
    }
    let storage = repo.storage();
    let keys = repo.keys();

    // Interrupted expiries first: a directory without manifest that carries the mark, or holds no
    // claim (a backup's first object; an annotation written after its backup was removed leaves such
    // a directory). Other unfinished backups are left to the backups' own clean-up.
    let (_, unfinished) = catalog::backup_labels(repo)?;
    let mut running = Vec::new();
    for label in unfinished {
        let marked = storage.exists(&keys.backup_expiring(&label)?)?;
        if marked || !storage.exists(&keys.backup_claim(&label)?)? {
            report.bytes += size_of(repo, &keys.backup_dir(&label)?)?;
            if !dry_run {
                storage.delete_prefix(&keys.backup_dir(&label)?)?;
            }
            report.leftovers.push(label);
        } else {
            running.push(label);
        }
    }

    let listing = catalog::list_backups_tolerant(repo)?;
    // A backup whose manifest cannot be read (damaged, or a storage error) cannot say what it is built
    // on: nothing is expired until it is repaired or removed.
    if let Some((label, why)) = listing.damaged.first() {
        report.wal_note = Some(format!(
            "backup {label} cannot be read ({why}): nothing is expired until it is repaired or \
             removed"
        ));
        return Ok(report);
    }
    // Restores running elsewhere (see `lease`): what they read is kept.
    let held = lease::read_all(repo, Utc::now())?;
    if let Some((key, why)) = &held.unreadable {
        report.wal_note = Some(format!(
            "lease {key} cannot be read ({why}): nothing is expired until it is removed (it may be \
             a running restore's; delete it once no restore runs)"
        ));
        return Ok(report);
    }
    let pins = pin::pinned(&pin::annotations(
        repo,
        listing.sound.iter().map(|m| &m.label),
    ));
    let mut holds = pins.clone();
    holds.extend(
        listing
            .sound
            .iter()
            .filter(|m| held.holds_backup(&m.label) && !pins.contains(&m.label))
            .map(|m| m.label.clone()),
    );
    let mut decision = decide(&listing.sound, policy, &holds, now);
    for (label, why) in decision.keep.iter_mut() {
        if *why == Keep::Pinned && !pins.contains(label) {
            *why = Keep::Leased;
            report.leased.push(label.clone());
        }
    }
    // A mark left on a backup that is kept (a crash after marking, then the policy changed or a pin).
    for label in decision.keep.keys() {
        let mark = keys.backup_expiring(label)?;
        if !dry_run && storage.exists(&mark)? {
            storage.delete(&mark)?;
        }
    }
    let mut kept: Vec<&crate::manifest::ManifestHead> = listing
        .sound
        .iter()
        .filter(|m| decision.keep.contains_key(&m.label))
        .collect();
    // Backups kept after all (pinned or leased since the decision) with what they are built on.
    let mut spared: BTreeSet<Label> = BTreeSet::new();
    for (label, why) in &decision.expire {
        let dir = keys.backup_dir(label)?;
        if spared.contains(label) || pin::read_or_pinned(repo, label).keep {
            keep_after_all(&listing.sound, label, &mut kept, &mut spared);
            continue;
        }
        let bytes = size_of(repo, &dir)?;
        if !dry_run && !remove_unless_leased(repo, label, why)? {
            report.leased.push(label.clone());
            keep_after_all(&listing.sound, label, &mut kept, &mut spared);
            continue;
        }
        report.bytes += bytes;
        report.backups.push((label.clone(), why.clone()));
    }
    if !dry_run {
        for key in &held.lapsed {
            storage.delete(key)?;
            report.leases_removed += 1;
        }
    }

    // WAL and summaries no kept backup (nor a lease) needs.
    let Some(mut need) = wal_need(&kept, policy) else {
        report.wal_note = Some("no backup is kept: the archive is left as it is".into());
        return Ok(report);
    };
    if let Some(from) = held.wal_from() {
        need.pitr_from = need.pitr_from.min(from);
        need.summaries_from = need.summaries_from.min(from);
        need.consistency
            .retain(|(_, start, _)| *start < need.pitr_from);
    }
    report.wal_kept_from = Some(need.pitr_from);
    report.end_only = need.consistency.iter().map(|(l, _, _)| l.clone()).collect();
    if !running.is_empty() {
        report.wal_note = Some(format!(
            "backup {} is unfinished (running, or abandoned and not yet cleaned up): the archive is \
             left as it is",
            running[0]
        ));
        return Ok(report);
    }
    let mut doomed: Vec<(RepoKey, u64)> = Vec::new();
    for (key, size) in storage.list(&keys.archive_root())? {
        let segno = match RepoKeys::parse_archive_key(&key, seg) {
            Some(
                WalFileName::Segment { segno, .. }
                | WalFileName::Partial { segno, .. }
                | WalFileName::BackupHistory { segno, .. },
            ) => segno,
            // Timeline histories are tiny and every later timeline's history names its ancestors.
            Some(WalFileName::History { .. }) | None => continue,
        };
        let from = Lsn(segno.saturating_mul(u64::from(seg)));
        let to = Lsn((segno + 1).saturating_mul(u64::from(seg)));
        if !need.needs(from, to) {
            doomed.push((key, size));
            report.wal_files += 1;
        }
    }
    for (key, size) in storage.list(&keys.summary_root())? {
        if let Some((_, _, end)) = RepoKeys::parse_summary_key(&key) {
            if end <= need.summaries_from {
                doomed.push((key, size));
                report.summaries += 1;
            }
        }
    }
    // Oldest first, so that an interrupted expiry leaves the archive without a hole.
    doomed.sort_by_key(|(key, _)| archive_order(key, seg));
    for (key, size) in doomed {
        report.bytes += size;
        if !dry_run {
            crate::testhook::pause(crate::testhook::EXPIRE_PAUSE);
            storage.delete(&key)?;
        }
    }
    Ok(report)
}

/// A backup found pinned or leased while expiring is kept after all, with what it is built on: those
/// come later in the expiry order (dependents first) and are spared when their turn comes.
fn keep_after_all<'a>(
    all: &'a [crate::manifest::ManifestHead],
    label: &Label,
    kept: &mut Vec<&'a crate::manifest::ManifestHead>,
    spared: &mut BTreeSet<Label>,
) {
    for m in all.iter().filter(|m| &m.label == label) {
        kept.push(m);
        spared.extend(m.references.iter().chain(&m.prior).cloned());
    }
}

/// Removes one backup unless a restore took a lease on it meanwhile: marks it, then reads the leases
/// (see `lease` for why in this order). Returns whether it was removed.
fn remove_unless_leased(repo: &Repo, label: &Label, why: &str) -> Result<bool> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let mark = keys.backup_expiring(label)?;
    storage.put_replace(&mark, repo.seal(&mark, why.as_bytes().to_vec())?)?;
    let held = lease::read_all(repo, Utc::now())?;
    if held.holds_backup(label) || held.unreadable.is_some() {
        storage.delete(&mark)?;
        return Ok(false);
    }
    remove_marked(repo, label)?;
    Ok(true)
}

/// Removes a marked backup in the crash-safe order: manifest (from then on it is not listed), the
/// other objects, the mark last (whatever a crash leaves is marked, and the next expiry removes it).
fn remove_marked(repo: &Repo, label: &str) -> Result<()> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let dir = keys.backup_dir(label)?;
    let mark = keys.backup_expiring(label)?;
    crate::testhook::pause(crate::testhook::EXPIRE_PAUSE);
    storage.delete(&keys.backup_manifest(label)?)?;
    for (key, _) in storage.list(&dir)? {
        if key != mark {
            crate::testhook::pause(crate::testhook::EXPIRE_PAUSE);
            storage.delete(&key)?;
        }
    }
    storage.delete_prefix(&dir)
}

/// Removes backup `label` and every backup built on it (`strata expire --set`), whatever the policy;
/// refused for a pinned one unless `force`. The archive is left as it is (the policy's expiry trims
/// it).
pub fn expire_set(repo: &Repo, label: &str, force: bool, dry_run: bool) -> Result<ExpiryReport> {
    let target = catalog::load_head(repo, label)?;
    let listing = catalog::list_backups_tolerant(repo)?;
    let mut doomed: Vec<&crate::manifest::ManifestHead> = listing
        .sound
        .iter()
        .filter(|m| m.label == target.label || m.references.contains(&target.label))
        .collect();
    // A backup whose manifest cannot be read might be built on it: refuse rather than orphan it.
    if let Some((damaged, why)) = listing.damaged.first() {
        return Err(crate::Error::StateChanged(format!(
            "backup {damaged} cannot be read ({why}) and may be built on {label}: repair or remove \
             it first"
        )));
    }
    if !force {
        if let Some(m) = doomed
            .iter()
            .find(|m| pin::read_or_pinned(repo, &m.label).keep)
        {
            return Err(crate::Error::Busy(format!(
                "backup {} is pinned (kept whatever the policy): unpin it with strata annotate --set \
                 {} --no-keep, or add --force",
                m.label, m.label
            )));
        }
    }
    // Dependents first.
    doomed.sort_by_key(|m| std::cmp::Reverse(m.references.len()));
    let mut report = ExpiryReport {
        dry_run,
        policy: format!("strata expire --set {label}"),
        wal_note: Some("the archive is left as it is".into()),
        ..Default::default()
    };
    for m in doomed {
        let why = if m.label == target.label {
            "named by --set".to_string()
        } else {
            format!("built on {label}")
        };
        let bytes = size_of(repo, &repo.keys().backup_dir(&m.label)?)?;
        if !dry_run && !remove_unless_leased(repo, &m.label, &why)? {
            return Err(crate::Error::Busy(format!(
                "backup {} is being read by a restore (it holds a lease on it): try again once the \
                 restore and its recovery are done",
                m.label
            )));
        }
        report.bytes += bytes;
        report.backups.push((m.label.clone(), why));
    }
    Ok(report)
}

/// Sort key of an archive or summary object: its LSN.
fn archive_order(key: &RepoKey, seg: u32) -> Lsn {
    match RepoKeys::parse_archive_key(key, seg) {
        Some(
            WalFileName::Segment { segno, .. }
            | WalFileName::Partial { segno, .. }
            | WalFileName::BackupHistory { segno, .. },
        ) => Lsn(segno.saturating_mul(u64::from(seg))),
        _ => RepoKeys::parse_summary_key(key)
            .map(|(_, start, _)| start)
            .unwrap_or(Lsn(0)),
    }
}

fn size_of(repo: &Repo, prefix: &RepoKey) -> Result<u64> {
    Ok(repo
        .storage()
        .list(prefix)?
        .iter()
        .map(|(_, size)| size)
        .sum())
}

#[cfg(test)]
mod tests;
