//! The catalog: which backups a stanza holds and which WAL its archive covers, read from the
//! repository itself (no separate index that could disagree with it). A backup exists when its
//! manifest exists; a backup directory without one is a backup in progress (here or on another server
//! writing the stanza) or the garbage of a failed or killed one (`backup::claim` tells them apart).

use crate::manifest::{self, Manifest, ManifestHead};
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

fn not_found(repo: &Repo, label: &str) -> Error {
    Error::BackupNotFound {
        label: label.to_string(),
        repo: repo.describe(),
        stanza: repo.stanza().to_string(),
    }
}

/// Reads one backup's whole manifest and checks it (both checksums, then everything in it); a clear
/// error when there is no such backup.
pub fn load(repo: &Repo, label: &str) -> Result<Manifest> {
    let key = repo
        .keys()
        .backup_manifest(label)
        .map_err(|_| not_found(repo, label))?;
    let bytes = repo
        .storage()
        .get(&key)?
        .ok_or_else(|| not_found(repo, label))?;
    let bytes = crate::crypto::manifest::open(repo, &key, bytes)?;
    Manifest::from_bytes(key.as_str(), label, &bytes)
}

/// Reads only the head of one backup's manifest (its first bytes: `manifest::HEAD_READ_SIZE`, more
/// when the head line is longer) and checks it; the body is neither read nor checked.
pub fn load_head(repo: &Repo, label: &str) -> Result<ManifestHead> {
    let key = repo
        .keys()
        .backup_manifest(label)
        .map_err(|_| not_found(repo, label))?;
    let mut len = manifest::HEAD_READ_SIZE;
    loop {
        let Some(bytes) = repo.storage().get_prefix(&key, len)? else {
            return Err(not_found(repo, label));
        };
        let whole = (bytes.len() as u64) < len;
        let (bytes, whole) = match crate::crypto::manifest::open_prefix(repo, &key, bytes, whole)? {
            Ok(opened) => opened,
            Err(needed) => {
                len = needed.clamp(len + 1, manifest::MAX_HEAD_SIZE + 4096);
                continue;
            }
        };
        if let Some(head) = ManifestHead::from_prefix(key.as_str(), label, &bytes, whole)? {
            return Ok(head);
        }
        if len >= manifest::MAX_HEAD_SIZE {
            return Err(Error::CorruptObject {
                key: key.to_string(),
                reason: format!(
                    "the manifest's head line is longer than {} bytes",
                    manifest::MAX_HEAD_SIZE
                ),
            });
        }
        len *= 4;
    }
}

/// The heads of every committed backup, oldest first; fails on the first manifest whose head cannot
/// be read.
pub fn list_backups(repo: &Repo) -> Result<Vec<ManifestHead>> {
    let (labels, _) = backup_labels(repo)?;
    labels.iter().map(|l| load_head(repo, l)).collect()
}

/// The committed backups of a stanza, with the damaged ones set apart instead of failing the listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Backups whose manifest's head reads, oldest first.
    pub sound: Vec<ManifestHead>,
    /// Backups whose manifest exists but cannot be read: label and why.
    pub damaged: Vec<(String, String)>,
}

impl Listing {
    /// The sound backups whose whole chain is sound too: those a new diff or incr may build on.
    pub fn usable(&self) -> Vec<ManifestHead> {
        self.sound
            .iter()
            .filter(|m| {
                !m.references
                    .iter()
                    .any(|r| self.damaged.iter().any(|(d, _)| r == d))
            })
            .cloned()
            .collect()
    }

    /// Moves a backup found damaged after the listing (its body, read later) from sound to damaged.
    pub fn set_damaged(&mut self, label: &str, why: String) {
        self.sound.retain(|m| m.label != label);
        self.damaged.push((label.to_string(), why));
    }
}

