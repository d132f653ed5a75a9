//! The repository handle: one stanza of one repository, as every operation sees it. A `Repo` owns the
//! open store (shared by all threads of the process: cloning a `Repo` shares it), the keys of its
//! stanza, and the stanza's identity once read. Backups, restores, archiving and listings take a
//! `&Repo`; nothing else opens a store or builds a key.
//!
//! It also holds the few lookups every part needs: the stanza's identity ("stanza does not exist" is
//! said here once), a WAL file by name (one request whatever its compression), a timeline's history.

use crate::chain::TimelineHistory;
use crate::config::{RepoConfig, RepoUrl};
use crate::identity::{self, RepoIdentity};
use crate::object::{self, ObjectHeader, HEADER_LEN};
use crate::paths::{RepoKey, RepoKeys};
use crate::storage::Storage;
use crate::{Error, Result};
use pgformat::lsn::{TimeLineId, WalFileName};
use std::sync::{Arc, OnceLock};

#[derive(Clone)]
pub struct Repo {
    storage: Storage,
    keys: RepoKeys,
    /// The stanza's identity, read on first need (a stanza's identity never changes once written).
    identity: Arc<OnceLock<RepoIdentity>>,
}

impl Repo {
    /// Opens a stanza of a repository. Nothing is read yet: a stanza that does not exist is an error
    /// only for what needs it (`identity`).
    pub fn open(url: &RepoUrl, stanza: &str) -> Result<Repo> {
        Repo::with_storage(Storage::open(url)?, stanza)
    }

    /// Opens the repository and stanza of a configuration.
    pub fn open_config(config: &RepoConfig) -> Result<Repo> {
        Repo::open(&config.repo, &config.stanza)
    }

    /// A stanza of an already open store (tests wrap stores to count or fail requests).
    pub fn with_storage(storage: Storage, stanza: &str) -> Result<Repo> {
        Ok(Repo {
            storage,
            keys: RepoKeys::new(stanza)?,
            identity: Arc::new(OnceLock::new()),
        })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    pub fn stanza(&self) -> &str {
        self.keys.stanza()
    }

    /// The repository as the user named it, for messages.
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// The stanza's identity; `StanzaMissing` when the stanza has none (never created, or a wrong
    /// `--repo`/`--stanza`).
    pub fn identity(&self) -> Result<&RepoIdentity> {
        if let Some(id) = self.identity.get() {
            return Ok(id);
        }
        let id = identity::read(self)?.ok_or_else(|| Error::StanzaMissing {
            repo: self.describe(),
            stanza: self.stanza().to_string(),
        })?;
        Ok(self.identity.get_or_init(|| id))
    }

    /// Remembers an identity just written or checked by a writer.
    pub(crate) fn set_identity(&self, id: &RepoIdentity) {
        let _ = self.identity.set(id.clone());
    }

    /// Reads an archived WAL file and checks it (header, size, SHA-256): its key and plaintext, or None
    /// when it is not archived. One request. Nothing bigger than the file can be is read or
    /// decompressed, whatever the object claims.
    pub fn fetch_wal(
        &self,
        file_name: &str,
        wal_segment_size: u32,
    ) -> Result<Option<(RepoKey, Vec<u8>)>> {
        // A segment (or .partial) holds one segment's bytes; history and backup history files are small
        // text.
        let max_plain = match WalFileName::parse(file_name, wal_segment_size) {
            Some(WalFileName::Segment { .. } | WalFileName::Partial { .. }) => {
                wal_segment_size as u64
            }
            _ => 1 << 20,
        };
        let key = self.keys.archive_file(file_name, wal_segment_size)?;
        let limit = max_plain + (max_plain >> 4) + 4096;
        let Some(stored) = self.storage.get_limited(&key, limit)? else {
            return Ok(None);
        };
        let (_, plain) = object::decode_limited(key.as_str(), &stored, max_plain)?;
        Ok(Some((key, plain)))
    }

    /// The header of an archived WAL file, when it is archived (one small request).
    pub fn wal_header(
        &self,
        file_name: &str,
        wal_segment_size: u32,
    ) -> Result<Option<(RepoKey, ObjectHeader)>> {
        let key = self.keys.archive_file(file_name, wal_segment_size)?;
        match self.storage.get_prefix(&key, HEADER_LEN as u64)? {
            Some(head) => {
                let header = ObjectHeader::decode(key.as_str(), &head)?;
                Ok(Some((key, header)))
            }
            None => Ok(None),
        }
    }

    /// Reads one of the small JSON objects of the stanza (an annotation, a lease, the last
    /// verification): None when absent; `what` names it when it is not valid.
    pub fn read_small_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &RepoKey,
        what: &str,
    ) -> Result<Option<T>> {
        let Some(bytes) = self.storage.get_limited(key, 64 * 1024)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| crate::Error::CorruptObject {
                key: key.to_string(),
                reason: format!("not a valid {what}: {e}"),
            })
    }

    /// Whether a WAL file is archived (one request).
    pub fn wal_exists(&self, file_name: &str, wal_segment_size: u32) -> Result<bool> {
        let key = self.keys.archive_file(file_name, wal_segment_size)?;
        self.storage.exists(&key)
    }

    /// Reads the history of `timeline` from the archive (timeline 1 has none; None when the archive
    /// does not hold it).
    pub fn timeline_history(&self, timeline: TimeLineId) -> Result<Option<TimelineHistory>> {
        if timeline <= 1 {
            return Ok(Some(TimelineHistory::alone(timeline)));
        }
        let name = pgformat::lsn::history_file_name(timeline);
        // History files are small; the segment size does not matter for their key or limit.
        match self.fetch_wal(&name, pgformat::lsn::DEFAULT_WAL_SEGMENT_SIZE)? {
            Some((_, plain)) => {
                TimelineHistory::parse(timeline, &String::from_utf8_lossy(&plain)).map(Some)
            }
            None => Ok(None),
        }
    }
}
