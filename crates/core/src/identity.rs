//! Repository identity (`<stanza>/strata.repo`): which cluster a stanza belongs to. Written on first
//! use, checked on every later use, so that two clusters never mix their WAL in one stanza.
//!
//! Nothing is written into a stanza whose identity is missing: a stanza is created only on first use,
//! when neither it nor anything under it exists, and only under an existing repository root (the root
//! itself is never created). A writer that keeps going (the archiver) holds a `StanzaGuard`, which
//! re-checks the identity before every write — cheaply, by the identity file's device, inode, size and
//! time — and, once it has seen the stanza, never creates it again: a repository renamed away or a file
//! system unmounted under it makes archiving fail (PostgreSQL keeps the WAL) instead of filling a new,
//! empty directory at the old path.
//!
//! The cipher is chosen when the stanza is created (`cipher`: "aes-256-gcm", or absent): an encrypted
//! stanza gets its first keyring right after its identity (`crypto::keyring`; a writer finding an
//! encrypted identity without keyring, after a crash in between, creates it). Later uses check that
//! the settings fit the stanza and that the passphrase opens its keyring.

use crate::crypto::CipherType;
use crate::repo::Repo;
use crate::storage::{ObjectStamp, PutOutcome};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Format 2: an archived WAL file's key no longer names its compression (one request per lookup).
pub const REPO_FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoIdentity {
    pub format_version: u32,
    pub system_identifier: u64,
    /// PostgreSQL major version number, e.g. 15.
    pub pg_version: u32,
    pub wal_segment_size: u32,
    /// The cipher of an encrypted stanza ("aes-256-gcm"), never a key: the KDF parameters and the
    /// sealed data keys are in the keyring objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    pub created: String,
}

/// Reads the identity of a stanza, if it has one.
pub fn read(repo: &Repo) -> Result<Option<RepoIdentity>> {
    let key = repo.keys().identity();
    let Some(bytes) = repo.storage().get(&key)? else {
        return Ok(None);
    };
    let corrupt = |e: serde_json::Error| Error::CorruptObject {
        key: key.to_string(),
        reason: format!("not a valid identity: {e}"),
    };
    // The version first: another version's identity may have other fields.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let found = serde_json::from_slice::<Version>(&bytes)
        .map_err(corrupt)?
        .format_version;
    if found != REPO_FORMAT_VERSION {
        return Err(Error::UnsupportedRepoFormat {
            key: key.to_string(),
            found,
            supported: REPO_FORMAT_VERSION,
        });
    }
    let id: RepoIdentity = serde_json::from_slice(&bytes).map_err(corrupt)?;
    Ok(Some(id))
}

