//! Writing a planned restore: directories, tablespace links, then the files in parallel (largest first,
//! `process_max` threads over a bounded queue), each streamed piece by piece with every piece and the
//! whole file checked against the manifest's SHA-256, then modes, times and fsyncs.
//!
//! A file in incremental form is rebuilt over its copies in the older backups of the chain (see
//! `FileWriter::write_incremental`).
//!
//! `global/pg_control` is not written here: the caller writes it last, so that a restore interrupted at
//! any point leaves a directory PostgreSQL refuses to start. With `--delta`, a file whose size and
//! SHA-256 already match is kept as it is, and anything the backup does not have is removed.

use super::beneath::{Kind, Root};
use super::plan::Plan;
use super::RestoreProgress;
use crate::incremental::Incremental;
use crate::manifest::{FileEntry, Piece, Sha256Sum};
use crate::object;
use crate::paths::RepoPaths;
use crate::storage::Storage;
use crate::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub const PG_CONTROL: &str = "global/pg_control";

/// What the file phase did.
#[derive(Debug, Default)]
pub struct Written {
    pub files_written: u64,
    pub files_kept: u64,
    pub entries_removed: u64,
    pub bytes_written: u64,
}

fn werr(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::WriteFile {
        path: path.into(),
        source,
    }
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

/// Writes every file except pg_control, in parallel.
#[allow(clippy::too_many_arguments)]
pub fn write_files(
    plan: &Plan,
    storage: &Storage,
    paths: &RepoPaths,
    roots: &Roots,
    delta: bool,
    process_max: usize,
    progress: &RestoreProgress,
    abort: &AtomicBool,
) -> Result<Written> {
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
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let written = AtomicU64::new(0);
    let kept = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let threads = process_max.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<&FileEntry>(threads * 4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = rx.clone();
            let (stop, failure, written, kept, bytes) = (&stop, &failure, &written, &kept, &bytes);
            s.spawn(move || {
                let run = || -> Result<()> {
                    let storage = Storage::open(storage.url())?;
                    let mut writer = FileWriter {
                        storage: &storage,
                        paths,
                        plan,
                        fsync: false,
                        owner: roots.owner,
                    };
                    for f in rx.iter() {
                        if stop.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let (root, rel) = roots.locate(plan, &f.path);
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
                    }
                    Ok(())
                };
                if let Err(e) = run() {
                    stop.store(true, Ordering::Relaxed);
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                }
            });
        }
        drop(rx);
        for f in files {
            if stop.load(Ordering::Relaxed) || tx.send(f).is_err() {
                break;
            }
        }
        drop(tx);
    });
    if let Ok(Some(e)) = failure.into_inner() {
        return Err(e);
    }
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
    pub storage: &'a Storage,
    pub paths: &'a RepoPaths,
    pub plan: &'a Plan,
    /// fsync the file before returning (pg_control); otherwise writeback is only started.
    pub fsync: bool,
    /// Run as root: who the file is given to.
    pub owner: Option<(u32, u32)>,
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
            out.sync_all().map_err(werr(dest))?;
        } else {
            start_writeback(&out);
        }
        set_mode_and_time(&out, f, dest)?;
        give_file(&out, self.owner, dest)
    }

    /// Reads and checks one piece (its SHA-256 is verified by `object::decode`).
    fn piece(&self, holder: &str, p: &Piece) -> Result<(object::ObjectHeader, Vec<u8>)> {
        let key = self.paths.backup_object(holder, &p.object);
        let stored = self
            .storage
            .get_range(&key, p.offset, p.length)?
            .ok_or_else(|| Error::CorruptObject {
                key: key.clone(),
                reason: "the object disappeared during the restore".into(),
            })?;
        let (header, plain) = object::decode_limited(&key, &stored, p.size)?;
        if plain.len() as u64 != p.size {
            return Err(Error::CorruptObject {
                key,
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

    /// A relation file in incremental form, rebuilt with the rule of `incremental::rebuild_plan`: the
    /// newest copy of each block, never from behind a backup whose length did not reach it. The base
    /// (the newest whole copy in the chain) is written first, cut to the smallest length any later
    /// incremental had; then the incrementals from oldest to newest, each cut to the smallest length
    /// of the ones after it. What nothing covers stays a hole (zeroes). One piece in memory at a time.
    fn write_incremental(&self, f: &FileEntry, out: &File, dest: &Path) -> Result<()> {
        let plan = self.plan;
        let mut layers: Vec<(&str, &FileEntry)> = vec![(plan.manifest.label.as_str(), f)];
        let base = loop {
            let k = layers.len() - 1;
            let (label, entry) = plan.older_entry(k, &f.path).ok_or_else(|| {
                Error::Other(format!(
                    "file {} is incremental in {} but the backup it is built on has no copy of it",
                    f.path, layers[k].0
                ))
            })?;
            if entry.incremental.is_some() {
                layers.push((label, entry));
            } else {
                break (label, entry);
            }
        };
        let length = f.incremental.unwrap_or(0);
        out.set_len(length as u64 * BLOCK).map_err(werr(dest))?;
        // cutoffs[k]: blocks of layer k (0 newest) are used only below this.
        let mut cutoffs = Vec::with_capacity(layers.len());
        let mut cut = length;
        for (_, e) in &layers {
            cutoffs.push(cut);
            cut = cut.min(e.incremental.unwrap_or(0));
        }
        let base_limit = cut as u64 * BLOCK;
        let mut offset = 0u64;
        let mut shas = Vec::with_capacity(base.1.pieces.len());
        for p in &base.1.pieces {
            if offset >= base_limit {
                break;
            }
            let (header, plain) = self.piece(FileEntry::piece_backup(p, base.0), p)?;
            shas.push(header.sha256);
            let keep = (base_limit - offset).min(plain.len() as u64) as usize;
            out.write_all_at(&plain[..keep], offset)
                .map_err(werr(dest))?;
            offset += plain.len() as u64;
        }
        if offset >= base.1.size && base.1.sha256.is_some() {
            // The whole base was read: its digest can be checked too.
            let found = Sha256Sum(object::content_digest(&shas));
            if base.1.sha256 != Some(found) {
                return Err(Error::ChecksumMismatch {
                    key: format!("file {} of backup {}", base.1.path, base.0),
                    expected: base.1.sha256.map(|d| d.to_hex()).unwrap_or_default(),
                    found: found.to_hex(),
                });
            }
        }
        for (k, (label, entry)) in layers.iter().enumerate().rev() {
            let cutoff = cutoffs[k];
            for p in &entry.pieces {
                let holder = FileEntry::piece_backup(p, label);
                let (_, plain) = self.piece(holder, p)?;
                let what = self.paths.backup_object(holder, &p.object);
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
                for (i, &b) in inc.block_numbers.iter().enumerate() {
                    if b < cutoff {
                        out.write_all_at(inc.block(i), b as u64 * BLOCK)
                            .map_err(werr(dest))?;
                    }
                }
            }
        }
        Ok(())
    }
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
