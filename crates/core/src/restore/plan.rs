//! Planning a restore: which backup, where each file goes, and every check that must pass before a
//! single byte is written — the stanza belongs to the backup's cluster, the target directories are
//! empty (or `--delta`) and no server runs there, and the archive holds every WAL segment the backup
//! needs to become consistent (the data objects themselves are read by `object_checks`). For a diff or incr, the whole chain back to its full is
//! loaded and checked (`chain::load_chain`), and every reference between them must resolve.

use super::safety;
use super::target::RecoveryTarget;
use super::targets::{self, Target};
use super::RestoreOptions;
use crate::catalog;
use crate::chain;
use crate::manifest::{FileEntry, Manifest, ManifestHead, StoredObject};
use crate::repo::Repo;
use crate::{Error, ErrorClass, Result};
use pgformat::lsn::{segment_file_name, WalFileName};
use pgformat::wal::PageHeader;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where a tablespace is restored: `dir` is its final place (the link and tablespace_map point
/// there), `write_dir` where the files are written (a staging sibling of `dir` until the rename).
#[derive(Clone, Debug)]
pub struct TablespaceTarget {
    pub oid: u32,
    pub dir: PathBuf,
    pub write_dir: PathBuf,
}

/// The checked plan.
pub struct Plan {
    /// The backup restored.
    pub manifest: Manifest,
    /// The backups it is built on, newest first (its prior, ..., the full); empty for a full.
    pub older: Vec<Manifest>,
    /// For each of `older`, its files by path (index into its `files`).
    older_files: Vec<HashMap<String, usize>>,
    pub tablespaces: Vec<TablespaceTarget>,
    /// The target directories, opened: `--pgdata` first, then one per tablespace (the order of
    /// `tablespaces`).
    pub targets: Vec<Target>,
    /// With `--delta` over a data directory whose `pg_wal` is a link (WAL on another disk): where it
    /// points, checked like a target.
    pub wal_link: Option<PathBuf>,
    /// The `recovery_target_timeline` to write, when one must be (see `timeline::choose`).
    pub recovery_timeline: Option<String>,
    /// Databases whose relation files are written as zeros (`--db-include`/`--db-exclude`).
    pub zeroed_databases: std::collections::BTreeSet<u32>,
}

impl Plan {
    /// The entry for `path` in the `k`-th older backup (0 = the prior), with that backup's label.
    pub fn older_entry(&self, k: usize, path: &str) -> Option<(&str, &FileEntry)> {
        let m = self.older.get(k)?;
        let i = *self.older_files.get(k)?.get(path)?;
        Some((m.label.as_str(), &m.files[i]))
    }

    /// A plan over a loaded chain (newest first after `target`) with no target directories: for
    /// tests of what is planned and written.
    #[cfg(test)]
    pub(crate) fn for_chain(manifest: Manifest, older: Vec<Manifest>) -> Result<Plan> {
        let older_files = check_references(&manifest, &older)?;
        Ok(Plan {
            manifest,
            older,
            older_files,
            tablespaces: vec![],
            targets: vec![],
            wal_link: None,
            recovery_timeline: None,
            zeroed_databases: Default::default(),
        })
    }

    /// Every data object of the chain, with the backup holding it.
    pub fn all_objects(&self) -> Vec<(&str, &StoredObject)> {
        std::iter::once(&self.manifest)
            .chain(self.older.iter())
            .flat_map(|m| m.objects.iter().map(move |o| (m.label.as_str(), o)))
            .collect()
    }

    /// Where a manifest path (relative to PGDATA) goes: `(Some(i), path inside tablespace i)` for a
    /// tablespace file, `(None, path)` for the data directory. Validation (`Manifest::validate`) made
    /// sure every `pg_tblspc/<oid>/...` path names a tablespace of the backup.
    pub fn locate<'a>(&self, path: &'a str) -> (Option<usize>, &'a str) {
        if let Some(rest) = path.strip_prefix("pg_tblspc/") {
            if let Some((oid, inner)) = rest.split_once('/') {
                if let Some(i) = self
                    .tablespaces
                    .iter()
                    .position(|t| t.oid.to_string() == oid)
                {
                    return (Some(i), inner);
                }
            }
        }
        (None, path)
    }
}

