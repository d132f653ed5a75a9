//! Restore: rebuilding a data directory from a backup, with the server down, so that `pg_ctl start`
//! recovers it to the end of the archive or to a chosen point in time.
//!
//! Three phases: `plan::prepare` chooses the backup and checks everything before anything is written
//! (a refusal leaves the target untouched); `write` creates the tree and writes the files in parallel,
//! verifying every SHA-256; finally the recovery files and, last of all, `global/pg_control`, without
//! which PostgreSQL refuses to start, so that an interrupted restore can never start with wrong data.
//! A failed restore into an empty directory removes what it wrote.

pub mod plan;
pub mod recovery;
pub mod target;
pub mod write;

use crate::paths::RepoPaths;
use crate::storage::Storage;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
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
}

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

/// A restore run as root gives the files to the data directory's original owner (PostgreSQL refuses
/// to start on a directory it does not own); run as anyone else, the files are theirs.
fn give_to_owner(plan: &plan::Plan, opts: &RestoreOptions) -> Result<()> {
    let Some((uid, gid)) = root_owner(plan) else {
        return Ok(());
    };
    crate::owner::chown_tree(&opts.pgdata, uid, gid)?;
    for ts in &plan.tablespaces {
        crate::owner::chown_tree(&ts.dir, uid, gid)?;
    }
    Ok(())
}

/// Restores a backup into `opts.pgdata`. `on_planned` is called once the checks passed (with the
/// chosen backup's label), before anything is written.
pub fn restore(
    storage: &Storage,
    paths: &RepoPaths,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
    on_planned: &dyn Fn(&str),
) -> Result<RestoreReport> {
    let plan = plan::prepare(storage, paths, opts)?;
    on_planned(&plan.manifest.label);
    let was_empty = !opts.delta
        || std::fs::read_dir(&opts.pgdata)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
    let result = (|| {
        let removed = write::prepare_tree(&plan, &opts.pgdata, opts.delta)?;
        let mut written = write::write_files(
            &plan,
            storage,
            paths,
            &opts.pgdata,
            opts.delta,
            opts.process_max,
            progress,
        )?;
        written.entries_removed = removed;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        recovery::write_recovery_files(&plan, opts, &now)?;
        give_to_owner(&plan, opts)?;
        write::sync_filesystems(&plan, &opts.pgdata)?;
        write::sync_dirs(&plan, &opts.pgdata)?;
        // Last: the file without which PostgreSQL will not start.
        let control = plan
            .manifest
            .files
            .iter()
            .find(|f| f.path == write::PG_CONTROL)
            .ok_or_else(|| Error::CorruptObject {
                key: paths.backup_manifest(&plan.manifest.label),
                reason: "the backup has no global/pg_control".into(),
            })?;
        let mut writer = write::FileWriter {
            storage,
            paths,
            label: &plan.manifest.label,
            fsync: true,
        };
        writer.write(control, &opts.pgdata.join(write::PG_CONTROL))?;
        if let Some((uid, gid)) = root_owner(&plan) {
            crate::owner::chown_tree(&opts.pgdata.join(write::PG_CONTROL), uid, gid)?;
        }
        progress
            .files_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::File::open(opts.pgdata.join("global"))
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::WriteFile {
                path: opts.pgdata.join("global"),
                source,
            })?;
        Ok(written)
    })();
    match result {
        Ok(w) => Ok(RestoreReport {
            label: plan.manifest.label.clone(),
            files_written: w.files_written + 1,
            files_kept: w.files_kept,
            entries_removed: w.entries_removed,
            bytes_written: w.bytes_written,
        }),
        Err(e) => {
            if was_empty {
                write::remove_contents(&opts.pgdata);
                for ts in &plan.tablespaces {
                    write::remove_contents(&ts.dir);
                }
            } else {
                let _ = std::fs::remove_file(opts.pgdata.join(write::PG_CONTROL));
            }
            Err(e)
        }
    }
}
