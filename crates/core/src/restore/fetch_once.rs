//! A restore from a remote repository (S3) reads each data object once. Every object is needed twice:
//! whole, for the check of its size and CRC-32C (`object_checks::check_objects`), and piece by piece by the
//! writers. From a local repository the second read comes from the page cache; from S3 it would be a
//! second download of the whole backup, plus one ranged GET per piece (a bundle holds hundreds).
//!
//! So each object is downloaded whole by the first thread that needs it — a writer, or the checker,
//! which walks every object and so also fetches ahead of the writers — checked (size, CRC-32C) and kept
//! in a spool directory beside the target (`.<name>.strata-spool`, made by the restore, removed when it
//! ends, whatever the outcome); other threads wanting it wait, then read their pieces from the local
//! copy. The spool needs the backup's stored size in the target's parent directory's file system for
//! the length of the restore. Nothing unchecked is ever read from it: a copy is published only after
//! its CRC-32C matched (and, in an encrypted stanza restored into an existing directory, every piece
//! of it was authenticated: `--delta` checks every object before it writes anything), and the writers
//! still check every piece (digest, AEAD) as they decode it.

use super::beneath::Root;
use super::object_checks::{self, Sealed};
use super::plan::Plan;
use crate::manifest::StoredObject;
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::{Error, ErrorClass, Result};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

enum Slot {
    Fetching,
    /// Checked and spooled (the copy's name in the spool). No descriptor is kept: a backup of a few
    /// hundred GB has tens of thousands of objects, more than a process may hold open.
    Ready(String),
    /// The fetch failed: its error's class and message, for every later reader.
    Failed(ErrorClass, String),
}

pub struct FetchOnce<'a> {
    repo: &'a Repo,
    plan: &'a Plan,
    /// What each object's manifest records (size, CRC-32C), by its key.
    recorded: HashMap<String, &'a StoredObject>,
    /// In an encrypted stanza, when asked: every piece of an object is authenticated when fetched.
    sealed: Option<Sealed>,
    spool: Root,
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
}

/// Marks a claimed slot failed if its fetch ends without publishing (a panic): waiters never hang.
struct Claim<'s, 'a> {
    owner: &'s FetchOnce<'a>,
    key: String,
    settled: bool,
}

impl Drop for Claim<'_, '_> {
    fn drop(&mut self) {
        if !self.settled {
            self.owner.settle(
                &self.key,
                Slot::Failed(ErrorClass::Internal, "its fetch panicked".into()),
            );
        }
    }
}

impl<'a> FetchOnce<'a> {
    /// `authenticate`: every piece of an encrypted stanza's object is authenticated as it is fetched —
    /// wanted when the fetches are the check before writing into an existing directory; into staging
    /// the writers authenticate what they read, and nothing is renamed into place before they did.
    pub fn new(
        repo: &'a Repo,
        plan: &'a Plan,
        spool: Root,
        authenticate: bool,
    ) -> Result<FetchOnce<'a>> {
        let mut recorded = HashMap::new();
        for (label, o) in plan.all_objects() {
            recorded.insert(repo.keys().backup_object(label, &o.name)?.to_string(), o);
        }
        Ok(FetchOnce {
            repo,
            plan,
            recorded,
            sealed: match authenticate {
                true => Sealed::of(repo, plan)?,
                false => None,
            },
            spool,
            slots: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        })
    }

    fn settle(&self, key: &str, slot: Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.insert(key.to_string(), slot);
        self.changed.notify_all();
    }

    /// The name in the spool of the checked copy of data object `name` of backup `label`: fetched by
    /// this call, or by the thread that is fetching it (waited for). A failed fetch fails every later
    /// reader with the same class of error and its message.
    fn object(&self, label: &str, name: &str) -> Result<String> {
        let key = self.repo.keys().backup_object(label, name)?;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match slots.get(key.as_str()) {
                Some(Slot::Ready(local)) => return Ok(local.clone()),
                Some(Slot::Failed(class, message)) => return Err(failed(&key, *class, message)),
                Some(Slot::Fetching) => {
                    slots = self.changed.wait(slots).unwrap_or_else(|p| p.into_inner());
                }
                None => break,
            }
        }
        slots.insert(key.to_string(), Slot::Fetching);
        drop(slots);
        let mut claim = Claim {
            owner: self,
            key: key.to_string(),
            settled: false,
        };
        let fetched = self.fetch(&key);
        self.settle(
            &claim.key,
            match &fetched {
                Ok(local) => Slot::Ready(local.clone()),
                Err(e) => Slot::Failed(e.class(), e.to_string()),
            },
        );
        claim.settled = true;
        fetched
    }

    /// Downloads, checks and spools one object.
    fn fetch(&self, key: &RepoKey) -> Result<String> {
        let recorded = self
            .recorded
            .get(key.as_str())
            .ok_or_else(|| Error::CorruptObject {
                key: key.to_string(),
                reason: "a piece names an object its manifest does not list".into(),
            })?;
        let target = &self.plan.manifest.label;
        let bytes = object_checks::fetch_checked(self.repo, key, recorded, target)?;
        if let Some(sealed) = &self.sealed {
            sealed.authenticate(key, &bytes, target)?;
        }
        // A flat name: the key's segments joined (labels and object names are checked key segments).
        let local = key.as_str().replace('/', "_");
        let mut out = self.spool.create_file(&local, 0o600)?;
        std::io::Write::write_all(&mut out, &bytes).map_err(|source| Error::WriteFile {
            path: self.spool.path().join(&local),
            source,
        })?;
        Ok(local)
    }

    /// `len` bytes at `offset` of a data object (the piece of a file), from its checked local copy.
    pub fn read_range(&self, label: &str, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let local = self.object(label, name)?;
        let path = self.spool.path().join(&local);
        let file = self.spool.open_existing(&local).ok_or_else(|| {
            Error::Internal(format!(
                "the spooled copy {} cannot be opened",
                path.display()
            ))
        })?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(|source| Error::ReadFile { path, source })?;
        Ok(buf)
    }

    /// The check of every object (`object_checks::check_objects`), fetching into the spool what no writer
    /// fetched yet.
    pub fn fetch_all(&self, threads: usize, abort: &AtomicBool) -> Result<()> {
        let stop = AtomicBool::new(false);
        crate::parallel::run(
            threads,
            &stop,
            self.plan.all_objects(),
            || Ok(()),
            |_, (label, o)| {
                if abort.load(Ordering::Relaxed) {
                    return Ok(());
                }
                self.object(label, &o.name).map(|_| ())
            },
            |_| Ok(()),
        )?;
        Ok(())
    }
}

/// The error a reader of an object whose fetch failed gets: of the same class, with the first error's
/// message (so that whichever thread reports it, the cause is said and the exit code is the same).
fn failed(key: &RepoKey, class: ErrorClass, message: &str) -> Error {
    match class {
        ErrorClass::Corrupt => Error::CorruptObject {
            key: key.to_string(),
            reason: message.to_string(),
        },
        ErrorClass::Internal => Error::Internal(format!("{key}: {message}")),
        _ => Error::Io {
            what: format!("reading {key}"),
            source: std::io::Error::other(message.to_string()),
        },
    }
}
