//! The keyring of an encrypted stanza: its data keys, sealed under the key-encryption key (KEK) that
//! the cipher passphrase derives (Argon2id), stored as `<stanza>/keyring/<generation>` objects.
//!
//! ```text
//! {"format_version":1,"generation":2,"cipher":"aes-256-gcm",
//!  "kdf":{"algorithm":"argon2id","memory_kib":19456,"iterations":2,"parallelism":1,"salt":"<hex>"},
//!  "nonce":"<hex>","sealed":"<hex: AES-256-GCM of the key set, tag last>","created":"..."}
//! ```
//! The clear fields (stanza, generation, cipher, KDF parameters, salt) are the associated data of the
//! sealing, so none can be edited without the passphrase failing to open it. The sealed key set holds
//! every data key ever made (id, key) and the id of the current one.
//!
//! The newest generation is the keyring in force. A rotation writes the next generation as a new object
//! (never replacing one: a crash leaves either the old keyring in force or the new one, never neither)
//! and then deletes the older generations, so that an old passphrase stops opening anything.
//! `rekey_passphrase` re-seals the same keys under a new passphrase (new salt); `add_data_key` adds a
//! key that becomes current: objects written from then on use it, older objects keep theirs.

use super::{open_once, random, seal_once, DataKeys, Passphrase, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::storage::PutOutcome;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const KEYRING_FORMAT_VERSION: u32 = 1;
pub const WRONG_PASS: &str = "cannot decrypt the repository key: wrong cipher passphrase";

/// Argon2id parameters (RFC 9106; the defaults are OWASP's minimum for Argon2id: 19 MiB, 2 passes,
/// one lane), about 30 ms per opening of the repository on the machines this was measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

impl KdfParams {
    pub fn new_default() -> Result<KdfParams> {
        KdfParams::with_cost(19 * 1024, 2)
    }

    /// Parameters with a fresh random salt (tests use a small cost).
    pub fn with_cost(memory_kib: u32, iterations: u32) -> Result<KdfParams> {
        Ok(KdfParams {
            algorithm: "argon2id".into(),
            memory_kib,
            iterations,
            parallelism: 1,
            salt: hex::encode(random::<16>()?),
        })
    }

    /// Derives the KEK. The parameters come from the repository (untrusted): bounded before use.
    fn derive(&self, key: &str, pass: &Passphrase) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let bad = |why: String| Error::CorruptObject {
            key: key.to_string(),
            reason: why,
        };
        if self.algorithm != "argon2id" {
            return Err(bad(format!("unknown KDF '{}'", self.algorithm)));
        }
        if self.memory_kib > 1 << 21 || self.iterations > 64 || self.parallelism > 16 {
            return Err(bad("KDF parameters beyond the accepted bounds".into()));
        }
        let salt = hex::decode(&self.salt).map_err(|e| bad(format!("bad salt: {e}")))?;
        let params = argon2::Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| bad(format!("bad KDF parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(pass.bytes(), &salt, &mut out[..])
            .map_err(|e| bad(format!("KDF failed: {e}")))?;
        Ok(out)
    }
}

/// A keyring as stored (nothing secret in clear).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKeyring {
    pub format_version: u32,
    pub generation: u64,
    pub cipher: String,
    pub kdf: KdfParams,
    pub nonce: String,
    pub sealed: String,
    pub created: String,
}

/// The secret part: every data key and the current one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySet {
    current: u32,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: u32,
    key: String,
    created: String,
}

/// An opened keyring: its data keys in clear (wiped when dropped).
pub struct OpenKeyring {
    pub generation: u64,
    current: u32,
    keys: Vec<(u32, Zeroizing<[u8; KEY_LEN]>, String)>,
}

impl std::fmt::Debug for OpenKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenKeyring")
            .field("generation", &self.generation)
            .field("ids", &self.ids())
            .field("current", &self.current)
            .finish()
    }
}

