//! The target directories of a restore, opened once before anything is checked or written.
//!
//! Each target (`--pgdata`, each tablespace directory) is resolved once (links in the operator's path
//! followed then), and its parent opened from `/` one component at a time without following links:
//! whatever the postgres user swaps in later (a link where the data directory was, a link in its
//! parent) makes the restore fail, never write elsewhere. The checks (empty, `PG_VERSION`, the system
//! identifier in `global/pg_control`, `postmaster.pid`, owner and mode) are made through the opened
//! directory, and the same descriptor is written through: what was checked is what is written.
//!
//! A new directory is created with `mkdirat` in the opened parent — either the target itself, or,
//! when every target is new, a hidden staging sibling `.<name>.strata-restore` that is renamed into
//! place (`renameat2(RENAME_NOREPLACE)`) only when everything passed.

use super::beneath::{Kind, Root};
use super::safety;
use super::RestoreOptions;
use crate::manifest::Manifest;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One target directory.
pub struct Target {
    /// How errors name it: `--pgdata`, `tablespace 16400 directory`.
    pub what: String,
    /// As given (the tablespace link and `tablespace_map` point here).
    pub path: PathBuf,
    /// Resolved (no links).
    pub real: PathBuf,
    parent: Root,
    name: String,
    /// The directory, when it exists already.
    pub existing: Option<Root>,
}

fn staging_name(name: &str) -> String {
    format!(".{name}.strata-restore")
}

/// The sibling that holds the objects of a restore from a remote repository (`fetch_once`).
fn spool_name(name: &str) -> String {
    format!(".{name}.strata-spool")
}

impl Target {
    /// Resolves and opens `path`; its parent is created when missing and `create_parent` (a path the
    /// operator gave, or any path when not run as root), else it must exist.
    pub fn open(path: &Path, what: &str, create_parent: bool) -> Result<Target> {
        let real = safety::resolve(path);
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(Error::TargetRefused(format!(
                "{what} {} cannot be a target directory",
                path.display()
            )));
        };
        let name = name
            .to_str()
            .ok_or_else(|| Error::TargetRefused(format!("{what} {} is not UTF-8", path.display())))?
            .to_string();
        let parent = Root::open_resolved(parent, create_parent)?.ok_or_else(|| {
            Error::TargetRefused(format!(
                "{what} {}: its parent directory does not exist (a restore run as root does not \
                 create directories where the backup says): create it, or choose the directory with \
                 --tablespace-map NAME_OR_OID=DIR",
                path.display()
            ))
        })?;
        let existing = parent.open_child(&name).map_err(|e| {
            Error::TargetRefused(format!(
                "{what} {}: {e} (it must be a directory, not a link or a file)",
                path.display()
            ))
        })?;
        Ok(Target {
            what: what.to_string(),
            path: path.to_path_buf(),
            real,
            parent,
            name,
            existing,
        })
    }

    pub fn is_empty_or_absent(&self) -> Result<bool> {
        match &self.existing {
            None => Ok(true),
            Some(r) => r.is_empty(),
        }
    }

    /// An existing target must belong to root, this user or the cluster's owner, and must not be
    /// writable by everyone (no data or tablespace directory is).
    pub fn check_owner(&self, owner_uid: Option<u32>) -> Result<()> {
        let Some(root) = &self.existing else {
            return Ok(());
        };
        let (_, _, uid, mode) = root.identity()?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if uid != 0 && uid != me && Some(uid) != owner_uid {
            return Err(Error::TargetRefused(format!(
                "{} {} belongs to user id {uid}, neither root, this user nor the cluster's owner: \
                 refusing to restore into someone else's directory",
                self.what,
                self.path.display()
            )));
        }
        if mode & 0o002 != 0 {
            return Err(Error::TargetRefused(format!(
                "{} {} is writable by every user (mode {:o}): not a data directory; choose a \
                 directory of its own",
                self.what,
                self.path.display(),
                mode & 0o7777
            )));
        }
        Ok(())
    }

    /// Creates the staging sibling (removing a stale one first) and opens it.
    pub fn create_staging(&self) -> Result<Root> {
        self.create_sibling(&staging_name(&self.name))
    }

    /// Creates the spool sibling, empty (one left by an interrupted restore is removed first).
    pub fn create_spool(&self) -> Result<Root> {
        self.create_sibling(&spool_name(&self.name))
    }

    fn create_sibling(&self, name: &str) -> Result<Root> {
        self.parent.remove(name)?;
        self.parent.create_child(name)
    }

    /// Removes the spool sibling.
    pub fn remove_spool(&self) {
        let _ = self.parent.remove(&spool_name(&self.name));
    }

    /// Removes the staging sibling (a failed restore).
    pub fn remove_staging(&self) {
        let _ = self.parent.remove(&staging_name(&self.name));
    }

    /// Renames the staging sibling into place; fails if the target appeared meanwhile.
    pub fn commit_staging(&self) -> Result<()> {
        self.parent
            .rename_noreplace(&staging_name(&self.name), &self.name)?;
        self.parent.sync_dir("")
    }

    /// The directory to write into when not staging: the existing one, or a new one made now.
    pub fn open_or_create(&self) -> Result<Root> {
        match &self.existing {
            Some(r) => r.try_clone(),
            None => self.parent.create_child(&self.name),
        }
    }
}

