//! Writing a planned restore: directories, tablespace links, then the files in parallel (largest first,
//! `process_max` threads over a bounded queue), each streamed piece by piece with every piece and the
//! whole file checked against the manifest's digest, then modes, times and fsyncs.
//!
//! A file in incremental form is rebuilt from its copies in the older backups of the chain by a
//! per-block plan, each block written once (see `file_writer`).
//!
//! `global/pg_control` is not written here: the caller writes it last, so that a restore interrupted at
//! any point leaves a directory PostgreSQL refuses to start. With `--delta`, a file whose size and
//! digest already match is kept as it is, and anything the backup does not have is removed.

use super::beneath::{Kind, Root};
pub use super::file_writer::FileWriter;
use super::file_writer::{give_file, set_mode_and_time};
use super::plan::Plan;
use super::RestoreProgress;
use crate::fsutil::werr;
use crate::manifest::FileEntry;
use crate::object;
use crate::repo::Repo;
use crate::{Error, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
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
            if let Some(file) =
                existing.filter(|file| matches_manifest(file, f, plan.manifest.digest))
            {
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
/// digest, computed piece by piece as the backup did, with its hash (`alg`).
fn matches_manifest(mut file: &File, f: &FileEntry, alg: object::DigestAlg) -> bool {
    // A file in incremental form has no digest of its whole content: it is always rebuilt.
    let Some(digest) = &f.digest else {
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
        shas.push(alg.hash(&buf));
    }
    object::content_digest(&shas) == digest.0
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