impl OpenKeyring {
    /// A new keyring of one random data key (id 1).
    pub fn new() -> Result<OpenKeyring> {
        Ok(OpenKeyring {
            generation: 1,
            current: 1,
            keys: vec![(1, Zeroizing::new(random::<KEY_LEN>()?), now())],
        })
    }

    pub fn data_keys(&self) -> DataKeys {
        let keys: Vec<(u32, [u8; KEY_LEN])> = self.keys.iter().map(|(i, k, _)| (*i, **k)).collect();
        let d = DataKeys::new(&keys, self.current);
        drop(Zeroizing::new(keys));
        d
    }

    pub fn current(&self) -> u32 {
        self.current
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(i, _, _)| *i).collect()
    }

    /// Adds a random data key and makes it current.
    pub fn add_key(&mut self) -> Result<u32> {
        let id = self.ids().into_iter().max().unwrap_or(0) + 1;
        self.keys
            .push((id, Zeroizing::new(random::<KEY_LEN>()?), now()));
        self.current = id;
        Ok(id)
    }

    /// Seals the keyring under `pass` (a fresh salt and nonce) for `stanza`.
    pub fn seal(&self, stanza: &str, pass: &Passphrase, kdf: KdfParams) -> Result<StoredKeyring> {
        let mut stored = StoredKeyring {
            format_version: KEYRING_FORMAT_VERSION,
            generation: self.generation,
            cipher: "aes-256-gcm".into(),
            kdf,
            nonce: String::new(),
            sealed: String::new(),
            created: now(),
        };
        let set = KeySet {
            current: self.current,
            keys: self
                .keys
                .iter()
                .map(|(id, k, c)| KeyEntry {
                    id: *id,
                    key: hex::encode(&k[..]),
                    created: c.clone(),
                })
                .collect(),
        };
        let mut buf = Zeroizing::new(serde_json::to_vec(&set).expect("a key set serializes"));
        for e in set.keys {
            drop(Zeroizing::new(e.key));
        }
        let kek = stored.kdf.derive("keyring", pass)?;
        let nonce: [u8; NONCE_LEN] = random()?;
        stored.nonce = hex::encode(nonce);
        seal_once(&kek, &nonce, aad(stanza, &stored).as_bytes(), &mut buf)?;
        stored.sealed = hex::encode(&buf[..]);
        Ok(stored)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The associated data of a keyring's sealing: everything it says in clear, and the stanza.
fn aad(stanza: &str, s: &StoredKeyring) -> String {
    format!(
        "pg_strata keyring\0{stanza}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
        s.format_version,
        s.generation,
        s.cipher,
        s.kdf.algorithm,
        s.kdf.memory_kib,
        s.kdf.iterations,
        s.kdf.parallelism,
        s.kdf.salt
    )
}

impl StoredKeyring {
    pub fn parse(key: &str, bytes: &[u8]) -> Result<StoredKeyring> {
        let s: StoredKeyring = serde_json::from_slice(bytes).map_err(|e| Error::CorruptObject {
            key: key.to_string(),
            reason: format!("not a valid keyring: {e}"),
        })?;
        if s.format_version != KEYRING_FORMAT_VERSION || s.cipher != "aes-256-gcm" {
            return Err(Error::CorruptObject {
                key: key.to_string(),
                reason: format!(
                    "keyring format {} with cipher '{}': this pg_strata reads format {} with aes-256-gcm",
                    s.format_version, s.cipher, KEYRING_FORMAT_VERSION
                ),
            });
        }
        Ok(s)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a keyring serializes")
    }

    /// Opens the keyring with `pass`: `WrongCipherPass` when it does not open.
    pub fn open(&self, key: &str, stanza: &str, pass: &Passphrase) -> Result<OpenKeyring> {
        let corrupt = |reason: String| Error::CorruptObject {
            key: key.to_string(),
            reason,
        };
        let nonce: [u8; NONCE_LEN] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("bad nonce".into()))?;
        let mut buf =
            Zeroizing::new(hex::decode(&self.sealed).map_err(|e| corrupt(format!("{e}")))?);
        if buf.len() < TAG_LEN {
            return Err(corrupt("sealed key set too short".into()));
        }
        let kek = self.kdf.derive(key, pass)?;
        if !open_once(&kek, &nonce, aad(stanza, self).as_bytes(), &mut buf) {
            return Err(Error::WrongCipherPass {
                context: String::new(),
            });
        }
        let set: KeySet =
            serde_json::from_slice(&buf).map_err(|e| corrupt(format!("bad key set: {e}")))?;
        let mut keys = Vec::new();
        for e in set.keys {
            let k = Zeroizing::new(e.key);
            let bytes: [u8; KEY_LEN] = hex::decode(k.as_str())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt(format!("bad data key {}", e.id)))?;
            keys.push((e.id, Zeroizing::new(bytes), e.created));
        }
        if !keys.iter().any(|(id, _, _)| *id == set.current) {
            return Err(corrupt(format!(
                "current key {} not in the keyring",
                set.current
            )));
        }
        Ok(OpenKeyring {
            generation: self.generation,
            current: set.current,
            keys,
        })
    }
}

