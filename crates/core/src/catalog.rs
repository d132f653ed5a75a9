//! The catalog: which backups a stanza holds and which WAL its archive covers, read from the
//! repository itself (no separate index that could disagree with it). A backup exists when its
//! manifest exists; a backup directory without one is a backup in progress (here or on another server
//! writing the stanza) or the garbage of a failed or killed one (`backup::claim` tells them apart).

use crate::compress::CompressType;
use crate::manifest::{self, Manifest};
use crate::paths::RepoPaths;
use crate::storage::Storage;
use crate::{Error, Result};
use pgformat::lsn::{segment_file_name, WalFileName};
use std::collections::BTreeMap;

/// Labels of the backup directories under `backup/`, split into committed (with a manifest) and
/// incomplete (without one).
pub fn backup_labels(storage: &Storage, paths: &RepoPaths) -> Result<(Vec<String>, Vec<String>)> {
    let mut done = Vec::new();
    let mut incomplete = Vec::new();
    for dir in storage.list_dirs(&paths.backup_root())? {
        let label = dir.rsplit('/').next().unwrap_or(&dir).to_string();
        if storage.exists(&paths.backup_manifest(&label))? {
            done.push(label);
        } else {
            incomplete.push(label);
        }
    }
    Ok((done, incomplete))
}

/// Reads one backup's manifest; a clear error when there is no such backup.
pub fn load(storage: &Storage, paths: &RepoPaths, label: &str) -> Result<Manifest> {
    let key = paths.backup_manifest(label);
    let bytes = if manifest::is_label(label) {
        storage.get(&key)?
    } else {
        None
    };
    let Some(bytes) = bytes else {
        return Err(Error::Other(format!(
            "backup '{label}' not found in {} stanza '{}'; `strata info` lists the backups",
            storage.url().display(),
            paths.stanza()
        )));
    };
    let m = Manifest::from_json(&key, &bytes)?;
    if m.label != label {
        return Err(Error::CorruptObject {
            key,
            reason: format!("the manifest says it belongs to backup {}", m.label),
        });
    }
    Ok(m)
}

/// Every committed backup, oldest first; fails on the first manifest that cannot be read.
pub fn list_backups(storage: &Storage, paths: &RepoPaths) -> Result<Vec<Manifest>> {
    let (labels, _) = backup_labels(storage, paths)?;
    labels.iter().map(|l| load(storage, paths, l)).collect()
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
pub fn list_backups_tolerant(storage: &Storage, paths: &RepoPaths) -> Result<Listing> {
    let (labels, _) = backup_labels(storage, paths)?;
    let mut listing = Listing::default();
    for label in labels {
        match load(storage, paths, &label) {
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
pub fn archive_ranges(storage: &Storage, paths: &RepoPaths) -> Result<Vec<WalRange>> {
    let mut by_tli: BTreeMap<u32, WalRange> = BTreeMap::new();
    for (key, _) in storage.list(&paths.archive_root())? {
        let file = key.rsplit('/').next().unwrap_or(&key);
        let name = file.split('.').next().unwrap_or(file);
        // A segment's object is "<24 hex>.<ext>"; anything with more dots is partial/backup/history.
        if name.len() != 24 || file.matches('.').count() != 1 {
            continue;
        }
        let Ok(tli) = u32::from_str_radix(&name[..8], 16) else {
            continue;
        };
        let r = by_tli.entry(tli).or_insert_with(|| WalRange {
            timeline: tli,
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
/// history file when `with_history`, that the archive does not hold (under any compression).
pub fn missing_wal(
    storage: &Storage,
    paths: &RepoPaths,
    first: &str,
    last: &str,
    wal_segment_size: u32,
    with_history: bool,
) -> Result<Vec<String>> {
    let parse = |name: &str| match WalFileName::parse(name, wal_segment_size) {
        Some(WalFileName::Segment { timeline, segno }) => Ok((timeline, segno)),
        _ => Err(Error::Other(format!("{name} is not a WAL segment name"))),
    };
    let (timeline, from) = parse(first)?;
    let (_, to) = parse(last)?;
    let mut needed: Vec<String> = (from..=to)
        .map(|n| segment_file_name(timeline, n, wal_segment_size))
        .collect();
    if with_history && timeline > 1 {
        needed.push(format!("{timeline:08X}.history"));
    }
    let mut missing = Vec::new();
    for name in needed {
        let mut found = false;
        for c in CompressType::ALL {
            if storage.exists(&paths.archive_file(&name, c, wal_segment_size)?)? {
                found = true;
                break;
            }
        }
        if !found {
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
        let s = Storage::open(&RepoUrl::Local(dir.path().into())).unwrap();
        let p = RepoPaths::new("main");
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
            s.put_new(&p.backup_manifest(&m.label), m.to_json())
                .unwrap();
        }
        assert_eq!(list_backups(&s, &p).unwrap().len(), 3);

        // The first full's manifest damaged: listed apart, and the incr built on it is not usable.
        std::fs::write(
            dir.path().join(p.backup_manifest(&full.label)),
            b"{ not json",
        )
        .unwrap();
        assert!(list_backups(&s, &p).is_err());
        let listing = list_backups_tolerant(&s, &p).unwrap();
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
