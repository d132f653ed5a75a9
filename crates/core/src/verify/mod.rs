//! Verification of a stanza: every object, manifest, chain, WAL range and summary read back and
//! checked (see `run`), and the last result kept in the repository (`<stanza>/verify.json`) so that
//! monitoring (metrics, `strata check`) can say when the repository was last verified and what was
//! found, whoever ran it (`strata verify` or `backup_verify()`).

use crate::repo::Repo;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The outcome of a verification, as kept for monitoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastResult {
    /// When it finished.
    pub finished: DateTime<Utc>,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// `--set LABEL` when only one backup (with its chain) was verified; None: the whole stanza.
    pub set: Option<String>,
    pub backups_checked: u64,
    pub errors: u64,
    pub warnings: u64,
}

/// Keeps `result` as the stanza's last verification (replacing the previous one).
pub fn record(repo: &Repo, result: &LastResult) -> Result<()> {
    let json = serde_json::to_vec_pretty(result).expect("a verify result serializes");
    repo.storage().put_replace(&repo.keys().last_verify(), json)
}

/// The stanza's last verification, if one was recorded.
pub fn last(repo: &Repo) -> Result<Option<LastResult>> {
    let key = repo.keys().last_verify();
    let Some(bytes) = repo.storage().get_limited(&key, 64 * 1024)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::CorruptObject {
            key: key.to_string(),
            reason: format!("not a valid verify result: {e}"),
        })
}
