//! Backups: copying a running cluster into the repository.
//!
//! The server side (the extension's background worker) drives a backup in three phases, with its own
//! calls to PostgreSQL in between, because only the worker's main thread may talk to PostgreSQL:
//!
//! 1. `BackupRun::begin` — checks the stanza belongs to this cluster, removes the garbage of abandoned
//!    backups, decides the kind, the reference (for diff and incr, see `chain::choose_reference`) and
//!    claims the label (see `claim`). The worker then calls `pg_backup_start(label, true)`.
//! 2. `BackupRun::copy` — walks PGDATA and the tablespaces; for diff and incr, maps the blocks changed
//!    since the reference's start (see `changed`) and decides how each file is copied (see `incr`, and
//!    `recreated` for the databases a summary gap must not trust); copies the files in parallel (see
//!    `copy`); pure Rust on its own threads, cancellable through an atomic flag. The worker then calls
//!    `pg_backup_stop`, and waits until the WAL the backup needs is archived.
//! 3. `BackupRun::complete` — writes the manifest, the commit point: only now does the backup exist.
//!
//! A backup that fails or is cancelled before phase 3 leaves no manifest, so it is not listed and a later
//! backup deletes what it stored (`BackupRun::abandon` does it at once when it can).

pub mod changed;
pub mod claim;
pub mod copy;
pub mod incr;
pub mod pages;
pub mod recreated;
pub mod walk;

use crate::catalog;
use crate::chain;
use crate::config::RepoConfig;
use crate::identity;
use crate::manifest::{BackupKind, Label, Manifest, ManifestHead, Tablespace};
use crate::repo::Repo;
use crate::storage::PutOutcome;
use crate::{Error, Result};
use chrono::SubsecRound;
use copy::{Copied, CopyProgress, CopySettings};
use incr::{FileMode, IncrementalPlan};
use pgformat::lsn::{segment_file_name, Lsn, TimeLineId, WalFileName};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Facts about the cluster being backed up, as the server reports them.
#[derive(Clone, Debug)]
pub struct ClusterFacts {
    pub system_identifier: u64,
    /// e.g. 150020
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
    pub data_checksums: bool,
    pub pgdata: PathBuf,
    pub tablespaces: Vec<Tablespace>,
    /// The databases (`pg_database`), for restores of some of them.
    pub databases: Vec<crate::manifest::Database>,
    /// The timeline WAL is written on now.
    pub timeline: TimeLineId,
    /// The server instance and the backup worker, recorded in the label's claim (see `claim`).
    pub postmaster_pid: i32,
    pub postmaster_start: String,
    pub worker_pid: i32,
}

/// What `pg_backup_stop` returned.
#[derive(Clone, Debug)]
pub struct StopFacts {
    pub stop_lsn: Lsn,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
}

fn damaged_notice(label: &str, why: &str) -> String {
    format!(
        "backup {label} is damaged and is not used as a reference (nor any backup built on it): {why}"
    )
}

/// One backup in progress.
pub struct BackupRun {
    config: RepoConfig,
    repo: Repo,
    /// Re-checks the stanza's identity before each write (a repository unmounted mid-backup).
    guard: std::sync::Mutex<identity::StanzaGuard>,
    facts: ClusterFacts,
    pub label: Label,
    pub kind: BackupKind,
    pub requested_kind: BackupKind,
    pub prior: Option<Label>,
    /// The backup a diff or incr is built on.
    reference: Option<Manifest>,
    /// The current timeline's ancestry, read once (None: its history file is not in the archive).
    history: Option<chain::TimelineHistory>,
    /// Messages for the user about decisions taken (e.g. an incr that became a full).
    pub notices: Vec<String>,
    /// What the start-up clean-up removed (abandoned backups) and kept (others' unfinished backups).
    pub cleanup: claim::Cleanup,
    /// This backup's claim on its label.
    claim: claim::Claim,
    start_time: chrono::DateTime<chrono::Utc>,
    process_max: usize,
}

