//! Which data keys a stanza's stored objects use, for `strata info`. A key leaves use when what was
//! sealed with it is expired (a full backup taken after `rekey --new-data-key`, then an expiry of the
//! older backups and WAL), but it never leaves the keyring: whatever still uses it must decrypt.
//!
//! Read from the object headers (the key id is in clear), a few per directory: data is sealed with the
//! key current when it is written, and keys only go up, so the oldest and the newest object of a
//! directory bound what it uses. Per backup: its first and last data object (numbered in the order
//! written) and its manifest (written last): the backup uses every key from the lowest to the highest of
//! them. For archived WAL and summaries: the oldest and the newest object of each directory, and the
//! archive uses every key from the lowest to the highest. A few ranged reads per backup and directory,
//! whatever the repository's size. An object whose header cannot be read is left out (`strata verify`
//! reports damage; this only describes).

use crate::object::{ObjectHeader, SEALED_HEADER_LEN};
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::Result;
use std::collections::{BTreeMap, BTreeSet};

/// The keys in use in one stanza.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Key id -> the backups that have objects sealed with it.
    pub backups: BTreeMap<u32, BTreeSet<String>>,
    /// The key ids of the archive's oldest and newest objects (WAL files and summaries); None when
    /// the archive is empty.
    pub archive: Option<(u32, u32)>,
}

impl KeyUsage {
    /// What uses key `id`, for `strata info`: "backups A, B; archived WAL", or "nothing stored".
    pub fn describe(&self, id: u32) -> String {
        let mut uses = Vec::new();
        if let Some(labels) = self.backups.get(&id) {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            uses.push(format!("backups {}", labels.join(", ")));
        }
        if self.archive.is_some_and(|(lo, hi)| (lo..=hi).contains(&id)) {
            uses.push("archived WAL and summaries".to_string());
        }
        if uses.is_empty() {
            "nothing stored uses it any more".to_string()
        } else {
            uses.join("; ")
        }
    }
}

/// The key id in the header of `key`'s first object; None for an unreadable or unsealed header.
fn key_of(repo: &Repo, key: &RepoKey) -> Option<u32> {
    let head = repo
        .storage()
        .get_range(key, 0, SEALED_HEADER_LEN as u64)
        .ok()??;
    ObjectHeader::decode(key.as_str(), &head)
        .ok()?
        .sealed
        .map(|(id, _)| id)
}

/// Groups listed keys by their parent directory, each group sorted by name.
fn by_directory(keys: Vec<(RepoKey, u64)>) -> BTreeMap<String, Vec<RepoKey>> {
    let mut dirs: BTreeMap<String, Vec<RepoKey>> = BTreeMap::new();
    for (key, _) in keys {
        let dir = key
            .as_str()
            .rsplit_once('/')
            .map_or("", |(d, _)| d)
            .to_string();
        dirs.entry(dir).or_default().push(key);
    }
    for v in dirs.values_mut() {
        v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    }
    dirs
}

/// The key usage of `repo`'s stanza (encrypted or not: an unencrypted one uses no key).
pub fn key_usage(repo: &Repo, backup_labels: &[String]) -> Result<KeyUsage> {
    let mut usage = KeyUsage::default();
    for label in backup_labels {
        let mut listed = repo.storage().list(&repo.keys().backup_dir(label)?)?;
        listed.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let data: Vec<&RepoKey> = listed
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.as_str().contains("/data/"))
            .collect();
        let manifest = repo.keys().backup_manifest(label)?;
        let ids: Vec<u32> = [data.first().copied(), data.last().copied(), Some(&manifest)]
            .into_iter()
            .flatten()
            .filter_map(|k| key_of(repo, k))
            .collect();
        if let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) {
            for id in lo..=hi {
                usage.backups.entry(id).or_default().insert(label.clone());
            }
        }
    }
    let mut ends = Vec::new();
    for root in [repo.keys().archive_root(), repo.keys().summary_root()] {
        for keys in by_directory(repo.storage().list(&root)?).values() {
            for key in [keys.first(), keys.last()].into_iter().flatten() {
                ends.extend(key_of(repo, key));
            }
        }
    }
    usage.archive = match (ends.iter().min(), ends.iter().max()) {
        (Some(&lo), Some(&hi)) => Some((lo, hi)),
        _ => None,
    };
    Ok(usage)
}
