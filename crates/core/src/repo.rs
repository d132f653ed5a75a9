//! The repository handle: one stanza of one repository, as every operation sees it. A `Repo` owns the
//! open store (shared by all threads of the process: cloning a `Repo` shares it), the keys of its
//! stanza, and the stanza's identity once read. Backups, restores, archiving and listings take a
//! `&Repo`; nothing else opens a store or builds a key.
//!
//! It also holds the few lookups every part needs: the stanza's identity ("stanza does not exist" is
//! said here once), a WAL file by name (one request whatever its compression), a timeline's history.
//!
//! And the stanza's encryption (`crypto`): the cipher settings it was opened with, and the data keys,
//! unwrapped on first need and then shared. Every object is written and read through `encode_object`
//! / `decode_object` (content: WAL, pieces) or `seal` / `unseal` (other formats), which encrypt and
//! authenticate in an encrypted stanza and change nothing in an unencrypted one.

use crate::chain::TimelineHistory;
use crate::compress::CompressType;
use crate::config::{RepoConfig, RepoUrl};
use crate::crypto::{CipherSettings, DataKeys};
use crate::identity::{self, RepoIdentity};
use crate::object::{self, ObjectHeader, Place, SEALED_HEADER_LEN};
use crate::paths::{RepoKey, RepoKeys};
use crate::storage::Storage;
use crate::{Error, Result};
use pgformat::lsn::{TimeLineId, WalFileName};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long opened data keys are used before the keyring's generation is looked at again (a process
/// that writes for a long time, the archiver, then takes up a new data key).
const KEYRING_RECHECK: Duration = Duration::from_secs(60);

struct CachedKeys {
    keys: Arc<DataKeys>,
    generation: u64,
    checked: Instant,
}

#[derive(Clone)]
pub struct Repo {
    storage: Storage,
    keys: RepoKeys,
    /// The stanza's identity, read on first need (a stanza's identity never changes once written).
    identity: Arc<OnceLock<RepoIdentity>>,
    cipher: CipherSettings,
    data_keys: Arc<Mutex<Option<CachedKeys>>>,
    /// The repository's number (`strata.repoN`), naming its settings in messages.
    number: u8,
}

impl Repo {
    /// Opens a stanza of a repository. Nothing is read yet: a stanza that does not exist is an error
    /// only for what needs it (`identity`).
    pub fn open(url: &RepoUrl, stanza: &str) -> Result<Repo> {
        Repo::with_storage(Storage::open(url)?, stanza)
    }

    /// Opens the repository and stanza of a configuration.
    pub fn open_config(config: &RepoConfig) -> Result<Repo> {
        let mut repo = Repo::open(&config.repo, &config.stanza)?.with_cipher(config.cipher.clone());
        repo.number = config.number;
        Ok(repo)
    }

    /// The repository's number (1 unless opened from a configuration that says otherwise).
    pub fn number(&self) -> u8 {
        self.number
    }

    /// The name of one of this repository's settings: `strata.repo2_cipher_pass` for "cipher_pass".
    pub fn setting(&self, name: &str) -> String {
        crate::config::repos::repo_setting(self.number, name)
    }

    /// The same stanza with these encryption settings.
    pub fn with_cipher(mut self, cipher: CipherSettings) -> Repo {
        self.cipher = cipher;
        self.data_keys = Arc::new(Mutex::new(None));
        self
    }

    pub fn cipher_settings(&self) -> &CipherSettings {
        &self.cipher
    }

