//! Verification of a stanza: every object, manifest, chain, WAL range and summary read back and
//! checked (see `run`), and the last result kept in the repository (`<stanza>/verify.json`) so that
//! monitoring (metrics, `strata check`) can say when the repository was last verified and what was
//! found, whoever ran it (`strata verify` or `backup_verify()`).

pub mod archive;
pub mod backups;

use crate::catalog;
use crate::manifest::{Label, Manifest, ManifestHead};
use crate::repo::Repo;
use crate::retention::Policy;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something cannot be restored as it should.
    Error,
    /// Restores still work, something is slower or less complete (a missing summary).
    Warning,
}

/// One problem found: the object (a repository key, a WAL file name or a backup label) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub object: String,
    pub reason: String,
}

impl Finding {
    pub fn error(object: &str, reason: String) -> Finding {
        Finding {
            severity: Severity::Error,
            object: object.to_string(),
            reason,
        }
    }

    pub fn warning(object: &str, reason: String) -> Finding {
        Finding {
            severity: Severity::Warning,
            object: object.to_string(),
            reason,
        }
    }
}

/// What was found about one backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupResult {
    pub label: String,
    /// ok, or error.
    pub status: &'static str,
    pub objects: u64,
    pub bytes: u64,
    pub findings: Vec<Finding>,
}

/// A verification's whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub stanza: String,
    pub repo: String,
    pub set: Option<String>,
    /// ok, warning or error.
    pub status: &'static str,
    pub errors: u64,
    pub warnings: u64,
    pub backups: Vec<BackupResult>,
    /// Per timeline (the whole stanza only; with `--set` the chain's WAL is checked per backup).
    pub timelines: Vec<archive::TimelineResult>,
    pub bytes_read: u64,
    pub seconds: f64,
}

impl Report {
    /// `strata verify`'s exit code: 0 all good, 1 warnings only, 2 errors found (3: could not run,
    /// an `Err` from `run`).
    pub fn exit_code(&self) -> i32 {
        match self.status {
            "ok" => 0,
            "warning" => 1,
            _ => 2,
        }
    }
}

/// What to verify.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// One backup with its chain; None: the whole stanza.
    pub set: Option<String>,
    /// Threads reading in parallel.
    pub process_max: usize,
    /// The retention policy in force: gaps in the archive that it leaves are expected, not errors.
    pub policy: Option<Policy>,
}

/// Progress, for a progress bar (bytes of stored objects read so far, of the total to read).
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub objects_done: AtomicU64,
}

