//! Verifying backups: each manifest, its chain, the WAL that makes it consistent, and every data object
//! it stores — read once, its size and CRC-32C compared with the manifest, each piece inside decoded
//! (header CRC, size, digest of the plaintext) and, when the cluster has data checksums, each stored
//! page's checksum checked (pages written after the backup began are skipped, as the backup itself
//! does: WAL replay rewrites them; pages the manifest already records as failing are reported as such
//! at backup time, not again).

use super::{Finding, Progress};
use crate::manifest::{FileEntry, Manifest, StoredObject};
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::{chain, object, Error, Result};
use pgformat::page::{page_lsn, verify_page, PageVerdict};
use pgformat::relfile::{parse_relation_path, BLCKSZ, RELSEG_SIZE};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

const PAGE: usize = BLCKSZ as usize;

/// Checks what can be checked without reading data objects: the chain (priors present and sound,
/// every piece held by a backup of the chain), the cluster, the timeline's history and the WAL from
/// start to stop — read and checked when `read_wal`, otherwise only present (a verification of the
/// whole stanza reads every archived file once, in its archive pass). Findings are errors.
pub fn check_structure(repo: &Repo, m: &Manifest, read_wal: bool) -> Vec<Finding> {
    let mut found = Vec::new();
    let label = m.label.to_string();
    match repo.identity() {
        Ok(id) if id.system_identifier != m.system_identifier => found.push(Finding::error(
            &label,
            format!(
                "belongs to cluster {}, the stanza holds cluster {}",
                m.system_identifier, id.system_identifier
            ),
        )),
        Ok(_) => {}
        Err(e) => found.push(Finding::error(&label, e.to_string())),
    }
    match chain::load_chain(repo, m.clone()) {
        Ok(mut chain) => {
            let target = chain.remove(0);
            if let Err(e) = crate::restore::plan::check_references(&target, &chain) {
                found.push(Finding::error(&label, e.to_string()));
            }
        }
        Err(e) => found.push(Finding::error(&label, e.to_string())),
    }
    match repo.timeline_history(m.timeline) {
        Ok(Some(_)) => {}
        Ok(None) => found.push(Finding::error(
            &pgformat::lsn::history_file_name(m.timeline),
            format!(
                "the history of timeline {} (backup {label}'s) is not archived",
                m.timeline
            ),
        )),
        Err(e) => found.push(Finding::error(
            &pgformat::lsn::history_file_name(m.timeline),
            e.to_string(),
        )),
    }
    if read_wal {
        if let Err(e) = crate::restore::plan::check_wal(repo, m) {
            found.push(Finding::error(&label, e.to_string()));
        }
    } else {
        let missing = crate::catalog::missing_wal(
            repo,
            &m.start_wal_file,
            &m.stop_wal_file,
            m.wal_segment_size,
            true,
        );
        match missing {
            Ok(names) => found.extend(names.iter().map(|n| {
                Finding::error(
                    n,
                    format!("missing from the archive: backup {label} cannot become consistent"),
                )
            })),
            Err(e) => found.push(Finding::error(&label, e.to_string())),
        }
    }
    found
}

/// One data object to verify, with the pieces of this backup's files stored in it.
pub struct ObjectJob<'a> {
    pub manifest: &'a Manifest,
    pub object: &'a StoredObject,
    /// (file, piece index) of every piece stored in this object.
    pub pieces: Vec<(&'a FileEntry, usize)>,
}

/// The objects of a backup with the pieces each holds (pieces held in older backups are verified
/// with those). Pieces naming an object the manifest does not list are findings.
pub fn object_jobs<'a>(m: &'a Manifest, found: &mut Vec<Finding>) -> Vec<ObjectJob<'a>> {
    let mut by_name: HashMap<&str, Vec<(&FileEntry, usize)>> = HashMap::new();
    for f in &m.files {
        for (i, p) in f.pieces.iter().enumerate() {
            if p.backup.is_none() {
                by_name.entry(p.object.as_str()).or_default().push((f, i));
            }
        }
    }
    let listed: HashSet<&str> = m.objects.iter().map(|o| o.name.as_str()).collect();
    for (name, pieces) in &by_name {
        if !listed.contains(name) {
            found.push(Finding::error(
                &m.label,
                format!(
                    "file {} is stored in object {name}, which the manifest does not list",
                    pieces[0].0.path
                ),
            ));
        }
    }
    m.objects
        .iter()
        .map(|o| ObjectJob {
            manifest: m,
            object: o,
            pieces: by_name.remove(o.name.as_str()).unwrap_or_default(),
        })
        .collect()
}

/// Reads one data object and checks it and every piece in it; findings go to `found`.
pub fn verify_object(
    repo: &Repo,
    job: &ObjectJob,
    progress: &Progress,
    found: &Mutex<Vec<(String, Finding)>>,
) -> Result<()> {
    let label = job.manifest.label.to_string();
    let key = repo.keys().backup_object(&label, &job.object.name)?;
    let report = |f: Finding| {
        found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((label.clone(), f))
    };
    // Every object of the repository is read once here and not again soon: around the page cache.
    let read = repo.storage().read_once(&key, job.object.size, |stored| {
        check_object(repo, job, &key, stored, progress, &report)
    });
    match read {
        Ok(Some(())) => {}
        Ok(None) => {
            report(Finding::error(key.as_str(), "the object is missing".into()));
        }
        Err(Error::CorruptObject { reason, .. }) => {
            report(Finding::error(key.as_str(), reason));
        }
        Err(e) => {
            report(Finding::error(key.as_str(), format!("cannot be read: {e}")));
        }
    }
    Ok(())
}

