//! The stored form of a manifest: a head line, then the body, each covered by a SHA-256, so that a
//! manifest edited or damaged by hand is refused, and a listing reads only the heads.
//!
//! ```text
//! {"head":{"format_version":3,"body_size":N,"body_sha256":"<hex>","backup":{<ManifestHead>}},"head_sha256":"<hex>"}\n
//! <body: pretty-printed JSON of the tablespaces, directories, files, objects...>
//! ```
//!
//! The first line is compact JSON (JSON strings escape newlines, so the first `\n` ends it). Its
//! `head_sha256` is the SHA-256 of the exact bytes of its `head` value as stored, and `head` holds the
//! size and SHA-256 of the exact bytes after the first line (the body). Nothing is re-serialized to be
//! checked: a reader hashes what it read. Reading the head needs only the first bytes of the object
//! (`HEAD_READ_SIZE`, more if the line is longer); reading the whole manifest checks both.
//!
//! The checksums find damage and hand edits, not an attacker (who can recompute them): everything a
//! manifest says is still validated (`validate`) before it is used.

use super::{
    Checksum, Database, Directory, FileEntry, Manifest, ManifestHead, Owner, PageChecksumError,
    StoredObject, Tablespace, MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION_OLDEST,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How many bytes a listing reads first to find a manifest's head line (a head is a few hundred bytes
/// plus its references and method reason).
pub const HEAD_READ_SIZE: u64 = 8 << 10;
/// A head line longer than this is refused (a chain of 10,000 backups fits in well under 1 MB).
pub const MAX_HEAD_SIZE: u64 = 16 << 20;

#[derive(Serialize)]
struct StoredHeadRef<'a> {
    format_version: u32,
    body_size: u64,
    body_sha256: Checksum,
    backup: &'a ManifestHead,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredHead {
    #[allow(dead_code)] // checked before, through `VersionOnly`
    format_version: u32,
    body_size: u64,
    body_sha256: Checksum,
    backup: ManifestHead,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadLine<'a> {
    #[serde(borrow)]
    head: &'a RawValue,
    head_sha256: Checksum,
}

/// Only the version, whatever else there is (to refuse other versions by name).
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

#[derive(Serialize)]
struct BodyRef<'a> {
    backup_label: &'a String,
    tablespace_map: &'a Option<String>,
    tablespaces: &'a Vec<Tablespace>,
    directories: &'a Vec<Directory>,
    files: &'a Vec<FileEntry>,
    objects: &'a Vec<StoredObject>,
    page_checksum_errors: &'a Vec<PageChecksumError>,
    owner: &'a Option<Owner>,
    databases: &'a Vec<Database>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    backup_label: String,
    tablespace_map: Option<String>,
    tablespaces: Vec<Tablespace>,
    directories: Vec<Directory>,
    files: Vec<FileEntry>,
    objects: Vec<StoredObject>,
    page_checksum_errors: Vec<PageChecksumError>,
    owner: Option<Owner>,
    /// Absent from manifests written before databases were recorded.
    #[serde(default)]
    databases: Vec<Database>,
}

fn corrupt(key: &str, reason: String) -> Error {
    Error::CorruptObject {
        key: key.to_string(),
        reason,
    }
}

/// What is wrong with a manifest whose checksums match: a hand-made one, or this code's bug.
fn refused(key: &str, reason: String) -> Error {
    corrupt(
        key,
        format!("{reason}; the backup is refused (its manifest was damaged or tampered with)"),
    )
}

fn modified(key: &str, label: &str, what: &str) -> Error {
    corrupt(
        key,
        format!(
            "the manifest of backup {label} was modified or damaged ({what}); the backup is refused"
        ),
    )
}

/// The version a manifest of another format says it has, found as text (`"format_version": N`), so
/// that even the first bytes of an older, single-document manifest name it.
fn version_in_text(bytes: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(bytes);
    let at = text.find("\"format_version\"")? + "\"format_version\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn readable(version: u32) -> bool {
    (MANIFEST_FORMAT_VERSION_OLDEST..=MANIFEST_FORMAT_VERSION).contains(&version)
}