/// Every committed backup's head, oldest first; one damaged manifest does not hide the others (for
/// listings and for choosing a reference; a restore of a named backup uses `load`). Reads only the
/// heads: a manifest whose body alone is damaged is listed as sound (`load` refuses it).
pub fn list_backups_tolerant(repo: &Repo) -> Result<Listing> {
    let (labels, _) = backup_labels(repo)?;
    let mut listing = Listing::default();
    for label in labels {
        match load_head(repo, &label) {
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

/// The archived segment numbers of each timeline (one listing of the archive).
pub fn archived_segments(
    repo: &Repo,
    wal_segment_size: u32,
) -> Result<BTreeMap<u32, std::collections::BTreeSet<u64>>> {
    let mut by_tli: BTreeMap<u32, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for (key, _) in repo.storage().list(&repo.keys().archive_root())? {
        if let Some(WalFileName::Segment { timeline, segno }) =
            RepoKeys::parse_archive_key(&key, wal_segment_size)
        {
            by_tli.entry(timeline).or_default().insert(segno);
        }
    }
    Ok(by_tli)
}

/// The first segment after `from` that is missing while a later one of the same timeline is archived
/// (a hole that recovery cannot replay across), up to `upto` when given.
pub fn first_hole(
    segments: &std::collections::BTreeSet<u64>,
    from: u64,
    upto: Option<u64>,
) -> Option<u64> {
    let newest = *segments.last()?;
    let end = upto.map_or(newest, |u| u.min(newest));
    if from > end {
        return None;
    }
    let mut expected = from;
    for &n in segments.range(from..=end) {
        if n != expected {
            return Some(expected);
        }
        expected = n + 1;
    }
    (expected <= end).then_some(expected)
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
    use crate::manifest::tests::{label, sample, sample_incr};
    use crate::manifest::{FileEntry, Piece, StoredObject};

    fn repo() -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let r = Repo::open(&RepoUrl::Local(dir.path().into()), "main").unwrap();
        (dir, r)
    }

    #[test]
    fn a_damaged_manifest_is_set_apart_and_its_dependents_are_not_usable() {
        let (dir, r) = repo();
        let (s, p) = (r.storage(), r.keys());
        let full = sample();
        let incr = sample_incr(&full, "20261123-020000F_20261124-020000I");
        let mut other = full.clone();
        other.label = label("20261125-020000F");
        for m in [&full, &incr, &other] {
            s.put_new(&p.backup_manifest(&m.label).unwrap(), m.to_bytes())
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
        assert_eq!(listing.damaged[0].0, full.label.as_str());
        assert!(
            listing.damaged[0].1.contains("manifest.json"),
            "{}",
            listing.damaged[0].1
        );
        let sound: Vec<_> = listing.sound.iter().map(|m| m.label.as_str()).collect();
        assert_eq!(sound, vec![incr.label.as_str(), other.label.as_str()]);
        let usable: Vec<_> = listing.usable().into_iter().map(|m| m.label).collect();
        assert_eq!(usable, vec![other.label.clone()]);

        // A body found damaged later (only heads were listed): set apart the same way.
        let mut listing = list_backups_tolerant(&r).unwrap();
        listing.set_damaged(&other.label, "its body is damaged".into());
        assert!(listing.usable().is_empty());
        assert_eq!(
            listing.damaged[1],
            (other.label.to_string(), "its body is damaged".into())
        );
    }

    #[test]
    fn a_long_head_is_read_in_steps() {
        let (_dir, r) = repo();
        let (s, p) = (r.storage(), r.keys());
        let mut m = sample();
        m.method_reason = Some("x".repeat(3 * manifest::HEAD_READ_SIZE as usize));
        s.put_new(&p.backup_manifest(&m.label).unwrap(), m.to_bytes())
            .unwrap();
        assert_eq!(load_head(&r, &m.label).unwrap(), m.head);
        assert_eq!(load(&r, &m.label).unwrap(), m);
        let e = load_head(&r, "../x").unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
    }

    /// 300 backups whose manifests have 200 files each: the listing reads and checks only the heads.
    /// Every body is damaged on purpose, so a listing that parsed or checked one would fail; and the
    /// bytes the heads take are counted against the whole manifests.
    #[test]
    fn listing_300_backups_reads_only_their_heads() {
        let (dir, r) = repo();
        let p = r.keys();
        let mut m = sample();
        let template = m.files[0].clone();
        m.files = (0..200)
            .map(|i| FileEntry {
                path: format!("base/5/{}", 16384 + i),
                pieces: vec![Piece {
                    object: format!("data/{i:08}"),
                    ..template.pieces[0].clone()
                }],
                ..template.clone()
            })
            .collect();
        m.objects = (0..200)
            .map(|i| StoredObject {
                name: format!("data/{i:08}"),
                size: 59,
                crc32c: 7,
            })
            .collect();
        let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let (mut head_bytes, mut all_bytes) = (0usize, 0usize);
        let mut labels = Vec::new();
        for i in 0..300 {
            let mut b = m.clone();
            b.label = manifest::Label::new(
                manifest::BackupKind::Full,
                None,
                base + chrono::TimeDelta::hours(i),
            );
            let mut bytes = b.to_bytes();
            let line = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
            head_bytes += line;
            all_bytes += bytes.len();
            bytes[line + 100] ^= 0x20; // the body no longer matches its checksum
            std::fs::create_dir_all(dir.path().join(p.backup_dir(&b.label).unwrap().as_str()))
                .unwrap();
            std::fs::write(
                dir.path()
                    .join(p.backup_manifest(&b.label).unwrap().as_str()),
                &bytes,
            )
            .unwrap();
            labels.push(b.label.clone());
        }
        let started = std::time::Instant::now();
        let listing = list_backups_tolerant(&r).unwrap();
        let took = started.elapsed();
        assert!(listing.damaged.is_empty(), "{:?}", listing.damaged.first());
        let listed: Vec<_> = listing.sound.iter().map(|h| h.label.clone()).collect();
        assert_eq!(listed, labels);
        assert!(listing.sound.iter().all(|h| h.file_count == 200));
        // The heads are a small part of the manifests, and each fits in the first read.
        assert!(head_bytes * 20 < all_bytes, "{head_bytes} of {all_bytes}");
        assert!(head_bytes / 300 < manifest::HEAD_READ_SIZE as usize);
        // A restore reads the whole manifest, and refuses the damaged body naming the backup.
        let e = load(&r, &labels[7]).unwrap_err().to_string();
        assert!(
            e.contains(labels[7].as_str()) && e.contains("modified or damaged"),
            "{e}"
        );
        println!(
            "listed 300 backups from their heads in {took:?}: heads {head_bytes} bytes of \
             {all_bytes} bytes of manifests (at most {} bytes read per head)",
            manifest::HEAD_READ_SIZE
        );
    }
}
