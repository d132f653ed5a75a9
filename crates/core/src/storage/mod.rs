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
//! `with_fsync(true)`; on S3 when the PUT succeeded), and it never replaces an existing object
//! (`PutMode::Create`: a link on local disks, `If-None-Match: *` on S3).
//!
//! Remote backends retry transient failures (object_store does it per request, within the backend's
//! retry budget). A create whose reply was lost (a timeout, a dropped connection) is retried here: when
//! the retry finds the object there, it is read back, and bytes equal to ours mean the lost attempt
//! stored it (`Written`).

mod local;
mod retry;
mod s3;

use crate::config::RepoUrl;
use crate::paths::RepoKey;
use crate::{Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
pub use retry::RetryBudget;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Result of writing an object that must not be replaced.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object now holds exactly the bytes given (written now, or found holding them already).
    Written,
    /// An object with other bytes exists; it was left alone.
    AlreadyExists,
}

/// A cheap fingerprint of a stored object, to notice without reading it that it vanished or was
/// replaced (a repository unmounted or moved away): on a local repository its file's device, inode,
/// size and modification time; on S3 its ETag and size (one HEAD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStamp(Stamp);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stamp {
    File {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
    },
    ETag {
        e_tag: String,
        size: u64,
    },
}

/// What one kind of repository provides beyond the object store itself.
pub trait Backend: Send + Sync {
    /// The object store (shared by every thread of the process).
    fn store(&self) -> &Arc<dyn ObjectStore>;
    /// The repository as the user wrote it (for messages; never holds a secret).
    fn describe(&self) -> String;
    /// Fails when the repository's root is gone (an unmounted disk, a bucket that does not exist or
    /// refuses the credentials), where that can happen.
    fn check_root(&self, io: &Io) -> Result<()>;
    /// A cheap fingerprint of an object, where the backend has one.
    fn stamp(&self, key: &RepoKey, io: &Io) -> Option<ObjectStamp>;
    /// Whether a listed key is the backend's own temporary object, never a real one.
    fn is_staging_name(&self, key: &str) -> bool;
    /// Tidies what deleting every object under a prefix leaves behind (a local directory tree).
    fn remove_empty_prefix(&self, prefix: &RepoKey) -> Result<()>;
    /// The directory a local repository lives in (restore refuses targets that overlap it).
    fn local_root(&self) -> Option<&Path>;
    /// Whether "create unless it exists" must be a HEAD then a PUT (the server ignores
    /// `If-None-Match`): two writers racing inside that window can both write.
    fn create_by_head(&self) -> bool {
        false
    }
    /// The retry budget of a remote backend: a create whose reply was lost is retried within it.
    fn retry_budget(&self) -> Option<RetryBudget> {
        None
    }
    /// Whether a failure means the object does not exist (as opposed to its container).
    fn is_absent(&self, e: &object_store::Error) -> bool {
        matches!(e, object_store::Error::NotFound { .. })
    }
    /// The error to report for a failure on `key` (never holding a secret).
    fn map_error(&self, key: &str, e: &object_store::Error) -> Error {
        Error::storage(&self.describe(), key, e)
    }
}

/// The runtime a backend's own requests run on (counted with the store's).
pub struct Io<'a> {
    runtime: &'a tokio::runtime::Runtime,
    requests: &'a AtomicU64,
}

