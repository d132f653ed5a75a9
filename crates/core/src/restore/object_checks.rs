//! Reading a restore's data objects before it writes into an existing directory (or alongside the
//! writers, into staging): each object's presence and size, or its whole stored bytes against their
//! size and CRC-32C, and in an encrypted stanza every piece authenticated. A CRC-32C guards against
//! accidents only: someone who can write the repository can keep it while changing an object, and
//! `--delta` would find out only after it began rewriting the directory. Authenticating every piece
//! first (AES-GCM, ~10 GB/s per core) refuses such an object before anything is written.

use super::plan::Plan;
use crate::manifest::{FileEntry, StoredObject};
use crate::repo::Repo;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Reads every data object once and compares its size and CRC-32C with the manifest, in parallel;
/// in an encrypted stanza every piece is also authenticated (`Sealed`). Setting `abort` stops it
/// early (another part of the restore failed).
pub fn check_objects(
    repo: &Repo,
    plan: &Plan,
    threads: usize,
    abort: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let target = &plan.manifest.label;
    let sealed = Sealed::of(repo, plan)?;
    each_object(repo, plan, threads, abort, |key, o| {
        let bytes = fetch_checked(repo, key, o, target)?;
        match &sealed {
            Some(s) => s.authenticate(key, &bytes, target),
            None => Ok(()),
        }
    })
}

/// Runs `check` on every data object of the chain (its key and what its manifest records), on
/// `threads` threads; setting `abort` stops it early (another part of the restore failed).
fn each_object(
    repo: &Repo,
    plan: &Plan,
    threads: usize,
    abort: &std::sync::atomic::AtomicBool,
    check: impl Fn(&crate::paths::RepoKey, &StoredObject) -> Result<()> + Sync,
) -> Result<()> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    crate::parallel::run(
        threads,
        &stop,
        plan.all_objects(),
        || Ok(()),
        |_, (label, o)| {
            if abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            check(&repo.keys().backup_object(label, &o.name)?, o)
        },
        |_| Ok(()),
    )?;
    Ok(())
}

/// Checks that every data object of the chain is there with the size its manifest recorded (one
/// metadata request each, no data read). Used when the files are written into staging: the writers
/// check every piece they use (its digest, after decompressing), so the content of what the restore
/// needs is checked on the one read that writes it, and a missing or truncated object still stops the
/// restore early. What no writer reads (a block that a newer backup of the chain replaces) is not
/// needed by this restore; `strata verify` checks it.
pub fn check_presence(
    repo: &Repo,
    plan: &Plan,
    threads: usize,
    abort: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let target = &plan.manifest.label;
    each_object(repo, plan, threads, abort, |key, o| {
        let size = match repo.storage().local_root() {
            Some(root) => size_and_read_ahead(&root.join(key.as_str()))?,
            None => repo.storage().size(key)?,
        };
        let reason = match size {
            Some(size) if size == o.size => return Ok(()),
            Some(size) => format!("{size} bytes, the manifest recorded {}", o.size),
            None => "the object is missing".to_string(),
        };
        Err(Error::CorruptObject {
            key: key.to_string(),
            reason: format!(
                "{reason}; backup {target} cannot be restored, choose another with --set"
            ),
        })
    })
}

/// The size of an object file of a local repository (None: missing), asking the kernel to start
/// reading it into the page cache: the writers then find it there instead of each waiting on the disk
/// in turn, and no byte is copied or hashed twice. Opened without following a link in its last
/// component, without blocking (a FIFO planted there) and without becoming a controlling terminal; a
/// link or anything but a regular file is refused as such, and other errors name their cause.
fn size_and_read_ahead(path: &std::path::Path) -> Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadFile {
                path: path.into(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| Error::ReadFile {
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::CorruptObject {
            key: path.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    // SAFETY: a valid descriptor; the call only schedules reads. Failure only loses the read-ahead.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
    }
    Ok(Some(meta.len()))
}

/// Reads a data object whole (one request, nothing past the recorded size) and checks its size and
/// CRC-32C against what the manifest of the backup being restored (`target`) recorded.
pub fn fetch_checked(
    repo: &Repo,
    key: &crate::paths::RepoKey,
    o: &StoredObject,
    target: &str,
) -> Result<bytes::Bytes> {
    let corrupt = |reason: String| Error::CorruptObject {
        key: key.to_string(),
        reason: format!("{reason}; backup {target} cannot be restored, choose another with --set"),
    };
    let bytes = repo
        .storage()
        .get_limited(key, o.size)
        .map_err(|e| match e {
            Error::CorruptObject { .. } => {
                corrupt(format!("larger than the {} bytes recorded", o.size))
            }
            e => e,
        })?
        .ok_or_else(|| corrupt("the object is missing".into()))?;
    if bytes.len() as u64 != o.size {
        return Err(corrupt(format!(
            "{} bytes, the manifest recorded {}",
            bytes.len(),
            o.size
        )));
    }
    let crc = crc32c::crc32c(&bytes);
    if crc != o.crc32c {
        return Err(corrupt(format!(
            "CRC-32C mismatch (expected {:08x}, found {crc:08x})",
            o.crc32c
        )));
    }
    Ok(bytes)
}

/// In an encrypted stanza, the data keys and the pieces of every data object of the chain (offset,
/// stored length, plaintext size), by key.
pub struct Sealed {
    keys: std::sync::Arc<crate::crypto::DataKeys>,
    pieces: HashMap<String, Vec<(u64, u64, u64)>>,
}

impl Sealed {
    /// None for an unencrypted stanza.
    pub fn of(repo: &Repo, plan: &Plan) -> Result<Option<Sealed>> {
        let Some(keys) = repo.data_keys()? else {
            return Ok(None);
        };
        let mut pieces: HashMap<String, Vec<(u64, u64, u64)>> = HashMap::new();
        for m in std::iter::once(&plan.manifest).chain(plan.older.iter()) {
            for f in &m.files {
                for p in &f.pieces {
                    let holder = FileEntry::piece_backup(p, &m.label);
                    let key = repo.keys().backup_object(holder, &p.object)?;
                    pieces
                        .entry(key.to_string())
                        .or_default()
                        .push((p.offset, p.length, p.size));
                }
            }
        }
        for list in pieces.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        Ok(Some(Sealed { keys, pieces }))
    }

    /// Authenticates every piece of the object at `key` (`bytes`, its whole stored form).
    pub fn authenticate(
        &self,
        key: &crate::paths::RepoKey,
        bytes: &[u8],
        target: &str,
    ) -> Result<()> {
        for &(offset, length, size) in self.pieces.get(key.as_str()).into_iter().flatten() {
            let piece = offset
                .checked_add(length)
                .and_then(|end| bytes.get(offset as usize..end as usize))
                .ok_or_else(|| Error::CorruptObject {
                    key: key.to_string(),
                    reason: format!(
                        "a piece at {offset} of {length} bytes lies outside its {} bytes; backup \
                         {target} cannot be restored, choose another with --set",
                        bytes.len()
                    ),
                })?;
            let place = crate::object::Place {
                key: key.as_str(),
                offset,
            };
            crate::object::authenticate_at(piece, &self.keys, place, size).map_err(
                |e| match e {
                    Error::CorruptObject { key, reason } => Error::CorruptObject {
                        key,
                        reason: format!(
                        "{reason}; backup {target} cannot be restored, choose another with --set"
                    ),
                    },
                    e => e,
                },
            )?;
        }
        Ok(())
    }
}
