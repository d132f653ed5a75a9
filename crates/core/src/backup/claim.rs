//! Claiming a backup's label, and telling abandoned backups from live ones.
//!
//! A stanza may be written by two servers with the same system identifier (a restored copy whose
//! postgresql.conf still archives into production's stanza), each with its own "one backup at a time"
//! slot. So a backup first claims its label in the repository with a create-only object,
//! `backup/<label>/claim.json`, before it writes anything else: the claim that is stored first wins and
//! the other backup takes the next second's label. The claim says who made it (host name, boot id, data
//! directory, postmaster pid and start time, worker pid, timeline, time).
//!
//! The start-up clean-up deletes a backup without a manifest only when it is provably abandoned:
//! - claimed by a server on this host, in this boot, on this data directory, whose postmaster is this
//!   one or is gone (one postmaster per data directory; the caller holds the server's one-backup slot,
//!   so no other backup of this server runs), or
//! - nothing of it (claim or data) was written for `LEASE` (a live backup writes an object every few
//!   seconds; its longest quiet time, the wait for WAL archiving, is bounded by
//!   `strata.backup_archive_timeout`).
//!
//! Anything else is someone else's backup in progress and is kept. Nothing of a backup whose manifest
//! exists is ever deleted (checked right before deleting), a backup re-checks that its claim is still
//! its own before writing its manifest, and `abandon` deletes only a backup whose claim is its own.

use crate::repo::Repo;
use crate::storage::PutOutcome;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const CLAIM_FORMAT_VERSION: u32 = 1;

/// How long an unfinished backup of another server may go without writing before it counts as
/// abandoned.
pub const LEASE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// How many later labels a backup tries when the one it wanted is claimed.
const MAX_LABEL_TRIES: usize = 120;

/// Which server took a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub host: String,
    /// Linux's `/proc/sys/kernel/random/boot_id`: tells a reboot (or another machine with the same
    /// host name) from a server restart.
    pub boot_id: Option<String>,
    pub pgdata: String,
    pub postmaster_pid: i32,
    pub postmaster_start: String,
}

impl Instance {
    /// This machine's host name and boot id with the server's data directory and postmaster.
    pub fn here(pgdata: &Path, postmaster_pid: i32, postmaster_start: &str) -> Instance {
        Instance {
            host: host_name(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            pgdata: pgdata.display().to_string(),
            postmaster_pid,
            postmaster_start: postmaster_start.to_string(),
        }
    }

    /// Whether `other` ran on this machine, in this boot, on this data directory.
    fn same_data_directory(&self, other: &Instance) -> bool {
        self.host == other.host
            && self.boot_id.is_some()
            && self.boot_id == other.boot_id
            && self.pgdata == other.pgdata
    }

    fn describe(&self) -> String {
        format!(
            "{}:{} (postmaster pid {} started {})",
            self.host, self.pgdata, self.postmaster_pid, self.postmaster_start
        )
    }
}

pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A backup's claim on its label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub format_version: u32,
    pub label: String,
    pub system_identifier: u64,
    pub timeline: u32,
    pub instance: Instance,
    pub worker_pid: i32,
    /// RFC 3339, UTC, with sub-second precision.
    pub claimed_at: String,
}

impl Claim {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Reads a backup's claim; `Ok(None)` when it has none, an error when it cannot be read.
pub fn read(repo: &Repo, label: &str) -> Result<Option<Claim>> {
    let key = repo.keys().backup_claim(label)?;
    let Some(bytes) = repo.storage().get(&key)? else {
        return Ok(None);
    };
    let bytes = repo.unseal(&key, bytes)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::CorruptObject {
            key: key.to_string(),
            reason: format!("not a valid backup claim: {e}"),
        })
}

/// Claims the first free label that `label_at(offset)` gives (offset: seconds later than wanted),
/// starting at offset 0; returns the claim and the labels found taken on the way (claimed by another
/// backup at the same time), one per offset.
pub fn claim_label(
    repo: &Repo,
    label_at: impl Fn(i64) -> String,
    make: impl Fn(&str) -> Claim,
) -> Result<(Claim, Vec<String>)> {
    let mut taken = Vec::new();
    for offset in 0..MAX_LABEL_TRIES as i64 {
        let label = label_at(offset);
        let claim = make(&label);
        let key = repo.keys().backup_claim(&label)?;
        match repo
            .storage()
            .put_new(&key, repo.seal(&key, claim.to_json())?)?
        {
            PutOutcome::Written => return Ok((claim, taken)),
            PutOutcome::AlreadyExists => taken.push(label),
        }
    }
    Err(Error::Busy(format!(
        "could not claim a backup label in {} stanza '{}': the labels {} were all taken; is a backup \
         started in a loop?",
        repo.describe(),
        repo.stanza(),
        taken.join(", ")
    )))
}