/// The generations stored, oldest first.
fn generations(repo: &Repo) -> Result<Vec<(u64, RepoKey)>> {
    let mut out: Vec<(u64, RepoKey)> = repo
        .storage()
        .list_shallow(&repo.keys().keyring_root())?
        .into_iter()
        .filter_map(|(k, _)| crate::paths::RepoKeys::parse_keyring_key(&k).map(|g| (g, k)))
        .collect();
    out.sort();
    Ok(out)
}

/// The generation of the keyring in force (one listing).
pub fn newest_generation(repo: &Repo) -> Result<Option<u64>> {
    Ok(generations(repo)?.pop().map(|(g, _)| g))
}

/// Creates the first keyring of a new encrypted stanza (one random data key), unless one exists.
pub fn create_first(repo: &Repo, pass: &Passphrase) -> Result<()> {
    if newest_generation(repo)?.is_some() {
        return Ok(());
    }
    let sealed = OpenKeyring::new()?.seal(repo.stanza(), pass, KdfParams::new_default()?)?;
    // Another process creating the stanza at the same moment wrote its own: theirs is in force.
    repo.storage()
        .put_new(&repo.keys().keyring(1), sealed.to_json())?;
    Ok(())
}

/// The keyring in force (the newest generation), if the stanza has one.
pub fn read_newest(repo: &Repo) -> Result<Option<StoredKeyring>> {
    let Some((generation, key)) = generations(repo)?.pop() else {
        return Ok(None);
    };
    let Some(bytes) = repo.storage().get_limited(&key, 1 << 20)? else {
        return Err(Error::StateChanged(format!(
            "keyring {key} vanished while being read (a rotation ran?): run again"
        )));
    };
    let s = StoredKeyring::parse(key.as_str(), &bytes)?;
    if s.generation != generation {
        return Err(Error::CorruptObject {
            key: key.to_string(),
            reason: format!("it says it is generation {}", s.generation),
        });
    }
    Ok(Some(s))
}

/// Opens the keyring in force with `pass`.
pub fn open(repo: &Repo, pass: &Passphrase) -> Result<Option<OpenKeyring>> {
    let Some(s) = read_newest(repo)? else {
        return Ok(None);
    };
    let key = repo.keys().keyring(s.generation);
    s.open(key.as_str(), repo.stanza(), pass).map(Some)
}