/// Verifies the stanza (or one backup with its chain): see the module's opening. Reads every stored
/// byte once, at most `process_max` objects at a time. Setting `stop` cancels it (`Error::Cancelled`).
pub fn run(repo: &Repo, opts: &Options, progress: &Progress, stop: &AtomicBool) -> Result<Report> {
    let started = std::time::Instant::now();
    repo.identity()?;
    let threads = opts.process_max.clamp(1, 64);
    let listing = catalog::list_backups_tolerant(repo)?;
    let mut results: Vec<BackupResult> = Vec::new();
    let mut manifests: Vec<Manifest> = Vec::new();
    let scope: Vec<Label> = match &opts.set {
        Some(label) => {
            let head = catalog::load_head(repo, label)?;
            let mut chain = head.references.clone();
            chain.push(head.label.clone());
            chain
        }
        None => {
            for (label, why) in &listing.damaged {
                results.push(BackupResult {
                    label: label.clone(),
                    status: "error",
                    objects: 0,
                    bytes: 0,
                    findings: vec![Finding::error(
                        label,
                        format!("the manifest cannot be read: {why}"),
                    )],
                });
            }
            listing.sound.iter().map(|m| m.label.clone()).collect()
        }
    };
    for label in &scope {
        match catalog::load(repo, label) {
            Ok(m) => manifests.push(m),
            Err(e) => results.push(BackupResult {
                label: label.to_string(),
                status: "error",
                objects: 0,
                bytes: 0,
                findings: vec![Finding::error(label, e.to_string())],
            }),
        }
    }
    let mut structure: Vec<Vec<Finding>> = manifests
        .iter()
        .map(|m| {
            // The whole stanza's archive pass reads every WAL file: here only their presence.
            let mut f = backups::check_structure(repo, m, opts.set.is_some());
            f.extend(backups::check_digests(m));
            f
        })
        .collect();
    let mut jobs = Vec::new();
    for (m, found) in manifests.iter().zip(structure.iter_mut()) {
        jobs.extend(backups::object_jobs(m, found));
    }
    let total: u64 = jobs.iter().map(|j| j.object.size).sum();
    progress.bytes_total.fetch_add(total, Ordering::Relaxed);
    let object_findings: Mutex<Vec<(String, Finding)>> = Mutex::new(Vec::new());
    crate::parallel::run(
        threads,
        stop,
        jobs,
        || Ok(()),
        |_, job| backups::verify_object(repo, &job, progress, &object_findings),
        |_| Ok(()),
    )?;
    if stop.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    let object_findings = object_findings
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    for (m, mut found) in manifests.iter().zip(structure) {
        found.extend(
            object_findings
                .iter()
                .filter(|(l, _)| l == m.label.as_str())
                .map(|(_, f)| f.clone()),
        );
        results.push(BackupResult {
            label: m.label.to_string(),
            status: if found.iter().any(|f| f.severity == Severity::Error) {
                "error"
            } else {
                "ok"
            },
            objects: m.objects.len() as u64,
            bytes: m.objects.iter().map(|o| o.size).sum(),
            findings: found,
        });
    }
    results.sort_by(|a, b| a.label.cmp(&b.label));

    let timelines = if opts.set.is_none() {
        let need = opts
            .policy
            .as_ref()
            .and_then(|p| kept_wal(&listing.sound, p, repo));
        archive::check(repo, &listing.sound, need.as_ref(), threads, progress, stop)?
    } else {
        Vec::new()
    };
    if stop.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    let all = results
        .iter()
        .flat_map(|b| &b.findings)
        .chain(timelines.iter().flat_map(|t| &t.findings));
    let (mut errors, mut warnings) = (0, 0);
    for f in all {
        match f.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
    }
    Ok(Report {
        stanza: repo.stanza().to_string(),
        repo: repo.describe(),
        set: opts.set.clone(),
        status: if errors > 0 {
            "error"
        } else if warnings > 0 {
            "warning"
        } else {
            "ok"
        },
        errors,
        warnings,
        backups: results,
        timelines,
        bytes_read: progress.bytes_done.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The WAL the policy keeps (what its gaps may be): only when a `retention_archive` policy is set,
/// the only one that leaves holes on purpose.
fn kept_wal(
    backups: &[ManifestHead],
    policy: &Policy,
    repo: &Repo,
) -> Option<crate::retention::WalNeed> {
    policy.archive?;
    let pins = crate::retention::pin::pinned(&crate::retention::pin::annotations(
        repo,
        backups.iter().map(|m| &m.label),
    ));
    let decision = crate::retention::decide(backups, policy, &pins, Utc::now());
    let kept: Vec<&ManifestHead> = backups
        .iter()
        .filter(|m| decision.keep.contains_key(&m.label))
        .collect();
    crate::retention::wal_need(&kept, policy)
}

impl Report {
    /// What monitoring keeps of it.
    pub fn last_result(&self) -> LastResult {
        LastResult {
            finished: Utc::now(),
            seconds: self.seconds,
            set: self.set.clone(),
            backups_checked: self.backups.len() as u64,
            errors: self.errors,
            warnings: self.warnings,
        }
    }
}

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
    let key = repo.keys().last_verify();
    repo.storage().put_replace(&key, repo.seal(&key, json)?)
}

/// The stanza's last verification, if one was recorded.
pub fn last(repo: &Repo) -> Result<Option<LastResult>> {
    repo.read_small_json(&repo.keys().last_verify(), "verify result")
}