/// Whether an unfinished backup is abandoned (and why) or may still be running (and by whom).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Abandoned(String),
    Live(String),
}

/// Judges an unfinished backup from its claim (None: none or unreadable) and the time of its newest
/// object, for the server `me`.
pub fn judge(
    claim: Option<&Claim>,
    newest_write: Option<chrono::DateTime<chrono::Utc>>,
    me: &Instance,
    now: chrono::DateTime<chrono::Utc>,
    pid_alive: impl Fn(i32) -> bool,
) -> Verdict {
    if let Some(c) = claim {
        if me.same_data_directory(&c.instance) {
            if c.instance.postmaster_pid == me.postmaster_pid {
                return Verdict::Abandoned(format!(
                    "left by this server (worker pid {} is gone)",
                    c.worker_pid
                ));
            }
            if !pid_alive(c.instance.postmaster_pid) {
                return Verdict::Abandoned(format!(
                    "left by this data directory's earlier server (postmaster pid {}, gone)",
                    c.instance.postmaster_pid
                ));
            }
        }
    }
    let stale = newest_write.is_some_and(|t| now - t > LEASE);
    let who = match claim {
        Some(c) => format!(
            "claimed by {} worker pid {} at {}",
            c.instance.describe(),
            c.worker_pid,
            c.claimed_at
        ),
        None => "without a readable claim".to_string(),
    };
    if stale {
        Verdict::Abandoned(format!(
            "{who}; nothing written for more than {} hours",
            LEASE.num_hours()
        ))
    } else {
        Verdict::Live(who)
    }
}

/// What the start-up clean-up did.
#[derive(Clone, Debug, Default)]
pub struct Cleanup {
    /// Backups deleted, with the reason they were provably abandoned.
    pub removed: Vec<(String, String)>,
    /// Unfinished backups kept (probably running elsewhere), with who claimed them.
    pub kept: Vec<(String, String)>,
}

/// Deletes the unfinished backups (no manifest) that are provably abandoned; see the module comment.
pub fn remove_abandoned(repo: &Repo, me: &Instance) -> Result<Cleanup> {
    let (_, incomplete) = crate::catalog::backup_labels(repo)?;
    let mut cleanup = Cleanup::default();
    for label in incomplete {
        let claim = read(repo, &label).ok().flatten();
        let newest = repo
            .storage()
            .newest_modification(&repo.keys().backup_dir(&label)?)?;
        match judge(claim.as_ref(), newest, me, chrono::Utc::now(), pid_alive) {
            Verdict::Abandoned(why) => {
                if delete_unfinished(repo, &label)? {
                    cleanup.removed.push((label, why));
                }
            }
            Verdict::Live(who) => cleanup.kept.push((label, who)),
        }
    }
    Ok(cleanup)
}

/// Deletes a backup that has no manifest: its claim first (so that its owner, were it still running,
/// fails its claim check before writing a manifest), then the rest. Returns false, deleting nothing,
/// when the backup has a manifest.
pub fn delete_unfinished(repo: &Repo, label: &str) -> Result<bool> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let manifest = keys.backup_manifest(label)?;
    if storage.exists(&manifest)? {
        return Ok(false);
    }
    storage.delete(&keys.backup_claim(label)?)?;
    if storage.exists(&manifest)? {
        return Ok(false);
    }
    storage.delete_prefix(&keys.backup_dir(label)?)?;
    Ok(true)
}

