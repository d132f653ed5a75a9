//! Restore: rebuilding a data directory from a backup, with the server down, so that `pg_ctl start`
//! recovers it to the end of the archive or to a chosen point in time.
//!
//! Phases: `plan::prepare` chooses the backup and checks what needs no data reading (a refusal leaves
//! the target untouched); every stored object is checked before anything is written into the target:
//! when the target exists, read whole (size and CRC-32C) first; when every target directory is new, the
//! files are written into hidden staging siblings that are renamed into place only once everything
//! passed, the objects' presence and sizes checked alongside and their content by the one read that
//! writes them (from a remote repository, each object is fetched whole and checked into a spool);
//! `write` creates the tree and writes the files in parallel, verifying every digest; finally
//! the recovery files and, last of all, `global/pg_control`, without which PostgreSQL refuses to start,
//! so that an interrupted restore can never start with wrong data. A failed restore into an empty
//! directory removes what it wrote.

pub mod beneath;
pub mod databases;
mod direct;
mod fetch_once;
mod file_writer;
pub mod object_checks;
pub mod plan;
pub mod recovery;
pub mod safety;
pub mod target;
pub mod targets;
pub mod timeline;
pub mod write;

use crate::repo::Repo;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub use target::{RecoveryTarget, TargetAction};

pub struct RestoreOptions {
    pub pgdata: PathBuf,
    /// A label, `latest`, or none (latest, or the newest before a time/LSN target).
    pub set: Option<String>,
    pub target: RecoveryTarget,
    pub target_action: Option<TargetAction>,
    pub target_timeline: Option<String>,
    pub delta: bool,
    pub process_max: usize,
    /// `--tablespace-map NAME_OR_OID=DIR`.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// The `restore_command` recovery will use (built by the caller).
    pub restore_command: String,
    /// `--force`: let `--delta` overwrite a directory that is not provably this cluster's.
    pub force: bool,
    /// `--archive-mode`: what the restored server does about archiving.
    pub archive_mode: ArchiveMode,
    /// `--db-include NAME`: restore only these user databases (the others' relation files as zeros).
    pub db_include: Vec<String>,
    /// `--db-exclude NAME`: restore every database but these (their relation files as zeros).
    pub db_exclude: Vec<String>,
    /// Hold a lease in the repository on what is read (see `retention::lease`); `--no-lease` for a
    /// repository this restore may not write.
    pub lease: bool,
}

/// `--archive-mode`: `preserve` keeps the backup's setting; `off` writes `archive_mode = off` into
/// `postgresql.auto.conf`, so that a copy (a test machine, a PITR to look at old data) does not
/// archive into the production stanza.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    #[default]
    Preserve,
    Off,
}

impl ArchiveMode {
    pub fn parse(s: &str) -> Result<ArchiveMode> {
        match s {
            "preserve" => Ok(ArchiveMode::Preserve),
            "off" => Ok(ArchiveMode::Off),
            _ => Err(Error::BadSetting {
                name: "--archive-mode".into(),
                value: s.into(),
                reason: "expected off or preserve".into(),
            }),
        }
    }
}

/// The most threads a restore uses (as `strata.process_max`).
pub const PROCESS_MAX_LIMIT: usize = 64;

/// Counters for a progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

#[derive(Debug)]
pub struct RestoreReport {
    /// Databases left out (`--db-include`/`--db-exclude`): their relation files are zeros.
    pub left_out: Vec<String>,
    pub label: String,
    pub files_written: u64,
    pub files_kept: u64,
    pub entries_removed: u64,
    pub bytes_written: u64,
}

/// When running as root: the ids of the user and group that owned the backed-up data directory.
fn root_owner(plan: &plan::Plan) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    plan.manifest.owner.as_ref().and_then(crate::owner::resolve)
}

