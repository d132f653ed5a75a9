//! Writing one file of a restore from its pieces (`FileWriter`): a whole file streamed piece by piece
//! with every piece's digest and the whole file's digest checked, or a relation file in incremental
//! form rebuilt over its older copies by a per-block plan, each block written once; then its mode,
//! modification time and owner, through the open descriptor.

use super::beneath::Root;
use super::direct::{RestoreWriter, SequentialWriter};
use super::plan::Plan;
use crate::fsutil::{self, werr};
use crate::incremental::{Incremental, RebuildPlan};
use crate::manifest::{Checksum, FileEntry, Piece};
use crate::object;
use crate::repo::Repo;
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Gives a file the restore wrote (or kept) to the cluster's owner, through its descriptor.
pub(super) fn give_file(file: &File, owner: Option<(u32, u32)>, dest: &Path) -> Result<()> {
    match owner {
        Some((uid, gid)) => {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(werr(dest))
        }
        None => Ok(()),
    }
}

/// Applies the recorded mode and modification time through the open file (never a path that could
/// have become a link).
pub(super) fn set_mode_and_time(file: &File, f: &FileEntry, dest: &Path) -> Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o777))
        .map_err(werr(dest))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.mtime.max(0) as u64);
    file.set_modified(mtime).map_err(werr(dest))
}

/// Writes one file from its pieces.
pub struct FileWriter<'a> {
    pub repo: &'a Repo,
    pub plan: &'a Plan,
    /// fsync the file before returning (pg_control); otherwise writeback is only started.
    pub fsync: bool,
    /// Run as root: who the file is given to.
    pub owner: Option<(u32, u32)>,
    /// From a remote repository: pieces are read from the objects' checked local copies.
    pub fetched: Option<&'a super::fetch_once::FetchOnce<'a>>,
}

