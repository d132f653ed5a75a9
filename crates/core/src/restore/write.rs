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

use super::plan::Plan;
use super::RestoreProgress;
use crate::incremental::Incremental;
use crate::manifest::{FileEntry, Piece};
use crate::object;
use crate::paths::RepoPaths;
use crate::storage::Storage;
use crate::{Error, Result};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

/// Creates the directory tree and tablespace links; with `delta`, removes what the backup lacks first.
pub fn prepare_tree(plan: &Plan, pgdata: &Path, delta: bool) -> Result<u64> {
    let mut removed = 0;
    if delta {
        // Never leave a startable directory behind while it is being rewritten.
        remove_if_exists(&pgdata.join(PG_CONTROL))?;
        let mut wanted: HashSet<PathBuf> = HashSet::new();
        for d in &plan.manifest.directories {
            wanted.insert(plan.destination(pgdata, &d.path));
        }
        for f in &plan.manifest.files {
            wanted.insert(plan.destination(pgdata, &f.path));
        }
        for ts in &plan.tablespaces {
            wanted.insert(pgdata.join("pg_tblspc").join(ts.oid.to_string()));
        }
        let mut roots = vec![pgdata.to_path_buf()];
        roots.extend(plan.tablespaces.iter().map(|t| t.write_dir.clone()));
        for root in roots {
            removed += remove_unwanted(&root, &wanted)?;
        }
    }
    create_dir(pgdata, 0o700)?;
    for ts in &plan.tablespaces {
        create_dir(&ts.write_dir, 0o700)?;
    }
    for d in &plan.manifest.directories {
        create_dir(&plan.destination(pgdata, &d.path), d.mode)?;
    }
    for ts in &plan.tablespaces {
        let link = pgdata.join("pg_tblspc").join(ts.oid.to_string());
        if std::fs::read_link(&link).ok().as_deref() != Some(ts.dir.as_path()) {
            remove_if_exists(&link)?;
            std::os::unix::fs::symlink(&ts.dir, &link).map_err(werr(&link))?;
        }
    }
    Ok(removed)
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            std::fs::remove_file(dir).map_err(werr(dir))?;
            std::fs::create_dir_all(dir).map_err(werr(dir))?;
        }
        Err(_) => std::fs::create_dir_all(dir).map_err(werr(dir))?,
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(werr(dir))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(werr(path)),
        Ok(_) => std::fs::remove_file(path).map_err(werr(path)),
        Err(_) => Ok(()),
    }
}

/// Removes everything under `root` that is not in `wanted` (a wanted tablespace link is kept, its
/// target is walked separately).
fn remove_unwanted(root: &Path, wanted: &HashSet<PathBuf>) -> Result<u64> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(0);
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !wanted.contains(&p) {
            remove_if_exists(&p)?;
            removed += 1;
        } else if meta.is_dir() {
            removed += remove_unwanted(&p, wanted)?;
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
    pgdata: &Path,
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
                    };
                    for f in rx.iter() {
                        if stop.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let dest = plan.destination(pgdata, &f.path);
                        if delta && matches_manifest(&dest, f) {
                            set_mode_and_time(&dest, f)?;
                            kept.fetch_add(1, Ordering::Relaxed);
                        } else {
                            writer.write(f, &dest)?;
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
fn matches_manifest(dest: &Path, f: &FileEntry) -> bool {
    // A file in incremental form has no digest of its whole content: it is always rebuilt.
    let Some(digest) = &f.sha256 else {
        return false;
    };
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return false;
    };
    if !meta.is_file() || meta.len() != f.size {
        return false;
    }
    let Ok(mut file) = File::open(dest) else {
        return false;
    };
    let mut shas = Vec::with_capacity(f.pieces.len());
    let mut buf = Vec::new();
    for p in &f.pieces {
        buf.resize(p.size as usize, 0);
        if file.read_exact(&mut buf).is_err() {
            return false;
        }
        shas.push(object::sha256(&buf));
    }
    &hex::encode(object::content_digest(&shas)) == digest
}

fn set_mode_and_time(dest: &Path, f: &FileEntry) -> Result<()> {
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(f.mode)).map_err(werr(dest))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.mtime.max(0) as u64);
    let file = File::options().write(true).open(dest).map_err(werr(dest))?;
    file.set_modified(mtime).map_err(werr(dest))
}

/// Writes one file from its pieces.
pub struct FileWriter<'a> {
    pub storage: &'a Storage,
    pub paths: &'a RepoPaths,
    pub plan: &'a Plan,
    /// fsync the file before returning (pg_control); otherwise writeback is only started.
    pub fsync: bool,
}

impl FileWriter<'_> {
    pub fn write(&mut self, f: &FileEntry, dest: &Path) -> Result<()> {
        if std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(dest).map_err(werr(dest))?;
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_for(f.mode)
            .open(dest)
            .map_err(werr(dest))?;
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
        drop(out);
        set_mode_and_time(dest, f)
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
        let (header, plain) = object::decode(&key, &stored)?;
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
        let found = hex::encode(object::content_digest(&shas));
        if f.sha256.as_deref() != Some(found.as_str()) {
            return Err(Error::ChecksumMismatch {
                key: format!("{} (file {} of backup {label})", dest.display(), f.path),
                expected: f.sha256.clone().unwrap_or_default(),
                found,
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
            let found = hex::encode(object::content_digest(&shas));
            if base.1.sha256.as_deref() != Some(found.as_str()) {
                return Err(Error::ChecksumMismatch {
                    key: format!("file {} of backup {}", base.1.path, base.0),
                    expected: base.1.sha256.clone().unwrap_or_default(),
                    found,
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

trait ModeFor {
    fn mode_for(&mut self, mode: u32) -> &mut Self;
}

impl ModeFor for OpenOptions {
    fn mode_for(&mut self, mode: u32) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        // Owner can always write while restoring; the recorded mode is applied afterwards.
        self.mode(mode | 0o600)
    }
}

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
pub fn sync_filesystems(plan: &Plan, pgdata: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let mut dirs = vec![pgdata.to_path_buf()];
    dirs.extend(plan.tablespaces.iter().map(|t| t.write_dir.clone()));
    for d in dirs {
        let f = File::open(&d).map_err(werr(&d))?;
        // SAFETY: a valid descriptor of an open directory.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(Error::WriteFile {
                path: d,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// fsyncs every directory of the restored tree (so that the new entries are durable).
pub fn sync_dirs(plan: &Plan, pgdata: &Path) -> Result<()> {
    let mut dirs = vec![pgdata.to_path_buf()];
    dirs.extend(plan.tablespaces.iter().map(|t| t.write_dir.clone()));
    dirs.extend(
        plan.manifest
            .directories
            .iter()
            .map(|d| plan.destination(pgdata, &d.path)),
    );
    for d in dirs {
        File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(werr(&d))?;
    }
    Ok(())
}

/// Empties a directory (the clean-up of a failed restore into an empty directory).
pub fn remove_contents(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = remove_if_exists(&e.path());
        }
    }
}
