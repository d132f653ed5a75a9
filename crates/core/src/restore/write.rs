//! Writing a planned restore: directories, tablespace links, then the files in parallel (largest first,
//! `process_max` threads over a bounded queue), each streamed piece by piece with every piece and the
//! whole file checked against the manifest's SHA-256, then modes, times and fsyncs.
//!
//! A file in incremental form is rebuilt from its copies in the older backups of the chain by a
//! per-block plan, each block written once (see `FileWriter::write_incremental`).
//!
//! `global/pg_control` is not written here: the caller writes it last, so that a restore interrupted at
//! any point leaves a directory PostgreSQL refuses to start. With `--delta`, a file whose size and
//! SHA-256 already match is kept as it is, and anything the backup does not have is removed.

use super::beneath::{Kind, Root};
use super::plan::Plan;
use super::RestoreProgress;
use crate::fsutil::{self, werr};
use crate::incremental::{Incremental, RebuildPlan};
use crate::manifest::{FileEntry, Piece, Sha256Sum};
use crate::object;
use crate::repo::Repo;
use crate::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const PG_CONTROL: &str = "global/pg_control";

/// What the file phase did.
#[derive(Debug, Default)]
pub struct Written {
    pub files_written: u64,
    pub files_kept: u64,
    pub entries_removed: u64,
    pub bytes_written: u64,
}

/// The directories a restore writes into, opened once (see `targets`): the data directory and each
/// tablespace directory (index-aligned with `Plan::tablespaces`). Every path below them is reached
/// with `beneath`, never following a link.
pub struct Roots {
    pub pgdata: Root,
    pub tablespaces: Vec<Root>,
    /// Run as root: the user and group every entry the restore makes is given to (the cluster's
    /// owner). Only what the restore makes is chowned, one entry at a time, never a whole tree.
    pub owner: Option<(u32, u32)>,
}