impl BackupRun {
    /// Phase 1: prepares a backup of `requested_kind`. Must only be called when no other backup of this
    /// server runs (the extension's one-backup slot); another server writing the same stanza is
    /// handled by the label claims (see `claim`).
    pub fn begin(
        config: RepoConfig,
        facts: ClusterFacts,
        requested_kind: BackupKind,
        process_max: usize,
    ) -> Result<BackupRun> {
        let repo = Repo::open_config(&config)?;
        let mut guard = identity::StanzaGuard::new(
            facts.system_identifier,
            facts.pg_version_num / 10000,
            facts.wal_segment_size,
        );
        guard.check(&repo)?;
        let me =
            claim::Instance::here(&facts.pgdata, facts.postmaster_pid, &facts.postmaster_start);
        let cleanup = claim::remove_abandoned(&repo, &me)?;
        let (labels, _) = catalog::backup_labels(&repo)?;
        let mut notices = Vec::new();
        // Only a diff or incr needs the ancestry (to choose its reference and follow the summaries).
        let history = if requested_kind == BackupKind::Full {
            None
        } else {
            repo.timeline_history(facts.timeline)?
        };
        let reference = if requested_kind == BackupKind::Full {
            None
        } else {
            // A damaged manifest must not block every diff and incr: choose among the backups whose
            // whole chain reads (from their heads), and say which were left out.
            let mut listing = catalog::list_backups_tolerant(&repo)?;
            for (label, why) in &listing.damaged {
                notices.push(damaged_notice(label, why));
            }
            loop {
                match chain::choose_reference(
                    &listing.usable(),
                    requested_kind,
                    history.as_ref(),
                    facts.timeline,
                ) {
                    // The reference's whole manifest is needed (its files), and those of its chain
                    // must read too (a backup built on a damaged one could not be restored): the
                    // listing checked only heads. One that does not read is set aside like the
                    // others, with the backups built on it, and the choice made again.
                    Ok(head) => {
                        let mut loaded = None;
                        for label in head.references.iter().chain([&head.label]) {
                            match catalog::load(&repo, label) {
                                Ok(m) => loaded = Some(m),
                                // A storage error is not damage: fail rather than take a full.
                                Err(e) if e.class() == crate::ErrorClass::Io => return Err(e),
                                Err(e) => {
                                    notices.push(damaged_notice(label, &e.to_string()));
                                    listing.set_damaged(label, e.to_string());
                                    loaded = None;
                                    break;
                                }
                            }
                        }
                        if let Some(m) = loaded {
                            break Some(m);
                        }
                    }
                    Err(why) => {
                        notices.push(format!(
                            "{why}: taking a full backup instead of the requested {requested_kind}"
                        ));
                        break None;
                    }
                }
            }
        };
        let kind = if reference.is_some() {
            requested_kind
        } else {
            BackupKind::Full
        };
        let full_label = reference.as_ref().map(|r| &r.label);
        // Labels have one-second resolution: never reuse one (two backups within a second, here or by
        // another server writing this stanza: the claim decides), and the time in the label comes after
        // that of every committed backup. Times, not whole labels, are compared: an incr built on an
        // older full (the newest is damaged, or on another timeline) has a label that sorts before the
        // newer full's whatever its time.
        let newest_time = labels.iter().map(|l| crate::manifest::label_time(l)).max();
        let mut base = chrono::Utc::now();
        while newest_time.is_some_and(|t| t >= Label::new(kind, full_label, base).time()) {
            base += chrono::TimeDelta::seconds(1);
        }
        let at = |offset: i64| base + chrono::TimeDelta::seconds(offset);
        let label_at = |offset: i64| Label::new(kind, full_label, at(offset)).to_string();
        let (claim, taken) = claim::claim_label(&repo, label_at, |label| claim::Claim {
            format_version: claim::CLAIM_FORMAT_VERSION,
            label: label.to_string(),
            system_identifier: facts.system_identifier,
            timeline: facts.timeline,
            instance: me.clone(),
            worker_pid: facts.worker_pid,
            claimed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })?;
        if !taken.is_empty() {
            notices.push(format!(
                "backup label {} was already claimed by another backup of this stanza (another server \
                 archiving into it?): this backup is {}",
                taken.join(", "),
                claim.label
            ));
        }
        let label: Label = claim.label.parse()?;
        // The label's time is the backup's start time (each label found taken was one second on).
        let start_time = at(taken.len() as i64);
        Ok(BackupRun {
            config,
            repo,
            guard: std::sync::Mutex::new(guard),
            facts,
            label,
            kind,
            requested_kind,
            prior: reference.as_ref().map(|r| r.label.clone()),
            reference,
            history,
            notices,
            cleanup,
            claim,
            start_time,
            process_max,
        })
    }