/// Staging is used when every target directory is new: then the files are written into hidden
/// siblings, each piece checked (its digest) as it is read to be written, and renamed into place only when
/// everything passed, so the targets never hold a byte of a backup that turns out to be damaged — and
/// each object is read once instead of once for a check and again for the writing.
fn use_staging(plan: &plan::Plan, opts: &RestoreOptions) -> bool {
    !opts.delta && plan.targets.iter().all(|t| t.existing.is_none())
}

/// What a failed restore leaves: nothing it created. Armed from the first write; dropped armed (an
/// error, or a panic unwinding) it removes the staging directories, or empties target directories that
/// were empty before, or at least removes `global/pg_control` so that the directory cannot start. It
/// works through the opened directories only, never through a path that could have become a link.
/// Removes the spool of a restore from a remote repository when the restore ends, however it ends.
struct SpoolGuard<'a> {
    target: Option<&'a targets::Target>,
}

impl Drop for SpoolGuard<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.target {
            t.remove_spool();
        }
    }
}

struct Cleanup<'a> {
    armed: bool,
    plan: &'a plan::Plan,
    staged: bool,
    /// Targets that were empty or new (their contents are removed), or, with `--delta`, nothing.
    emptied: Vec<beneath::Root>,
    pgdata: Option<beneath::Root>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.staged {
            for t in &self.plan.targets {
                t.remove_staging();
            }
        }
        for root in &self.emptied {
            for name in root.list("").unwrap_or_default() {
                let _ = root.remove(&name);
            }
        }
        if let Some(pg) = &self.pgdata {
            let _ = pg.remove(write::PG_CONTROL);
        }
    }
}

/// Restores a backup into `opts.pgdata`. `on_planned` is called once the backup is chosen and the
/// checks that need no reading of data objects passed.
pub fn restore(
    repo: &Repo,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    on_planned: &dyn Fn(&str),
) -> Result<RestoreReport> {
    if opts.process_max == 0 || opts.process_max > PROCESS_MAX_LIMIT {
        return Err(Error::BadSetting {
            name: "--process-max".into(),
            value: opts.process_max.to_string(),
            reason: format!("expected 1 to {PROCESS_MAX_LIMIT}"),
        });
    }
    let plan = plan::prepare(repo, opts)?;
    // Before reading any data object: an expiry elsewhere keeps what a lease names from now on.
    let lease = if opts.lease {
        let mut chain = plan.manifest.references.clone();
        chain.push(plan.manifest.label.clone());
        Some(crate::retention::lease::take(
            repo,
            chain,
            plan.manifest.start_lsn,
        )?)
    } else {
        None
    };
    on_planned(&plan.manifest.label);
    // Reading is I/O-bound: more readers than copy threads keep the disk busy.
    let readers = opts.process_max.max(4);
    let staged = use_staging(&plan, opts);
    // From a remote repository each object is downloaded once, into a spool beside the target.
    let spool = SpoolGuard {
        target: repo
            .storage()
            .local_root()
            .is_none()
            .then(|| &plan.targets[0]),
    };
    let fetched = match spool.target {
        Some(t) => Some(fetch_once::FetchOnce::new(
            repo,
            &plan,
            t.create_spool()?,
            !staged,
        )?),
        None => None,
    };
    let check = |abort: &AtomicBool| match &fetched {
        Some(f) => f.fetch_all(readers, abort),
        // Into staging, each object's content is checked by the read that writes it.
        None if staged => object_checks::check_presence(repo, &plan, readers, abort),
        None => object_checks::check_objects(repo, &plan, readers, abort),
    };
    let no_abort = AtomicBool::new(false);
    if !staged {
        // Into an existing directory: every object is checked before anything is written.
        check(&no_abort)?;
    }
    let mut cleanup = Cleanup {
        armed: true,
        plan: &plan,
        staged,
        emptied: Vec::new(),
        pgdata: None,
    };
    let mut opened = Vec::with_capacity(plan.targets.len());
    for t in &plan.targets {
        let root = if staged {
            t.create_staging()?
        } else {
            let root = t.open_or_create()?;
            if !opts.delta {
                cleanup.emptied.push(root.try_clone()?);
            }
            root
        };
        opened.push(root);
    }
    let pgdata_root = opened.remove(0);
    cleanup.pgdata = Some(pgdata_root.try_clone()?);
    let roots = write::Roots {
        pgdata: pgdata_root,
        tablespaces: opened,
        owner: root_owner(&plan),
    };
    let abort = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let checker = staged.then(|| {
            s.spawn(|| {
                let r = check(&abort);
                if r.is_err() {
                    abort.store(true, Ordering::Relaxed);
                }
                r
            })
        });
        let written = write_everything(
            &plan,
            repo,
            opts,
            &roots,
            progress,
            &abort,
            fetched.as_ref(),
        );
        if written.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        // A damaged object is the error to report, whatever the writers ran into after it.
        if let Some(c) = checker {
            c.join()
                .unwrap_or_else(|_| Err(Error::Internal("the object check panicked".into())))?;
        }
        let written = written?;
        finish(&plan, repo, opts, &roots, progress, fetched.as_ref())?;
        if staged {
            // Tablespaces first: the data directory appears last, complete.
            for t in plan.targets.iter().skip(1).chain(plan.targets.first()) {
                t.commit_staging()?;
            }
        }
        Ok(written)
    });
    let w = result?;
    cleanup.armed = false;
    if let Some(lease) = lease {
        // The restored directory is complete; a lease that cannot be extended only shortens the
        // protection of the recovery's WAL, which a kept backup's WAL has anyway.
        let _ = lease.finish();
    }
    Ok(RestoreReport {
        label: plan.manifest.label.to_string(),
        files_written: w.files_written + 1,
        files_kept: w.files_kept,
        entries_removed: w.entries_removed,
        bytes_written: w.bytes_written,
        left_out: plan
            .manifest
            .databases
            .iter()
            .filter(|d| plan.zeroed_databases.contains(&d.oid))
            .map(|d| d.name.clone())
            .collect(),
    })
}