impl FileWriter<'_> {
    /// Writes `f` at `rel` below `root` (a link or directory there is replaced, never followed).
    pub fn write(&mut self, f: &FileEntry, root: &Root, rel: &str) -> Result<()> {
        let dest_buf = root.path().join(rel);
        let dest = dest_buf.as_path();
        // Owner can always write while restoring; the recorded mode is applied afterwards.
        let out = root.create_file(rel, (f.mode & 0o777) | 0o600)?;
        let label = self.plan.manifest.label.as_str();
        if f.incremental.is_some() {
            self.write_incremental(f, &out, dest)?;
        } else {
            self.write_whole(f, label, &out, dest)?;
        }
        if self.fsync {
            fsutil::sync(&out, dest)?;
        } else {
            start_writeback(&out);
        }
        set_mode_and_time(&out, f, dest)?;
        give_file(&out, self.owner, dest)
    }

    /// Reads and checks one piece (its digest is verified by `object::decode`).
    fn piece(&self, holder: &str, p: &Piece) -> Result<(object::ObjectHeader, Vec<u8>)> {
        let key = self.repo.keys().backup_object(holder, &p.object)?;
        let place = object::Place {
            key: key.as_str(),
            offset: p.offset,
        };
        // The piece's stored bytes are this thread's alone (in the common case: a buffer read for
        // it), so an encrypted piece is opened where it lies.
        let decoded = match self.fetched {
            Some(f) => {
                let mut stored = f.read_range(holder, &p.object, p.offset, p.length)?;
                self.repo.decode_object_mut(place, &mut stored, p.size)
            }
            None => {
                let stored = self
                    .repo
                    .storage()
                    .get_range(&key, p.offset, p.length)?
                    .ok_or_else(|| Error::CorruptObject {
                        key: key.to_string(),
                        reason: "the object disappeared during the restore".into(),
                    })?;
                match stored.try_into_mut() {
                    Ok(mut owned) => self.repo.decode_object_mut(place, &mut owned, p.size),
                    Err(shared) => self.repo.decode_object(place, &shared, p.size),
                }
            }
        };
        let (header, plain) = decoded.map_err(|e| self.unrestorable(e))?;
        // The object checked itself (its digest against its bytes); this ties it to the manifest: an
        // object of the right size put in the place of another is refused too.
        if let Some(recorded) = p.digest {
            if recorded.0 != header.digest {
                return Err(self.unrestorable(Error::ChecksumMismatch {
                    key: key.to_string(),
                    expected: format!("{} {}", header.alg.name(), recorded.to_hex()),
                    found: header.digest_hex(),
                }));
            }
        }
        if plain.len() as u64 != p.size {
            return Err(Error::CorruptObject {
                key: key.to_string(),
                reason: format!("{} bytes, the manifest recorded {}", plain.len(), p.size),
            });
        }
        Ok((header, plain))
    }

    /// A damaged piece: the error says which backup cannot be restored and what to do.
    fn unrestorable(&self, e: Error) -> Error {
        let advice = format!(
            "backup {} cannot be restored, choose another with --set",
            self.plan.manifest.label
        );
        match e {
            Error::ChecksumMismatch {
                key,
                expected,
                found,
            } => Error::CorruptObject {
                key,
                reason: format!("checksum mismatch, expected {expected}, found {found}; {advice}"),
            },
            Error::CorruptObject { key, reason } => Error::CorruptObject {
                key,
                reason: format!("{reason}; {advice}"),
            },
            e => e,
        }
    }

    /// A whole file: its pieces in order, then its digest compared with the manifest's. `label` is the
    /// backup whose manifest holds the entry.
    fn write_whole(&self, f: &FileEntry, label: &str, out: &File, dest: &Path) -> Result<()> {
        let mut shas = Vec::with_capacity(f.pieces.len());
        let mut writer = SequentialWriter::new(out, dest);
        for p in &f.pieces {
            let (header, plain) = self.piece(FileEntry::piece_backup(p, label), p)?;
            shas.push(header.digest);
            writer.write(&plain)?;
        }
        let found = Checksum(object::content_digest(&shas));
        if f.digest != Some(found) {
            return Err(Error::ChecksumMismatch {
                key: format!("{} (file {} of backup {label})", dest.display(), f.path),
                expected: f.digest.map(|d| d.to_hex()).unwrap_or_default(),
                found: found.to_hex(),
            });
        }
        Ok(())
    }

    /// A relation file in incremental form, rebuilt by its per-block plan (`incremental::RebuildPlan`):
    /// the layers are read newest first, each block written (at its offset) when the plan takes it
    /// from there, then the base (the newest whole copy in the chain) gives what is left below every
    /// later length. Every block is written once and every piece read at most once; what nothing
    /// covers stays a hole (zeroes). One piece in memory at a time, plus the plan.
    fn write_incremental(&self, f: &FileEntry, out: &File, dest: &Path) -> Result<()> {
        let (layers, base) = self.layers(f)?;
        let truncations: Vec<u32> = layers
            .iter()
            .map(|(_, e)| e.incremental.unwrap_or(0))
            .collect();
        // The plan holds an entry per block: a length no relation segment can have (as
        // pg_combinebackup, past RELSEG_SIZE) is a damaged manifest, not an allocation to attempt.
        if let Some(((label, e), _)) = layers
            .iter()
            .zip(&truncations)
            .find(|(_, t)| **t > pgformat::relfile::RELSEG_SIZE)
        {
            return Err(Error::CorruptObject {
                key: format!("manifest of backup {label}"),
                reason: format!(
                    "file {} is in incremental form with {} blocks, more than a relation segment \
                     has ({}): the manifest is damaged",
                    e.path,
                    e.incremental.unwrap_or(0),
                    pgformat::relfile::RELSEG_SIZE
                ),
            });
        }
        let mut plan = RebuildPlan::new(&truncations);
        out.set_len(plan.length() as u64 * BLOCK)
            .map_err(werr(dest))?;
        let mut writer = RestoreWriter::new(out, dest);
        for (k, (label, entry)) in layers.iter().enumerate() {
            self.apply_layer(&mut plan, k, label, entry, &mut writer)?;
        }
        self.apply_base(&mut plan, base, &mut writer)
    }

    /// The incremental layers of `f`, newest first (`f` itself, then its copies in the older backups
    /// as long as they are incremental too), and the base with the label of the backup holding it.
    fn layers<'p>(&'p self, f: &'p FileEntry) -> Result<(Vec<Layer<'p>>, Layer<'p>)> {
        let plan = self.plan;
        let mut layers: Vec<(&str, &FileEntry)> = vec![(plan.manifest.label.as_str(), f)];
        loop {
            let k = layers.len() - 1;
            let (label, entry) = plan.older_entry(k, &f.path).ok_or_else(|| {
                Error::ChainBroken {
                    label: plan.manifest.label.to_string(),
                    reason: format!(
                        "file {} is incremental in {} but the backup it is built on has no copy of it",
                        f.path, layers[k].0
                    ),
                }
            })?;
            if entry.incremental.is_some() {
                layers.push((label, entry));
            } else {
                return Ok((layers, (label, entry)));
            }
        }
    }

    /// Reads layer `k`'s pieces and writes the blocks the plan takes from it, consecutive ones in one
    /// write.
    fn apply_layer(
        &self,
        plan: &mut RebuildPlan,
        k: usize,
        label: &str,
        entry: &FileEntry,
        out: &mut RestoreWriter,
    ) -> Result<()> {
        let mut nth = 0u32;
        for p in &entry.pieces {
            let holder = FileEntry::piece_backup(p, label);
            let (_, plain) = self.piece(holder, p)?;
            let what = self
                .repo
                .keys()
                .backup_object(holder, &p.object)?
                .to_string();
            let inc = Incremental::parse(&what, &plain)?;
            if inc.truncation_blocks != entry.incremental.unwrap_or(0) {
                return Err(Error::CorruptObject {
                    key: what,
                    reason: format!(
                        "incremental piece of {} says {} blocks, the manifest {:?}",
                        entry.path, inc.truncation_blocks, entry.incremental
                    ),
                });
            }
            // (first stored index, first block, count) of the run being gathered.
            let mut run: Option<(usize, u32, u32)> = None;
            for (i, &b) in inc.block_numbers.iter().enumerate() {
                let taken = plan.offer(k, nth, b);
                nth += 1;
                if !taken {
                    continue;
                }
                match &mut run {
                    Some((_, first, count)) if *first + *count == b => *count += 1,
                    _ => {
                        if let Some(r) = run.replace((i, b, 1)) {
                            write_run(&inc, r, out)?;
                        }
                    }
                }
            }
            if let Some(r) = run {
                write_run(&inc, r, out)?;
            }
        }
        Ok(())
    }

    /// Writes the blocks the plan takes from the base, reading only its pieces that hold some; when
    /// every piece was read, the base's digest is checked too.
    fn apply_base(
        &self,
        plan: &mut RebuildPlan,
        (label, base): (&str, &FileEntry),
        out: &mut RestoreWriter,
    ) -> Result<()> {
        let base_blocks = base.size.div_ceil(BLOCK).min(u32::MAX as u64) as u32;
        if plan.take_base(base_blocks) == 0 && base.pieces.is_empty() {
            return Ok(());
        }
        let limit = plan.base_limit() as u64 * BLOCK;
        let mut offset = 0u64;
        let mut shas = Vec::with_capacity(base.pieces.len());
        let mut read_all = true;
        for p in &base.pieces {
            let (start, end) = (offset, offset + p.size);
            offset = end;
            let runs = if start < limit {
                plan.base_runs((start / BLOCK) as u32..end.div_ceil(BLOCK) as u32)
            } else {
                Vec::new()
            };
            if runs.is_empty() {
                read_all = false;
                continue;
            }
            let (header, plain) = self.piece(FileEntry::piece_backup(p, label), p)?;
            shas.push(header.digest);
            for (first, count) in runs {
                // The run's bytes that lie in this piece (a block never straddles two pieces of a
                // relation file, but nothing here relies on it).
                let from = (first as u64 * BLOCK).max(start);
                let to = ((first + count) as u64 * BLOCK).min(end);
                let bytes = &plain[(from - start) as usize..(to - start) as usize];
                out.write_at(bytes, from)?;
            }
        }
        if read_all && base.digest.is_some() {
            let found = Checksum(object::content_digest(&shas));
            if base.digest != Some(found) {
                return Err(Error::ChecksumMismatch {
                    key: format!("file {} of backup {label}", base.path),
                    expected: base.digest.map(|d| d.to_hex()).unwrap_or_default(),
                    found: found.to_hex(),
                });
            }
        }
        Ok(())
    }
}

/// A copy of a file in one backup of the chain, with that backup's label.
type Layer<'a> = (&'a str, &'a FileEntry);

/// Writes a run of consecutive blocks of an incremental piece: (first stored index, first block,
/// count); the stored blocks of a run are consecutive too (block numbers ascend strictly).
fn write_run(inc: &Incremental, run: (usize, u32, u32), out: &mut RestoreWriter) -> Result<()> {
    let (i, first, count) = run;
    let bytes = inc.blocks(i, count as usize);
    out.write_at(bytes, first as u64 * BLOCK)
}

const BLOCK: u64 = pgformat::relfile::BLCKSZ as u64;

/// Asks the kernel to start writing a file back now, without waiting (the durable flush is
/// `sync_filesystems` at the end): the disk writes while we decompress the next files, instead of each
/// thread stalling on its own fsync.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call only schedules I/O. Failure is harmless (the final sync
    // flushes everything).
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
#[path = "file_writer_tests.rs"]
mod tests;
