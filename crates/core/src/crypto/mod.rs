//! Encryption of a repository: authenticated (AES-256-GCM), with keys that rotate without rewriting
//! the repository.
//!
//! Key hierarchy:
//! - the cipher passphrase (`strata.repo1_cipher_pass`, `--cipher-pass-file`) derives a key-encryption
//!   key (KEK) with Argon2id (`argon2`), whose salt and parameters are stored in the keyring object;
//! - the KEK seals (AES-256-GCM) the keyring's secret part: the data keys, each a random 256-bit key
//!   with a key id, and which one is current (`keyring`);
//! - every stored object is sealed with the current data key and a fresh random 96-bit nonce, after
//!   compression; its header carries the key id and the nonce in clear and is authenticated, together
//!   with the object's repository key and offset, as associated data (`object`, `DataKeys::seal`).
//!
//! The stanza's identity (`strata.repo`) stays readable: it says whether the stanza is encrypted and
//! with which cipher (never a key). Nothing here is hand-written cryptography: nonces and keys come from
//! the operating system (`getrandom`), the KDF from RustCrypto (`argon2`), the AEAD from AWS-LC
//! (`aws-lc-rs`, already in the build as object_store's TLS library). AWS-LC's AES-GCM runs the
//! counter mode and the GHASH together with the widest instructions the CPU has (VAES, VPCLMULQDQ):
//! about 10 GB/s per core sealing and opening on the project's machine against 2.3 GB/s for
//! RustCrypto's `aes-gcm` 0.11 (whose GHASH has only a one-block PCLMULQDQ path), which made an
//! encrypted restore cost 16% more than a plain one. Both are the standard AES-256-GCM: the published
//! test vector (tests) holds the format, so repositories written with either open with the other.

pub mod keyring;
pub mod manifest;
pub mod usage;

use crate::{Error, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// The cipher of a repository (`strata.repoN_cipher_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherType {
    None,
    Aes256Gcm,
}

impl CipherType {
    pub fn name(self) -> &'static str {
        match self {
            CipherType::None => "none",
            CipherType::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// The code of the cipher in an object header's encryption byte.
    pub fn code(self) -> u8 {
        match self {
            CipherType::None => 0,
            CipherType::Aes256Gcm => 1,
        }
    }
}

impl std::str::FromStr for CipherType {
    type Err = String;
    /// In any case, as PostgreSQL reads its enum settings.
    fn from_str(s: &str) -> std::result::Result<CipherType, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(CipherType::None),
            "aes-256-gcm" => Ok(CipherType::Aes256Gcm),
            _ => Err(format!("'{s}' is not a cipher: use none or aes-256-gcm")),
        }
    }
}

/// The largest passphrase file read.
const MAX_PASS_FILE: u64 = 64 << 10;

/// A cipher passphrase: never printed (its `Debug` says `<hidden>`), wiped from memory when dropped.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// A passphrase; `source` names where it came from in the error when it is empty.
    pub fn new(text: String, source: &str) -> Result<Passphrase> {
        let text = Zeroizing::new(text);
        if text.is_empty() {
            return Err(Error::Cipher(format!(
                "the cipher passphrase from {source} is empty"
            )));
        }
        Ok(Passphrase(text))
    }

    /// Reads a passphrase file: its first line (a trailing newline is not part of it). An unreadable
    /// file is a setting to fix (`Cipher`), not a storage failure to retry.
    pub fn from_file(path: &std::path::Path) -> Result<Passphrase> {
        use std::io::Read;
        let unreadable = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                // A passphrase written where its file's path belongs is the likely slip: not shown.
                return Error::Cipher(
                    "there is no file at the passphrase file's path (the path is not shown, in \
                     case it is a passphrase given where a file belongs)"
                        .into(),
                );
            }
            Error::Cipher(format!(
                "cannot read the cipher passphrase file {}: {e}",
                path.display()
            ))
        };
        // Bounded: a passphrase is a line, and a path such as /dev/zero must not fill the memory.
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PASS_FILE + 1).read_to_string(&mut text))
            .map_err(unreadable)?;
        if text.len() as u64 > MAX_PASS_FILE {
            return Err(Error::Cipher(format!(
                "the cipher passphrase file {} is larger than {MAX_PASS_FILE} bytes: it must hold \
                 the passphrase on its first line",
                path.display()
            )));
        }
        let line = text.lines().next().unwrap_or("").to_string();
        Passphrase::new(line, &path.display().to_string())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Passphrase) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}

/// What the settings say about encryption: the cipher wanted for a new stanza (None: not said, as for
/// the CLI without `strata.repo1_cipher_type`) and the passphrase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CipherSettings {
    pub kind: Option<CipherType>,
    pub pass: Option<Passphrase>,
    /// Why the passphrase could not be had (its file unreadable, given two ways): said when this
    /// repository is used, so that the other repositories still work.
    pub pass_error: Option<String>,
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out)
        .map_err(|e| Error::Internal(format!("the operating system gave no random bytes: {e}")))?;
    Ok(out)
}

