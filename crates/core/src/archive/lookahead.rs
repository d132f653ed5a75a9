//! Look-ahead archiving: PostgreSQL's archiver hands the module one WAL segment at a time, but when it
//! is behind, the segments it will ask for next are already complete and waiting
//! (`pg_wal/archive_status/<name>.ready`). Worker threads store those ahead, several at once — read,
//! hash, compress, encrypt, write durably into every repository — so that the call for each finds
//! it stored and only checks it: the file's digest must equal the stored object's (as for any file
//! found archived), and the block-change summary, which needs the previous segment's last record, is
//! made then, in segment order. A segment is reported archived only by that call, once it is durable in
//! every repository. When the archiver keeps up (nothing waits after the segment asked for), the call
//! stores the segment itself, as without look-ahead.
//!
//! Safety: a worker stores a segment only while its `.ready` file exists, and checks after reading it
//! that the name still denotes the file it read and that the `.ready` file is still there — a segment
//! recycled meanwhile (possible only if archiving was turned off) could hold other bytes, and must not
//! be stored under the old name. Whatever a worker fails to do, the call does itself, as without
//! look-ahead. The workers block every signal: they run inside a PostgreSQL process, whose signal
//! handlers belong on its main thread.

use super::push::{ArchivePusher, FileIdentity, ServerFacts, StoredAhead};
use crate::config::{RepoConfig, RepoSet};
use crate::Result;
use pgformat::lsn::{segment_file_name, WalFileName};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// The most look-ahead workers (`strata.archive_process_max`).
pub const MAX_WORKERS: usize = 32;

/// What a worker did with one segment, or why it could not.
type Outcome = std::result::Result<StoredAhead, String>;

/// A segment handed to a worker; the archiver waits on it when PostgreSQL asks for that segment.
#[derive(Default)]
struct Job {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

impl Job {
    fn finish(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.done.notify_all();
    }

