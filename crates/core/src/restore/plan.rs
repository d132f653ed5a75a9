//! Planning a restore: which backup, where each file goes, and every check that must pass before a
//! single byte is written — the stanza belongs to the backup's cluster, the target directories are
//! empty (or `--delta`) and no server runs there, every data object is present and intact (size and
//! CRC-32C of its stored bytes, as the manifest recorded them), and the archive holds every WAL segment
//! the backup needs to become consistent. For a diff or incr, the whole chain back to its full is
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
use std::sync::atomic::Ordering;

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

/// Chooses the backup and runs every check except reading the data objects (`check_objects`, which
/// the caller runs before writing into the target). Nothing is written.
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

/// Reads every data object once and compares its size and CRC-32C with the manifest, in parallel;
/// in an encrypted stanza every piece is also authenticated (`Sealed`). Setting `abort` stops it
/// early (another part of the restore failed).
pub fn check_objects(
    repo: &Repo,
    plan: &Plan,
    threads: usize,
    abort: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let target = &plan.manifest.label;
    let sealed = Sealed::of(repo, plan)?;
    each_object(repo, plan, threads, abort, |key, o| {
        let bytes = fetch_checked(repo, key, o, target)?;
        match &sealed {
            Some(s) => s.authenticate(key, &bytes, target),
            None => Ok(()),
        }
    })
}

/// In an encrypted stanza, the data keys and the pieces of every data object of the chain (offset,
/// stored length, plaintext size), by key. A CRC-32C guards against accidents only: someone who can
/// write the repository can keep it while changing an object, and `--delta` would find out only
/// after it began rewriting the directory. Authenticating every piece first (AES-GCM, ~10 GB/s per
/// core) refuses such an object before anything is written.
pub struct Sealed {
    keys: std::sync::Arc<crate::crypto::DataKeys>,
    pieces: HashMap<String, Vec<(u64, u64, u64)>>,
}

impl Sealed {
    /// None for an unencrypted stanza.
    pub fn of(repo: &Repo, plan: &Plan) -> Result<Option<Sealed>> {
        let Some(keys) = repo.data_keys()? else {
            return Ok(None);
        };
        let mut pieces: HashMap<String, Vec<(u64, u64, u64)>> = HashMap::new();
        for m in std::iter::once(&plan.manifest).chain(plan.older.iter()) {
            for f in &m.files {
                for p in &f.pieces {
                    let holder = FileEntry::piece_backup(p, &m.label);
                    let key = repo.keys().backup_object(holder, &p.object)?;
                    pieces
                        .entry(key.to_string())
                        .or_default()
                        .push((p.offset, p.length, p.size));
                }
            }
        }
        for list in pieces.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        Ok(Some(Sealed { keys, pieces }))
    }

    /// Authenticates every piece of the object at `key` (`bytes`, its whole stored form).
    pub fn authenticate(
        &self,
        key: &crate::paths::RepoKey,
        bytes: &[u8],
        target: &str,
    ) -> Result<()> {
        for &(offset, length, size) in self.pieces.get(key.as_str()).into_iter().flatten() {
            let piece = offset
                .checked_add(length)
                .and_then(|end| bytes.get(offset as usize..end as usize))
                .ok_or_else(|| Error::CorruptObject {
                    key: key.to_string(),
                    reason: format!(
                        "a piece at {offset} of {length} bytes lies outside its {} bytes; backup \
                         {target} cannot be restored, choose another with --set",
                        bytes.len()
                    ),
                })?;
            let place = crate::object::Place {
                key: key.as_str(),
                offset,
            };
            crate::object::authenticate_at(piece, &self.keys, place, size).map_err(
                |e| match e {
                    Error::CorruptObject { key, reason } => Error::CorruptObject {
                        key,
                        reason: format!(
                        "{reason}; backup {target} cannot be restored, choose another with --set"
                    ),
                    },
                    e => e,
                },
            )?;
        }
        Ok(())
    }
}

