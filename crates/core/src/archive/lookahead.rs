//! Look-ahead archiving: PostgreSQL's archiver hands the module one WAL segment at a time, but when it
//! is behind, the segments it will ask for next are already complete and waiting
//! (`pg_wal/archive_status/<name>.ready`). Worker threads store those ahead, several at once — read,
//! hash, compress, encrypt, write durably into every repository — so that the call for each finds it
//! stored and only checks it: the worker hands over the bytes it read and their digest; the call
//! checks that the file is still the one the worker read (same inode, size and change times), that
//! each repository's stored object has that digest (as for any file found archived), and makes the
//! block-change summary from those bytes — in segment order, as it needs the previous segment's last
//! record. The file is not read or hashed a second time (that was a tenth of archiving's CPU), and
//! the summary always describes exactly the bytes stored. A file that changed since (which PostgreSQL
//! never does to a segment waiting to be archived) is read again and hashed, and refused when it
//! differs from what was stored. A segment is reported archived only by that call, once it is durable
//! in every repository. When the archiver keeps up (nothing waits after the segment asked for), the
//! call stores the segment itself, as without look-ahead.
//!
//! Order: workers prepare in parallel but **publish in order**. A worker writes segment k only once
//! segment k-1 is stored (by the call, or by the worker before it) — the `Gate` — and writes nothing
//! once one failed: a segment refused (another cluster's object under its name, say) stops everything
//! after it, as when PostgreSQL archives one at a time, so the archive never holds segments past a hole
//! or past another history's segment.
//!
//! Safety: a worker stores a segment only while its `.ready` file exists, and checks after reading it
//! that the name still denotes the file it read, unchanged, and that the `.ready` file is still there —
//! a segment recycled meanwhile (possible only if archiving was turned off) could hold other bytes, and
//! must not be stored under the old name. Whatever a worker fails to do, the call does itself. The
//! workers block every signal: they run inside a PostgreSQL process, whose signal handlers belong on
//! its main thread. Dropping the look-ahead (shutdown, new settings) abandons what is queued: each
//! worker finishes at most the segment it holds.

use super::push::{ArchivePusher, ReadBytes, ServerFacts};
use crate::config::{RepoConfig, RepoSet};
use crate::{Error, Result};
use pgformat::lsn::{segment_file_name, WalFileName};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// The most look-ahead workers (`strata.archive_process_max`).
pub const MAX_WORKERS: usize = 32;

/// What the look-ahead may hold at once, read and compressed: 1 GB (each worker holds a segment and
/// its stored form, and the segment it finished waits for its call, which holds one more). With 16 MB
/// segments up to 21 workers fit; with 256 MB segments, one; with larger ones, none (no look-ahead).
const MEMORY_BUDGET: u64 = 1 << 30;

/// How long a worker waits for the segment before its own to be stored.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a worker did with one segment, or why it did not.
type Outcome = std::result::Result<StoredAhead, String>;

/// A segment a worker stored in every repository.
pub struct StoredAhead {
    /// For each repository (by number), the stored size.
    pub stored: Vec<(u8, u64)>,
    /// The bytes the worker read and stored, and their digest (`object::digest`).
    pub data: Vec<u8>,
    pub digest: [u8; 32],
    identity: FileIdentity,
}

impl std::fmt::Debug for StoredAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAhead")
            .field("stored", &self.stored)
            .field("bytes", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl StoredAhead {
    /// The bytes as the call uses them, if the file at `path` is still the one the worker read.
    pub fn read_bytes(&self, path: &Path) -> Option<ReadBytes<'_>> {
        let now = std::fs::symlink_metadata(path).ok()?;
        // Bytes given back (`Job::release_bytes`) are not the file's any more.
        let whole = self.data.len() as u64 == self.identity.size;
        (whole && now.is_file() && FileIdentity::of(&now) == self.identity).then_some(ReadBytes {
            data: &self.data,
            digest: self.digest,
        })
    }
}

/// What tells one state of a file from another without reading it: a write changes the size or the
/// modification and change times; a rename over it, the inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(m: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

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

    /// Takes the read bytes out of a finished job (its call will read the file again): for jobs that
    /// may wait long for their call, such as those of a timeline the server has left.
    fn release_bytes(&self) -> Option<Vec<u8>> {
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(Ok(stored)) if !stored.data.is_empty() => Some(std::mem::take(&mut stored.data)),
            _ => None,
        }
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