/// Chooses the backup and runs every check except reading the data objects
/// (`object_checks::check_objects`, which the caller runs before writing into the target). Nothing
/// is written.
pub fn prepare(repo: &Repo, opts: &RestoreOptions) -> Result<Plan> {
    let id = repo.identity()?;
    let manifest = choose_backup(repo, opts)?;
    let zeroed_databases = super::databases::zeroed(&manifest, &opts.db_include, &opts.db_exclude)?;
    let mut older = chain::load_chain(repo, manifest)?;
    let manifest = older.remove(0);
    let older_files = check_references(&manifest, &older)?;
    if id.system_identifier != manifest.system_identifier {
        return Err(Error::ChainBroken {
            label: manifest.label.to_string(),
            reason: format!(
                "it belongs to cluster {}, but stanza '{}' holds cluster {}: the repository is \
                 inconsistent",
                manifest.system_identifier,
                repo.stanza(),
                id.system_identifier
            ),
        });
    }
    let tablespaces = tablespace_targets(&manifest, &opts.tablespace_map)?;
    let repo_dir = repo.storage().local_root();
    let servers = safety::running_servers();
    check_targets(repo_dir, opts, &tablespaces, &servers)?;
    let mut targets = vec![Target::open(&opts.pgdata, "--pgdata", true)?];
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    for (t, m) in tablespaces.iter().zip(&manifest.tablespaces) {
        let mapped = opts
            .tablespace_map
            .iter()
            .any(|(k, _)| k == &m.name || k == &m.oid.to_string());
        let what = format!("tablespace {} directory", t.oid);
        targets.push(Target::open(&t.dir, &what, mapped || !as_root)?);
    }
    let owner = manifest.owner.as_ref().and_then(crate::owner::resolve);
    for t in &targets {
        t.check_owner(owner.map(|(uid, _)| uid))?;
        if let Some(root) = &t.existing {
            safety::check_root_not_in_use(root, &t.what, &servers)?;
        }
    }
    if opts.delta {
        targets::check_delta(&manifest, opts, &targets)?;
    } else {
        for t in &targets {
            if !t.is_empty_or_absent()? {
                return Err(Error::TargetNotEmpty {
                    what: t.what.clone(),
                    path: t.path.clone(),
                });
            }
        }
    }
    targets::check_tablespace_origins(&manifest, opts, &targets, owner)?;
    let wal_link = if opts.delta {
        targets::linked_wal(&targets, repo_dir)?
    } else {
        None
    };
    super::target::check_against_backup(&opts.target, &manifest)?;
    let recovery_timeline = super::timeline::choose(repo, &manifest, opts)?;
    check_wal(repo, &manifest)?;
    check_wal_after_stop(repo, &manifest, &opts.target)?;
    Ok(Plan {
        manifest,
        older,
        older_files,
        tablespaces,
        targets,
        wal_link,
        recovery_timeline,
        zeroed_databases,
    })
}