/// Checks one data object's bytes (`stored`) and every piece in it; findings go to `report`.
fn check_object(
    repo: &Repo,
    job: &ObjectJob,
    key: &RepoKey,
    stored: &[u8],
    progress: &Progress,
    report: &dyn Fn(Finding),
) {
    let m = job.manifest;
    progress
        .bytes_done
        .fetch_add(stored.len() as u64, Ordering::Relaxed);
    progress.objects_done.fetch_add(1, Ordering::Relaxed);
    if stored.len() as u64 != job.object.size {
        report(Finding::error(
            key.as_str(),
            format!(
                "{} bytes, the manifest recorded {}",
                stored.len(),
                job.object.size
            ),
        ));
        return;
    }
    let crc = crc32c::crc32c(stored);
    if crc != job.object.crc32c {
        // Say which pieces are hit: decoding them names the damage more precisely.
        report(Finding::error(
            key.as_str(),
            format!(
                "CRC-32C mismatch (expected {:08x}, found {crc:08x})",
                job.object.crc32c
            ),
        ));
    }
    for (f, i) in &job.pieces {
        let p = &f.pieces[*i];
        let what = format!("{key} (file {}, piece {i})", f.path);
        let Some(bytes) = usize::try_from(p.offset)
            .ok()
            .zip(usize::try_from(p.offset + p.length).ok())
            .and_then(|(a, b)| stored.get(a..b))
        else {
            report(Finding::error(
                &what,
                "the piece lies outside its object".into(),
            ));
            continue;
        };
        let place = object::Place {
            key: key.as_str(),
            offset: p.offset,
        };
        let (header, plain) = match repo.decode_object(place, bytes, p.size) {
            Ok(d) => d,
            Err(e) => {
                report(Finding::error(&what, e.to_string()));
                continue;
            }
        };
        if plain.len() as u64 != p.size {
            report(Finding::error(
                &what,
                format!("{} bytes, the manifest recorded {}", plain.len(), p.size),
            ));
            continue;
        }
        if p.digest.as_ref().is_some_and(|s| s.0 != header.digest) {
            report(Finding::error(
                &what,
                "its digest differs from the manifest's".into(),
            ));
            continue;
        }
        if m.data_checksums {
            for bad in bad_pages(m, f, *i, &plain) {
                report(Finding::error(
                    &format!("{key} (file {})", f.path),
                    format!(
                        "stored page {bad} fails its checksum (the backup recorded no failure \
                         there): the stored copy is damaged"
                    ),
                ));
            }
        }
    }
}

/// Blocks (within the file) of piece `i` of relation file `f` whose stored page fails its checksum,
/// except pages newer than the backup's start and pages the manifest records as failing.
fn bad_pages(m: &Manifest, f: &FileEntry, i: usize, plain: &[u8]) -> Vec<u32> {
    let Some((_, _, segno)) = parse_relation_path(&f.path) else {
        return Vec::new();
    };
    let first_block = segno.saturating_mul(RELSEG_SIZE);
    let recorded: HashSet<u32> = m
        .page_checksum_errors
        .iter()
        .filter(|e| e.path == f.path)
        .flat_map(|e| e.blocks.iter().copied())
        .collect();
    let mut bad = Vec::new();
    let mut check = |block_in_file: u32, page: &[u8]| {
        if page.len() != PAGE || recorded.contains(&block_in_file) {
            return;
        }
        let blkno = first_block.wrapping_add(block_in_file);
        if let PageVerdict::Bad { .. } = verify_page(page, blkno) {
            if page_lsn(page) < m.start_lsn {
                bad.push(block_in_file);
            }
        }
    };
    if f.incremental.is_some() {
        let Ok(inc) = crate::incremental::Incremental::parse(&f.path, plain) else {
            return Vec::new();
        };
        for (n, &blk) in inc.block_numbers.iter().enumerate() {
            check(blk, inc.block(n));
        }
    } else {
        let offset: u64 = f.pieces[..i].iter().map(|p| p.size).sum();
        if !offset.is_multiple_of(PAGE as u64) {
            return Vec::new();
        }
        let first = (offset / PAGE as u64) as u32;
        for (n, page) in plain.chunks_exact(PAGE).enumerate() {
            check(first + n as u32, page);
        }
    }
    bad
}

/// A whole file's digest in the manifest agrees with its pieces' digests (a manifest whose file
/// entries were changed consistently with its checksum would still be caught at restore; this says
/// it before).
pub fn check_digests(m: &Manifest) -> Vec<Finding> {
    let mut found = Vec::new();
    for f in &m.files {
        let (Some(sha), None) = (&f.digest, f.incremental) else {
            continue;
        };
        let pieces: Option<Vec<[u8; 32]>> = f
            .pieces
            .iter()
            .map(|p| p.digest.as_ref().map(|s| s.0))
            .collect();
        if let Some(pieces) = pieces {
            if object::content_digest(&pieces) != sha.0 {
                found.push(Finding::error(
                    &m.label,
                    format!(
                        "file {}: the digest of its pieces differs from the file's",
                        f.path
                    ),
                ));
            }
        }
    }
    found
}
