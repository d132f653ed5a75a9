//! Leases: how a restore running anywhere (another machine, reading the same repository) keeps an
//! expiry from deleting what it reads.
//!
//! The rule. A restore writes `<stanza>/lease-<id>.json` naming the backups of its chain and the LSN from which
//! it needs WAL (its backup's start), valid for `RUNNING` and renewed every `RENEW_EVERY` while it runs;
//! when it succeeds the lease is rewritten to last `AFTER_RESTORE`, the time for the recovery that
//! follows to fetch its WAL. An expiry keeps every backup a live lease names, with its chain, and the
//! WAL from the lease's LSN; a lapsed lease is deleted by the next expiry. A restore that crashed
//! leaves a lease that lapses by itself.
//!
//! The race between a restore taking its lease and an expiry deciding is closed from both sides, each
//! writing first and reading second: an expiry marks a backup (`expiring`), then reads the leases,
//! and deletes nothing a lease names; a restore writes its lease, then checks that no backup of its
//! chain is marked and every manifest is still there. Whichever writes second sees the other.
//!
//! A lease object that cannot be read stops the expiry (as a damaged manifest does): it may be a
//! restore's. Clocks: a lease's end is the restore machine's time, compared with the expiring
//! machine's; the margins (minutes, a day) are far above the skew NTP leaves.

use crate::manifest::Label;
use crate::paths::{RepoKey, RepoKeys};
use crate::repo::Repo;
use crate::{Error, Result};
use chrono::{DateTime, TimeDelta, Utc};
use pgformat::lsn::Lsn;
use serde::{Deserialize, Serialize};
use std::sync::mpsc;

/// How long a running restore's lease lasts without renewal.
pub const RUNNING: TimeDelta = TimeDelta::minutes(10);
/// How often a running restore renews its lease.
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How long the lease of a finished restore lasts: the recovery that follows fetches WAL from the
/// archive.
pub const AFTER_RESTORE: TimeDelta = TimeDelta::hours(24);

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The backups read: the restored backup and every backup of its chain.
    pub backups: Vec<Label>,
    /// WAL from this LSN on is read (by the recovery after the restore).
    #[serde(with = "crate::manifest::lsn_text")]
    pub wal_from: Lsn,
    /// The lease lapses at this time.
    pub until: DateTime<Utc>,
    /// Who holds it (host and process), for people.
    pub holder: String,
}

/// What the leases of a stanza hold now.
#[derive(Debug, Default)]
pub struct Held {
    pub live: Vec<Lease>,
    /// Lapsed leases (their keys), for the expiry to delete.
    pub lapsed: Vec<RepoKey>,
    /// A lease that could not be read, with why: nothing may be expired.
    pub unreadable: Option<(String, String)>,
}

impl Held {
    pub fn holds_backup(&self, label: &Label) -> bool {
        self.live.iter().any(|l| l.backups.contains(label))
    }

    /// The oldest LSN a live lease needs WAL from.
    pub fn wal_from(&self) -> Option<Lsn> {
        self.live.iter().map(|l| l.wal_from).min()
    }
}

/// Reads the stanza's leases, as live at `now`.
pub fn read_all(repo: &Repo, now: DateTime<Utc>) -> Result<Held> {
    let mut held = Held::default();
    let listed = repo.storage().list_shallow(repo.keys().stanza_root())?;
    for (key, _) in listed.into_iter().filter(|(k, _)| RepoKeys::is_lease(k)) {
        let parsed = repo.storage().get_limited(&key, 64 * 1024).and_then(|b| {
            let b = b.ok_or_else(|| Error::StateChanged("it disappeared".into()))?;
            let b = repo.unseal(&key, b)?;
            serde_json::from_slice::<Lease>(&b).map_err(|e| Error::CorruptObject {
                key: key.to_string(),
                reason: format!("not a valid lease: {e}"),
            })
        });
        match parsed {
            Ok(l) if l.until > now => held.live.push(l),
            Ok(_) => held.lapsed.push(key),
            // Released while we listed.
            Err(Error::StateChanged(_)) => {}
            Err(e) => {
                if held.unreadable.is_none() {
                    held.unreadable = Some((key.to_string(), e.to_string()));
                }
            }
        }
    }
    Ok(held)
}

/// A lease held by this process: renewed by a thread until `finish` or drop (which deletes it).
pub struct LeaseGuard {
    repo: Repo,
    key: RepoKey,
    lease: Lease,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
    /// Deleted when dropped (a failed restore); a finished restore's lease lapses by itself.
    release_on_drop: bool,
}

/// Takes a lease on `backups` and the WAL from `wal_from`, then checks that none of them is being
/// expired (see the module's rule); refused, with the lease released, if one is.
pub fn take(repo: &Repo, backups: Vec<Label>, wal_from: Lsn) -> Result<LeaseGuard> {
    let holder = format!(
        "{} pid {}",
        crate::backup::claim::host_name(),
        std::process::id()
    );
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let host: String = crate::backup::claim::host_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let id = format!("{host}-{}-{nanos:x}", std::process::id());
    let key = repo.keys().lease(&id)?;
    let lease = Lease {
        backups,
        wal_from,
        until: Utc::now() + RUNNING,
        holder,
    };
    write(repo, &key, &lease).map_err(|e| {
        Error::TargetRefused(format!(
            "cannot take a lease in the repository ({e}): a restore holds one so that an expiry \
             elsewhere does not remove what it reads; give write access to the repository, or add \
             --no-lease when no expiry can run meanwhile"
        ))
    })?;
    let mut guard = LeaseGuard {
        repo: repo.clone(),
        key,
        lease,
        stop: None,
        renewer: None,
        release_on_drop: true,
    };
    for label in &guard.lease.backups {
        let marked = repo
            .storage()
            .exists(&repo.keys().backup_expiring(label)?)?;
        let committed = repo
            .storage()
            .exists(&repo.keys().backup_manifest(label)?)?;
        if marked || !committed {
            return Err(Error::StateChanged(format!(
                "backup {label} is being expired by a retention policy (or was just expired): \
                 choose another backup with --set, or pin it first (strata annotate --set {label} \
                 --keep)"
            )));
        }
    }
    guard.start_renewing();
    Ok(guard)
}

fn write(repo: &Repo, key: &RepoKey, lease: &Lease) -> Result<()> {
    let json = serde_json::to_vec_pretty(lease).expect("a lease serializes");
    repo.storage().put_replace(key, repo.seal(key, json)?)
}

impl LeaseGuard {
    fn start_renewing(&mut self) {
        let (tx, rx) = mpsc::channel::<()>();
        let repo = self.repo.clone();
        let key = self.key.clone();
        let mut lease = self.lease.clone();
        self.stop = Some(tx);
        self.renewer = Some(std::thread::spawn(move || {
            // Until the sender is dropped; a failed renewal is retried at the next tick (the lease
            // lasts ten ticks).
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(RENEW_EVERY) {
                lease.until = Utc::now() + RUNNING;
                let _ = write(&repo, &key, &lease);
            }
        }));
    }

    fn stop_renewing(&mut self) {
        self.stop.take();
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
    }

    /// The restore succeeded: the lease now lasts `AFTER_RESTORE`, for the recovery's WAL.
    pub fn finish(mut self) -> Result<()> {
        self.stop_renewing();
        self.lease.until = Utc::now() + AFTER_RESTORE;
        self.release_on_drop = false;
        write(&self.repo, &self.key, &self.lease)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_renewing();
        if self.release_on_drop {
            let _ = self.repo.storage().delete(&self.key);
        }
    }
}