/// Every piece of the chain lives in a backup of the chain, and every file in incremental form has a
/// copy in the backup it is relative to. Returns the file index of each older backup.
pub(crate) fn check_references(
    target: &Manifest,
    older: &[Manifest],
) -> Result<Vec<HashMap<String, usize>>> {
    let index: Vec<HashMap<String, usize>> = older
        .iter()
        .map(|m| {
            m.files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.path.clone(), i))
                .collect()
        })
        .collect();
    let chain: Vec<&Manifest> = std::iter::once(target).chain(older.iter()).collect();
    let objects: HashMap<&str, HashMap<&str, u64>> = chain
        .iter()
        .map(|m| {
            let sizes = m
                .objects
                .iter()
                .map(|o| (o.name.as_str(), o.size))
                .collect();
            (m.label.as_str(), sizes)
        })
        .collect();
    for (k, m) in chain.iter().enumerate() {
        let reachable: HashSet<&str> = chain[k..].iter().map(|m| m.label.as_str()).collect();
        for f in &m.files {
            for p in &f.pieces {
                let holder = FileEntry::piece_backup(p, &m.label);
                if !reachable.contains(holder) {
                    return Err(Error::ChainBroken {
                        label: target.label.to_string(),
                        reason: format!(
                            "file {} of {} refers to backup {holder}, which is not in its chain",
                            f.path, m.label
                        ),
                    });
                }
                let held = objects
                    .get(holder)
                    .and_then(|o| o.get(p.object.as_str()))
                    .is_some_and(|&size| p.lies_within(size));
                if !held {
                    return Err(Error::ChainBroken {
                        label: target.label.to_string(),
                        reason: format!(
                            "file {} of {} refers to {}+{} of object {} of backup {holder}, which \
                             that backup does not hold",
                            f.path, m.label, p.offset, p.length, p.object
                        ),
                    });
                }
            }
            if f.incremental.is_some() && !index.get(k).is_some_and(|i| i.contains_key(&f.path)) {
                return Err(Error::ChainBroken {
                    label: target.label.to_string(),
                    reason: format!(
                        "file {} of {} is incremental but the backup it is built on has no copy of it",
                        f.path, m.label
                    ),
                });
            }
        }
    }
    Ok(index)
}

fn choose_backup(repo: &Repo, opts: &RestoreOptions) -> Result<Manifest> {
    match opts.set.as_deref() {
        Some(label) if label != "latest" => return catalog::load(repo, label),
        _ => {}
    }
    // Chosen from the heads; the chosen backup's whole manifest is then read and checked.
    let all = catalog::list_backups(repo)?;
    let Some(newest) = all.last() else {
        return Err(Error::NoBackup(format!(
            "no backup in {} stanza '{}': take one with SELECT backup_start('full')",
            repo.describe(),
            repo.stanza()
        )));
    };
    if opts.set.is_some() {
        return catalog::load(repo, &newest.label);
    }
    let fits = |m: &ManifestHead| match &opts.target {
        RecoveryTarget::Time(t) => m.stop_time < *t,
        RecoveryTarget::Lsn(l) => m.stop_lsn <= *l,
        _ => true,
    };
    let chosen = all.iter().rev().find(|m| fits(m)).ok_or_else(|| {
        Error::NoBackup(format!(
            "no backup ended before the recovery target (the oldest, {}, ended at {} / {}); choose \
             a later target",
            all[0].label,
            crate::manifest::time_text(all[0].stop_time),
            all[0].stop_lsn
        ))
    })?;
    catalog::load(repo, &chosen.label)
}