/// Runs `check` on every data object of the chain (its key and what its manifest records), on
/// `threads` threads; setting `abort` stops it early (another part of the restore failed).
fn each_object(
    repo: &Repo,
    plan: &Plan,
    threads: usize,
    abort: &std::sync::atomic::AtomicBool,
    check: impl Fn(&crate::paths::RepoKey, &StoredObject) -> Result<()> + Sync,
) -> Result<()> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    crate::parallel::run(
        threads,
        &stop,
        plan.all_objects(),
        || Ok(()),
        |_, (label, o)| {
            if abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            check(&repo.keys().backup_object(label, &o.name)?, o)
        },
        |_| Ok(()),
    )?;
    Ok(())
}

/// Checks that every data object of the chain is there with the size its manifest recorded (one
/// metadata request each, no data read). Used when the files are written into staging: the writers
/// check every piece they use (its digest, after decompressing), so the content of what the restore
/// needs is checked on the one read that writes it, and a missing or truncated object still stops the
/// restore early. What no writer reads (a block that a newer backup of the chain replaces) is not
/// needed by this restore; `strata verify` checks it.
pub fn check_presence(
    repo: &Repo,
    plan: &Plan,
    threads: usize,
    abort: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let target = &plan.manifest.label;
    each_object(repo, plan, threads, abort, |key, o| {
        let size = match repo.storage().local_root() {
            Some(root) => size_and_read_ahead(&root.join(key.as_str()))?,
            None => repo.storage().size(key)?,
        };
        let reason = match size {
            Some(size) if size == o.size => return Ok(()),
            Some(size) => format!("{size} bytes, the manifest recorded {}", o.size),
            None => "the object is missing".to_string(),
        };
        Err(Error::CorruptObject {
            key: key.to_string(),
            reason: format!(
                "{reason}; backup {target} cannot be restored, choose another with --set"
            ),
        })
    })
}

/// The size of an object file of a local repository (None: missing), asking the kernel to start
/// reading it into the page cache: the writers then find it there instead of each waiting on the disk
/// in turn, and no byte is copied or hashed twice. Opened without following a link in its last
/// component, without blocking (a FIFO planted there) and without becoming a controlling terminal; a
/// link or anything but a regular file is refused as such, and other errors name their cause.
fn size_and_read_ahead(path: &std::path::Path) -> Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadFile {
                path: path.into(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| Error::ReadFile {
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::CorruptObject {
            key: path.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    // SAFETY: a valid descriptor; the call only schedules reads. Failure only loses the read-ahead.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
    }
    Ok(Some(meta.len()))
}

/// Reads a data object whole (one request, nothing past the recorded size) and checks its size and
/// CRC-32C against what the manifest of the backup being restored (`target`) recorded.
pub fn fetch_checked(
    repo: &Repo,
    key: &crate::paths::RepoKey,
    o: &StoredObject,
    target: &str,
) -> Result<bytes::Bytes> {
    let corrupt = |reason: String| Error::CorruptObject {
        key: key.to_string(),
        reason: format!("{reason}; backup {target} cannot be restored, choose another with --set"),
    };
    let bytes = repo
        .storage()
        .get_limited(key, o.size)
        .map_err(|e| match e {
            Error::CorruptObject { .. } => {
                corrupt(format!("larger than the {} bytes recorded", o.size))
            }
            e => e,
        })?
        .ok_or_else(|| corrupt("the object is missing".into()))?;
    if bytes.len() as u64 != o.size {
        return Err(corrupt(format!(
            "{} bytes, the manifest recorded {}",
            bytes.len(),
            o.size
        )));
    }
    let crc = crc32c::crc32c(&bytes);
    if crc != o.crc32c {
        return Err(corrupt(format!(
            "CRC-32C mismatch (expected {:08x}, found {crc:08x})",
            o.crc32c
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
