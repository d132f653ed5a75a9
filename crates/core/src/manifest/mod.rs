//! The backup manifest (`backup/<label>/manifest.json`): everything a restore needs to know about one
//! backup, and its commit point. It is written last, after every object it references is durable, so
//! a backup without a manifest does not exist (it is garbage a later backup deletes).
//!
//! A file's content is a list of pieces; each piece is one stored object (header + compressed payload,
//! see `object`) found in a data object of the backup at an offset. Large files are cut into chunks
//! stored as their own objects; small files are packed one after another into bundle objects. A piece
//! decodes to a run of the file's bytes; the file is the pieces in order.
//!
//! Incremental and differential backups add two things: a piece may live in an older backup of the chain
//! (`Piece::backup`: an unchanged file is referenced, not stored again), and a relation file may be in
//! incremental form (`FileEntry::incremental`: its pieces are `incremental` objects holding only the
//! changed blocks, rebuilt at restore over the same file of the prior backups).
//!
//! Versioned JSON with `deny_unknown_fields`: a reader never guesses at a manifest it does not know.
//! Version 2 added the fields above (and `method`, `references`); version 1 manifests read as fulls.

use crate::{Error, Result};
use pgformat::lsn::Lsn;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

mod validate;
pub use validate::check_path;

pub const MANIFEST_FORMAT_VERSION: u32 = 2;
/// Oldest format this version reads.
const OLDEST_READABLE_VERSION: u32 = 1;

/// What a backup copied, relative to which reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }

    /// The letter that ends a label of this kind.
    pub fn letter(self) -> char {
        match self {
            BackupKind::Full => 'F',
            BackupKind::Diff => 'D',
            BackupKind::Incr => 'I',
        }
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackupKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<BackupKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(BackupKind::Full),
            "diff" => Ok(BackupKind::Diff),
            "incr" => Ok(BackupKind::Incr),
            _ => Err(Error::BadSetting {
                name: "backup kind".into(),
                value: s.into(),
                reason: "expected full, diff or incr".into(),
            }),
        }
    }
}

/// How a backup found what to copy of the relation files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupMethod {
    /// Every file read and stored (a full backup).
    #[default]
    Full,
    /// Only the blocks the block-change summaries list were read (plus every block past each fork's
    /// smallest length since the reference).
    BlockSummaries,
    /// The summaries had a gap: every page was read and those whose LSN is at or after the reference's
    /// start LSN were kept (visibility maps stored whole).
    PageLsn,
}

impl BackupMethod {
    pub fn name(self) -> &'static str {
        match self {
            BackupMethod::Full => "full",
            BackupMethod::BlockSummaries => "block-summaries",
            BackupMethod::PageLsn => "page-lsn",
        }
    }
}

