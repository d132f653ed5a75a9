//! The running backup's state in shared memory: what makes "one backup at a time" hold across
//! sessions, how `backup_start(wait => true)` learns the worker's outcome, how `backup_cancel()` reaches
//! the worker, and what `backup_progress()` shows. Each backup gets a new generation number so that a
//! waiting session never mistakes an older backup's outcome for its own.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory};

const LABEL_LEN: usize = 64;
const MSG_LEN: usize = 2048;
const HINT_LEN: usize = 512;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Idle = 0,
    Starting = 1,
    Copying = 2,
    Stopping = 3,
    Done = 4,
    Failed = 5,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Starting => "starting",
            Phase::Copying => "copying files",
            Phase::Stopping => "waiting for WAL archiving",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Starting,
            2 => Phase::Copying,
            3 => Phase::Stopping,
            4 => Phase::Done,
            5 => Phase::Failed,
            _ => Phase::Idle,
        }
    }

    /// Whether a backup in this phase is still running.
    pub fn running(self) -> bool {
        matches!(self, Phase::Starting | Phase::Copying | Phase::Stopping)
    }
}

#[derive(Copy, Clone)]
pub struct BackupShared {
    pub generation: u64,
    phase: u8,
    pub cancel_requested: bool,
    /// The kind asked for: 0 full, 1 diff, 2 incr.
    pub requested_kind: u8,
    /// The repository the backup goes to (`backup_start(repo => N)`).
    pub repo: u8,
    pub worker_pid: i32,
    pub started_at: i64,
    pub files_total: i64,
    pub files_done: i64,
    pub bytes_total: i64,
    pub bytes_done: i64,
    label: [u8; LABEL_LEN],
    message: [u8; MSG_LEN],
    /// The failure's SQLSTATE and hint, for backup_start() to raise it as the worker saw it.
    sqlstate: [u8; 5],
    hint: [u8; HINT_LEN],
    /// Decisions the caller of backup_start() is told about as NOTICEs (lines).
    notice: [u8; MSG_LEN],
    /// Backups that failed since the server started, by requested kind (full, diff, incr): for the
    /// metrics. Counted once per backup, where its failure is recorded (`set_failure`).
    pub failures: [i64; 3],
}

impl Default for BackupShared {
    fn default() -> Self {
        BackupShared {
            generation: 0,
            phase: 0,
            cancel_requested: false,
            requested_kind: 0,
            repo: 1,
            worker_pid: 0,
            started_at: 0,
            files_total: 0,
            files_done: 0,
            bytes_total: 0,
            bytes_done: 0,
            label: [0; LABEL_LEN],
            message: [0; MSG_LEN],
            sqlstate: [0; 5],
            hint: [0; HINT_LEN],
            notice: [0; MSG_LEN],
            failures: [0; 3],
        }
    }
}

// SAFETY: plain old data with no pointers.
unsafe impl PGRXSharedMemory for BackupShared {}

impl BackupShared {
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase)
    }
    pub fn set_phase(&mut self, p: Phase) {
        self.phase = p as u8;
    }
    pub fn label(&self) -> Option<String> {
        crate::status::get_text(&self.label)
    }
    pub fn set_label(&mut self, s: &str) {
        crate::status::put_text(&mut self.label, s);
    }
    pub fn message(&self) -> Option<String> {
        crate::status::get_text(&self.message)
    }
    pub fn notice(&self) -> Option<String> {
        crate::status::get_text(&self.notice)
    }
    pub fn set_notice(&mut self, s: &str) {
        crate::status::put_text(&mut self.notice, s);
    }
    pub fn set_message(&mut self, s: &str) {
        crate::status::put_text(&mut self.message, s);
    }
    /// Forgets the previous backup's failure (message, SQLSTATE, hint).
    pub fn clear_failure(&mut self) {
        self.set_message("");
        self.sqlstate = [0; 5];
        crate::status::put_text(&mut self.hint, "");
    }
    /// Records a failure: phase, message, SQLSTATE and hint; counts it once.
    pub fn set_failure(&mut self, e: &crate::errors::Raised) {
        if self.phase() != Phase::Failed {
            let kind = usize::from(self.requested_kind).min(2);
            self.failures[kind] += 1;
        }
        self.set_phase(Phase::Failed);
        self.set_message(&e.message);
        let code = e.sqlstate.as_bytes();
        self.sqlstate = [0; 5];
        if code.len() == 5 {
            self.sqlstate.copy_from_slice(code);
        }
        crate::status::put_text(&mut self.hint, e.hint.as_deref().unwrap_or(""));
    }
    /// The recorded failure (after `set_failure`; without one, an internal error).
    pub fn failure(&self) -> crate::errors::Raised {
        let sqlstate = std::str::from_utf8(&self.sqlstate)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("XX000")
            .to_string();
        crate::errors::Raised {
            sqlstate,
            message: self.message().unwrap_or_else(|| "unknown error".into()),
            hint: crate::status::get_text(&self.hint),
        }
    }
}

pub static BACKUP: PgLwLock<BackupShared> = unsafe { PgLwLock::new(c"pg_strata_backup_state") };

pub fn init_shared_memory() {
    pg_shmem_init!(BACKUP);
}

/// A copy of the state, taken under the lock.
pub fn snapshot() -> BackupShared {
    *BACKUP.share()
}

/// Whether a process is alive (a worker killed with SIGKILL leaves its phase behind until the
/// postmaster's crash restart resets shared memory; this guards the window in between).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}
