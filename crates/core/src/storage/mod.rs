//! Repository storage: a synchronous face over object_store, so that callers in the archiver, the
//! backup worker and the CLI need no async code. One `Storage` is opened per repository and process and
//! shared by all its threads (it is a cheap clone of one store and one runtime).
//!
//! What differs between kinds of repository sits behind `Backend`, asked by capability (does the root
//! still exist, a cheap fingerprint of an object, which listed names are the backend's own staging
//! files, what to tidy after a prefix is deleted), so callers never match on the kind of repository.
//!
//! Durability rule: `put_new` returns only when the object is durable (for local repositories
//! object_store writes a staging file, fsyncs it, links it into place and fsyncs the directory,
//! `with_fsync(true)`), and it never replaces an existing object (`PutMode::Create`).

mod local;

use crate::config::RepoUrl;
use crate::paths::RepoKey;
use crate::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What one kind of repository provides beyond the object store itself.
pub trait Backend: Send + Sync {
    /// The object store (shared by every thread of the process).
    fn store(&self) -> &Arc<dyn ObjectStore>;
    /// The repository as the user wrote it (for messages; never holds a secret).
    fn describe(&self) -> String;
    /// Fails when the repository's root is gone (an unmounted disk), where that can happen.
    fn check_root(&self) -> Result<()>;
    /// A cheap fingerprint of an object, where the backend has one.
    fn stamp(&self, key: &RepoKey) -> Option<ObjectStamp>;
    /// Whether a listed key is the backend's own temporary object, never a real one.
    fn is_staging_name(&self, key: &str) -> bool;
    /// Tidies what deleting every object under a prefix leaves behind (a local directory tree).
    fn remove_empty_prefix(&self, prefix: &RepoKey) -> Result<()>;
    /// The directory a local repository lives in (restore refuses targets that overlap it).
    fn local_root(&self) -> Option<&Path>;
}

struct Shared {
    backend: Box<dyn Backend>,
    runtime: tokio::runtime::Runtime,
    /// Requests sent to the store, for tests and statistics.
    requests: AtomicU64,
}

/// An open repository store, shared across threads by cloning.
#[derive(Clone)]
pub struct Storage {
    shared: Arc<Shared>,
}

impl Storage {
    /// Opens a repository; a local one must exist.
    pub fn open(url: &RepoUrl) -> Result<Storage> {
        let backend: Box<dyn Backend> = match url {
            RepoUrl::Local(path) => Box::new(local::LocalBackend::open(path)?),
        };
        Storage::with_backend(backend)
    }

