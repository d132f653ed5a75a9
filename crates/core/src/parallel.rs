//! Bounded parallel work: a feeder hands jobs over a bounded channel to a fixed number of worker
//! threads, each with its own state (a storage handle, buffers, an open bundle); the first error stops
//! everyone and is the one returned. Backup copy, the restore's object check and its file writing all
//! run this way, so memory stays a few jobs per thread whatever the number of jobs.

use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Jobs waiting per worker: enough that a worker finishing a small job never waits for the feeder,
/// few enough that queued jobs (and what they own) stay bounded.
const QUEUE_PER_WORKER: usize = 4;

/// Runs `work` over every job on `threads` threads (at least one). Each thread first makes its state
/// with `init`; when the jobs run out it hands the state to `finish` (still on that thread: a final
/// store overlaps the other threads' work) and the results are returned, in no particular order.
///
/// `stop` is read before each job and set at the first error, so that the other workers (and any
/// long job that checks it) stop early and the feeder sends no more. An `Error::Cancelled` (a worker
/// that saw the flag) never hides the real error. When `stop` is set from outside, workers quit without
/// finishing and the results are incomplete: the caller, who owns the flag, checks it.
pub fn run<J, S, T>(
    threads: usize,
    stop: &AtomicBool,
    jobs: impl IntoIterator<Item = J>,
    init: impl Fn() -> Result<S> + Sync,
    work: impl Fn(&mut S, J) -> Result<()> + Sync,
    finish: impl Fn(S) -> Result<T> + Sync,
) -> Result<Vec<T>>
where
    J: Send,
    T: Send,
{
    let threads = threads.max(1);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let results: Mutex<Vec<T>> = Mutex::new(Vec::with_capacity(threads));
    let (tx, rx) = crossbeam_channel::bounded::<J>(threads * QUEUE_PER_WORKER);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = rx.clone();
            let (init, work, finish, failure, results) =
                (&init, &work, &finish, &failure, &results);
            s.spawn(move || {
                let outcome = (|| -> Result<Option<T>> {
                    let mut state = init()?;
                    for job in rx.iter() {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(None);
                        }
                        work(&mut state, job)?;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    finish(state).map(Some)
                })();
                match outcome {
                    Ok(Some(t)) => results.lock().unwrap_or_else(|p| p.into_inner()).push(t),
                    Ok(None) => {}
                    Err(e) => {
                        // Recorded before the flag is raised: a worker stopped by the flag reports
                        // Cancelled after the real error is already in place.
                        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.is_none() || matches!(slot.as_ref(), Some(Error::Cancelled)) {
                            *slot = Some(e);
                        }
                        drop(slot);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        drop(rx);
        for job in jobs {
            if stop.load(Ordering::Relaxed) || tx.send(job).is_err() {
                break;
            }
        }
        drop(tx);
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_job_runs_once_with_per_worker_state() {
        let stop = AtomicBool::new(false);
        let inits = AtomicU64::new(0);
        let sums = run(
            3,
            &stop,
            1..=1000u64,
            || {
                inits.fetch_add(1, Ordering::Relaxed);
                Ok(0u64)
            },
            |sum, j| {
                *sum += j;
                Ok(())
            },
            Ok,
        )
        .unwrap();
        assert_eq!(inits.load(Ordering::Relaxed), 3);
        assert_eq!(sums.len(), 3);
        assert_eq!(sums.iter().sum::<u64>(), 500_500);
        assert!(!stop.load(Ordering::Relaxed));
    }

    #[test]
    fn the_first_error_stops_everyone_and_is_returned() {
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let e = run(
            2,
            &stop,
            0..1_000_000u64,
            || Ok(()),
            |_, j| {
                if j == 10 {
                    return Err(Error::Internal("job 10 failed".into()));
                }
                if j > 10 && stop.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            |_| -> Result<()> { panic!("no worker finishes after an error") },
        )
        .unwrap_err();
        assert!(e.to_string().contains("job 10 failed"), "{e}");
        assert!(stop.load(Ordering::Relaxed));
        // The feeder stopped: far from every job ran.
        assert!(done.load(Ordering::Relaxed) < 1000);
    }

    #[test]
    fn an_init_failure_is_reported_and_a_stop_from_outside_runs_nothing() {
        let stop = AtomicBool::new(false);
        let e = run(
            2,
            &stop,
            0..10,
            || -> Result<()> { Err(Error::Internal("no storage".into())) },
            |_, _: i32| Ok(()),
            Ok,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no storage"));
        let stop = AtomicBool::new(true);
        let ran = AtomicU64::new(0);
        let r = run(
            2,
            &stop,
            0..10,
            || Ok(()),
            |_, _: i32| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            Ok,
        )
        .unwrap();
        assert!(r.is_empty());
        assert_eq!(ran.load(Ordering::Relaxed), 0);
    }
}