impl Roots {
    /// The root and the path below it where a manifest path goes.
    pub fn locate<'a>(&self, plan: &Plan, path: &'a str) -> (&Root, &'a str) {
        match plan.locate(path) {
            (Some(i), rel) => (&self.tablespaces[i], rel),
            (None, rel) => (&self.pgdata, rel),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Root> {
        std::iter::once(&self.pgdata).chain(self.tablespaces.iter())
    }
}

/// A WAL file name as PostgreSQL writes them in pg_wal (segments, .partial, .backup, .history) or an
/// archive status file for one: the only names removed through a `pg_wal` link.
fn is_wal_name(name: &str, wal_segment_size: u32) -> bool {
    let name = name
        .strip_suffix(".ready")
        .or_else(|| name.strip_suffix(".done"))
        .unwrap_or(name);
    pgformat::lsn::WalFileName::parse(name, wal_segment_size).is_some()
}

/// Gives an entry the restore made to the cluster's owner (run as root).
pub(super) fn give(root: &Root, rel: &str, owner: Option<(u32, u32)>) -> Result<()> {
    match owner {
        Some((uid, gid)) => root.chown(rel, uid, gid),
        None => Ok(()),
    }
}

/// Creates the directory tree and tablespace links; with `delta`, removes what the backup lacks first.
pub fn prepare_tree(plan: &Plan, roots: &Roots, delta: bool) -> Result<u64> {
    let mut removed = 0;
    if delta {
        // Never leave a startable directory behind while it is being rewritten.
        roots.pgdata.remove(PG_CONTROL)?;
        let mut wanted: Vec<HashSet<&str>> = vec![HashSet::new(); roots.tablespaces.len() + 1];
        let paths = plan
            .manifest
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .chain(plan.manifest.files.iter().map(|f| f.path.as_str()));
        for path in paths {
            let (ts, rel) = plan.locate(path);
            wanted[ts.map_or(0, |i| i + 1)].insert(rel);
        }
        let links: Vec<String> = plan
            .tablespaces
            .iter()
            .map(|t| format!("pg_tblspc/{}", t.oid))
            .collect();
        wanted[0].extend(links.iter().map(String::as_str));
        removed += remove_unwanted(&roots.pgdata, "", &wanted[0], false)?;
        for (i, root) in roots.tablespaces.iter().enumerate() {
            removed += remove_unwanted(root, "", &wanted[i + 1], true)?;
        }
        if let Some(wal) = &plan.wal_link {
            removed += clean_linked_pg_wal(wal, plan.manifest.wal_segment_size)?;
        }
    }
    for root in std::iter::once(&roots.pgdata).chain(roots.tablespaces.iter()) {
        root.set_dir_mode("", 0o700)?;
        give(root, "", roots.owner)?;
    }
    // An operator's pg_wal link (WAL on another disk, checked by the plan) is kept, and only
    // archive_status is made through it; any other link is replaced.
    let linked_wal = match &plan.wal_link {
        Some(real) if roots.pgdata.kind("pg_wal") == Kind::Other => {
            Root::open_resolved(real, false)?
        }
        _ => None,
    };
    for d in &plan.manifest.directories {
        let (root, rel, mode) = match (&linked_wal, plan.locate(&d.path)) {
            (Some(_), (None, "pg_wal")) => continue,
            (Some(wal), (None, "pg_wal/archive_status")) => (wal, "archive_status", 0o700),
            _ => {
                let (root, rel) = roots.locate(plan, &d.path);
                (root, rel, d.mode)
            }
        };
        root.dir(rel, true)?;
        root.set_dir_mode(rel, mode)?;
        give(root, rel, roots.owner)?;
    }
    for ts in &plan.tablespaces {
        let link = format!("pg_tblspc/{}", ts.oid);
        if roots.pgdata.read_link(&link).as_deref() != Some(ts.dir.as_path()) {
            roots.pgdata.symlink(&link, &ts.dir)?;
        }
        give(&roots.pgdata, &link, roots.owner)?;
    }
    Ok(removed)
}

/// Removes everything under `rel` of `root` that is not in `wanted`, never through a link. In a
/// tablespace directory only PostgreSQL's own `PG_<version>_...` directories are touched: whatever
/// else is there is not ours to delete.
fn remove_unwanted(
    root: &Root,
    rel: &str,
    wanted: &HashSet<&str>,
    tablespace: bool,
) -> Result<u64> {
    let mut removed = 0;
    let Ok(names) = root.list(rel) else {
        return Ok(0);
    };
    for name in names {
        if tablespace && rel.is_empty() && !name.starts_with("PG_") {
            continue;
        }
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if child == "pg_wal" && !tablespace && root.kind(&child) == Kind::Other {
            continue; // an operator's pg_wal link: see clean_linked_pg_wal
        }
        if !wanted.contains(child.as_str()) {
            root.remove(&child)?;
            removed += 1;
        } else if root.kind(&child) == Kind::Dir {
            removed += remove_unwanted(root, &child, wanted, tablespace)?;
        }
    }
    Ok(removed)
}

/// Through a `pg_wal` link (WAL kept on another disk; the plan checked where it points), removes
/// only WAL and archive status files, by their exact name forms.
fn clean_linked_pg_wal(wal: &Path, wal_segment_size: u32) -> Result<u64> {
    let Some(wal) = Root::open_resolved(wal, false)? else {
        return Ok(0);
    };
    let mut removed = 0;
    for dir in ["", "archive_status"] {
        for name in wal.list(dir).unwrap_or_default() {
            let rel = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            if is_wal_name(&name, wal_segment_size) && wal.kind(&rel) == Kind::File {
                wal.remove(&rel)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// How the files are written: where, with how many threads, and what stops them.
pub struct WriteSettings<'a> {
    pub roots: &'a Roots,
    /// Keep a file whose size and content already match (`--delta`).
    pub delta: bool,
    pub process_max: usize,
    pub progress: &'a RestoreProgress,
    /// Set when another part of the restore failed: the writers stop.
    pub abort: &'a AtomicBool,
    /// From a remote repository: the objects read once, through a spool (`fetch_once`).
    pub fetched: Option<&'a super::fetch_once::FetchOnce<'a>>,
}

/// Writes every file except pg_control, in parallel.
pub fn write_files(plan: &Plan, repo: &Repo, settings: &WriteSettings) -> Result<Written> {
    let WriteSettings {
        roots,
        delta,
        process_max,
        progress,
        abort,
        fetched: _,
    } = *settings;
    let mut files: Vec<&FileEntry> = plan
        .manifest
        .files
        .iter()
        .filter(|f| f.path != PG_CONTROL)
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    progress
        .bytes_total
        .store(plan.manifest.database_size, Ordering::Relaxed);
    progress
        .files_total
        .store(plan.manifest.files.len() as u64, Ordering::Relaxed);
    let written = AtomicU64::new(0);
    let kept = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    crate::parallel::run(
        process_max,
        &stop,
        files,
        || Ok(()),
        |_, f| {
            if abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            crate::testhook::pause(crate::testhook::RESTORE_PAUSE);
            let mut writer = FileWriter {
                repo,
                plan,
                fsync: false,
                owner: roots.owner,
                fetched: settings.fetched,
            };
            let (root, rel) = roots.locate(plan, &f.path);
            if super::databases::is_zeroed(&plan.zeroed_databases, &f.path) {
                // A database left out: its length, all zeros, no data blocks (over whatever a
                // --delta target had there).
                let dest = root.path().join(rel);
                let out = root.create_file(rel, (f.mode & 0o777) | 0o600)?;
                out.set_len(f.size).map_err(werr(&dest))?;
                set_mode_and_time(&out, f, &dest)?;
                give_file(&out, roots.owner, &dest)?;
                written.fetch_add(1, Ordering::Relaxed);
                progress.files_done.fetch_add(1, Ordering::Relaxed);
                progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
                return Ok(());
            }
            let existing = if delta { root.open_existing(rel) } else { None };
            if let Some(file) = existing.filter(|file| matches_manifest(file, f)) {
                let dest = root.path().join(rel);
                set_mode_and_time(&file, f, &dest)?;
                give_file(&file, roots.owner, &dest)?;
                kept.fetch_add(1, Ordering::Relaxed);
            } else {
                writer.write(f, root, rel)?;
                written.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(f.size, Ordering::Relaxed);
            }
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
            Ok(())
        },
        |_| Ok(()),
    )?;
    Ok(Written {
        files_written: written.into_inner(),
        files_kept: kept.into_inner(),
        entries_removed: 0,
        bytes_written: bytes.into_inner(),
    })
}

/// Whether an existing file already has the manifest's content: same size, then the same content
/// digest, computed piece by piece as the backup did.
fn matches_manifest(mut file: &File, f: &FileEntry) -> bool {
    // A file in incremental form has no digest of its whole content: it is always rebuilt.
    let Some(digest) = &f.sha256 else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.is_file() || meta.len() != f.size {
        return false;
    }
    let mut shas = Vec::with_capacity(f.pieces.len());
    let mut buf = Vec::new();
    for p in &f.pieces {
        buf.resize(p.size as usize, 0);
        if file.read_exact(&mut buf).is_err() {
            return false;
        }
        shas.push(object::sha256(&buf));
    }
    object::content_digest(&shas) == digest.0
}

/// Gives a file the restore wrote (or kept) to the cluster's owner, through its descriptor.
fn give_file(file: &File, owner: Option<(u32, u32)>, dest: &Path) -> Result<()> {
    match owner {
        Some((uid, gid)) => {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(werr(dest))
        }
        None => Ok(()),
    }
}

/// Applies the recorded mode and modification time through the open file (never a path that could
/// have become a link).
fn set_mode_and_time(file: &File, f: &FileEntry, dest: &Path) -> Result<()> {
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
        let mut out = root.create_file(rel, (f.mode & 0o777) | 0o600)?;
        let label = self.plan.manifest.label.as_str();
        if f.incremental.is_some() {
            self.write_incremental(f, &out, dest)?;
        } else {
            self.write_whole(f, label, &mut out, dest)?;
        }
        if self.fsync {
            fsutil::sync(&out, dest)?;
        } else {
            start_writeback(&out);
        }
        set_mode_and_time(&out, f, dest)?;
        give_file(&out, self.owner, dest)
    }

    /// Reads and checks one piece (its SHA-256 is verified by `object::decode`).
    fn piece(&self, holder: &str, p: &Piece) -> Result<(object::ObjectHeader, Vec<u8>)> {
        let key = self.repo.keys().backup_object(holder, &p.object)?;
        let stored = match self.fetched {
            Some(f) => bytes::Bytes::from(f.read_range(holder, &p.object, p.offset, p.length)?),
            None => self
                .repo
                .storage()
                .get_range(&key, p.offset, p.length)?
                .ok_or_else(|| Error::CorruptObject {
                    key: key.to_string(),
                    reason: "the object disappeared during the restore".into(),
                })?,
        };
        let place = object::Place {
            key: key.as_str(),
            offset: p.offset,
        };
        let (header, plain) = self.repo.decode_object(place, &stored, p.size)?;
        if plain.len() as u64 != p.size {
            return Err(Error::CorruptObject {
                key: key.to_string(),
                reason: format!("{} bytes, the manifest recorded {}", plain.len(), p.size),
            });
        }
        Ok((header, plain))
    }

    /// A whole file: its pieces in order, then its digest compared with the manifest's. `label` is the
    /// backup whose manifest holds the entry.
    fn write_whole(&self, f: &FileEntry, label: &str, out: &mut File, dest: &Path) -> Result<()> {
        let mut shas = Vec::with_capacity(f.pieces.len());
        for p in &f.pieces {
            let (header, plain) = self.piece(FileEntry::piece_backup(p, label), p)?;
            shas.push(header.sha256);
            out.write_all(&plain).map_err(werr(dest))?;
        }
        let found = Sha256Sum(object::content_digest(&shas));
        if f.sha256 != Some(found) {
            return Err(Error::ChecksumMismatch {
                key: format!("{} (file {} of backup {label})", dest.display(), f.path),
                expected: f.sha256.map(|d| d.to_hex()).unwrap_or_default(),
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
        for (k, (label, entry)) in layers.iter().enumerate() {
            self.apply_layer(&mut plan, k, label, entry, out, dest)?;
        }
        self.apply_base(&mut plan, base, out, dest)
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
        out: &File,
        dest: &Path,
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
                            write_run(&inc, r, out, dest)?;
                        }
                    }
                }
            }
            if let Some(r) = run {
                write_run(&inc, r, out, dest)?;
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
        out: &File,
        dest: &Path,
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
            shas.push(header.sha256);
            for (first, count) in runs {
                // The run's bytes that lie in this piece (a block never straddles two pieces of a
                // relation file, but nothing here relies on it).
                let from = (first as u64 * BLOCK).max(start);
                let to = ((first + count) as u64 * BLOCK).min(end);
                let bytes = &plain[(from - start) as usize..(to - start) as usize];
                out.write_all_at(bytes, from).map_err(werr(dest))?;
            }
        }
        if read_all && base.sha256.is_some() {
            let found = Sha256Sum(object::content_digest(&shas));
            if base.sha256 != Some(found) {
                return Err(Error::ChecksumMismatch {
                    key: format!("file {} of backup {label}", base.path),
                    expected: base.sha256.map(|d| d.to_hex()).unwrap_or_default(),
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
fn write_run(inc: &Incremental, run: (usize, u32, u32), out: &File, dest: &Path) -> Result<()> {
    let (i, first, count) = run;
    let bytes = inc.blocks(i, count as usize);
    out.write_all_at(bytes, first as u64 * BLOCK)
        .map_err(werr(dest))
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

/// Makes every file written so far durable: one `syncfs` per file system holding the data directory
/// or a tablespace (what PostgreSQL's `recovery_init_sync_method = syncfs` does).
pub fn sync_filesystems(roots: &Roots) -> Result<()> {
    use std::os::fd::AsRawFd;
    for root in roots.all() {
        let dir = root.dir("", false)?;
        // SAFETY: a valid descriptor of an open directory.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(Error::WriteFile {
                path: root.path().into(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// fsyncs every directory of the restored tree (so that the new entries are durable).
pub fn sync_dirs(plan: &Plan, roots: &Roots) -> Result<()> {
    for root in roots.all() {
        root.sync_dir("")?;
    }
    for d in &plan.manifest.directories {
        let (root, rel) = roots.locate(plan, &d.path);
        if root.kind(rel) == Kind::Dir {
            root.sync_dir(rel)?;
        }
    }
    Ok(())
}

/// Empties a directory (the clean-up of a failed restore into an empty directory), not following
/// links.
pub fn remove_contents(dir: &Path) {
    if let Ok(root) = Root::open(dir) {
        for name in root.list("").unwrap_or_default() {
            let _ = root.remove(&name);
        }
    }
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
