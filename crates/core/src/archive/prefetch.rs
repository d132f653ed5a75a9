//! WAL prefetch for recovery: `restore_command` asks for one segment per call and waits for it, so
//! replay waits on the repository one segment at a time. With a spool directory (in the data directory,
//! so two recoveries never share one), each call for segment N first serves N from the spool (a rename,
//! when a prefetcher already fetched it), and makes sure a prefetcher process is fetching the next
//! segments — N+1 … N+depth, in parallel, each read, digest-checked and decompressed exactly as
//! `archive-get` does, written to a temporary name and renamed into the spool only when whole and
//! checked (a damaged object is never served: the prefetcher leaves it out, and the call for it then
//! fetches it itself and reports the damage).
//!
//! Bounded: at most `depth` segments wait in the spool; segments before N (and of other timelines) are
//! deleted at each call. The end of the archive (N not archived) and timeline switches behave as
//! without prefetch: history files are never prefetched, a segment not archived is answered "not
//! found" and the spool is removed. One prefetcher at a time (a lock file it holds while it runs).

use crate::repo::Repo;
use crate::Result;
use pgformat::lsn::{segment_file_name, WalFileName};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The spool's lock file, held by the running prefetcher.
const LOCK: &str = ".prefetch.lock";

/// The segments after `file_name` (same timeline) a prefetcher fetches.
pub fn following(file_name: &str, seg_size: u32, depth: u32) -> Vec<String> {
    match WalFileName::parse(file_name, seg_size) {
        Some(WalFileName::Segment { timeline, segno }) => (1..=u64::from(depth))
            .map(|i| segment_file_name(timeline, segno + i, seg_size))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `name` is a segment's file name (24 upper-case hex digits). Within a timeline (the first
/// 8), names sort as their segments do, so the spool needs no segment size.
fn is_segment_name(name: &str) -> bool {
    name.len() == 24
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Takes segment `file_name` from the spool into `dest` when a prefetcher fetched it (true), after
/// dropping what the spool holds before it or on other timelines (and a dead prefetcher's
/// temporaries). History files and other names are never in the spool.
pub fn take_from_spool(spool: &Path, file_name: &str, dest: &Path) -> bool {
    if !is_segment_name(file_name) {
        return false;
    }
    if let Ok(entries) = std::fs::read_dir(spool) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = if is_segment_name(&name) {
                name[..8] != file_name[..8] || name.as_str() < file_name
            } else {
                name.ends_with(".tmp")
            };
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    std::fs::rename(spool.join(file_name), dest).is_ok()
}

/// Removes the spool (the end of the archive was reached; nothing in it can be asked for).
pub fn remove_spool(spool: &Path) {
    let _ = std::fs::remove_dir_all(spool);
}

/// Whether a prefetcher holds the spool's lock now.
pub fn prefetcher_running(spool: &Path) -> bool {
    match open_lock(spool) {
        Ok(f) => {
            // SAFETY: flock on a descriptor we own.
            let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            !free
        }
        Err(_) => false,
    }
}

fn open_lock(spool: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(spool)?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spool.join(LOCK))
}

/// The prefetcher: holds the spool's lock (returns at once if another holds it) and fetches `names`
/// that the spool does not hold yet, `threads` at a time, stopping at the first not archived.
pub fn prefetch(repo: &Repo, spool: &Path, names: &[String], threads: usize) -> Result<()> {
    let lock = open_lock(spool).map_err(crate::fsutil::werr(spool))?;
    // SAFETY: flock on a descriptor we own; released when it closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(());
    }
    let seg_size = repo.identity()?.wal_segment_size;
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !spool.join(n.as_str()).exists())
        .collect();
    let end = std::sync::atomic::AtomicBool::new(false);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let first_missing = missing.first().map(|n| n.to_string());
    crate::parallel::run(
        threads,
        &stop,
        missing,
        || Ok(()),
        |_, name| {
            if end.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            match repo.fetch_wal(name, seg_size) {
                Ok(Some((_, plain))) => {
                    let tmp: PathBuf = spool.join(format!("{name}.tmp"));
                    // Written whole, then renamed: the spool never holds part of a segment. Not
                    // fsynced: PostgreSQL makes a restored segment durable itself when it keeps it.
                    if std::fs::write(&tmp, &plain).is_ok() {
                        let _ = std::fs::rename(&tmp, spool.join(name.as_str()));
                    }
                }
                // The end of the archive: the later ones are not there either.
                Ok(None) => end.store(true, std::sync::atomic::Ordering::Relaxed),
                // Damaged or unreadable: left out; the call for it fetches it itself and reports.
                Err(_) => {}
            }
            Ok(())
        },
        |_| Ok(()),
    )?;
    // Started after the end of the archive was reached (the spool removed meanwhile): leave nothing.
    let holds_any = std::fs::read_dir(spool)
        .map(|d| {
            d.flatten()
                .any(|e| is_segment_name(&e.file_name().to_string_lossy()))
        })
        .unwrap_or(false);
    if !holds_any && first_missing.is_some_and(|n| !spool.join(n).exists()) {
        remove_spool(spool);
    }
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u32 = 16 << 20;

    #[test]
    fn the_spool_serves_what_was_fetched_and_drops_what_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        let n = |tli, segno| segment_file_name(tli, segno, SEG);
        for name in [n(1, 3), n(1, 5), n(1, 6), n(2, 6)] {
            std::fs::write(spool.join(&name), name.as_bytes()).unwrap();
        }
        std::fs::write(spool.join(format!("{}.tmp", n(1, 7))), b"half").unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(take_from_spool(&spool, &n(1, 5), &dest));
        assert_eq!(std::fs::read(&dest).unwrap(), n(1, 5).as_bytes());
        let mut left: Vec<String> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![n(1, 6)]);
        // Not in the spool: the caller fetches it.
        assert!(!take_from_spool(&spool, &n(1, 9), &dest));
        assert!(!take_from_spool(&spool, "00000002.history", &dest));
        assert_eq!(
            following(&n(1, 0xFF), SEG, 2),
            vec![n(1, 0x100), n(1, 0x101)]
        );
        assert!(following("00000002.history", SEG, 2).is_empty());
        assert!(!prefetcher_running(&spool));
        remove_spool(&spool);
        assert!(!spool.exists());
    }
}
