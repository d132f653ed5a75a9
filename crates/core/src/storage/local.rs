//! The local-directory backend (`file:///path`): object_store's `LocalFileSystem` with fsync, plus what
//! only a directory tree has — a root that can vanish (an unmounted disk), cheap fingerprints (device,
//! inode, size, time), staging files to hide from listings, and empty directories to remove.

use super::{Backend, Io, ObjectStamp, Stamp};
use crate::paths::RepoKey;
use crate::{Error, Result};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct LocalBackend {
    root: PathBuf,
    store: Arc<dyn ObjectStore>,
}

impl LocalBackend {
    /// Opens a repository directory, which must exist (we do not create the root: a typo would otherwise
    /// silently archive into a new directory).
    pub fn open(root: &Path) -> Result<LocalBackend> {
        if !root.is_dir() {
            return Err(Error::RepoRootMissing { path: root.into() });
        }
        let fs = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| {
                let root = root.display().to_string();
                Error::storage(&format!("file://{root}"), &root, &e)
            })?
            .with_fsync(true);
        Ok(LocalBackend {
            root: root.into(),
            store: Arc::new(fs),
        })
    }
}

impl Backend for LocalBackend {
    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn check_root(&self, _io: &Io) -> Result<()> {
        if self.root.is_dir() {
            Ok(())
        } else {
            Err(Error::RepoRootMissing {
                path: self.root.clone(),
            })
        }
    }

    fn stamp(&self, key: &RepoKey, _io: &Io) -> Option<ObjectStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.root.join(key.as_str())).ok()?;
        Some(ObjectStamp(Stamp::File {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }))
    }

    fn is_staging_name(&self, key: &str) -> bool {
        // object_store's local staging files carry a '#': never real objects.
        key.contains('#')
    }

    fn remove_empty_prefix(&self, prefix: &RepoKey) -> Result<()> {
        let dir = self.root.join(prefix.as_str());
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::WriteFile {
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