/// Writes `keyring` sealed under `pass` as its generation (never replacing one), then removes older
/// generations. `Busy` when that generation exists already (another rotation ran meanwhile).
pub fn store(repo: &Repo, keyring: &OpenKeyring, pass: &Passphrase, kdf: KdfParams) -> Result<()> {
    let sealed = keyring.seal(repo.stanza(), pass, kdf)?;
    let key = repo.keys().keyring(keyring.generation);
    crate::testhook::pause(crate::testhook::REKEY_PAUSE);
    match repo.storage().put_new(&key, sealed.to_json())? {
        PutOutcome::Written => {}
        PutOutcome::AlreadyExists => {
            return Err(Error::Busy(format!(
                "keyring {key} exists already: another rotation ran at the same time; run it again"
            )))
        }
    }
    crate::testhook::pause(crate::testhook::REKEY_PAUSE);
    for (g, old) in generations(repo)? {
        if g < keyring.generation {
            repo.storage().delete(&old)?;
        }
    }
    Ok(())
}

/// Re-seals the keyring under `new_pass` (one new object): `old_pass` stops opening it.
pub fn rekey_passphrase(
    repo: &Repo,
    old_pass: &Passphrase,
    new_pass: &Passphrase,
    kdf: KdfParams,
) -> Result<u64> {
    let mut k = open(repo, old_pass)?.ok_or_else(|| no_keyring(repo))?;
    k.generation += 1;
    store(repo, &k, new_pass, kdf)?;
    Ok(k.generation)
}

/// Adds a data key, current from then on: returns its id.
pub fn add_data_key(repo: &Repo, pass: &Passphrase) -> Result<u32> {
    let stored = read_newest(repo)?.ok_or_else(|| no_keyring(repo))?;
    let key = repo.keys().keyring(stored.generation);
    let mut k = stored.open(key.as_str(), repo.stanza(), pass)?;
    let id = k.add_key()?;
    k.generation += 1;
    // Same passphrase: a fresh salt all the same.
    let kdf = KdfParams::with_cost(stored.kdf.memory_kib, stored.kdf.iterations)?;
    store(repo, &k, pass, kdf)?;
    Ok(id)
}

/// What a rotation did (`rotate`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// The id of the data key added, current from then on.
    pub data_key: Option<u32>,
    /// The keyring generation now sealed under the new passphrase.
    pub resealed: Option<u64>,
}

/// Rotates the keys of the encrypted stanza `repo` opened with its current passphrase: a new data key
/// when `new_data_key`, then the keyring sealed under `new_pass` when given. The CLI's `strata rekey`
/// and SQL's `backup_rekey()`. Refused, with nothing written, for an unencrypted stanza, when nothing
/// is asked, or when the new passphrase is the current one.
pub fn rotate(repo: &Repo, new_data_key: bool, new_pass: Option<&Passphrase>) -> Result<Rotation> {
    if !new_data_key && new_pass.is_none() {
        return Err(Error::Cipher(
            "say what to rotate: a new data key and/or a new cipher passphrase".into(),
        ));
    }
    let id = repo.identity()?;
    if id.cipher.is_none() {
        return Err(Error::Cipher(format!(
            "stanza '{}' of {} is not encrypted: there is no key to rotate",
            repo.stanza(),
            repo.describe()
        )));
    }
    let pass = repo
        .cipher_settings()
        .pass
        .clone()
        .expect("an encrypted stanza opened with a passphrase");
    if new_pass == Some(&pass) {
        return Err(Error::Cipher(
            "the new cipher passphrase is the current one".into(),
        ));
    }
    let mut done = Rotation::default();
    if new_data_key {
        done.data_key = Some(add_data_key(repo, &pass)?);
    }
    if let Some(new_pass) = new_pass {
        done.resealed = Some(rekey_passphrase(
            repo,
            &pass,
            new_pass,
            KdfParams::new_default()?,
        )?);
    }
    Ok(done)
}

pub fn no_keyring(repo: &Repo) -> Error {
    Error::CorruptObject {
        key: repo.keys().keyring_root().to_string(),
        reason: "the stanza is encrypted but holds no keyring".into(),
    }
}
