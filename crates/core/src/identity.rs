//! Repository identity (`<stanza>/strata.repo`): which cluster a stanza belongs to. Written on first
//! use, checked on every later use, so that two clusters never mix their WAL in one stanza.

use crate::paths::RepoPaths;
use crate::storage::{PutOutcome, Storage};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

pub const REPO_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoIdentity {
    pub format_version: u32,
    pub system_identifier: u64,
    /// PostgreSQL major version number, e.g. 15.
    pub pg_version: u32,
    pub wal_segment_size: u32,
    /// Cipher parameters when encryption is configured (never the key); none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    pub created: String,
}

/// Reads the identity of a stanza, if it has one.
pub fn read(storage: &Storage, paths: &RepoPaths) -> Result<Option<RepoIdentity>> {
    let key = paths.identity();
    let Some(bytes) = storage.get(&key)? else {
        return Ok(None);
    };
    let id: RepoIdentity = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptObject {
        key: key.clone(),
        reason: format!("not a valid identity: {e}"),
    })?;
    if id.format_version != REPO_FORMAT_VERSION {
        return Err(Error::UnsupportedRepoFormat {
            key,
            found: id.format_version,
            supported: REPO_FORMAT_VERSION,
        });
    }
    Ok(Some(id))
}

/// Makes sure the stanza belongs to this cluster: creates the identity on first use, refuses a stanza
/// of another cluster.
pub fn ensure(
    storage: &Storage,
    paths: &RepoPaths,
    system_identifier: u64,
    pg_version: u32,
    wal_segment_size: u32,
) -> Result<RepoIdentity> {
    let mine = RepoIdentity {
        format_version: REPO_FORMAT_VERSION,
        system_identifier,
        pg_version,
        wal_segment_size,
        cipher: None,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let existing = match read(storage, paths)? {
        Some(id) => id,
        None => {
            let json = serde_json::to_vec_pretty(&mine).map_err(|e| Error::Other(e.to_string()))?;
            match storage.put_new(&paths.identity(), json)? {
                PutOutcome::Written => return Ok(mine),
                // Someone else created it meanwhile: check theirs.
                PutOutcome::AlreadyExists => {
                    read(storage, paths)?.ok_or_else(|| Error::Other("identity vanished".into()))?
                }
            }
        }
    };
    if existing.system_identifier != system_identifier || existing.pg_version != pg_version {
        return Err(Error::WrongCluster {
            repo: storage.url().display(),
            stanza: paths.stanza().to_string(),
            repo_sysid: existing.system_identifier,
            repo_version: existing.pg_version,
            our_sysid: system_identifier,
            our_version: pg_version,
        });
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoUrl;

    #[test]
    fn first_use_creates_then_other_clusters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&RepoUrl::Local(dir.path().into())).unwrap();
        let p = RepoPaths::new("main");
        let id = ensure(&s, &p, 7001, 15, 16 << 20).unwrap();
        assert_eq!(id.system_identifier, 7001);
        assert_eq!(
            ensure(&s, &p, 7001, 15, 16 << 20).unwrap().created,
            id.created
        );
        let e = ensure(&s, &p, 7002, 15, 16 << 20).unwrap_err().to_string();
        assert!(
            e.contains("7001") && e.contains("7002") && e.contains("another cluster"),
            "{e}"
        );
        // Another stanza in the same repository is fine.
        ensure(&s, &RepoPaths::new("other"), 7002, 15, 16 << 20).unwrap();
    }
}
