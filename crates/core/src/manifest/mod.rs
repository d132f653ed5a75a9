//! The backup manifest (`backup/<label>/manifest.json`): everything a restore needs to know about one
//! backup, and its commit point. It is written last, after every object it references is durable, so
//! a backup without a manifest does not exist (it is garbage a later backup deletes).
//!
//! A manifest is a head (`ManifestHead`: what listings show and what choosing a reference needs: label,
//! kind, chain, LSNs, times, sizes, method...) and a body (the files, directories, objects and the rest
//! a restore needs). They are stored apart so that a listing reads only the heads (see `stored` for the
//! stored form: a checksummed head line, then the body, whose checksum the head holds). `Manifest`
//! holds both and reads as its head (`m.label` is `m.head.label`).
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
//! Version 3 (head line, checksums, typed labels, times and digests) reads only version 3.

use crate::compress::CompressType;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use pgformat::lsn::Lsn;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

mod stored;
mod types;
mod validate;
pub use stored::{from_plain_json, to_plain_json, HEAD_READ_SIZE, MAX_HEAD_SIZE};
pub use types::{is_label, label_time, Checksum, Label};
pub use validate::check_path;

pub const MANIFEST_FORMAT_VERSION: u32 = 4;
/// The oldest manifest format read: version 3 is version 4 with SHA-256 digests (its `digest` is
/// absent) and the digests' key named `sha256`.
pub const MANIFEST_FORMAT_VERSION_OLDEST: u32 = 3;

/// What a backup copied, relative to which reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    #[default]
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
pub(crate) mod lsn_text {
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

/// A manifest time as text: RFC 3339, UTC, like the JSON (`2026-11-23T02:00:05Z`).
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// What a listing of backups shows and what choosing a reference needs: stored at the start of the
/// manifest, readable without the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestHead {
    pub label: Label,
    pub kind: BackupKind,
    /// The kind the caller asked for (an incr with no prior full becomes a full).
    pub requested_kind: BackupKind,
    /// The backup this one is relative to (none for a full).
    pub prior: Option<Label>,
    /// Every backup this one needs to be restored, oldest (the full) first; empty for a full.
    pub references: Vec<Label>,
    /// How the relation files' changes were found.
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
    /// RFC 3339 in the JSON.
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    /// Whether the cluster has data page checksums (then they were verified while copying).
    pub data_checksums: bool,
    pub compress_type: CompressType,
    pub compress_level: i32,
    /// The hash of the digests this backup made: of its files and of the pieces it stored (a piece
    /// referenced from an older backup has that backup's).
    #[serde(default)]
    pub digest: crate::object::DigestAlg,
    /// Sum of the sizes of the files copied (the database as the backup saw it).
    pub database_size: u64,
    /// Sum of the sizes of the objects stored.
    pub stored_size: u64,
    /// Bytes read from the data directory (an incremental reads only the changed blocks).
    pub read_size: u64,
    /// Number of files in the body (filled in from the body when the manifest is written, checked
    /// against it when it is read).
    pub file_count: u64,
    /// Number of pages whose checksum failed (filled in and checked like `file_count`).
    pub page_checksum_error_count: u64,
}

/// One backup's manifest: its head and the body a restore needs. Reads as its head (`Deref`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub head: ManifestHead,
    /// Contents PostgreSQL's pg_backup_stop returned, written into the restored directory.
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub tablespaces: Vec<Tablespace>,
    /// Directories to create (relative to PGDATA), parents first.
    pub directories: Vec<Directory>,
    pub files: Vec<FileEntry>,
    /// Every data object of the backup, so that a restore can check all of them before writing.
    pub objects: Vec<StoredObject>,
    /// Pages whose checksum failed twice while copying.
    pub page_checksum_errors: Vec<PageChecksumError>,
    /// User and group owning the data directory (a restore run as root gives the files to them).
    pub owner: Option<Owner>,
    /// The databases when the backup started (`pg_database`): what `--db-include`/`--db-exclude`
    /// resolve names with. Empty in manifests written before they were recorded.
    pub databases: Vec<Database>,
}

/// A database of the cluster, by OID and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub oid: u32,
    pub name: String,
}

impl std::ops::Deref for Manifest {
    type Target = ManifestHead;
    fn deref(&self) -> &ManifestHead {
        &self.head
    }
}

impl std::ops::DerefMut for Manifest {
    fn deref_mut(&mut self) -> &mut ManifestHead {
        &mut self.head
    }
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
    /// Content digest (`object::content_digest`): the digest of the content for a file of one piece
    /// (the manifest's `digest` hash), the SHA-256 of its pieces' digests for a larger one. None for a
    /// file in incremental form (the backup did not read all of it); each of its pieces is still
    /// checked. Named `sha256` in manifests of format 3.
    #[serde(rename = "digest", alias = "sha256")]
    pub digest: Option<Checksum>,
    /// Set for a relation file in incremental form: its length in blocks. Its pieces are then
    /// `incremental` objects (changed blocks only), applied over the same file of the prior backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<u32>,
    pub pieces: Vec<Piece>,
}

impl FileEntry {
    /// The backup holding a piece's object (`this` when the piece is the entry's own backup's).
    pub fn piece_backup<'a>(piece: &'a Piece, this: &'a str) -> &'a str {
        piece.backup.as_ref().map_or(this, Label::as_str)
    }
}

/// A run of a file's bytes: one stored object at `offset` in the data object `object`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// The older backup of the chain holding the object, when it is not this backup (an unchanged
    /// file is referenced, not stored again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Label>,
    /// Name of the data object within the backup (`data/NNNNNNNN`).
    pub object: String,
    pub offset: u64,
    /// Stored length (header + payload).
    pub length: u64,
    /// Plaintext length.
    pub size: u64,
    /// Digest of the plaintext (also in the object's header, whose format version says its hash):
    /// lets a later backup recognize an unchanged piece without storing it. Named `sha256` in
    /// manifests of format 3.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "digest",
        alias = "sha256"
    )]
    pub digest: Option<Checksum>,
}

impl Piece {
    /// A piece that is a whole object of this backup: `stored` bytes holding `plain` bytes of
    /// plaintext whose digest (`object::digest`) is `sha`.
    pub fn whole_object(object: String, stored: u64, plain: u64, sha: [u8; 32]) -> Piece {
        Piece {
            backup: None,
            object,
            offset: 0,
            length: stored,
            size: plain,
            digest: Some(Checksum(sha)),
        }
    }

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

#[cfg(test)]
pub(crate) mod tests;