    /// A stanza of an already open store (tests wrap stores to count or fail requests).
    pub fn with_storage(storage: Storage, stanza: &str) -> Result<Repo> {
        Ok(Repo {
            storage,
            keys: RepoKeys::new(stanza)?,
            identity: Arc::new(OnceLock::new()),
            cipher: CipherSettings::default(),
            data_keys: Arc::new(Mutex::new(None)),
            number: 1,
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
        let id = self.identity.get_or_init(|| id);
        // The encryption settings must fit the stanza and the passphrase open its keyring: said here,
        // once, rather than by every object read later.
        self.data_keys()?;
        Ok(id)
    }

    /// Remembers an identity just written or checked by a writer.
    pub(crate) fn set_identity(&self, id: &RepoIdentity) {
        let _ = self.identity.set(id.clone());
    }

    /// The stanza's data keys, None when it is not encrypted; an error when the settings do not fit the
    /// stanza (a passphrase missing, or given for an unencrypted stanza) or the passphrase is wrong.
    /// A stanza without identity has nothing to decrypt (None), unless a passphrase is set.
    pub fn data_keys(&self) -> Result<Option<Arc<DataKeys>>> {
        let id = match self.identity() {
            Ok(id) => id,
            Err(Error::StanzaMissing { .. }) if self.cipher.pass.is_none() => return Ok(None),
            Err(e) => return Err(e),
        };
        if !crate::crypto::check_settings(self, id.cipher.as_deref())? {
            return Ok(None);
        }
        let pass = self.cipher.pass.as_ref().expect("checked");
        let mut cache = self.data_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_mut() {
            if c.checked.elapsed() < KEYRING_RECHECK {
                return Ok(Some(c.keys.clone()));
            }
            if crate::crypto::keyring::newest_generation(self)? == Some(c.generation) {
                c.checked = Instant::now();
                return Ok(Some(c.keys.clone()));
            }
        }
        let opened = crate::crypto::keyring::open(self, pass)
            .map_err(|e| match e {
                Error::WrongCipherPass { .. } => Error::WrongCipherPass {
                    context: format!(
                        " for stanza '{}' of repo{} ({}): give the right one ({}); if it is \
                         right, the stanza's keyring object was modified",
                        self.stanza(),
                        self.number(),
                        self.describe(),
                        crate::crypto::pass_settings(self.number())
                    ),
                },
                e => e,
            })?
            .ok_or_else(|| crate::crypto::keyring::no_keyring(self))?;
        let keys = Arc::new(opened.data_keys());
        *cache = Some(CachedKeys {
            keys: keys.clone(),
            generation: opened.generation,
            checked: Instant::now(),
        });
        Ok(Some(keys))
    }

    /// Makes a stored object of content (`object`): compressed, then sealed in an encrypted stanza.
    pub fn encode_object(
        &self,
        place: Place,
        plain: &[u8],
        sha: [u8; 32],
        compress: CompressType,
        level: i32,
    ) -> Result<Vec<u8>> {
        let keys = self.data_keys()?;
        object::encode_at(plain, sha, compress, level, keys.as_deref(), place)
    }

    /// Reads a stored object of content at `place`: opened in an encrypted stanza, decompressed, its
    /// size and digest checked.
    pub fn decode_object(
        &self,
        place: Place,
        stored: &[u8],
        max_plain: u64,
    ) -> Result<(ObjectHeader, Vec<u8>)> {
        let keys = self.data_keys()?;
        object::decode_at(stored, keys.as_deref(), place, max_plain)
    }

    /// `decode_object` of stored bytes the caller owns and gives up: an encrypted object is
    /// decrypted where it lies (see `object::decode_at_mut`).
    pub fn decode_object_mut(
        &self,
        place: Place,
        stored: &mut [u8],
        max_plain: u64,
    ) -> Result<(ObjectHeader, Vec<u8>)> {
        let keys = self.data_keys()?;
        object::decode_at_mut(stored, keys.as_deref(), place, max_plain)
    }

    /// The stored form of an object of another format (manifest, summary, JSON) at `key`: sealed in
    /// an encrypted stanza, the bytes themselves otherwise.
    pub fn seal(&self, key: &RepoKey, bytes: Vec<u8>) -> Result<Vec<u8>> {
        self.seal_at(Place::whole(key.as_str()), bytes)
    }

    pub fn seal_at(&self, place: Place, bytes: Vec<u8>) -> Result<Vec<u8>> {
        match self.data_keys()? {
            Some(keys) => object::seal_bytes(&bytes, &keys, place),
            None => Ok(bytes),
        }
    }

    /// What `seal` stored, back.
    pub fn unseal(&self, key: &RepoKey, stored: bytes::Bytes) -> Result<bytes::Bytes> {
        self.unseal_at(Place::whole(key.as_str()), stored)
    }

    pub fn unseal_at(&self, place: Place, stored: bytes::Bytes) -> Result<bytes::Bytes> {
        match self.data_keys()? {
            Some(keys) => object::open_bytes(&stored, &keys, place, object::MAX_PLAIN_SIZE)
                .map(bytes::Bytes::from),
            None => Ok(stored),
        }
    }

    /// Reads an archived WAL file and checks it (header, size, digest): its key and plaintext, or None
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
        // Read once (replay, verification, the restore's check): around the page cache locally.
        let decoded = self.storage.read_once(&key, limit, |stored| {
            self.decode_object(Place::whole(key.as_str()), stored, max_plain)
        })?;
        match decoded {
            Some(d) => Ok(Some((key, d?.1))),
            None => Ok(None),
        }
    }

    /// The header of an archived WAL file, when it is archived (one small request; the whole object,
    /// opened, when it is encrypted: its digest is inside).
    pub fn wal_header(
        &self,
        file_name: &str,
        wal_segment_size: u32,
    ) -> Result<Option<(RepoKey, ObjectHeader)>> {
        let key = self.keys.archive_file(file_name, wal_segment_size)?;
        let Some(head) = self.storage.get_prefix(&key, SEALED_HEADER_LEN as u64)? else {
            return Ok(None);
        };
        let header = ObjectHeader::decode(key.as_str(), &head)?;
        if header.sealed.is_none() && self.data_keys()?.is_none() {
            return Ok(Some((key, header)));
        }
        let Some(stored) = self.storage.get(&key)? else {
            return Ok(None);
        };
        let (header, _) =
            self.decode_object(Place::whole(key.as_str()), &stored, wal_segment_size as u64)?;
        Ok(Some((key, header)))
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
        let bytes = self.unseal(key, bytes)?;
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