/// An LSN written as PostgreSQL writes it ("0/2000028") in the JSON.
mod lsn_text {
    use pgformat::lsn::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&lsn.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub label: String,
    pub kind: BackupKind,
    /// The kind the caller asked for (an incr with no prior full becomes a full).
    pub requested_kind: BackupKind,
    /// The backup this one is relative to (none for a full).
    pub prior: Option<String>,
    /// Every backup this one needs to be restored, oldest (the full) first; empty for a full.
    #[serde(default)]
    pub references: Vec<String>,
    /// How the relation files' changes were found.
    #[serde(default)]
    pub method: BackupMethod,
    /// Why the method is not the best one (the gap in the summaries), if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_reason: Option<String>,
    pub system_identifier: u64,
    /// PostgreSQL major version, e.g. 15, and the server's version number, e.g. 150020.
    pub pg_version: u32,
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
    pub timeline: u32,
    #[serde(with = "lsn_text")]
    pub start_lsn: Lsn,
    #[serde(with = "lsn_text")]
    pub stop_lsn: Lsn,
    pub start_wal_file: String,
    pub stop_wal_file: String,
    /// RFC 3339 times, UTC.
    pub start_time: String,
    pub stop_time: String,
    /// Whether the cluster has data page checksums (then they were verified while copying).
    pub data_checksums: bool,
    pub compress_type: String,
    pub compress_level: i32,
    /// Contents PostgreSQL's pg_backup_stop returned, written into the restored directory.
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub tablespaces: Vec<Tablespace>,
    /// Sum of the sizes of the files copied (the database as the backup saw it).
    pub database_size: u64,
    /// Sum of the sizes of the objects stored.
    pub stored_size: u64,
    /// Bytes read from the data directory (an incremental reads only the changed blocks).
    #[serde(default)]
    pub read_size: u64,
    /// Directories to create (relative to PGDATA), parents first.
    pub directories: Vec<Directory>,
    pub files: Vec<FileEntry>,
    /// Every data object of the backup, so that a restore can check all of them before writing.
    pub objects: Vec<StoredObject>,
    /// Pages whose checksum failed twice while copying.
    pub page_checksum_errors: Vec<PageChecksumError>,
    /// User and group owning the data directory (a restore run as root gives the files to them).
    pub owner: Option<Owner>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub user: String,
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tablespace {
    pub oid: u32,
    pub name: String,
    /// Absolute path the tablespace had on the source.
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    pub path: String,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to PGDATA; tablespace files under `pg_tblspc/<oid>/...`.
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Content digest, hex (`object::content_digest`): the SHA-256 of the content for a file of one
    /// piece, the SHA-256 of its pieces' SHA-256s for a larger one. None for a file in incremental form
    /// (the backup did not read all of it); each of its pieces is still checked.
    pub sha256: Option<String>,
    /// Set for a relation file in incremental form: its length in blocks. Its pieces are then
    /// `incremental` objects (changed blocks only), applied over the same file of the prior backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<u32>,
    pub pieces: Vec<Piece>,
}

impl FileEntry {
    /// The backup holding a piece's object (`this` when the piece is the entry's own backup's).
    pub fn piece_backup<'a>(piece: &'a Piece, this: &'a str) -> &'a str {
        piece.backup.as_deref().unwrap_or(this)
    }
}

/// A run of a file's bytes: one stored object at `offset` in the data object `object`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// The older backup of the chain holding the object, when it is not this backup (an unchanged
    /// file is referenced, not stored again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Name of the data object within the backup (`data/NNNNNNNN`).
    pub object: String,
    pub offset: u64,
    /// Stored length (header + payload).
    pub length: u64,
    /// Plaintext length.
    pub size: u64,
    /// SHA-256 of the plaintext, hex (also in the object's header): lets a later backup recognize an
    /// unchanged piece without storing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Piece {
    /// Whether the piece lies inside an object of `object_size` stored bytes.
    pub fn lies_within(&self, object_size: u64) -> bool {
        self.offset
            .checked_add(self.length)
            .is_some_and(|end| end <= object_size)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredObject {
    pub name: String,
    pub size: u64,
    /// CRC-32C of the stored bytes: lets a restore check every object cheaply before writing.
    pub crc32c: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageChecksumError {
    pub path: String,
    /// Block numbers within the file.
    pub blocks: Vec<u32>,
}

impl Manifest {
    /// Parses a manifest; `key` names it in errors.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let corrupt = |reason: String| Error::CorruptObject {
            key: key.to_string(),
            reason,
        };
        let v: VersionOnly = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a pg_strata manifest: {e}")))?;
        if !(OLDEST_READABLE_VERSION..=MANIFEST_FORMAT_VERSION).contains(&v.format_version) {
            return Err(corrupt(format!(
                "manifest format version {}, this pg_strata reads versions {OLDEST_READABLE_VERSION} \
                 to {MANIFEST_FORMAT_VERSION}",
                v.format_version
            )));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("invalid manifest: {e}")))?;
        // A manifest is untrusted input (whoever can write the repository wrote it): nothing in it is
        // used before every path, name and size in it has been checked.
        m.validate().map_err(|reason| {
            corrupt(format!(
                "{reason}; the backup is refused (its manifest was damaged or tampered with)"
            ))
        })?;
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Number of pages whose checksum failed.
    pub fn page_checksum_error_count(&self) -> u64 {
        self.page_checksum_errors
            .iter()
            .map(|e| e.blocks.len() as u64)
            .sum()
    }
}

/// A new backup label: `YYYYMMDD-HHMMSSF` for a full, `<full label>_YYYYMMDD-HHMMSS<D|I>` otherwise,
/// so that labels sort by time and show the chain.
pub fn new_label(
    kind: BackupKind,
    full_label: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let stamp = now.format("%Y%m%d-%H%M%S");
    match (kind, full_label) {
        (BackupKind::Full, _) | (_, None) => format!("{stamp}F"),
        (k, Some(full)) => {
            let full = full.split('_').next().unwrap_or(full);
            format!("{full}_{stamp}{}", k.letter())
        }
    }
}

/// The time part of a label (`20261124-020000` of `20261123-020000F_20261124-020000I`): labels of one
/// chain sort by it, and so do all of a stanza's backups.
pub fn label_time(label: &str) -> &str {
    let own = label.rsplit('_').next().unwrap_or(label);
    own.get(..15).unwrap_or(own)
}

/// Whether a string has the shape of a backup label (used to refuse junk before touching storage).
pub fn is_label(s: &str) -> bool {
    let one = |p: &str| {
        let b = p.as_bytes();
        b.len() == 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'-'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && matches!(b[15], b'F' | b'D' | b'I')
    };
    let parts: Vec<&str> = s.split('_').collect();
    match parts.as_slice() {
        [full] => one(full) && full.ends_with('F'),
        [full, other] => one(full) && full.ends_with('F') && one(other) && !other.ends_with('F'),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub fn sample() -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            label: "20261123-020000F".into(),
            kind: BackupKind::Full,
            requested_kind: BackupKind::Incr,
            prior: None,
            references: vec![],
            method: BackupMethod::Full,
            method_reason: None,
            system_identifier: 7_300_000_000_000_000_001,
            pg_version: 15,
            pg_version_num: 150020,
            wal_segment_size: 16 << 20,
            timeline: 1,
            start_lsn: Lsn(0x0200_0028),
            stop_lsn: Lsn(0x0200_0100),
            start_wal_file: "000000010000000000000002".into(),
            stop_wal_file: "000000010000000000000002".into(),
            start_time: "2026-11-23T02:00:00Z".into(),
            stop_time: "2026-11-23T02:00:05Z".into(),
            data_checksums: true,
            compress_type: "zstd".into(),
            compress_level: 3,
            backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
            tablespace_map: None,
            tablespaces: vec![],
            database_size: 3,
            stored_size: 59,
            read_size: 3,
            directories: vec![Directory {
                path: "base".into(),
                mode: 0o700,
            }],
            files: vec![FileEntry {
                path: "PG_VERSION".into(),
                size: 3,
                mode: 0o600,
                mtime: 1_795_000_000,
                sha256: Some("ab".repeat(32)),
                incremental: None,
                pieces: vec![Piece {
                    backup: None,
                    object: "data/00000000".into(),
                    offset: 0,
                    length: 59,
                    size: 3,
                    sha256: Some("ab".repeat(32)),
                }],
            }],
            objects: vec![StoredObject {
                name: "data/00000000".into(),
                size: 59,
                crc32c: 7,
            }],
            page_checksum_errors: vec![],
            owner: Some(Owner {
                user: "postgres".into(),
                group: "postgres".into(),
            }),
        }
    }

