//! Pins: a backup marked to be kept whatever the policy (Barman's `keep`, pgBackRest's `annotate`),
//! with an optional note. Kept in `backup/<label>/annotation.json`, beside the manifest, because a
//! manifest never changes once committed. A pinned backup keeps its chain and the WAL from its start.

use crate::manifest::Label;
use crate::repo::Repo;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A backup's annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    /// Kept whatever the retention policy says.
    pub keep: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was last set (RFC 3339).
    pub updated: String,
}

const MAX_NOTE: usize = 1000;

/// Reads a backup's annotation (none: not pinned, no note).
pub fn read(repo: &Repo, label: &str) -> Result<Option<Annotation>> {
    repo.read_small_json(&repo.keys().backup_annotation(label)?, "annotation")
}

/// Pins or unpins a committed backup, with a note (None keeps the note it has).
pub fn set(repo: &Repo, label: &str, keep: bool, note: Option<&str>) -> Result<Annotation> {
    if let Some(n) = note {
        if n.len() > MAX_NOTE || n.chars().any(char::is_control) {
            return Err(Error::BadSetting {
                name: "note".into(),
                value: n.chars().take(60).collect(),
                reason: format!("use at most {MAX_NOTE} bytes of text without control characters"),
            });
        }
    }
    // Only a committed backup can be pinned: its manifest must be there (and read).
    crate::catalog::load_head(repo, label)?;
    let old = read(repo, label)?.unwrap_or_default();
    let annotation = Annotation {
        keep,
        note: note.map(str::to_string).or(old.note),
        updated: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let json = serde_json::to_vec_pretty(&annotation).expect("an annotation serializes");
    let key = repo.keys().backup_annotation(label)?;
    repo.storage().put_replace(&key, repo.seal(&key, json)?)?;
    // An expiry may have removed the backup meanwhile: then the pin did not take.
    let gone = !repo
        .storage()
        .exists(&repo.keys().backup_manifest(label)?)?
        || repo
            .storage()
            .exists(&repo.keys().backup_expiring(label)?)?;
    if gone {
        repo.storage().delete(&key)?;
        return Err(Error::BackupNotFound {
            label: label.to_string(),
            repo: repo.describe(),
            stanza: repo.stanza().to_string(),
        });
    }
    Ok(annotation)
}

/// A backup's annotation for deciding what to keep: an unreadable one counts as a pin (when in
/// doubt, keep), with the reason as its note.
pub fn read_or_pinned(repo: &Repo, label: &str) -> Annotation {
    match read(repo, label) {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => Annotation {
            keep: true,
            note: Some(format!("unreadable annotation, kept: {e}")),
            updated: String::new(),
        },
    }
}

/// The annotations of `labels` (those that have one; an unreadable one counts as a pin, so that one
/// bad object neither hides a listing nor lets its backup expire).
pub fn annotations<'a>(
    repo: &Repo,
    labels: impl IntoIterator<Item = &'a Label>,
) -> BTreeMap<Label, Annotation> {
    labels
        .into_iter()
        .map(|l| (l.clone(), read_or_pinned(repo, l)))
        .filter(|(_, a)| *a != Annotation::default())
        .collect()
}

/// The pinned backups of a set of annotations.
pub fn pinned(annotations: &BTreeMap<Label, Annotation>) -> Vec<Label> {
    annotations
        .iter()
        .filter(|(_, a)| a.keep)
        .map(|(l, _)| l.clone())
        .collect()
}