    fn wait(&self) -> Outcome {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(outcome) = slot.take() {
                return outcome;
            }
            slot = self.done.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

struct Task {
    name: String,
    path: PathBuf,
    job: Arc<Job>,
}

/// The look-ahead workers of one archiver.
pub struct LookAhead {
    wal_segment_size: u32,
    workers: usize,
    sender: Option<crossbeam_channel::Sender<Task>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Segments handed to workers and not yet asked for, by name (names sort in WAL order within a
    /// timeline).
    jobs: BTreeMap<String, Arc<Job>>,
}

impl LookAhead {
    /// `workers` threads (at most `MAX_WORKERS`) storing into every repository of `repos`.
    pub fn new(repos: &RepoSet, facts: ServerFacts, workers: usize) -> LookAhead {
        let workers = workers.min(MAX_WORKERS);
        let (sender, receiver) = crossbeam_channel::unbounded::<Task>();
        let threads = without_signals(|| {
            (0..workers)
                .map(|_| {
                    let receiver = receiver.clone();
                    let configs = repos.repos().to_vec();
                    std::thread::spawn(move || work(receiver, configs, facts))
                })
                .collect()
        });
        LookAhead {
            wal_segment_size: facts.wal_segment_size,
            workers,
            sender: Some(sender),
            threads,
            jobs: BTreeMap::new(),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Called when PostgreSQL asks for `file_name` (at `wal_path`): hands the segments after it whose
    /// `.ready` files exist to the workers (as many as there are workers, not counting those handed
    /// already), then returns what a worker did with `file_name` itself, waiting for it if needed;
    /// None when no worker had it.
    pub fn asked_for(&mut self, file_name: &str, wal_path: &Path) -> Option<Outcome> {
        let own = self.jobs.remove(file_name);
        // Segments before this one are archived or will be asked for again: what was done ahead for
        // them stays in the repository and is checked then.
        self.jobs = self.jobs.split_off(file_name);
        self.hand_out(file_name, wal_path);
        own.map(|job| job.wait())
    }

    fn hand_out(&mut self, file_name: &str, wal_path: &Path) {
        let Some(WalFileName::Segment { timeline, segno }) =
            WalFileName::parse(file_name, self.wal_segment_size)
        else {
            return;
        };
        let (Some(sender), Some(wal_dir)) = (&self.sender, wal_path.parent()) else {
            return;
        };
        for next in 1..=self.workers as u64 {
            let name = segment_file_name(timeline, segno + next, self.wal_segment_size);
            if self.jobs.contains_key(&name) {
                continue;
            }
            if !ready_file(wal_dir, &name).exists() {
                break; // not complete yet, nor any later one
            }
            let job = Arc::new(Job::default());
            let task = Task {
                name: name.clone(),
                path: wal_dir.join(&name),
                job: job.clone(),
            };
            if sender.send(task).is_err() {
                return;
            }
            self.jobs.insert(name, job);
        }
    }
}

impl Drop for LookAhead {
    fn drop(&mut self) {
        // Closing the queue stops the workers once they finish their current segment.
        self.sender.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn ready_file(wal_dir: &Path, name: &str) -> PathBuf {
    wal_dir.join("archive_status").join(format!("{name}.ready"))
}

/// A worker: takes segments off the queue until it is closed.
fn work(receiver: crossbeam_channel::Receiver<Task>, configs: Vec<RepoConfig>, facts: ServerFacts) {
    let mut pushers: Vec<Option<ArchivePusher>> = configs.iter().map(|_| None).collect();
    let mut buf = Vec::new();
    for task in receiver {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store_ahead(&task, &configs, &mut pushers, facts, &mut buf)
        }));
        let outcome = match outcome {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                // State a panic may have left half-updated is not reused.
                pushers.iter_mut().for_each(|p| *p = None);
                Err("a look-ahead worker panicked".to_string())
            }
        };
        task.job.finish(outcome);
    }
}

/// Reads one waiting segment and stores it into every repository.
fn store_ahead(
    task: &Task,
    configs: &[RepoConfig],
    pushers: &mut [Option<ArchivePusher>],
    facts: ServerFacts,
    buf: &mut Vec<u8>,
) -> Result<StoredAhead> {
    let file = read_waiting_segment(&task.path, &task.name, buf)?;
    let mut stored = Vec::with_capacity(configs.len());
    let mut digest = None;
    for (config, slot) in configs.iter().zip(pushers.iter_mut()) {
        if slot.is_none() {
            *slot = Some(ArchivePusher::new(config.clone(), facts)?.for_look_ahead());
        }
        let pusher = slot.as_mut().expect("opened above");
        let report = pusher.push_bytes(&task.path, &task.name, buf)?;
        stored.push((config.number, report.stored_bytes));
        digest = Some(report.digest);
    }
    crate::testhook::pause(crate::testhook::ARCHIVE_AHEAD_PAUSE);
    Ok(StoredAhead {
        digest: digest.ok_or_else(|| crate::Error::Internal("no repository".into()))?,
        file,
        stored,
    })
}

/// Reads the segment at `path` into `buf` if it is waiting to be archived, and is still the same file,
/// unchanged, with its `.ready` file in place once read; returns the file's identity.
fn read_waiting_segment(path: &Path, name: &str, buf: &mut Vec<u8>) -> Result<FileIdentity> {
    let gone = || {
        crate::Error::BadInput(format!(
            "WAL file {name} is no longer waiting to be archived"
        ))
    };
    let read_err = |source| crate::Error::ReadFile {
        path: path.into(),
        source,
    };
    let ready = match path.parent() {
        Some(dir) => ready_file(dir, name),
        None => return Err(gone()),
    };
    if !ready.exists() {
        return Err(gone());
    }
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let opened = file.metadata().map_err(read_err)?;
    buf.clear();
    file.read_to_end(buf).map_err(read_err)?;
    let read = file.metadata().map_err(read_err)?;
    let now = std::fs::symlink_metadata(path).map_err(read_err)?;
    if (now.dev(), now.ino()) != (opened.dev(), opened.ino())
        || FileIdentity::of(&read) != FileIdentity::of(&opened)
        || !ready.exists()
    {
        return Err(gone());
    }
    Ok(FileIdentity::of(&read))
}

/// Runs `f` (which starts threads) with every signal blocked, so that the threads it starts inherit a
/// mask that keeps PostgreSQL's signals on the main thread; the caller's mask is restored after.
fn without_signals<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data filled by sigfillset; pthread_sigmask only changes this thread's
    // mask, which is restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

#[cfg(test)]
#[path = "lookahead_tests.rs"]
mod tests;