fn other_version(key: &str, version: u32) -> Error {
    corrupt(
        key,
        format!(
            "manifest format version {version}: this pg_strata reads versions \
             {MANIFEST_FORMAT_VERSION_OLDEST} to {MANIFEST_FORMAT_VERSION} (the repository was written by \
             another version of pg_strata)"
        ),
    )
}

/// Parses and checks a head line (without its `\n`) of the manifest of backup `label`, `read` being
/// all that was read of it; returns the head, the body's size and its SHA-256.
fn parse_head_line(
    key: &str,
    label: &str,
    line: &[u8],
    read: &[u8],
) -> Result<(ManifestHead, u64, Checksum)> {
    let parsed: HeadLine = match serde_json::from_slice(line) {
        Ok(l) => l,
        Err(e) => {
            return Err(match version_in_text(read) {
                Some(v) if !readable(v) => other_version(key, v),
                _ => modified(key, label, &format!("its head line does not read: {e}")),
            })
        }
    };
    let head_bytes = parsed.head.get().as_bytes();
    // The version first: another version may checksum differently.
    match serde_json::from_slice::<VersionOnly>(head_bytes) {
        Ok(v) if !readable(v.format_version) => return Err(other_version(key, v.format_version)),
        Ok(_) => {}
        Err(e) => {
            return Err(modified(
                key,
                label,
                &format!("its head has no version: {e}"),
            ))
        }
    }
    if Checksum::of(head_bytes) != parsed.head_sha256 {
        return Err(modified(
            key,
            label,
            "its head does not match the head's checksum",
        ));
    }
    let stored: StoredHead = serde_json::from_slice(head_bytes)
        .map_err(|e| refused(key, format!("invalid manifest head: {e}")))?;
    if stored.backup.label != label {
        return Err(corrupt(
            key,
            format!(
                "the manifest says it belongs to backup {}",
                stored.backup.label
            ),
        ));
    }
    // A manifest is untrusted input (whoever can write the repository wrote it): nothing in it is
    // used before everything in it has been checked.
    stored
        .backup
        .validate()
        .map_err(|reason| refused(key, reason))?;
    Ok((stored.backup, stored.body_size, stored.body_sha256))
}

impl ManifestHead {
    /// Reads the head of the manifest of backup `label` (stored at `key`) from the first bytes of the
    /// object; `whole` says whether `bytes` is the whole object. `Ok(None)`: the head line goes on past
    /// `bytes`, read more.
    pub fn from_prefix(
        key: &str,
        label: &str,
        bytes: &[u8],
        whole: bool,
    ) -> Result<Option<ManifestHead>> {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(end) => parse_head_line(key, label, &bytes[..end], bytes).map(|(h, _, _)| Some(h)),
            None if whole => parse_head_line(key, label, bytes, bytes).map(|(h, _, _)| Some(h)),
            None => Ok(None),
        }
    }
}

impl Manifest {
    /// Parses and checks the whole stored manifest of backup `label` (stored at `key`): both
    /// checksums, then every path, name and size (`validate`).
    pub fn from_bytes(key: &str, label: &str, bytes: &[u8]) -> Result<Manifest> {
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        let (head, body_size, body_sha256) = parse_head_line(key, label, &bytes[..end], bytes)?;
        let body = bytes.get(end + 1..).unwrap_or_default();
        if body.len() as u64 != body_size || Checksum::of(body) != body_sha256 {
            return Err(modified(
                key,
                label,
                &format!(
                    "its body of {} bytes does not match the size ({body_size}) and checksum its \
                     head records",
                    body.len()
                ),
            ));
        }
        let b: Body = serde_json::from_slice(body)
            .map_err(|e| refused(key, format!("invalid manifest: {e}")))?;
        let m = Manifest {
            head,
            backup_label: b.backup_label,
            tablespace_map: b.tablespace_map,
            tablespaces: b.tablespaces,
            directories: b.directories,
            files: b.files,
            objects: b.objects,
            page_checksum_errors: b.page_checksum_errors,
            owner: b.owner,
            databases: b.databases,
        };
        m.validate().map_err(|reason| refused(key, reason))?;
        Ok(m)
    }