/// The tree and every file but pg_control.
fn write_everything(
    plan: &plan::Plan,
    repo: &Repo,
    opts: &RestoreOptions,
    roots: &write::Roots,
    progress: &RestoreProgress,
    abort: &AtomicBool,
    fetched: Option<&fetch_once::FetchOnce>,
) -> Result<write::Written> {
    let removed = write::prepare_tree(plan, roots, opts.delta)?;
    let settings = write::WriteSettings {
        roots,
        delta: opts.delta,
        process_max: opts.process_max,
        progress,
        abort,
        fetched,
    };
    let mut written = write::write_files(plan, repo, &settings)?;
    if abort.load(Ordering::Relaxed) {
        return Err(Error::Internal(
            "the restore stopped without a reason from the object check".into(),
        ));
    }
    written.entries_removed = removed;
    Ok(written)
}

/// Recovery files, durability, and last of all pg_control.
fn finish(
    plan: &plan::Plan,
    repo: &Repo,
    opts: &RestoreOptions,
    roots: &write::Roots,
    progress: &RestoreProgress,
    fetched: Option<&fetch_once::FetchOnce>,
) -> Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    recovery::write_recovery_files(plan, opts, roots, &now)?;
    write::sync_filesystems(roots)?;
    write::sync_dirs(plan, roots)?;
    // Last: the file without which PostgreSQL will not start.
    let control = plan
        .manifest
        .files
        .iter()
        .find(|f| f.path == write::PG_CONTROL)
        .ok_or_else(|| Error::CorruptObject {
            key: format!("manifest of backup {}", plan.manifest.label),
            reason: "the backup has no global/pg_control".into(),
        })?;
    let mut writer = write::FileWriter {
        repo,
        plan,
        fsync: true,
        owner: roots.owner,
        fetched,
    };
    writer.write(control, &roots.pgdata, write::PG_CONTROL)?;
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    roots.pgdata.sync_dir("global")
}