/// The unwrapped data keys of a stanza: by id, and the one new objects are sealed with.
pub struct DataKeys {
    keys: BTreeMap<u32, LessSafeKey>,
    current: u32,
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl DataKeys {
    pub(crate) fn new(keys: &[(u32, [u8; KEY_LEN])], current: u32) -> DataKeys {
        DataKeys {
            keys: keys.iter().map(|(id, k)| (*id, aead_key(k))).collect(),
            current,
        }
    }

    pub fn current(&self) -> u32 {
        self.current
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Encrypts `buf` in place with the current key and a fresh nonce; returns the key id, the nonce
    /// and the tag. `aad` is authenticated, not encrypted.
    pub fn seal(
        &self,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<(u32, [u8; NONCE_LEN], [u8; TAG_LEN])> {
        let nonce = random::<NONCE_LEN>()?;
        let tag = self.seal_with(self.current, &nonce, aad, buf)?;
        Ok((self.current, nonce, tag))
    }

    /// Encrypts with a given key id and nonce (the nonce must be fresh: `seal` makes one).
    pub fn seal_with(
        &self,
        id: u32,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let key = self
            .keys
            .get(&id)
            .ok_or_else(|| Error::Internal(format!("no data key {id}")))?;
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Internal("AES-256-GCM encryption failed".into()))?;
        tag.as_ref()
            .try_into()
            .map_err(|_| Error::Internal("AES-256-GCM gave a tag of another length".into()))
    }

    /// Decrypts `sealed` into `out` (of the same length); an error string when the key id is unknown
    /// or authentication fails (the caller names the object). No copy of the ciphertext is made.
    pub fn open_into(
        &self,
        id: u32,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
        out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> std::result::Result<(), String> {
        if sealed.len() != out.len() {
            return Err("ciphertext and output of different lengths".to_string());
        }
        self.key(id)?
            .open_separate_gather(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                sealed,
                tag,
                out,
            )
            .map_err(|_| authentication_failed())
    }

    /// Decrypts `buf` where it lies (`open_into` without an output buffer). On failure `buf` holds
    /// neither the ciphertext nor the plaintext.
    pub fn open_in_place(
        &self,
        id: u32,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> std::result::Result<(), String> {
        self.key(id)?
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                tag,
                buf,
            )
            .map(|_| ())
            .map_err(|_| authentication_failed())
    }

    fn key(&self, id: u32) -> std::result::Result<&LessSafeKey, String> {
        self.keys.get(&id).ok_or_else(|| {
            format!(
                "sealed with data key {id}, which the keyring does not hold (it holds {:?})",
                self.ids()
            )
        })
    }
}

fn authentication_failed() -> String {
    "authentication failed (AES-256-GCM): the object was modified, damaged or moved from another key"
        .to_string()
}

/// An AES-256-GCM key. The nonce is always given: a fresh random one per object (`DataKeys::seal`),
/// hence the "less safe" key type, which leaves nonce uniqueness to the caller.
fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is always a valid AES-256 key: the only error of `new` is a wrong length.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 256-bit AES key"))
}

/// Seals `buf` in place with a single key (the keyring's own sealing under the KEK).
pub(crate) fn seal_once(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<()> {
    aead_key(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
        .map_err(|_| Error::Internal("AES-256-GCM encryption failed".into()))
}

/// Opens what `seal_once` sealed; false when authentication fails.
pub(crate) fn open_once(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> bool {
    let Some(plain_len) = buf.len().checked_sub(TAG_LEN) else {
        return false;
    };
    let opened = aead_key(key)
        .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
        .is_ok();
    buf.truncate(plain_len);
    opened
}

/// How the settings name the passphrase of repository `number`, for messages.
pub fn pass_settings(number: u8) -> String {
    format!(
        "strata.repo{number}_cipher_pass or strata.repo{number}_cipher_pass_file in the server; \
         --cipher-pass-file, STRATA_REPO{number}_CIPHER_PASS or \
         STRATA_REPO{number}_CIPHER_PASS_FILE for strata"
    )
}

/// Checks the encryption settings of `repo` against its stanza's identity (`cipher`: the identity's
/// cipher field): true when the stanza is encrypted (and a passphrase is there to open it).
pub fn check_settings(repo: &crate::Repo, cipher: Option<&str>) -> Result<bool> {
    let settings = repo.cipher_settings();
    if let Some(e) = &settings.pass_error {
        return Err(Error::Cipher(e.clone()));
    }
    let stanza = format!("stanza '{}' of {}", repo.stanza(), repo.describe());
    let cipher_type = repo.setting("cipher_type");
    let pass_settings = pass_settings(repo.number());
    match cipher {
        None => {
            if settings.kind == Some(CipherType::Aes256Gcm) {
                return Err(Error::Cipher(format!(
                    "{stanza} was created without encryption, and encryption cannot be turned on \
                     for an existing stanza: archive into a new stanza (strata.stanza) or a new \
                     repository with {cipher_type} = 'aes-256-gcm', or set it back to 'none'"
                )));
            }
            if settings.pass.is_some() {
                // An identity without a cipher beside a keyring: the identity (unauthenticated,
                // readable on purpose) was edited, not the settings.
                if keyring::newest_generation(repo)?.is_some() {
                    return Err(Error::Cipher(format!(
                        "{stanza} holds a keyring, but its identity (strata.repo) says it is not \
                         encrypted: the identity was modified — refused; restore strata.repo from \
                         a copy (its cipher field is \"aes-256-gcm\") and check who can write the \
                         repository"
                    )));
                }
                return Err(Error::Cipher(format!(
                    "a cipher passphrase is set, but {stanza} is not encrypted: remove it \
                     ({pass_settings})"
                )));
            }
            Ok(false)
        }
        Some("aes-256-gcm") => {
            if settings.kind == Some(CipherType::None) {
                return Err(Error::Cipher(format!(
                    "{stanza} is encrypted (aes-256-gcm), but {cipher_type} = 'none': set \
                     {cipher_type} = 'aes-256-gcm' and its passphrase"
                )));
            }
            if settings.pass.is_none() {
                return Err(Error::Cipher(format!(
                    "{stanza} is encrypted (aes-256-gcm): give its passphrase ({pass_settings})"
                )));
            }
            Ok(true)
        }
        Some(other) => Err(Error::Unsupported(format!(
            "{stanza} is encrypted with '{other}', which this pg_strata does not know"
        ))),
    }
}

#[cfg(test)]
mod tests;
