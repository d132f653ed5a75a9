//! The one place that builds and parses repository keys. Layout under `<repo>/<stanza>/`:
//!
//! ```text
//! strata.repo                                   repository identity (JSON)
//! archive/<TTTTTTTTLLLLLLLL>/<segment>          WAL segments, .partial and .backup files
//! archive/<TTTTTTTT>.history                    timeline history files
//! summary/<TTTTTTTT>/<start>-<end>.blkref       block-change summary of one archived segment
//! backup/<label>/claim.json                     a backup's claim on its label: its first object
//! backup/<label>/manifest.json                  a backup's manifest: its commit point, written last
//! backup/<label>/data/<NNNNNNNN>                file contents: chunks of large files, bundles of small ones
//! backup/<label>/annotation.json                a backup's pin and note (the only object that changes)
//! backup/<label>/expiring                       the mark of a backup being expired (see `retention`)
//! keyring/<NNNNNNNN>.json                       an encrypted stanza's sealed data keys (see `crypto`)
//! ```
//! An archived WAL file's key is its name alone: the compression is recorded in the object's header,
//! so finding a segment is one request whatever it was compressed with (repository format 2; format 1
//! put the compression in the key and is refused, see `identity`). LSNs in keys are 16 hex digits so
//! that keys sort like LSNs. Summaries are grouped by timeline because after a promotion two timelines
//! cover the same LSNs with different WAL.
//!
//! A `RepoKey` can only be made here (or from a listing, checked by the same rules): relative, no empty,
//! `.` or `..` segments, no control characters. So no caller can name an object outside its stanza.

use crate::{Error, Result};
use pgformat::lsn::{history_file_name, segments_per_log, Lsn, TimeLineId, WalFileName};
use std::fmt;

/// The key of one object in a repository. Built only by `RepoKeys` (or checked from a listing).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoKey(String);

impl RepoKey {
    /// Checks a key built here or listed by the store.
    fn checked(key: String) -> Option<RepoKey> {
        let sound = !key.is_empty()
            && key
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..")
            && !key.chars().any(|c| c.is_control() || c == '\\');
        sound.then_some(RepoKey(key))
    }