    #[test]
    fn round_trips_and_writes_lsns_as_postgresql_does() {
        let m = sample();
        let json = m.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"start_lsn\": \"0/2000028\""), "{text}");
        assert!(text.contains("\"kind\": \"full\""), "{text}");
        assert_eq!(Manifest::from_json("k", &json).unwrap(), m);
    }

    #[test]
    fn refuses_unknown_fields_and_versions() {
        let text = String::from_utf8(sample().to_json()).unwrap();
        let extra = text.replacen('{', "{\"surprise\": 1,", 1);
        let e = Manifest::from_json("m/k", extra.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("m/k") && e.contains("surprise"), "{e}");
        let v9 = text.replace("\"format_version\": 2", "\"format_version\": 9");
        let e = Manifest::from_json("m/k", v9.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 9"), "{e}");
    }

    #[test]
    fn labels_sort_by_time_and_show_the_chain() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap();
        assert_eq!(new_label(BackupKind::Full, None, t), "20261124-020000F");
        assert_eq!(
            new_label(
                BackupKind::Incr,
                Some("20261123-020000F_20261123-120000I"),
                t
            ),
            "20261123-020000F_20261124-020000I"
        );
        assert_eq!(label_time("20261123-020000F"), "20261123-020000");
        assert_eq!(
            label_time("20261123-020000F_20261124-020000I"),
            "20261124-020000"
        );
        // An incr built on an older full sorts before a newer full by label, not by time.
        assert!("20261123-020000F_20261125-020000I" < "20261124-020000F");
        assert!(label_time("20261123-020000F_20261125-020000I") > label_time("20261124-020000F"));
        assert!(is_label("20261123-020000F"));
        assert!(is_label("20261123-020000F_20261124-020000D"));
        assert!(!is_label("20261123-020000I"));
        assert!(!is_label("../x"));
        assert!("Full".parse::<BackupKind>().is_ok());
        let e = "weekly".parse::<BackupKind>().unwrap_err().to_string();
        assert!(
            e.contains("weekly") && e.contains("full, diff or incr"),
            "{e}"
        );
    }
}