    /// A store over any backend (tests wrap one to count or fail requests).
    pub fn with_backend(backend: Box<dyn Backend>) -> Result<Storage> {
        // One current-thread runtime for the process's store: `block_on` may be called from several
        // threads at once (they take turns driving I/O); local file I/O runs on its blocking pool.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                what: "cannot start the storage runtime".into(),
                source: e,
            })?;
        Ok(Storage {
            shared: Arc::new(Shared {
                backend,
                runtime,
                requests: AtomicU64::new(0),
            }),
        })
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        self.shared.backend.store()
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.shared.runtime.block_on(f)
    }

    /// How many requests this store has sent so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The repository as the user named it, for messages.
    pub fn describe(&self) -> String {
        self.shared.backend.describe()
    }

    /// The directory of a local repository.
    pub fn local_root(&self) -> Option<&Path> {
        self.shared.backend.local_root()
    }

    /// Checks that the repository's root still exists. Writes create missing parent directories, so
    /// without this check a repository directory renamed away (or a file system unmounted under it)
    /// would silently be recreated, empty, at the same path.
    pub fn check_root(&self) -> Result<()> {
        self.shared.backend.check_root()
    }

    /// The fingerprint of an object, when the backend has a cheap one and the object exists.
    pub fn stamp(&self, key: &RepoKey) -> Option<ObjectStamp> {
        self.shared.backend.stamp(key)
    }

    /// The stored size of an object; `None` when it does not exist.
    pub fn size(&self, key: &RepoKey) -> Result<Option<u64>> {
        let path = ObjPath::from(key.as_str());
        self.block_on(async {
            match self.store().head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Error::storage(key.as_str(), e)),
            }
        })
    }

    /// Reads a whole object; `None` when it does not exist.
    pub fn get(&self, key: &RepoKey) -> Result<Option<Bytes>> {
        self.get_with(key, object_store::GetOptions::default())
    }

    /// Reads a whole object unless it is larger than `limit` bytes, in one request: `None` when it does
    /// not exist, `Err(CorruptObject)` when it is too large (nothing past the limit is read).
    pub fn get_limited(&self, key: &RepoKey, limit: u64) -> Result<Option<Bytes>> {
        // Ask for one byte more than allowed: a reply that long proves the object too large. A range
        // past the end is cut to the object's length (as HTTP range requests are).
        match self.get_bytes(key, 0..limit + 1)? {
            Some(b) if b.len() as u64 > limit => Err(Error::CorruptObject {
                key: key.to_string(),
                reason: format!(
                    "more than {limit} stored bytes, too large for what it should hold"
                ),
            }),
            other => Ok(other),
        }
    }

    /// Reads the first `len` bytes of an object; `None` when it does not exist.
    pub fn get_prefix(&self, key: &RepoKey, len: u64) -> Result<Option<Bytes>> {
        self.get_bytes(key, 0..len)
    }

    /// Reads `len` bytes at `offset` of an object (a piece of a bundle); `None` when it does not exist.
    pub fn get_range(&self, key: &RepoKey, offset: u64, len: u64) -> Result<Option<Bytes>> {
        match self.get_bytes(key, offset..offset + len)? {
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

    fn get_bytes(&self, key: &RepoKey, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        let start = range.start;
        let opts = object_store::GetOptions {
            range: Some(range.into()),
            ..Default::default()
        };
        match self.get_with(key, opts) {
            // A range that starts at or past the end (an empty object) is refused by the store: the
            // bytes there are none, which the caller's length check reports as damage, not as a
            // storage failure.
            Err(e @ Error::Storage { .. }) => match self.size(key)? {
                None => Ok(None),
                Some(size) if size <= start => Ok(Some(Bytes::new())),
                Some(_) => Err(e),
            },
            other => other,
        }
    }

    fn get_with(&self, key: &RepoKey, opts: object_store::GetOptions) -> Result<Option<Bytes>> {
        let path = ObjPath::from(key.as_str());
        self.block_on(async {
            match self.store().get_opts(&path, opts).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(Some)
                    .map_err(|e| Error::storage(key.as_str(), e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Error::storage(key.as_str(), e)),
            }
        })
    }

    /// Writes an object durably unless it already exists.
    pub fn put_new(&self, key: &RepoKey, data: Vec<u8>) -> Result<PutOutcome> {
        let path = ObjPath::from(key.as_str());
        self.block_on(async {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .store()
                .put_opts(&path, PutPayload::from(data), opts)
                .await
            {
                Ok(_) => Ok(PutOutcome::Written),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(Error::storage(key.as_str(), e)),
            }
        })
    }

    /// Writes an object durably, replacing any previous version (only for objects that may change,
    /// never for WAL or backup data).
    pub fn put_replace(&self, key: &RepoKey, data: Vec<u8>) -> Result<()> {
        let path = ObjPath::from(key.as_str());
        self.block_on(self.store().put(&path, PutPayload::from(data)))
            .map(|_| ())
            .map_err(|e| Error::storage(key.as_str(), e))
    }

    pub fn exists(&self, key: &RepoKey) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Lists keys (with sizes) under a prefix, recursively, sorted.
    pub fn list(&self, prefix: &RepoKey) -> Result<Vec<(RepoKey, u64)>> {
        let path = ObjPath::from(prefix.as_str());
        let listed: Vec<(String, u64)> = self.block_on(async {
            self.store()
                .list(Some(&path))
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect()
                .await
                .map_err(|e| Error::storage(prefix.as_str(), e))
        })?;
        let mut out: Vec<(RepoKey, u64)> = listed
            .into_iter()
            .filter(|(k, _)| !self.shared.backend.is_staging_name(k))
            .filter_map(|(k, size)| RepoKey::from_listing(k).map(|k| (k, size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// When the newest object under a prefix was written; None when there is none.
    pub fn newest_modification(
        &self,
        prefix: &RepoKey,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let path = ObjPath::from(prefix.as_str());
        self.block_on(async {
            self.store()
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
                .map_err(|e| Error::storage(prefix.as_str(), e))
        })
    }

    /// Lists the objects directly under a prefix (not those in sub-directories), with sizes, sorted.
    pub fn list_shallow(&self, prefix: &RepoKey) -> Result<Vec<(RepoKey, u64)>> {
        let path = ObjPath::from(prefix.as_str());
        let listed = self
            .block_on(self.store().list_with_delimiter(Some(&path)))
            .map_err(|e| Error::storage(prefix.as_str(), e))?;
        let mut out: Vec<(RepoKey, u64)> = listed
            .objects
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .filter(|(k, _)| !self.shared.backend.is_staging_name(k))
            .filter_map(|(k, size)| RepoKey::from_listing(k).map(|k| (k, size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Lists the immediate sub-directories (common prefixes) under a prefix, as full keys, sorted.
    pub fn list_dirs(&self, prefix: &RepoKey) -> Result<Vec<RepoKey>> {
        let path = ObjPath::from(prefix.as_str());
        let listed = self
            .block_on(self.store().list_with_delimiter(Some(&path)))
            .map_err(|e| Error::storage(prefix.as_str(), e))?;
        let mut out: Vec<RepoKey> = listed
            .common_prefixes
            .into_iter()
            .filter_map(|p| RepoKey::from_listing(p.to_string()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every object under a prefix (garbage of a failed backup), and what the backend leaves
    /// behind (a local repository's directories).
    pub fn delete_prefix(&self, prefix: &RepoKey) -> Result<()> {
        for (key, _) in self.list(prefix)? {
            self.delete(&key)?;
        }
        self.shared.backend.remove_empty_prefix(prefix)
    }

    pub fn delete(&self, key: &RepoKey) -> Result<()> {
        let path = ObjPath::from(key.as_str());
        self.block_on(async {
            match self.store().delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::storage(key.as_str(), e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! The storage conformance suite: run against every backend (local for now).
    use super::*;

    fn k(key: &str) -> RepoKey {
        RepoKey::from_listing(key.to_string()).unwrap()
    }

    fn local() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&RepoUrl::Local(dir.path().to_path_buf())).unwrap();
        (dir, s)
    }

    #[test]
    fn put_new_never_overwrites() {
        let (_d, s) = local();
        assert_eq!(
            s.put_new(&k("st/a/b.bin"), b"one".to_vec()).unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            s.put_new(&k("st/a/b.bin"), b"two".to_vec()).unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(s.get(&k("st/a/b.bin")).unwrap().unwrap().as_ref(), b"one");
        assert_eq!(
            s.get_prefix(&k("st/a/b.bin"), 2).unwrap().unwrap().as_ref(),
            b"on"
        );
        assert!(s.exists(&k("st/a/b.bin")).unwrap());
        assert!(!s.exists(&k("st/a/c.bin")).unwrap());
        assert_eq!(s.get(&k("st/missing")).unwrap(), None);
    }

    #[test]
    fn list_and_delete() {
        let (_d, s) = local();
        s.put_new(&k("st/x/2"), vec![1, 2]).unwrap();
        s.put_new(&k("st/x/1"), vec![1]).unwrap();
        s.put_replace(&k("st/y"), vec![]).unwrap();
        s.put_replace(&k("st/y"), vec![9]).unwrap();
        assert_eq!(
            s.list(&k("st/x")).unwrap(),
            vec![(k("st/x/1"), 1), (k("st/x/2"), 2)]
        );
        assert_eq!(
            s.get_range(&k("st/x/2"), 1, 1).unwrap().unwrap().as_ref(),
            &[2]
        );
        assert!(s.get_range(&k("st/x/2"), 1, 5).is_err());
        assert_eq!(s.list_dirs(&k("st")).unwrap(), vec![k("st/x")]);
        s.put_new(&k("st/z/a/b"), vec![1]).unwrap();
        s.delete_prefix(&k("st/z")).unwrap();
        assert_eq!(s.list_dirs(&k("st")).unwrap(), vec![k("st/x")]);
        s.delete(&k("st/x/1")).unwrap();
        s.delete(&k("st/x/1")).unwrap();
        assert_eq!(s.list(&k("st")).unwrap().len(), 2);
        assert_eq!(s.get(&k("st/y")).unwrap().unwrap().as_ref(), &[9]);
    }

    #[test]
    fn get_limited_reads_nothing_past_the_limit() {
        let (_d, s) = local();
        s.put_new(&k("st/w"), vec![7u8; 100]).unwrap();
        assert_eq!(s.get_limited(&k("st/w"), 100).unwrap().unwrap().len(), 100);
        assert_eq!(s.get_limited(&k("st/w"), 1000).unwrap().unwrap().len(), 100);
        let e = s.get_limited(&k("st/w"), 99).unwrap_err();
        assert!(matches!(e, Error::CorruptObject { .. }), "{e}");
        assert_eq!(s.get_limited(&k("st/none"), 10).unwrap(), None);
        // An empty object is read as empty (callers report it as damaged), not as a storage error.
        s.put_new(&k("st/empty"), vec![]).unwrap();
        assert_eq!(s.get_limited(&k("st/empty"), 10).unwrap().unwrap().len(), 0);
        assert!(s.get_range(&k("st/empty"), 0, 4).is_err());
        let before = s.requests();
        s.get_limited(&k("st/w"), 100).unwrap();
        assert_eq!(s.requests() - before, 1);
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