    /// A key the object store listed (the storage layer's only way to make one): None when it breaks
    /// the rules, which no object written by pg_strata does.
    pub(crate) fn from_listing(key: String) -> Option<RepoKey> {
        RepoKey::checked(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment of the key.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// A key below this one (`name` is one or more segments checked by the key rules).
    fn join(&self, name: &str) -> Result<RepoKey> {
        RepoKey::checked(format!("{}/{name}", self.0)).ok_or_else(|| Error::BadKey {
            key: format!("{}/{name}", self.0),
        })
    }
}

impl fmt::Display for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys of one stanza in one repository.
#[derive(Clone, Debug)]
pub struct RepoKeys {
    stanza: String,
    /// `<stanza>`: the prefix of everything below.
    root: RepoKey,
}

impl RepoKeys {
    /// Keys of a stanza; the name is checked by `config::check_stanza`, the key rules are checked again.
    pub fn new(stanza: &str) -> Result<RepoKeys> {
        crate::config::check_stanza(stanza)?;
        let root = RepoKey::checked(stanza.to_string()).ok_or_else(|| Error::BadKey {
            key: stanza.to_string(),
        })?;
        Ok(RepoKeys {
            stanza: stanza.to_string(),
            root,
        })
    }

    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    /// The stanza's own prefix: everything it holds is below.
    pub fn stanza_root(&self) -> &RepoKey {
        &self.root
    }

    fn under(&self, rest: &str) -> RepoKey {
        // Every `rest` passed here is built by this module from checked parts.
        self.root.join(rest).expect("a key built by RepoKeys")
    }

    pub fn identity(&self) -> RepoKey {
        self.under("strata.repo")
    }

    pub fn archive_root(&self) -> RepoKey {
        self.under("archive")
    }

    /// Key of an archived WAL file (segment, partial, backup history or timeline history): one key per
    /// name, whatever the compression.
    pub fn archive_file(&self, file_name: &str, wal_segment_size: u32) -> Result<RepoKey> {
        let parsed = WalFileName::parse(file_name, wal_segment_size).ok_or_else(|| {
            Error::BadWalFileName {
                what: file_name.to_string(),
            }
        })?;
        Ok(match parsed {
            WalFileName::History { .. } => self.under(&format!("archive/{file_name}")),
            WalFileName::Segment { timeline, segno }
            | WalFileName::Partial { timeline, segno }
            | WalFileName::BackupHistory {
                timeline, segno, ..
            } => {
                let log = segno / segments_per_log(wal_segment_size);
                self.under(&format!("archive/{timeline:08X}{log:08X}/{file_name}"))
            }
        })
    }

    /// Key of a timeline's history file.
    pub fn history_file(&self, timeline: TimeLineId) -> RepoKey {
        self.under(&format!("archive/{}", history_file_name(timeline)))
    }

    /// The WAL file an archive key holds, when it is one (listing `archive/`).
    pub fn parse_archive_key(key: &RepoKey, wal_segment_size: u32) -> Option<WalFileName> {
        WalFileName::parse(key.file_name(), wal_segment_size)
    }

    /// Key of the block-change summary for the WAL of `timeline` in `[start, end)`.
    pub fn summary(&self, timeline: TimeLineId, start: Lsn, end: Lsn) -> RepoKey {
        self.under(&format!(
            "summary/{timeline:08X}/{}-{}.blkref",
            start.to_sortable_hex(),
            end.to_sortable_hex()
        ))
    }

    /// Prefix holding every summary of the stanza.
    pub fn summary_root(&self) -> RepoKey {
        self.under("summary")
    }

    /// Prefix holding all summaries of a timeline.
    pub fn summary_dir(&self, timeline: TimeLineId) -> RepoKey {
        self.under(&format!("summary/{timeline:08X}"))
    }

    /// Parses a summary key back into (timeline, start, end).
    pub fn parse_summary_key(key: &RepoKey) -> Option<(TimeLineId, Lsn, Lsn)> {
        let mut parts = key.as_str().rsplit('/');
        let file = parts.next()?.strip_suffix(".blkref")?;
        let tli = pgformat::lsn::parse_timeline_hex(parts.next()?)?;
        let (start, end) = file.split_once('-')?;
        Some((
            tli,
            Lsn::from_sortable_hex(start)?,
            Lsn::from_sortable_hex(end)?,
        ))
    }

    /// Prefix holding every backup of the stanza.
    pub fn backup_root(&self) -> RepoKey {
        self.under("backup")
    }

    /// The label of a backup directory listed under `backup_root`.
    pub fn label_of_backup_dir(key: &RepoKey) -> &str {
        key.file_name()
    }

    /// Prefix holding one backup (its manifest and data objects). The label must be a well-formed
    /// one (`manifest::is_label`): a label read from a manifest or typed by a user is checked first.
    pub fn backup_dir(&self, label: &str) -> Result<RepoKey> {
        if !crate::manifest::is_label(label) {
            return Err(Error::BadKey {
                key: format!("backup/{label}"),
            });
        }
        Ok(self.under(&format!("backup/{label}")))
    }

    /// Key of a backup's manifest.
    pub fn backup_manifest(&self, label: &str) -> Result<RepoKey> {
        self.backup_dir(label)?.join("manifest.json")
    }

    /// Key of a backup's annotation: its pin and note (see `retention::pin`), the one object of a
    /// backup that changes after it is committed.
    pub fn backup_annotation(&self, label: &str) -> Result<RepoKey> {
        self.backup_dir(label)?.join("annotation.json")
    }

    /// Key of the mark an expiry puts on a backup before removing it (see `retention`).
    pub fn backup_expiring(&self, label: &str) -> Result<RepoKey> {
        self.backup_dir(label)?.join("expiring")
    }

    /// Key of a backup's claim on its label, its first object (see `backup::claim`).
    pub fn backup_claim(&self, label: &str) -> Result<RepoKey> {
        self.backup_dir(label)?.join("claim.json")
    }

    /// Key of one lease a restore holds on what it reads (see `retention::lease`):
    /// `lease-<id>.json` directly in the stanza's directory, which the server's user owns (so that it
    /// can delete a lease a root-run restore wrote), `id` of ASCII letters, digits and `-` only.
    pub fn lease(&self, id: &str) -> Result<RepoKey> {
        let sound = !id.is_empty()
            && id.len() <= 128
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !sound {
            return Err(Error::BadKey {
                key: format!("lease-{id}.json"),
            });
        }
        Ok(self.under(&format!("lease-{id}.json")))
    }

    /// Key of the object `strata check` writes and deletes to prove the repository writable.
    pub fn check_probe(&self, id: &str) -> Result<RepoKey> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::BadKey {
                key: format!("check-{id}"),
            });
        }
        Ok(self.under(&format!("check-{id}")))
    }

    /// The directory of an encrypted stanza's keyring generations (see `crypto::keyring`).
    pub fn keyring_root(&self) -> RepoKey {
        self.under("keyring")
    }

    /// Key of one generation of the keyring.
    pub fn keyring(&self, generation: u64) -> RepoKey {
        self.under(&format!("keyring/{generation:08}.json"))
    }

    /// The generation of a listed keyring key (None for anything else).
    pub fn parse_keyring_key(key: &RepoKey) -> Option<u64> {
        let digits = key.file_name().strip_suffix(".json")?;
        (digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// Key of the stanza's last verification result (see `verify`).
    pub fn last_verify(&self) -> RepoKey {
        self.under("verify.json")
    }

    /// Whether a key listed in the stanza's directory is a lease.
    pub fn is_lease(key: &RepoKey) -> bool {
        let name = key.file_name();
        name.starts_with("lease-") && name.ends_with(".json")
    }

    /// Name of a data object inside its backup, as manifests record it.
    pub fn backup_object_name(number: u64) -> String {
        format!("data/{number:08}")
    }

    /// Key of a data object of a backup, from the name its manifest records (`data/<digits>`, checked
    /// here again whatever the manifest's validation did).
    pub fn backup_object(&self, label: &str, name: &str) -> Result<RepoKey> {
        let sound = name
            .strip_prefix("data/")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !sound {
            return Err(Error::BadKey {
                key: format!("backup/{label}/{name}"),
            });
        }
        self.backup_dir(label)?.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const SZ: u32 = 16 * 1024 * 1024;

    #[test]
    fn keys_follow_the_layout() {
        let p = RepoKeys::new("main").unwrap();
        assert_eq!(p.identity().as_str(), "main/strata.repo");
        assert_eq!(
            p.archive_file("000000010000000A000000FF", SZ)
                .unwrap()
                .as_str(),
            "main/archive/000000010000000A/000000010000000A000000FF"
        );
        assert_eq!(
            p.archive_file("00000002.history", SZ).unwrap().as_str(),
            "main/archive/00000002.history"
        );
        assert_eq!(
            p.history_file(2),
            p.archive_file("00000002.history", SZ).unwrap()
        );
        assert_eq!(
            p.archive_file("000000010000000000000002.00000028.backup", SZ)
                .unwrap()
                .as_str(),
            "main/archive/0000000100000000/000000010000000000000002.00000028.backup"
        );
        assert!(p.archive_file("../etc/passwd", SZ).is_err());
        let seg = p
            .archive_file("000000030000000A000000FF.partial", SZ)
            .unwrap();
        assert_eq!(
            RepoKeys::parse_archive_key(&seg, SZ),
            Some(WalFileName::Partial {
                timeline: 3,
                segno: 0xA * 256 + 0xFF
            })
        );
        let k = p.summary(1, Lsn(0x0100_0000), Lsn(0x0200_0000));
        assert_eq!(
            k.as_str(),
            "main/summary/00000001/0000000001000000-0000000002000000.blkref"
        );
        assert_eq!(
            RepoKeys::parse_summary_key(&k),
            Some((1, Lsn(0x0100_0000), Lsn(0x0200_0000)))
        );
        assert_eq!(
            p.backup_object("20261123-020000F", &RepoKeys::backup_object_name(12))
                .unwrap()
                .as_str(),
            "main/backup/20261123-020000F/data/00000012"
        );
        assert_eq!(
            p.backup_manifest("20261123-020000F").unwrap().as_str(),
            "main/backup/20261123-020000F/manifest.json"
        );
        let dir = p.backup_dir("20261123-020000F").unwrap();
        assert_eq!(RepoKeys::label_of_backup_dir(&dir), "20261123-020000F");
    }

    #[test]
    fn no_key_leaves_its_stanza() {
        let p = RepoKeys::new("main").unwrap();
        assert!(RepoKeys::new("..").is_err());
        assert!(RepoKeys::new("a/b").is_err());
        assert!(p.backup_dir("../other").is_err());
        assert!(p.backup_manifest("20261123-020000F/../../x").is_err());
        for name in [
            "../../x",
            "data/../../x",
            "data/",
            "data/1/2",
            "manifest.json",
            "/data/1",
        ] {
            assert!(p.backup_object("20261123-020000F", name).is_err(), "{name}");
        }
        for listed in ["", "/a", "a//b", "a/../b", "a/./b", "a/b\n", "a\\b"] {
            assert!(RepoKey::from_listing(listed.into()).is_none(), "{listed:?}");
        }
        assert!(RepoKey::from_listing("main/archive/x".into()).is_some());
    }
}