/// Publishing in order: the last segment known stored (timeline, segment number), and whether the
/// look-ahead stopped (a segment failed, or the archiver let the workers go).
#[derive(Default)]
struct GateState {
    stored: Option<(u32, u64)>,
    /// Segments at or after this one (on its timeline) may not be written by a worker.
    failed_at: Option<(u32, u64)>,
    closing: bool,
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn update(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Segment (timeline, segno) is stored durably with the right content.
    fn stored(&self, timeline: u32, segno: u64) {
        self.update(|s| {
            if s.stored.is_none_or(|(t, n)| t != timeline || n < segno) {
                s.stored = Some((timeline, segno));
            }
            if s.failed_at
                .is_some_and(|(t, n)| t == timeline && n <= segno)
            {
                s.failed_at = None; // stored after all (a retry): later segments may go on
            }
        });
    }

    fn failed(&self, timeline: u32, segno: u64) {
        self.update(|s| {
            if s.failed_at.is_none_or(|(t, n)| t != timeline || segno < n) {
                s.failed_at = Some((timeline, segno));
            }
        });
    }

    /// Waits until segment `segno - 1` of `timeline` is stored; an error when a segment before
    /// `segno` failed, the look-ahead is closing, or `GATE_WAIT` passed (then nothing is written, and
    /// the call for the segment stores it itself).
    fn wait_for_previous(&self, timeline: u32, segno: u64) -> Result<()> {
        let deadline = std::time::Instant::now() + GATE_WAIT;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.closing {
                return Err(Error::Internal("look-ahead stopped".into()));
            }
            if s.failed_at.is_some_and(|(t, n)| t == timeline && n < segno) {
                return Err(Error::Internal(
                    "an earlier segment was not archived: nothing is stored past it".into(),
                ));
            }
            if s.stored
                .is_some_and(|(t, n)| t == timeline && n + 1 >= segno)
            {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Internal(
                    "the segment before was not stored in time".into(),
                ));
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

struct Task {
    name: String,
    timeline: u32,
    segno: u64,
    path: PathBuf,
    job: Arc<Job>,
}

/// The look-ahead workers of one archiver.
pub struct LookAhead {
    wal_segment_size: u32,
    /// The workers asked for (what a settings change is compared with).
    requested: usize,
    /// The workers started: fewer when the memory budget or the system allows fewer.
    workers: usize,
    sender: Option<crossbeam_channel::Sender<Task>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    gate: Arc<Gate>,
    /// Segments handed to workers and not yet asked for, by name.
    jobs: BTreeMap<String, Arc<Job>>,
    /// Read buffers the calls are done with, for the workers to read into again (a fresh 16 MB buffer
    /// costs a page fault per page).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl LookAhead {
    /// `workers` threads (at most `MAX_WORKERS`, and as many as `MEMORY_BUDGET` allows with this
    /// segment size) storing into every repository of `repos`. Threads the system refuses are done
    /// without.
    pub fn new(repos: &RepoSet, facts: ServerFacts, workers: usize) -> LookAhead {
        // The call holds the segment it checks; each worker, the segment it reads and its stored
        // form, and one it finished waits for its call (spare buffers are among these).
        let segment = facts.wal_segment_size.max(1) as u64;
        let fit = (MEMORY_BUDGET.saturating_sub(segment) / (3 * segment)) as usize;
        let wanted = workers.min(MAX_WORKERS).min(fit);
        let (sender, receiver) = crossbeam_channel::unbounded::<Task>();
        let gate = Arc::new(Gate::default());
        let spare = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = {
            let _mask = SignalsBlocked::new();
            (0..wanted)
                .filter_map(|i| {
                    let (receiver, gate, spare) = (receiver.clone(), gate.clone(), spare.clone());
                    let configs = repos.repos().to_vec();
                    std::thread::Builder::new()
                        .name(format!("strata-ahead-{i}"))
                        .spawn(move || work(receiver, configs, facts, gate, spare))
                        .ok()
                })
                .collect()
        };
        LookAhead {
            wal_segment_size: facts.wal_segment_size,
            requested: workers,
            workers: threads.len(),
            sender: (!threads.is_empty()).then_some(sender),
            threads,
            gate,
            jobs: BTreeMap::new(),
            spare,
        }
    }

    /// Gives back the read buffer of a segment the call is done with.
    pub fn recycle(&self, mut data: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.workers {
            data.clear();
            spare.push(data);
        }
    }

    /// The workers asked for (`new`'s `workers`), whatever could be started.
    pub fn requested(&self) -> usize {
        self.requested
    }

    /// Called when PostgreSQL asks for `file_name` (at `wal_path`): hands the segments after it whose
    /// `.ready` files exist to the workers (as many as there are workers, not counting those handed
    /// already), then returns what a worker did with `file_name` itself, waiting for it if needed;
    /// None when no worker had it.
    pub fn asked_for(&mut self, file_name: &str, wal_path: &Path) -> Option<Outcome> {
        let own = self.jobs.remove(file_name);
        if let Some(WalFileName::Segment { timeline, segno }) =
            WalFileName::parse(file_name, self.wal_segment_size)
        {
            // Segments before this one on its timeline are archived or will be asked for again:
            // what was done ahead for them is in the repository and is checked then. Jobs of other
            // names stay known, so that none is handed out twice; those of another timeline give
            // their read bytes back once finished (the server may ask for them much later, or never).
            let size = self.wal_segment_size;
            let mut released = Vec::new();
            self.jobs
                .retain(|name, job| match WalFileName::parse(name, size) {
                    Some(WalFileName::Segment {
                        timeline: t,
                        segno: n,
                    }) => {
                        if t != timeline {
                            released.extend(job.release_bytes());
                        }
                        t != timeline || n > segno
                    }
                    _ => true,
                });
            for data in released {
                self.recycle(data);
            }
            self.hand_out(timeline, segno, wal_path);
        }
        own.map(|job| job.wait())
    }

    /// What the call made of `file_name`: stored everywhere (`ok`), or not. Workers publish the
    /// segments after it only when it is stored.
    pub fn reported(&self, file_name: &str, ok: bool) {
        if let Some(WalFileName::Segment { timeline, segno }) =
            WalFileName::parse(file_name, self.wal_segment_size)
        {
            match ok {
                true => self.gate.stored(timeline, segno),
                false => self.gate.failed(timeline, segno),
            }
        }
    }

    fn hand_out(&mut self, timeline: u32, segno: u64, wal_path: &Path) {
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
                timeline,
                segno: segno + next,
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
        // Workers stop at their next task or gate; what is queued is abandoned (its jobs are
        // finished as failed, so nothing waits on them).
        self.gate.update(|s| s.closing = true);
        self.sender.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The status file PostgreSQL keeps in `<wal_dir>/archive_status` while WAL file `name` waits to be
/// archived.
pub fn ready_file(wal_dir: &Path, name: &str) -> PathBuf {
    wal_dir.join("archive_status").join(format!("{name}.ready"))
}

/// A worker: takes segments off the queue until it is closed.
fn work(
    receiver: crossbeam_channel::Receiver<Task>,
    configs: Vec<RepoConfig>,
    facts: ServerFacts,
    gate: Arc<Gate>,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut pushers: Vec<Option<ArchivePusher>> = configs.iter().map(|_| None).collect();
    let mut buf = Vec::new();
    for task in receiver {
        if gate.state.lock().is_ok_and(|s| s.closing) {
            task.job.finish(Err("look-ahead stopped".into()));
            continue;
        }
        if buf.capacity() == 0 {
            buf = spare
                .lock()
                .ok()
                .and_then(|mut s| s.pop())
                .unwrap_or_default();
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store_ahead(&task, &configs, &mut pushers, facts, &mut buf, &gate)
        }));
        let outcome = match outcome {
            Ok(Ok(mut done)) => {
                gate.stored(task.timeline, task.segno);
                done.data = std::mem::take(&mut buf);
                Ok(done)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                // State a panic may have left half-updated is not reused.
                pushers.iter_mut().for_each(|p| *p = None);
                Err("a look-ahead worker panicked".to_string())
            }
        };
        task.job.finish(outcome);
    }
}

/// Reads one waiting segment and stores it into every repository, writing only once the segment
/// before it is stored.
fn store_ahead(
    task: &Task,
    configs: &[RepoConfig],
    pushers: &mut [Option<ArchivePusher>],
    facts: ServerFacts,
    buf: &mut Vec<u8>,
    gate: &Gate,
) -> Result<StoredAhead> {
    let identity = read_waiting_segment(&task.path, &task.name, buf)?;
    let in_order = || gate.wait_for_previous(task.timeline, task.segno);
    let mut stored = Vec::with_capacity(configs.len());
    // Hashed once, by the first repository's push (in parallel with its compression).
    let mut digest = None;
    for (config, slot) in configs.iter().zip(pushers.iter_mut()) {
        if slot.is_none() {
            *slot = Some(ArchivePusher::new(config.clone(), facts)?.for_look_ahead());
        }
        let pusher = slot.as_mut().expect("opened above");
        let report = pusher.push_bytes(&task.path, &task.name, buf, digest, &in_order)?;
        digest = Some(report.digest);
        stored.push((config.number, report.stored_bytes));
    }
    crate::testhook::pause(crate::testhook::ARCHIVE_AHEAD_PAUSE);
    let digest = digest.ok_or_else(|| Error::Internal("no repository to store into".into()))?;
    // The bytes (`buf`) go with it once this returns.
    Ok(StoredAhead {
        stored,
        data: Vec::new(),
        digest,
        identity,
    })
}

/// Reads the segment at `path` into `buf` if it is waiting to be archived, and is still the same file,
/// unchanged, with its `.ready` file in place once read; returns its identity as read.
fn read_waiting_segment(path: &Path, name: &str, buf: &mut Vec<u8>) -> Result<FileIdentity> {
    let gone = || {
        Error::BadInput(format!(
            "WAL file {name} is no longer waiting to be archived"
        ))
    };
    let read_err = |source| Error::ReadFile {
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
    let read = FileIdentity::of(&file.metadata().map_err(read_err)?);
    let now = FileIdentity::of(&std::fs::symlink_metadata(path).map_err(read_err)?);
    if now != read || read != FileIdentity::of(&opened) || !ready.exists() {
        return Err(gone());
    }
    Ok(read)
}

/// While it lives, every signal is blocked on this thread, so that the threads started meanwhile
/// inherit a mask that keeps PostgreSQL's signals on the main thread; the mask is restored when it is
/// dropped, also when a panic unwinds.
struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data filled by sigfillset; pthread_sigmask changes only this
        // thread's mask, which `drop` restores.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked { old }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on the same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
#[path = "lookahead_tests.rs"]
mod tests;