    /// Phase 2: copies the files. `start_lsn` is what `pg_backup_start` returned, on `start_timeline`.
    pub fn copy(
        &self,
        start_lsn: Lsn,
        start_timeline: TimeLineId,
        progress: &CopyProgress,
        cancel: &AtomicBool,
    ) -> Result<Copied> {
        if start_timeline != self.facts.timeline {
            return Err(Error::StateChanged(format!(
                "the server switched from timeline {} to {start_timeline} while the backup started: \
                 run it again",
                self.facts.timeline
            )));
        }
        let major = self.facts.pg_version_num / 10000;
        let version_dir =
            pgformat::relfile::tablespace_version_directory(major).ok_or_else(|| {
                Error::Unsupported(format!(
                    "PostgreSQL {major} is not supported: pg_strata reads PostgreSQL 15's formats"
                ))
            })?;
        let found = walk::walk(&self.facts.pgdata, &self.facts.tablespaces, version_dir)?;
        let plan = match &self.reference {
            None => None,
            Some(reference) => Some(self.incremental_plan(reference, start_lsn, &found.files)?),
        };
        let files = found
            .files
            .into_iter()
            .map(|f| {
                let mode = plan.as_ref().map_or(FileMode::Whole, |p| p.mode_for(&f));
                (f, mode)
            })
            .collect();
        let check_stanza = || self.check_stanza();
        let settings = CopySettings {
            repo: &self.repo,
            before_write: &check_stanza,
            label: &self.label,
            compress: self.config.compress_type,
            level: self.config.compress_level,
            process_max: self.process_max,
            verify_checksums: self.facts.data_checksums,
            start_lsn,
        };
        let mut copied = copy::copy_files(&settings, files, progress, cancel)?;
        copied.directories = found.directories;
        copied.bytes_read = progress
            .bytes_read
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Some(plan) = &plan {
            (copied.method, copied.method_reason) = plan.method();
        }
        Ok(copied)
    }

    /// The changed blocks since the reference's start, and what to copy of each of `files`.
    fn incremental_plan(
        &self,
        reference: &Manifest,
        start_lsn: Lsn,
        files: &[walk::SourceFile],
    ) -> Result<IncrementalPlan> {
        // Without the history file only references of this very timeline were chosen.
        let alone = chain::TimelineHistory::alone(self.facts.timeline);
        let history = self.history.as_ref().unwrap_or(&alone);
        let sources = changed::ChangeSources {
            repo: &self.repo,
            pg_wal: &self.facts.pgdata.join("pg_wal"),
            wal_segment_size: self.facts.wal_segment_size,
        };
        let changes = changed::changes_since(
            &sources,
            history,
            reference.timeline,
            reference.start_lsn,
            start_lsn,
        )?;
        Ok(IncrementalPlan::new(reference, changes, files))
    }

    /// The WAL segments the backup needs (from its start to `stop_lsn`) that are not archived yet.
    pub fn missing_wal(&self, stop_lsn: Lsn, start_wal_file: &str) -> Result<Vec<String>> {
        let seg = self.facts.wal_segment_size;
        let tli = match WalFileName::parse(start_wal_file, seg) {
            Some(WalFileName::Segment { timeline, .. }) => timeline,
            _ => {
                return Err(Error::Internal(format!(
                    "the server's backup_label names {start_wal_file}, not a WAL segment"
                )))
            }
        };
        let last = segment_file_name(
            tli,
            Lsn(stop_lsn.0.saturating_sub(1)).segment_number(seg),
            seg,
        );
        catalog::missing_wal(&self.repo, start_wal_file, &last, seg, false)
    }

    /// Whether one WAL file is archived (one request: for polling the files `missing_wal` listed).
    pub fn wal_archived(&self, name: &str) -> Result<bool> {
        self.repo.wal_exists(name, self.facts.wal_segment_size)
    }