    /// The stored form. The head's `file_count` and `page_checksum_error_count` are taken from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec_pretty(&BodyRef {
            backup_label: &self.backup_label,
            tablespace_map: &self.tablespace_map,
            tablespaces: &self.tablespaces,
            directories: &self.directories,
            files: &self.files,
            objects: &self.objects,
            page_checksum_errors: &self.page_checksum_errors,
            owner: &self.owner,
            databases: &self.databases,
        })
        .expect("a manifest body always serializes");
        body.push(b'\n');
        let mut head = self.head.clone();
        head.file_count = self.files.len() as u64;
        head.page_checksum_error_count = self.counted_page_checksum_errors();
        let head_json = serde_json::to_string(&StoredHeadRef {
            format_version: MANIFEST_FORMAT_VERSION,
            body_size: body.len() as u64,
            body_sha256: Checksum::of(&body),
            backup: &head,
        })
        .expect("a manifest head always serializes");
        let line = format!(
            "{{\"head\":{head_json},\"head_sha256\":\"{}\"}}\n",
            Checksum::of(head_json.as_bytes())
        );
        let mut out = line.into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Number of pages whose checksum failed, counted in the body.
    pub fn counted_page_checksum_errors(&self) -> u64 {
        self.page_checksum_errors
            .iter()
            .map(|e| e.blocks.len() as u64)
            .sum()
    }
}

/// The fields of the body (everything else but `format_version` is the head's).
const BODY_FIELDS: [&str; 9] = [
    "backup_label",
    "tablespace_map",
    "tablespaces",
    "directories",
    "files",
    "objects",
    "page_checksum_errors",
    "owner",
    "databases",
];

/// A stored manifest as one JSON object (`format_version`, the head's fields and the body's), for
/// tools and tests that look at or edit manifests by hand. Checks nothing, not even the checksums.
pub fn to_plain_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    let line: serde_json::Value = serde_json::from_slice(&bytes[..end]).ok()?;
    let body: serde_json::Value = serde_json::from_slice(&bytes[end + 1..]).ok()?;
    let mut out = line.get("head")?.get("backup")?.as_object()?.clone();
    out.insert(
        "format_version".into(),
        line["head"]["format_version"].clone(),
    );
    out.extend(body.as_object()?.clone());
    Some(serde_json::Value::Object(out))
}

/// Stores a manifest edited as one JSON object (see `to_plain_json`), as someone with write access to
/// the repository could: split into head and body, the head's counts taken from the body, both
/// checksums recomputed. Nothing else is checked: a reader validates what it says.
pub fn from_plain_json(plain: &serde_json::Value) -> Vec<u8> {
    let mut head = plain.as_object().cloned().unwrap_or_default();
    let version = head
        .remove("format_version")
        .unwrap_or(MANIFEST_FORMAT_VERSION.into());
    let mut body = serde_json::Map::new();
    for f in BODY_FIELDS {
        if let Some(v) = head.remove(f) {
            body.insert(f.into(), v);
        }
    }
    let count = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_array()).map_or(0, Vec::len);
    head.insert("file_count".into(), count(body.get("files")).into());
    let errors: usize = body
        .get("page_checksum_errors")
        .and_then(|v| v.as_array())
        .map_or(0, |a| a.iter().map(|e| count(e.get("blocks"))).sum());
    head.insert("page_checksum_error_count".into(), errors.into());
    let mut body = serde_json::to_vec_pretty(&body).expect("JSON serializes");
    body.push(b'\n');
    let stored_head = serde_json::json!({
        "format_version": version,
        "body_size": body.len(),
        "body_sha256": Checksum::of(&body),
        "backup": head,
    });
    let head_json = serde_json::to_string(&stored_head).expect("JSON serializes");
    let mut out = format!(
        "{{\"head\":{head_json},\"head_sha256\":\"{}\"}}\n",
        Checksum::of(head_json.as_bytes())
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}
