//! Getting an archived WAL file back, for `restore_command` (`strata archive-get`).
//!
//! Not archived is a normal answer (recovery probes for files that do not exist) and is reported as
//! `NotFound`, not as an error. Anything else that goes wrong is an error, and nothing is left at the
//! destination: the file is written to a temporary name beside it, fsynced and renamed into place only
//! after its SHA-256 matched.

use crate::compress::CompressType;
use crate::fsutil::werr;
use crate::identity;
use crate::object;
use crate::paths::RepoPaths;
use crate::storage::Storage;
use crate::{Error, Result};
use pgformat::lsn::WalFileName;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
pub enum GetOutcome {
    Restored { key: String, bytes: u64 },
    NotFound,
}

pub fn archive_get(
    storage: &Storage,
    paths: &RepoPaths,
    file_name: &str,
    dest: &Path,
) -> Result<GetOutcome> {
    let id = identity::read(storage, paths)?.ok_or_else(|| {
        Error::Other(format!(
            "stanza '{}' does not exist in repository {}: check --repo/--stanza (or strata.repo1/strata.stanza)",
            paths.stanza(),
            storage.url().display()
        ))
    })?;
    let Some((key, plain)) = fetch(storage, paths, file_name, id.wal_segment_size)? else {
        return Ok(GetOutcome::NotFound);
    };
    write_atomically(dest, &plain)?;
    Ok(GetOutcome::Restored {
        key,
        bytes: plain.len() as u64,
    })
}

/// Reads an archived WAL file (under whichever compression it was stored) and checks its SHA-256:
/// its key and plaintext, or None when it is not archived.
pub fn fetch(
    storage: &Storage,
    paths: &RepoPaths,
    file_name: &str,
    wal_segment_size: u32,
) -> Result<Option<(String, Vec<u8>)>> {
    // A segment (or .partial) holds one segment's bytes; history and backup history files are small
    // text. Nothing bigger is read or decompressed, whatever the object claims.
    let max_plain = match WalFileName::parse(file_name, wal_segment_size) {
        Some(WalFileName::Segment { .. } | WalFileName::Partial { .. }) => wal_segment_size as u64,
        _ => 1 << 20,
    };
    for c in CompressType::ALL {
        let key = paths.archive_file(file_name, c, wal_segment_size)?;
        let Some(size) = storage.size(&key)? else {
            continue;
        };
        if size > max_plain + (max_plain >> 4) + 4096 {
            return Err(Error::CorruptObject {
                key,
                reason: format!("{size} stored bytes, too large for {file_name}"),
            });
        }
        let Some(stored) = storage.get(&key)? else {
            continue;
        };
        let (_, plain) = object::decode_limited(&key, &stored, max_plain)?;
        return Ok(Some((key, plain)));
    }
    Ok(None)
}

fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let mut tmp_name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".strata-tmp");
    let tmp: PathBuf = dest.with_file_name(tmp_name);
    let result = (|| -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // A stale temporary (a crash) is unlinked, never followed; the new one is made exclusively.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(werr(dest))?;
        crate::fsutil::write_synced(&mut f, data, dest)?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(werr(dest))?;
        match dest.parent() {
            Some(dir) => crate::fsutil::sync_dir(dir),
            None => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