    /// Phase 3: writes the manifest; the backup exists from now on.
    pub fn complete(self, copied: Copied, stop: StopFacts) -> Result<Manifest> {
        let label_facts =
            pgformat::backup_label::BackupLabel::parse(&stop.backup_label).map_err(|e| {
                Error::Internal(format!(
                    "cannot read the backup_label pg_backup_stop returned: {e}"
                ))
            })?;
        let seg = self.facts.wal_segment_size;
        let timeline = label_facts.start_timeline;
        // The last WAL byte the backup needs is just before the stop LSN.
        let stop_segno = Lsn(stop.stop_lsn.0.saturating_sub(1)).segment_number(seg);
        let files = copied.files;
        let page_checksum_errors = copied.page_checksum_errors;
        let m = Manifest {
            head: ManifestHead {
                label: self.label.clone(),
                kind: self.kind,
                requested_kind: self.requested_kind,
                prior: self.prior.clone(),
                references: self
                    .reference
                    .as_ref()
                    .map(|r| {
                        let mut chain = r.references.clone();
                        chain.push(r.label.clone());
                        chain
                    })
                    .unwrap_or_default(),
                method: copied.method,
                method_reason: copied.method_reason.clone(),
                read_size: copied.bytes_read,
                system_identifier: self.facts.system_identifier,
                pg_version: self.facts.pg_version_num / 10000,
                pg_version_num: self.facts.pg_version_num,
                wal_segment_size: seg,
                timeline,
                start_lsn: label_facts.start_lsn,
                stop_lsn: stop.stop_lsn,
                start_wal_file: label_facts.start_wal_file.clone(),
                stop_wal_file: segment_file_name(timeline, stop_segno, seg),
                // Whole seconds, like the label. A backup whose label was pushed into the next
                // second (another backup took this one's) ends no earlier than its label says it
                // started: a later stop time only makes point-in-time recovery choose it later.
                start_time: self.start_time.trunc_subsecs(0),
                stop_time: chrono::Utc::now()
                    .trunc_subsecs(0)
                    .max(self.start_time.trunc_subsecs(0)),
                data_checksums: self.facts.data_checksums,
                compress_type: self.config.compress_type,
                compress_level: self.config.compress_level,
                digest: crate::object::DigestAlg::CURRENT,
                database_size: files.iter().map(|f| f.size).sum(),
                stored_size: copied.objects.iter().map(|o| o.size).sum(),
                file_count: files.len() as u64,
                page_checksum_error_count: page_checksum_errors
                    .iter()
                    .map(|e| e.blocks.len() as u64)
                    .sum(),
            },
            backup_label: stop.backup_label,
            tablespace_map: stop.tablespace_map.filter(|m| !m.is_empty()),
            tablespaces: self.facts.tablespaces.clone(),
            directories: copied.directories,
            files,
            objects: copied.objects,
            page_checksum_errors,
            owner: crate::owner::owner_of(&self.facts.pgdata),
            databases: self.facts.databases.clone(),
        };
        let key = self.repo.keys().backup_manifest(&self.label)?;
        // Never commit a manifest that a restore would refuse.
        m.validate().map_err(|why| {
            Error::Internal(format!(
                "backup {} made a manifest it cannot read: {why}",
                self.label
            ))
        })?;
        self.check_stanza()?;
        self.check_claim()?;
        let stored = crate::crypto::manifest::seal(&self.repo, &key, m.to_bytes())?;
        match self.repo.storage().put_new(&key, stored)? {
            PutOutcome::Written => Ok(m),
            PutOutcome::AlreadyExists => Err(Error::Busy(format!(
                "manifest {key} already exists: refusing to replace a committed backup"
            ))),
        }
    }

    /// Whether the stanza still holds this cluster's identity (checked before every write).
    fn check_stanza(&self) -> Result<()> {
        self.guard
            .lock()
            .map_err(|_| Error::Internal("stanza guard poisoned by a panicked copy thread".into()))?
            .check(&self.repo)
    }

    /// Whether the label's claim is still this backup's (a clean-up elsewhere may have judged it
    /// abandoned and removed it: then this backup must not commit).
    fn check_claim(&self) -> Result<()> {
        match claim::read(&self.repo, &self.label) {
            Ok(Some(c)) if c == self.claim => Ok(()),
            other => Err(Error::StateChanged(format!(
                "backup {} lost its claim on its label ({}): another server's clean-up removed it as \
                 abandoned; not committing it",
                self.label,
                match other {
                    Ok(Some(c)) => format!("now claimed by {}", c.instance.pgdata),
                    Ok(None) => "the claim is gone".into(),
                    Err(e) => e.to_string(),
                }
            ))),
        }
    }

    /// Deletes what a failed or cancelled backup stored (best effort: a later backup removes any rest),
    /// but only while the label's claim is this backup's: never anything of another backup.
    pub fn abandon(&self) {
        if self.check_claim().is_ok() {
            let _ = claim::delete_unfinished(&self.repo, &self.label);
        }
    }
}