impl Io<'_> {
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.runtime.block_on(f)
    }
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
            RepoUrl::S3 {
                bucket,
                prefix,
                options,
            } => Box::new(s3::S3Backend::open(bucket, prefix, options)?),
        };
        Storage::with_backend(backend)
    }

    /// A store over any backend (tests wrap one to count or fail requests).
    pub fn with_backend(backend: Box<dyn Backend>) -> Result<Storage> {
        // One small multi-thread runtime for the process's store: `block_on` is called from several
        // threads at once, and HTTP connections (hyper's background tasks, pooled keep-alive
        // connections) must be driven by workers of their own rather than by whichever caller happens to
        // be inside `block_on`; local file I/O runs on its blocking pool.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-storage")
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

    fn io(&self) -> Io<'_> {
        Io {
            runtime: &self.shared.runtime,
            requests: &self.shared.requests,
        }
    }

    /// Runs a future on the store's runtime (tests reach the store directly).
    #[cfg(test)]
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.io().block_on(f)
    }

    /// Runs one request, retried as `retry::run` says.
    fn request<T, F, Fut>(&self, attempt: F) -> Result<T, object_store::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        retry::run(self.shared.backend.retry_budget(), &self.io(), attempt)
    }

    fn err(&self, key: &str, e: &object_store::Error) -> Error {
        self.shared.backend.map_error(key, e)
    }

    /// `None` when the failure says the object does not exist, the mapped error otherwise.
    fn absent<T>(&self, key: &str, e: object_store::Error) -> Result<Option<T>> {
        if self.shared.backend.is_absent(&e) {
            Ok(None)
        } else {
            Err(self.err(key, &e))
        }
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
        self.shared.backend.check_root(&self.io())
    }

    /// The fingerprint of an object, when the backend has a cheap one and the object exists.
    pub fn stamp(&self, key: &RepoKey) -> Option<ObjectStamp> {
        self.shared.backend.stamp(key, &self.io())
    }

    /// The stored size of an object; `None` when it does not exist.
    pub fn size(&self, key: &RepoKey) -> Result<Option<u64>> {
        let path = ObjPath::from(key.as_str());
        match self.request(|| self.store().head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) => self.absent(key.as_str(), e),
        }
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
            Some(b) if b.len() as u64 > limit => Err(too_large(key, limit)),
            other => Ok(other),
        }
    }

    /// Reads a whole object that is read once and not again soon (verification, WAL for replay) and
    /// gives its bytes to `f`; `None` when it does not exist; more than `limit` bytes are refused as by
    /// `get_limited`. On a local repository the read goes around the page cache where the file system
    /// allows it (`local::read_direct`), into a buffer each thread reuses, and a link or anything but a
    /// regular file in the object's place is refused as damage; elsewhere it is `get_limited`.
    pub fn read_once<R>(
        &self,
        key: &RepoKey,
        limit: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        thread_local! {
            static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        if let Some(root) = self.local_root() {
            let path = root.join(key.as_str());
            // Taken out while `f` runs: `f` may read objects itself.
            let mut scratch = SCRATCH.take();
            self.shared.requests.fetch_add(1, Ordering::Relaxed);
            let out = match local::read_direct(&path, limit, &mut scratch) {
                Ok(local::DirectRead::Read(range)) => Ok(Some(f(&scratch[range]))),
                Ok(local::DirectRead::Missing) => Ok(None),
                Ok(local::DirectRead::TooLarge) => Err(too_large(key, limit)),
                Ok(local::DirectRead::NotAnObject(what)) => Err(Error::CorruptObject {
                    key: key.to_string(),
                    reason: format!("{what} is there instead of an object: refused, not read"),
                }),
                Err(source) => Err(Error::ReadFile { path, source }),
            };
            // Kept for the next read, unless one unusually large object made it big.
            if scratch.len() <= 64 << 20 {
                SCRATCH.set(scratch);
            }
            return out;
        }
        Ok(self.get_limited(key, limit)?.map(|b| f(&b)))
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
        let read = || async {
            let r = self.store().get_opts(&path, opts.clone()).await?;
            r.bytes().await
        };
        match self.request(read) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => self.absent(key.as_str(), e),
        }
    }

    /// Writes an object durably unless it already exists. An existing object is read back: holding the
    /// same bytes it counts as `Written` (that is what a retry whose first reply was lost finds, on
    /// every backend the same), with other bytes as `AlreadyExists`.
    ///
    /// On a remote backend, an attempt whose outcome is unknown (a timeout or a connection lost after
    /// the request was sent) is tried again within the retry budget.
    pub fn put_new(&self, key: &RepoKey, data: Vec<u8>) -> Result<PutOutcome> {
        let data = Bytes::from(data);
        for _ in 0..3 {
            match self.request(|| self.try_create(key, &data)) {
                Ok(PutOutcome::Written) => return Ok(PutOutcome::Written),
                Ok(PutOutcome::AlreadyExists) => match self.get(key)? {
                    Some(stored) if stored == data => return Ok(PutOutcome::Written),
                    Some(_) => return Ok(PutOutcome::AlreadyExists),
                    // Deleted meanwhile: try again (it is absent now).
                    None => continue,
                },
                Err(e) => return Err(self.err(key.as_str(), &e)),
            }
        }
        Err(Error::StateChanged(format!(
            "{key} in {} exists and vanishes again each time it is written",
            self.describe()
        )))
    }

    /// One attempt at creating an object.
    async fn try_create(
        &self,
        key: &RepoKey,
        data: &Bytes,
    ) -> Result<PutOutcome, object_store::Error> {
        let path = ObjPath::from(key.as_str());
        let payload = PutPayload::from(data.clone());
        if self.shared.backend.create_by_head() {
            match self.store().head(&path).await {
                Ok(_) => return Ok(PutOutcome::AlreadyExists),
                Err(e) if !self.shared.backend.is_absent(&e) => return Err(e),
                Err(_) => {}
            }
            self.store().put(&path, payload).await?;
            return Ok(PutOutcome::Written);
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store().put_opts(&path, payload, opts).await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// Writes an object durably, replacing any previous version (only for objects that may change,
    /// never for WAL or backup data).
    pub fn put_replace(&self, key: &RepoKey, data: Vec<u8>) -> Result<()> {
        let path = ObjPath::from(key.as_str());
        let payload = PutPayload::from(data);
        self.request(|| self.store().put(&path, payload.clone()))
            .map(|_| ())
            .map_err(|e| self.err(key.as_str(), &e))
    }

    pub fn exists(&self, key: &RepoKey) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Lists keys (with sizes) under a prefix, recursively, sorted.
    pub fn list(&self, prefix: &RepoKey) -> Result<Vec<(RepoKey, u64)>> {
        let path = ObjPath::from(prefix.as_str());
        let listed: Vec<(String, u64)> = self
            .request(|| {
                self.store()
                    .list(Some(&path))
                    .map_ok(|m| (m.location.to_string(), m.size))
                    .try_collect()
            })
            .map_err(|e| self.err(prefix.as_str(), &e))?;
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
        self.request(|| {
            self.store().list(Some(&path)).try_fold(
                None,
                |newest: Option<chrono::DateTime<chrono::Utc>>, m| async move {
                    Ok(Some(
                        newest.map_or(m.last_modified, |n| n.max(m.last_modified)),
                    ))
                },
            )
        })
        .map_err(|e| self.err(prefix.as_str(), &e))
    }

    /// Lists the objects directly under a prefix (not those in sub-directories), with sizes, sorted.
    pub fn list_shallow(&self, prefix: &RepoKey) -> Result<Vec<(RepoKey, u64)>> {
        let path = ObjPath::from(prefix.as_str());
        let listed = self
            .request(|| self.store().list_with_delimiter(Some(&path)))
            .map_err(|e| self.err(prefix.as_str(), &e))?;
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
            .request(|| self.store().list_with_delimiter(Some(&path)))
            .map_err(|e| self.err(prefix.as_str(), &e))?;
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
        match self.request(|| self.store().delete(&path)) {
            Ok(()) => Ok(()),
            Err(e) => self.absent(key.as_str(), e).map(|_: Option<()>| ()),
        }
    }
}

/// An object larger than what it should hold.
fn too_large(key: &RepoKey, limit: u64) -> Error {
    Error::CorruptObject {
        key: key.to_string(),
        reason: format!("more than {limit} stored bytes, too large for what it should hold"),
    }
}

#[cfg(test)]
mod s3_fault_tests;
#[cfg(test)]
mod s3_tests;
#[cfg(test)]
mod tests;
