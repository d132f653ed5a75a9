//! The catalog: which backups a stanza holds and which WAL its archive covers, read from the
//! repository itself (no separate index that could disagree with it). A backup exists when its
//! manifest exists; a backup directory without one is a backup in progress (here or on another server
//! writing the stanza) or the garbage of a failed or killed one (`backup::claim` tells them apart).

use crate::manifest::Manifest;
use crate::paths::RepoKeys;
use crate::repo::Repo;
use crate::{Error, Result};
use pgformat::lsn::{history_file_name, segment_file_name, WalFileName};
use std::collections::BTreeMap;

/// Labels of the backup directories under `backup/`, split into committed (with a manifest) and
/// incomplete (without one).
pub fn backup_labels(repo: &Repo) -> Result<(Vec<String>, Vec<String>)> {
    let mut done = Vec::new();
    let mut incomplete = Vec::new();
    let storage = repo.storage();
    for dir in storage.list_dirs(&repo.keys().backup_root())? {
        let label = RepoKeys::label_of_backup_dir(&dir).to_string();
        // A directory whose name is no label is nothing pg_strata wrote: not a backup.
        let Ok(key) = repo.keys().backup_manifest(&label) else {
            continue;
        };
        if storage.exists(&key)? {
            done.push(label);
        } else {
            incomplete.push(label);
        }
    }
    Ok((done, incomplete))
}

/// Reads one backup's manifest; a clear error when there is no such backup.
pub fn load(repo: &Repo, label: &str) -> Result<Manifest> {
    let not_found = || Error::BackupNotFound {
        label: label.to_string(),
        repo: repo.describe(),
        stanza: repo.stanza().to_string(),
    };
    let key = repo
        .keys()
        .backup_manifest(label)
        .map_err(|_| not_found())?;
    let bytes = repo.storage().get(&key)?.ok_or_else(not_found)?;
    let m = Manifest::from_json(key.as_str(), &bytes)?;
    if m.label != label {
        return Err(Error::CorruptObject {
            key: key.to_string(),
            reason: format!("the manifest says it belongs to backup {}", m.label),
        });
    }
    Ok(m)
}

/// Every committed backup, oldest first; fails on the first manifest that cannot be read.
pub fn list_backups(repo: &Repo) -> Result<Vec<Manifest>> {
    let (labels, _) = backup_labels(repo)?;
    labels.iter().map(|l| load(repo, l)).collect()
}

/// The committed backups of a stanza, with the damaged ones set apart instead of failing the listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Backups whose manifest reads, oldest first.
    pub sound: Vec<Manifest>,
    /// Backups whose manifest exists but cannot be read: label and why.
    pub damaged: Vec<(String, String)>,
}

impl Listing {
    /// The sound backups whose whole chain is sound too: those a new diff or incr may build on.
    pub fn usable(&self) -> Vec<Manifest> {
        self.sound
            .iter()
            .filter(|m| {
                !m.references
                    .iter()
                    .any(|r| self.damaged.iter().any(|(d, _)| d == r))
            })
            .cloned()
            .collect()
    }
}

/// Every committed backup, oldest first; one damaged manifest does not hide the others (for listings
/// and for choosing a reference; a restore of a named backup uses `load`).
pub fn list_backups_tolerant(repo: &Repo) -> Result<Listing> {
    let (labels, _) = backup_labels(repo)?;
    let mut listing = Listing::default();
    for label in labels {
        match load(repo, &label) {
            Ok(m) => listing.sound.push(m),
            Err(e) => listing.damaged.push((label, e.to_string())),
        }
    }
    Ok(listing)
}

/// The WAL an archive holds, per timeline: first and last segment file names and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
}

/// Scans `archive/` for WAL segments (not .partial, .backup or .history) per timeline.
pub fn archive_ranges(repo: &Repo, wal_segment_size: u32) -> Result<Vec<WalRange>> {
    let mut by_tli: BTreeMap<u32, WalRange> = BTreeMap::new();
    for (key, _) in repo.storage().list(&repo.keys().archive_root())? {
        let Some(WalFileName::Segment { timeline, .. }) =
            RepoKeys::parse_archive_key(&key, wal_segment_size)
        else {
            continue;
        };
        let name = key.file_name();
        let r = by_tli.entry(timeline).or_insert_with(|| WalRange {
            timeline,
            first: name.to_string(),
            last: name.to_string(),
            segments: 0,
        });
        r.segments += 1;
        if name < r.first.as_str() {
            r.first = name.to_string();
        }
        if name > r.last.as_str() {
            r.last = name.to_string();
        }
    }
    Ok(by_tli.into_values().collect())
}

/// The WAL files of the range `first..=last` (segment names on one timeline), and the timeline's
/// history file when `with_history`, that the archive does not hold. One request per file.
pub fn missing_wal(
    repo: &Repo,
    first: &str,
    last: &str,
    wal_segment_size: u32,
    with_history: bool,
) -> Result<Vec<String>> {
    let parse = |name: &str| match WalFileName::parse(name, wal_segment_size) {
        Some(WalFileName::Segment { timeline, segno }) => Ok((timeline, segno)),
        _ => Err(Error::BadWalFileName {
            what: name.to_string(),
        }),
    };
    let (timeline, from) = parse(first)?;
    let (_, to) = parse(last)?;
    let mut needed: Vec<String> = (from..=to)
        .map(|n| segment_file_name(timeline, n, wal_segment_size))
        .collect();
    if with_history && timeline > 1 {
        needed.push(history_file_name(timeline));
    }
    let mut missing = Vec::new();
    for name in needed {
        if !repo.wal_exists(&name, wal_segment_size)? {
            missing.push(name);
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoUrl;

    #[test]
    fn a_damaged_manifest_is_set_apart_and_its_dependents_are_not_usable() {
        let dir = tempfile::tempdir().unwrap();
        let r = Repo::open(&RepoUrl::Local(dir.path().into()), "main").unwrap();
        let (s, p) = (r.storage(), r.keys());
        let mut full = crate::manifest::tests::sample();
        full.label = "20261123-020000F".into();
        let mut incr = full.clone();
        incr.label = "20261123-020000F_20261124-020000I".into();
        incr.kind = crate::manifest::BackupKind::Incr;
        incr.prior = Some(full.label.clone());
        incr.references = vec![full.label.clone()];
        let mut other = full.clone();
        other.label = "20261125-020000F".into();
        for m in [&full, &incr, &other] {
            s.put_new(&p.backup_manifest(&m.label).unwrap(), m.to_json())
                .unwrap();
        }
        assert_eq!(list_backups(&r).unwrap().len(), 3);

        // The first full's manifest damaged: listed apart, and the incr built on it is not usable.
        std::fs::write(
            dir.path()
                .join(p.backup_manifest(&full.label).unwrap().as_str()),
            b"{ not json",
        )
        .unwrap();
        assert!(list_backups(&r).is_err());
        let listing = list_backups_tolerant(&r).unwrap();
        assert_eq!(listing.damaged.len(), 1);
        assert_eq!(listing.damaged[0].0, full.label);
        assert!(
            listing.damaged[0].1.contains("manifest.json"),
            "{}",
            listing.damaged[0].1
        );
        let sound: Vec<_> = listing.sound.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(sound, vec![incr.label.as_str(), other.label.as_str()]);
        let usable: Vec<_> = listing.usable().into_iter().map(|m| m.label).collect();
        assert_eq!(usable, vec![other.label.clone()]);
    }
}