/// `--delta` rewrites and deletes: only over what is provably a data directory (and tablespace
/// directories) of this backup's cluster, unless `--force`. Checked through the opened directories.
pub fn check_delta(m: &Manifest, opts: &RestoreOptions, targets: &[Target]) -> Result<()> {
    let pgdata = &targets[0];
    if let (Some(root), false) = (&pgdata.existing, opts.force) {
        if !root.is_empty()? {
            // (A link there counts: the postgres user may have replaced the file; it is replaced back.)
            if matches!(root.kind("PG_VERSION"), Kind::Missing | Kind::Dir) {
                return Err(Error::TargetRefused(format!(
                    "--delta: {} is not empty but has no PG_VERSION: it is not a PostgreSQL data \
                     directory, and --delta would delete what it holds; choose the right directory \
                     (or add --force if you are sure)",
                    pgdata.path.display()
                )));
            }
            let control = root
                .read_small("global/pg_control", 8192)
                .unwrap_or_default();
            if let Some(sysid) = pgformat::control::system_identifier(&control) {
                if sysid != m.system_identifier {
                    return Err(Error::TargetRefused(format!(
                        "--delta: {} holds another cluster (system identifier {sysid} in \
                         global/pg_control, backup {} is of cluster {}): refusing to overwrite it; \
                         choose the right directory (or add --force to replace that cluster)",
                        pgdata.path.display(),
                        m.label,
                        m.system_identifier
                    )));
                }
            }
        }
    }
    for t in &targets[1..] {
        let Some(root) = &t.existing else {
            continue;
        };
        let names = root.list("")?;
        if !names.is_empty() && !names.iter().any(|n| n.starts_with("PG_15_")) {
            return Err(Error::TargetRefused(format!(
                "--delta: {} {} is not empty and has no PG_15_* directory: it is not a PostgreSQL \
                 15 tablespace; restore the tablespace into an empty directory with \
                 --tablespace-map NAME_OR_OID=DIR",
                t.what,
                t.path.display()
            )));
        }
    }
    Ok(())
}

/// Run as root, a tablespace location taken from the manifest (untrusted: whoever can write the
/// repository chose it) is used only where the cluster's owner could have put a tablespace anyway:
/// the directory the data directory's own `pg_tblspc/<oid>` link points to (`--delta`), or an existing
/// directory owned by the cluster's owner. Anything else — creating `/root/.ssh`, say — needs the
/// operator's `--tablespace-map`.
pub fn check_tablespace_origins(
    m: &Manifest,
    opts: &RestoreOptions,
    targets: &[Target],
    owner: Option<(u32, u32)>,
) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    for (t, target) in m.tablespaces.iter().zip(&targets[1..]) {
        let mapped = opts
            .tablespace_map
            .iter()
            .any(|(k, _)| k == &t.name || k == &t.oid.to_string());
        if mapped {
            continue;
        }
        let linked = targets[0].existing.as_ref().and_then(|pg| {
            let link = pg.read_link(&format!("pg_tblspc/{}", t.oid))?;
            Some(safety::resolve(&pg.real_path().join(link)))
        });
        if linked.as_deref() == Some(target.real.as_path()) {
            continue;
        }
        let owned = match (&target.existing, owner) {
            (Some(root), Some((uid, _))) => root.identity()?.2 == uid,
            _ => false,
        };
        if !owned {
            return Err(Error::TargetRefused(format!(
                "tablespace {} ({}): its location {} comes from the backup and is not a directory \
                 owned by the cluster's owner ({}); a restore run as root does not create \
                 directories where the backup says: create it for the owner first, or choose one \
                 with --tablespace-map {}=DIR",
                t.name,
                t.oid,
                t.location,
                m.owner
                    .as_ref()
                    .map_or("unknown".to_string(), |o| o.user.clone()),
                t.name
            )));
        }
    }
    Ok(())
}

/// Where the data directory's `pg_wal` link points, checked like a target: plausible, not overlapping
/// the repository or another target, owned by root, this user or the data directory's owner, and not
/// writable by everyone. None when `pg_wal` is not a link.
pub fn linked_wal(targets: &[Target], repo: Option<&Path>) -> Result<Option<PathBuf>> {
    let Some(pg) = &targets[0].existing else {
        return Ok(None);
    };
    if pg.kind("pg_wal") != Kind::Other {
        return Ok(None);
    }
    let Some(link) = pg.read_link("pg_wal") else {
        return Ok(None);
    };
    let what = "the pg_wal link's target";
    let real = safety::check_plausible(&pg.real_path().join(link), what)?;
    let mut all: Vec<(String, PathBuf)> = targets
        .iter()
        .map(|t| (t.what.clone(), t.real.clone()))
        .collect();
    all.push((what.into(), real.clone()));
    safety::check_separate(&all, repo)?;
    let root = Root::open_resolved(&real, false)?.ok_or_else(|| {
        Error::TargetRefused(format!(
            "pg_wal links to {}, which does not exist: remove the link or create the directory",
            real.display()
        ))
    })?;
    let (_, _, uid, mode) = root.identity()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let pg_uid = pg.identity()?.2;
    if (uid != 0 && uid != me && uid != pg_uid) || mode & 0o002 != 0 {
        return Err(Error::TargetRefused(format!(
            "pg_wal links to {}, which belongs to user id {uid} or is writable by everyone: \
             refusing to clean it; remove the link",
            real.display()
        )));
    }
    Ok(Some(real))
}