/// Whether a process exists on this machine (EPERM: it exists but is not ours).
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoUrl;

    fn instance(pgdata: &str, postmaster_pid: i32) -> Instance {
        Instance {
            host: "db1".into(),
            boot_id: Some("boot-a".into()),
            pgdata: pgdata.into(),
            postmaster_pid,
            postmaster_start: "2026-12-01 04:00:00+00".into(),
        }
    }

    fn claim_by(instance: Instance, label: &str) -> Claim {
        Claim {
            format_version: CLAIM_FORMAT_VERSION,
            label: label.into(),
            system_identifier: 7,
            timeline: 1,
            instance,
            worker_pid: 4242,
            claimed_at: "2026-12-01T04:00:00.123Z".into(),
        }
    }

    #[test]
    fn only_provably_abandoned_backups_are_judged_abandoned() {
        let now = chrono::Utc::now();
        let recent = Some(now - chrono::TimeDelta::minutes(5));
        let old = Some(now - chrono::TimeDelta::hours(25));
        let me = instance("/pg/main", 100);
        let alive = |_| true;
        let dead = |_| false;
        let abandoned = |v: Verdict| matches!(v, Verdict::Abandoned(_));

        // This very server's: its worker is gone (we hold the one-backup slot).
        let mine = claim_by(me.clone(), "L");
        assert!(abandoned(judge(Some(&mine), recent, &me, now, alive)));
        // This data directory's earlier server, gone.
        let earlier = claim_by(instance("/pg/main", 90), "L");
        assert!(abandoned(judge(Some(&earlier), recent, &me, now, dead)));
        assert!(!abandoned(judge(Some(&earlier), recent, &me, now, alive)));
        // A restored copy on the same host (another data directory): live, whatever its pids.
        let copy = claim_by(instance("/pg/copy", 100), "L");
        let v = judge(Some(&copy), recent, &me, now, dead);
        assert!(
            matches!(&v, Verdict::Live(who) if who.contains("/pg/copy")),
            "{v:?}"
        );
        // Another machine with the same host name and path (another boot): live.
        let mut elsewhere = instance("/pg/main", 100);
        elsewhere.boot_id = Some("boot-b".into());
        assert!(!abandoned(judge(
            Some(&claim_by(elsewhere, "L")),
            recent,
            &me,
            now,
            dead
        )));
        // Anyone's, after the lease without a write; no claim at all, likewise.
        assert!(abandoned(judge(Some(&copy), old, &me, now, alive)));
        assert!(abandoned(judge(None, old, &me, now, alive)));
        assert!(!abandoned(judge(None, recent, &me, now, alive)));
        // Without a boot id nothing is proven by the host and path alone.
        let mut no_boot = me.clone();
        no_boot.boot_id = None;
        let theirs = claim_by(no_boot.clone(), "L");
        assert!(!abandoned(judge(
            Some(&theirs),
            recent,
            &no_boot,
            now,
            dead
        )));
    }

    #[test]
    fn a_label_is_claimed_once_and_the_clean_up_keeps_live_and_committed_backups() {
        let dir = tempfile::tempdir().unwrap();
        let r = Repo::open(&RepoUrl::Local(dir.path().into()), "main").unwrap();
        let (s, p) = (r.storage(), r.keys());
        let labels = ["20261201-040000F", "20261201-040001F", "20261201-040002F"];
        let label_at = |o: i64| labels[o as usize].to_string();

        let me = Instance::here(Path::new("/pg/main"), 100, "t0");
        let other = instance("/pg/copy", 200);
        let (theirs, taken) = claim_label(&r, label_at, |l| claim_by(other.clone(), l)).unwrap();
        assert_eq!((theirs.label.as_str(), taken.len()), (labels[0], 0));
        // The same second again: the next label, and the first is reported taken.
        let (mine, taken) = claim_label(&r, label_at, |l| {
            let mut c = claim_by(me.clone(), l);
            c.worker_pid = 1;
            c
        })
        .unwrap();
        assert_eq!(mine.label, labels[1]);
        assert_eq!(taken, vec![labels[0].to_string()]);
        assert_eq!(read(&r, labels[0]).unwrap().unwrap(), theirs);
        s.put_new(
            &p.backup_object(labels[0], "data/00000000").unwrap(),
            vec![1],
        )
        .unwrap();
        s.put_new(
            &p.backup_object(labels[1], "data/00000000").unwrap(),
            vec![2],
        )
        .unwrap();

        // A committed backup without a claim (an older version) is never touched.
        s.put_new(&p.backup_manifest(labels[2]).unwrap(), b"{}".to_vec())
            .unwrap();
        let cleanup = remove_abandoned(&r, &me).unwrap();
        assert_eq!(
            cleanup.removed.iter().map(|r| &r.0).collect::<Vec<_>>(),
            vec![labels[1]],
            "only this server's own unfinished backup: {cleanup:?}"
        );
        assert_eq!(cleanup.kept.len(), 1);
        assert_eq!(cleanup.kept[0].0, labels[0]);
        assert!(s.exists(&p.backup_claim(labels[0]).unwrap()).unwrap());
        assert!(s
            .exists(&p.backup_object(labels[0], "data/00000000").unwrap())
            .unwrap());
        assert!(s
            .list(&p.backup_dir(labels[1]).unwrap())
            .unwrap()
            .is_empty());
        assert!(s.exists(&p.backup_manifest(labels[2]).unwrap()).unwrap());
        assert!(!delete_unfinished(&r, labels[2]).unwrap());
        assert!(s.exists(&p.backup_manifest(labels[2]).unwrap()).unwrap());
    }
}
