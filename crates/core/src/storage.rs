//! Repository storage: a synchronous face over object_store, so that callers in the archiver, the
//! backup worker and the CLI need no async code.
//!
//! Durability rule: `put_new` returns only when the object is durable (for local repositories
//! object_store writes a staging file, fsyncs it, links it into place and fsyncs the directory,
//! `with_fsync(true)`), and it never replaces an existing object (`PutMode::Create`).

use crate::config::RepoUrl;
use crate::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;

/// Result of writing an object that must not be replaced.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    AlreadyExists,
}

/// A cheap fingerprint of a stored object, to notice without reading it that it vanished or was
/// replaced (a repository unmounted or moved away): on a local repository its file's device, inode,
/// size and modification time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

pub struct Storage {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    url: RepoUrl,
}

impl Storage {
    /// Opens a repository; a local one must exist (we do not create the root: a typo would otherwise
    /// silently archive into a new directory).
    pub fn open(url: &RepoUrl) -> Result<Storage> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Other(format!("cannot start the storage runtime: {e}")))?;
        let store: Arc<dyn ObjectStore> = match url {
            RepoUrl::Local(path) => {
                if !path.is_dir() {
                    return Err(Error::RepoRootMissing { path: path.clone() });
                }
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| Error::storage(&path.display().to_string(), e))?
                    .with_fsync(true);
                Arc::new(fs)
            }
        };
        Ok(Storage {
            store,
            runtime,
            url: url.clone(),
        })
    }

    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    /// Checks that the repository's root still exists. Writes create missing parent directories, so
    /// without this check a repository directory renamed away (or a file system unmounted under it)
    /// would silently be recreated, empty, at the same path.
    pub fn check_root(&self) -> Result<()> {
        match &self.url {
            RepoUrl::Local(path) if !path.is_dir() => {
                Err(Error::RepoRootMissing { path: path.clone() })
            }
            RepoUrl::Local(_) => Ok(()),
        }
    }

    /// The fingerprint of an object, when the backend has a cheap one and the object exists.
    pub fn stamp(&self, key: &str) -> Option<ObjectStamp> {
        use std::os::unix::fs::MetadataExt;
        match &self.url {
            RepoUrl::Local(root) => {
                let meta = std::fs::metadata(root.join(key)).ok()?;
                Some(ObjectStamp {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    size: meta.size(),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                })
            }
        }
    }

    /// The stored size of an object; `None` when it does not exist.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = ObjPath::from(key);
        self.runtime.block_on(async {
            match self.store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Error::storage(key, e)),
            }
        })
    }

    /// Reads a whole object; `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.get_with(key, object_store::GetOptions::default())
    }

    /// Reads the first `len` bytes of an object; `None` when it does not exist.
    pub fn get_prefix(&self, key: &str, len: u64) -> Result<Option<Bytes>> {
        let range = Some((0..len).into());
        self.get_with(
            key,
            object_store::GetOptions {
                range,
                ..Default::default()
            },
        )
    }

    /// Reads `len` bytes at `offset` of an object (a piece of a bundle); `None` when it does not exist.
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Bytes>> {
        let range = Some((offset..offset + len).into());
        let got = self.get_with(
            key,
            object_store::GetOptions {
                range,
                ..Default::default()
            },
        )?;
        match got {
            Some(b) if b.len() as u64 != len => Err(Error::CorruptObject {
                key: key.to_string(),
                reason: format!(
                    "expected {len} bytes at offset {offset}, the object holds only {}",
                    b.len()
                ),
            }),
            other => Ok(other),
        }
    }

    fn get_with(&self, key: &str, opts: object_store::GetOptions) -> Result<Option<Bytes>> {
        let path = ObjPath::from(key);
        self.runtime.block_on(async {
            match self.store.get_opts(&path, opts).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(Some)
                    .map_err(|e| Error::storage(key, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Error::storage(key, e)),
            }
        })
    }

    /// Writes an object durably unless it already exists.
    pub fn put_new(&self, key: &str, data: Vec<u8>) -> Result<PutOutcome> {
        let path = ObjPath::from(key);
        self.runtime.block_on(async {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&path, PutPayload::from(data), opts)
                .await
            {
                Ok(_) => Ok(PutOutcome::Written),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(Error::storage(key, e)),
            }
        })
    }

    /// Writes an object durably, replacing any previous version (only for objects that may change,
    /// never for WAL or backup data).
    pub fn put_replace(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let path = ObjPath::from(key);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| Error::storage(key, e))
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        let path = ObjPath::from(key);
        self.runtime.block_on(async {
            match self.store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(Error::storage(key, e)),
            }
        })
    }

    /// Lists keys (with sizes) under a prefix, recursively, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let path = ObjPath::from(prefix);
        let mut out: Vec<(String, u64)> = self.runtime.block_on(async {
            self.store
                .list(Some(&path))
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect()
                .await
                .map_err(|e| Error::storage(prefix, e))
        })?;
        // object_store's local staging files carry a '#': never real objects.
        out.retain(|(k, _)| !k.contains('#'));
        out.sort();
        Ok(out)
    }

    /// When the newest object under a prefix was written; None when there is none.
    pub fn newest_modification(
        &self,
        prefix: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let path = ObjPath::from(prefix);
        self.runtime.block_on(async {
            self.store
                .list(Some(&path))
                .try_fold(
                    None,
                    |newest: Option<chrono::DateTime<chrono::Utc>>, m| async move {
                        Ok(Some(
                            newest.map_or(m.last_modified, |n| n.max(m.last_modified)),
                        ))
                    },
                )
                .await
                .map_err(|e| Error::storage(prefix, e))
        })
    }

    /// Lists the immediate sub-directories (common prefixes) under a prefix, as full keys, sorted.
    pub fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let path = ObjPath::from(prefix);
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&path)))
            .map_err(|e| Error::storage(prefix, e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every object under a prefix (garbage of a failed backup), and on a local repository the
    /// directories that held them (object stores have no directories to leave behind).
    pub fn delete_prefix(&self, prefix: &str) -> Result<()> {
        for (key, _) in self.list(prefix)? {
            self.delete(&key)?;
        }
        match &self.url {
            RepoUrl::Local(root) => match std::fs::remove_dir_all(root.join(prefix)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::WriteFile {
                    path: root.join(prefix),
                    source: e,
                }),
                _ => Ok(()),
            },
        }
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let path = ObjPath::from(key);
        self.runtime.block_on(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::storage(key, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! The storage conformance suite: run against every backend (local for now).
    use super::*;

    fn local() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&RepoUrl::Local(dir.path().to_path_buf())).unwrap();
        (dir, s)
    }

    #[test]
    fn put_new_never_overwrites() {
        let (_d, s) = local();
        assert_eq!(
            s.put_new("st/a/b.bin", b"one".to_vec()).unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            s.put_new("st/a/b.bin", b"two".to_vec()).unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(s.get("st/a/b.bin").unwrap().unwrap().as_ref(), b"one");
        assert_eq!(
            s.get_prefix("st/a/b.bin", 2).unwrap().unwrap().as_ref(),
            b"on"
        );
        assert!(s.exists("st/a/b.bin").unwrap());
        assert!(!s.exists("st/a/c.bin").unwrap());
        assert_eq!(s.get("st/missing").unwrap(), None);
    }

    #[test]
    fn list_and_delete() {
        let (_d, s) = local();
        s.put_new("st/x/2", vec![1, 2]).unwrap();
        s.put_new("st/x/1", vec![1]).unwrap();
        s.put_replace("st/y", vec![]).unwrap();
        s.put_replace("st/y", vec![9]).unwrap();
        assert_eq!(
            s.list("st/x").unwrap(),
            vec![("st/x/1".into(), 1), ("st/x/2".into(), 2)]
        );
        assert_eq!(s.get_range("st/x/2", 1, 1).unwrap().unwrap().as_ref(), &[2]);
        assert!(s.get_range("st/x/2", 1, 5).is_err());
        assert_eq!(s.list_dirs("st").unwrap(), vec!["st/x".to_string()]);
        s.put_new("st/z/a/b", vec![1]).unwrap();
        s.delete_prefix("st/z").unwrap();
        assert_eq!(s.list_dirs("st").unwrap(), vec!["st/x".to_string()]);
        s.delete("st/x/1").unwrap();
        s.delete("st/x/1").unwrap();
        assert_eq!(s.list("st").unwrap().len(), 2);
        assert_eq!(s.get("st/y").unwrap().unwrap().as_ref(), &[9]);
    }

    #[test]
    fn missing_root_is_a_clear_error() {
        let e = Storage::open(&RepoUrl::Local("/nonexistent/strata-repo".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent/strata-repo") && e.contains("does not exist"),
            "{e}"
        );
    }
}