fn tablespace_targets(m: &Manifest, remap: &[(String, PathBuf)]) -> Result<Vec<TablespaceTarget>> {
    for (key, _) in remap {
        if !m
            .tablespaces
            .iter()
            .any(|t| &t.name == key || &t.oid.to_string() == key)
        {
            let known: Vec<String> = m
                .tablespaces
                .iter()
                .map(|t| format!("{} ({})", t.name, t.oid))
                .collect();
            return Err(Error::BadSetting {
                name: "--tablespace-map".into(),
                value: key.clone(),
                reason: format!(
                    "backup {} has no tablespace with that name or OID (it has: {})",
                    m.label,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    Ok(m.tablespaces
        .iter()
        .map(|t| {
            let dir = remap
                .iter()
                .find(|(k, _)| k == &t.name || k == &t.oid.to_string())
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| PathBuf::from(&t.location));
            TablespaceTarget {
                oid: t.oid,
                write_dir: dir.clone(),
                dir,
            }
        })
        .collect())
}

/// Every target directory is plausible, separate from the others and from a local repository, and
/// unused by any running PostgreSQL (see `safety`).
fn check_targets(
    repo: Option<&Path>,
    opts: &RestoreOptions,
    ts: &[TablespaceTarget],
    servers: &[safety::RunningServer],
) -> Result<()> {
    let mut targets = vec![(
        "--pgdata".to_string(),
        safety::check_plausible(&opts.pgdata, "--pgdata")?,
    )];
    for t in ts {
        let what = format!("tablespace {} directory", t.oid);
        targets.push((what.clone(), safety::check_plausible(&t.dir, &what)?));
    }
    safety::check_separate(&targets, repo)?;
    safety::check_not_in_use(&opts.pgdata, "--pgdata", servers)?;
    for t in ts {
        safety::check_not_in_use(&t.dir, &format!("tablespace {} directory", t.oid), servers)?;
    }
    Ok(())
}

/// Every WAL segment from the backup's start to its stop, and the timeline's history file, are in the
/// archive and intact (read and digest-checked: they are few, and without them the restored directory
/// could never start).
pub(crate) fn check_wal(repo: &Repo, m: &Manifest) -> Result<()> {
    let missing = catalog::missing_wal(
        repo,
        &m.start_wal_file,
        &m.stop_wal_file,
        m.wal_segment_size,
        true,
    )?;
    if let Some(name) = missing.first() {
        return Err(wal_missing(repo, m, name, "missing".into()));
    }
    let seg = m.wal_segment_size;
    let segno = |name: &str| match WalFileName::parse(name, seg) {
        Some(WalFileName::Segment { segno, .. }) => Ok(segno),
        _ => Err(Error::BadWalFileName {
            what: name.to_string(),
        }),
    };
    for n in segno(&m.start_wal_file)?..=segno(&m.stop_wal_file)? {
        let name = segment_file_name(m.timeline, n, seg);
        let damaged = |why: String| wal_missing(repo, m, &name, format!("damaged ({why})"));
        // Damage is reported as such; a storage error (perhaps transient) is passed on as it is.
        let fetched = repo.fetch_wal(&name, seg).map_err(|e| match e.class() {
            ErrorClass::Corrupt | ErrorClass::NotFound => damaged(e.to_string()),
            _ => e,
        })?;
        let Some((_, wal)) = fetched else {
            return Err(damaged("it disappeared during the check".into()));
        };
        // Its first page must be this segment's, of this cluster: recovery would refuse it otherwise.
        let start = pgformat::lsn::segment_start_lsn(n, seg);
        let header = PageHeader::parse(start, &wal).map_err(|e| damaged(e.to_string()))?;
        if header.sysid != Some(m.system_identifier) || wal.len() as u64 != seg as u64 {
            return Err(damaged(format!(
                "{} bytes, first page of system identifier {:?}, expected {} bytes of cluster {}",
                wal.len(),
                header.sysid,
                seg,
                m.system_identifier
            )));
        }
    }
    Ok(())
}

/// For a recovery past the backup's end (any target but `immediate`): the archive has no hole on the
/// backup's timeline between its stop and the target (an LSN target) or the newest segment archived.
/// Recovery would otherwise stop at the hole and, for a default recovery, promote there, silently
/// leaving out everything after it. A hole is what `strata.retention_archive` leaves after the backups
/// it keeps for consistency only.
fn check_wal_after_stop(repo: &Repo, m: &Manifest, target: &RecoveryTarget) -> Result<()> {
    if matches!(target, RecoveryTarget::Immediate) {
        return Ok(());
    }
    let seg = u64::from(m.wal_segment_size);
    let archived = catalog::archived_segments(repo, m.wal_segment_size)?;
    let Some(segments) = archived.get(&m.timeline) else {
        return Ok(());
    };
    let upto = match target {
        RecoveryTarget::Lsn(l) => Some(l.0 / seg),
        _ => None,
    };
    let stop_segno = m.stop_lsn.0 / seg;
    if let Some(hole) = catalog::first_hole(segments, stop_segno + 1, upto) {
        return Err(Error::WalGap {
            file: segment_file_name(m.timeline, hole, m.wal_segment_size),
            label: m.label.to_string(),
            repo: repo.describe(),
            stanza: repo.stanza().to_string(),
        });
    }
    Ok(())
}

fn wal_missing(repo: &Repo, m: &Manifest, file: &str, how: String) -> Error {
    Error::WalMissing {
        file: file.to_string(),
        label: m.label.to_string(),
        how,
        repo: repo.describe(),
        stanza: repo.stanza().to_string(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
