//! The repository figures of the metrics, cached in shared memory for `strata.metrics_cache_seconds`
//! and shared by every process (the endpoint's worker, sessions calling `strata_metrics()`): the
//! repository is listed at most once per period whoever asks, and a change of `strata.repo1` or
//! `strata.stanza` is a miss. A backup's end, an expiry or a pin forgets the figures (`invalidate`),
//! so that what the metrics say about backups is current right after them.
//!
//! The figures are kept as JSON in a fixed buffer; figures that do not fit (they are a few KB) are
//! simply not shared.

use crate::{gucs, status};
use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory};
use std::hash::{Hash, Hasher};
use strata_core::metrics::RepoReport;

const BUF_LEN: usize = 32 * 1024;

#[derive(Copy, Clone)]
pub struct Cached {
    /// Which repository and stanza the figures are of (a hash; 0: nothing cached).
    key: u64,
    len: usize,
    buf: [u8; BUF_LEN],
}

impl Default for Cached {
    fn default() -> Self {
        Cached {
            key: 0,
            len: 0,
            buf: [0; BUF_LEN],
        }
    }
}

// SAFETY: plain old data with no pointers.
unsafe impl PGRXSharedMemory for Cached {}

static CACHE: PgLwLock<Cached> = unsafe { PgLwLock::new(c"pg_strata_metrics_cache") };

pub fn init_shared_memory() {
    pg_shmem_init!(CACHE);
}

/// Now, in unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn key_of(config: &strata_core::config::RepoConfig) -> u64 {
    // DefaultHasher::new() has fixed keys: the same hash in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.repo.display().hash(&mut h);
    config.stanza.hash(&mut h);
    h.finish().max(1)
}

/// The repository figures: the cached ones while younger than `strata.metrics_cache_seconds`,
/// otherwise read now (and cached).
pub fn report() -> RepoReport {
    let now = unix_now();
    let config = match gucs::repo_config() {
        Ok(c) => c,
        Err(e) => {
            return RepoReport {
                collected_at: now,
                figures: None,
                error: Some(e.to_string()),
            }
        }
    };
    let key = key_of(&config);
    if status::available() {
        let c = CACHE.share();
        if c.key == key && c.len > 0 {
            if let Ok(r) = serde_json::from_slice::<RepoReport>(&c.buf[..c.len]) {
                let age = now - r.collected_at;
                if (0.0..gucs::metrics_cache_seconds()).contains(&age) {
                    return r;
                }
            }
        }
    }
    let report = match strata_core::Repo::open_config(&config) {
        Ok(repo) => RepoReport::collect(&repo, now),
        Err(e) => RepoReport {
            collected_at: now,
            figures: None,
            error: Some(e.to_string()),
        },
    };
    if status::available() {
        if let Ok(json) = serde_json::to_vec(&report) {
            if json.len() <= BUF_LEN {
                let mut c = CACHE.exclusive();
                c.buf[..json.len()].copy_from_slice(&json);
                c.len = json.len();
                c.key = key;
            }
        }
    }
    report
}

/// Forgets the cached figures (after a backup, an expiry, a pin).
pub fn invalidate() {
    if status::available() {
        let mut c = CACHE.exclusive();
        c.key = 0;
        c.len = 0;
    }
}
