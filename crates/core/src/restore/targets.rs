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

use super::beneath::Root;
use super::safety;
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

impl Target {
    /// Resolves and opens `path`; its parent is created when missing and `create_parent` (a path the
    /// operator gave, or any path when not run as root), else it must exist.
    pub fn open(path: &Path, what: &str, create_parent: bool) -> Result<Target> {
        let real = safety::resolve(path);
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(Error::Other(format!(
                "{what} {} cannot be a target directory",
                path.display()
            )));
        };
        let name = name
            .to_str()
            .ok_or_else(|| Error::Other(format!("{what} {} is not UTF-8", path.display())))?
            .to_string();
        let parent = Root::open_resolved(parent, create_parent)?.ok_or_else(|| {
            Error::Other(format!(
                "{what} {}: its parent directory does not exist (a restore run as root does not \
                 create directories where the backup says): create it, or choose the directory with \
                 --tablespace-map NAME_OR_OID=DIR",
                path.display()
            ))
        })?;
        let existing = parent.open_child(&name).map_err(|e| {
            Error::Other(format!(
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
            return Err(Error::Other(format!(
                "{} {} belongs to user id {uid}, neither root, this user nor the cluster's owner: \
                 refusing to restore into someone else's directory",
                self.what,
                self.path.display()
            )));
        }
        if mode & 0o002 != 0 {
            return Err(Error::Other(format!(
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
        let stage = staging_name(&self.name);
        self.parent.remove(&stage)?;
        self.parent.create_child(&stage)
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
