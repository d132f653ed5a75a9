//! How a backend waits here (for its backup worker, a verification's threads, a WAL switch to reach
//! the repository): on its latch with a timeout, leaving if the postmaster dies, so that a cancel or a
//! termination is seen within the timeout.

use pgrx::prelude::*;

/// Sleeps on the latch for up to `ms` milliseconds and resets it; returns whether a cancel or a
/// termination is pending (the caller stops its work, then lets `check_for_interrupts!` raise).
pub fn wait(ms: i64) -> bool {
    // SAFETY: main thread; the standard latch wait of a backend, and plain reads of its interrupt
    // flags.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0
    }
}