/// Makes sure the stanza belongs to this cluster: creates the identity on first use, refuses a stanza
/// of another cluster.
pub fn ensure(
    repo: &Repo,
    system_identifier: u64,
    pg_version: u32,
    wal_segment_size: u32,
) -> Result<RepoIdentity> {
    let settings = repo.cipher_settings();
    if let Some(e) = &settings.pass_error {
        return Err(Error::Cipher(e.clone()));
    }
    let encrypt = match settings.kind {
        Some(kind) => kind == CipherType::Aes256Gcm,
        None => settings.pass.is_some(),
    };
    if encrypt && settings.pass.is_none() {
        return Err(Error::Cipher(format!(
            "{} = 'aes-256-gcm' needs a passphrase ({})",
            repo.setting("cipher_type"),
            crate::crypto::pass_settings(repo.number())
        )));
    }
    let mine = RepoIdentity {
        format_version: REPO_FORMAT_VERSION,
        system_identifier,
        pg_version,
        wal_segment_size,
        cipher: encrypt.then(|| CipherType::Aes256Gcm.name().to_string()),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let storage = repo.storage();
    let existing = match read(repo)? {
        Some(id) => id,
        None => {
            storage.check_root()?;
            if !storage.list(repo.keys().stanza_root())?.is_empty() {
                return Err(Error::StanzaIdentityMissing {
                    repo: repo.describe(),
                    stanza: repo.stanza().to_string(),
                    why: "the stanza holds objects, so it is not new".into(),
                });
            }
            let json = serde_json::to_vec_pretty(&mine).expect("an identity serializes");
            match storage.put_new(&repo.keys().identity(), json)? {
                PutOutcome::Written => {
                    repo.set_identity(&mine);
                    open_cipher(repo, &mine)?;
                    return Ok(mine);
                }
                // Someone else created it meanwhile: check theirs.
                PutOutcome::AlreadyExists => read(repo)?.ok_or_else(|| Error::StanzaMissing {
                    repo: repo.describe(),
                    stanza: repo.stanza().to_string(),
                })?,
            }
        }
    };
    if existing.system_identifier != system_identifier || existing.pg_version != pg_version {
        return Err(Error::WrongCluster {
            repo: repo.describe(),
            stanza: repo.stanza().to_string(),
            repo_sysid: existing.system_identifier,
            repo_version: existing.pg_version,
            our_sysid: system_identifier,
            our_version: pg_version,
        });
    }
    repo.set_identity(&existing);
    open_cipher(repo, &existing)?;
    Ok(existing)
}

/// Checks the cipher settings against the stanza, creates the first keyring of an encrypted stanza
/// when it has none yet, and opens it (a wrong passphrase is refused before anything is written).
fn open_cipher(repo: &Repo, id: &RepoIdentity) -> Result<()> {
    if crate::crypto::check_settings(repo, id.cipher.as_deref())? {
        let pass = repo.cipher_settings().pass.as_ref().expect("checked");
        crate::crypto::keyring::create_first(repo, pass)?;
        repo.data_keys()?;
    }
    Ok(())
}

/// Checks a stanza's identity before each write of a long-lived writer (see the module comment).
#[derive(Debug)]
pub struct StanzaGuard {
    system_identifier: u64,
    pg_version: u32,
    wal_segment_size: u32,
    /// The identity file's fingerprint when it was last found to be ours.
    verified: Option<ObjectStamp>,
    /// The stanza existed with our identity at some point: it is never created again.
    seen: bool,
    /// When the identity was last verified with a request (remote repositories, see `check`).
    verified_at: Option<std::time::Instant>,
}

/// How long a remote repository's identity, once verified, is trusted without a request: a stat is
/// free on a local disk, but a HEAD per archived segment would double S3's requests.
pub const REMOTE_RECHECK: std::time::Duration = std::time::Duration::from_secs(300);

impl StanzaGuard {
    pub fn new(system_identifier: u64, pg_version: u32, wal_segment_size: u32) -> StanzaGuard {
        StanzaGuard {
            system_identifier,
            pg_version,
            wal_segment_size,
            verified: None,
            seen: false,
            verified_at: None,
        }
    }

    /// A guard that never creates the stanza: for a look-ahead worker, which stores only after the
    /// archiver's own guard found the stanza (a fresh guard would create it in an empty mount point
    /// left where the repository was).
    pub fn existing_only(mut self) -> StanzaGuard {
        self.seen = true;
        self
    }

    /// Ok when the stanza holds this cluster's identity (creating it on first use); an error naming
    /// the stanza and the fix otherwise. Costs one `stat` when nothing changed since the last call; on
    /// a remote repository (no local root) nothing within `REMOTE_RECHECK` of the last verification,
    /// then one HEAD.
    pub fn check(&mut self, repo: &Repo) -> Result<()> {
        let storage = repo.storage();
        let key = repo.keys().identity();
        let remote = storage.local_root().is_none();
        if self.verified.is_some()
            && remote
            && self
                .verified_at
                .is_some_and(|t| t.elapsed() < REMOTE_RECHECK)
        {
            return Ok(());
        }
        if let Some(verified) = &self.verified {
            if storage.stamp(&key).as_ref() == Some(verified) {
                self.verified_at = Some(std::time::Instant::now());
                return Ok(());
            }
            self.verified = None;
        }
        if self.seen && read(repo)?.is_none() {
            storage.check_root()?;
            return Err(Error::StanzaIdentityMissing {
                repo: repo.describe(),
                stanza: repo.stanza().to_string(),
                why: "it was there before: the stanza vanished or was moved".into(),
            });
        }
        ensure(
            repo,
            self.system_identifier,
            self.pg_version,
            self.wal_segment_size,
        )?;
        self.seen = true;
        self.verified = storage.stamp(&key);
        self.verified_at = Some(std::time::Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoUrl;

    #[test]
    fn first_use_creates_then_other_clusters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = RepoUrl::Local(dir.path().into());
        let p = Repo::open(&url, "main").unwrap();
        let id = ensure(&p, 7001, 15, 16 << 20).unwrap();
        assert_eq!(id.system_identifier, 7001);
        assert_eq!(ensure(&p, 7001, 15, 16 << 20).unwrap().created, id.created);
        let e = ensure(&p, 7002, 15, 16 << 20).unwrap_err().to_string();
        assert!(
            e.contains("7001") && e.contains("7002") && e.contains("another cluster"),
            "{e}"
        );
        // Another stanza in the same repository is fine.
        ensure(&Repo::open(&url, "other").unwrap(), 7002, 15, 16 << 20).unwrap();
    }

    #[test]
    fn no_stanza_is_created_without_its_root_nor_recreated_once_seen() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        let p = Repo::open(&RepoUrl::Local(root.clone()), "main").unwrap();
        let mut guard = StanzaGuard::new(7001, 15, 16 << 20);
        guard.check(&p).unwrap();
        guard.check(&p).unwrap();
        let summary = p
            .keys()
            .summary(1, pgformat::lsn::Lsn(0), pgformat::lsn::Lsn(1));
        p.storage().put_new(&summary, vec![1]).unwrap();

        // The repository renamed away (an unmounted disk): refused, and nothing appears at the old path.
        let away = parent.path().join("away");
        std::fs::rename(&root, &away).unwrap();
        let e = guard.check(&p).unwrap_err().to_string();
        assert!(e.contains("does not exist") && e.contains("repo"), "{e}");
        assert!(!root.exists());
        // A fresh guard (an archiver restarted) does not create the root either.
        let e = StanzaGuard::new(7001, 15, 16 << 20)
            .check(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!root.exists());

        // An empty directory at the old path (the mount point): this guard saw the stanza, so it refuses.
        std::fs::create_dir(&root).unwrap();
        let e = guard.check(&p).unwrap_err().to_string();
        assert!(
            e.contains("no identity file") && e.contains("vanished"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        // Nor does a look-ahead worker's guard, new as it is.
        let e = StanzaGuard::new(7001, 15, 16 << 20)
            .existing_only()
            .check(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no identity file"), "{e}");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        std::fs::remove_dir(&root).unwrap();

        // Back in place: accepted again.
        std::fs::rename(&away, &root).unwrap();
        guard.check(&p).unwrap();

        // A stanza that holds objects but lost its identity is never given a new one.
        std::fs::remove_file(root.join("main/strata.repo")).unwrap();
        let e = StanzaGuard::new(7001, 15, 16 << 20)
            .check(&p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no identity file") && e.contains("holds objects"),
            "{e}"
        );
        assert!(!root.join("main/strata.repo").exists());

        // Another cluster's identity put in place of ours is noticed (the fingerprint changed).
        let other = serde_json::to_vec(&RepoIdentity {
            format_version: REPO_FORMAT_VERSION,
            system_identifier: 9999,
            pg_version: 15,
            wal_segment_size: 16 << 20,
            cipher: None,
            created: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
        std::fs::write(root.join("main/strata.repo"), other).unwrap();
        let e = guard.check(&p).unwrap_err().to_string();
        assert!(e.contains("another cluster"), "{e}");
    }
}
