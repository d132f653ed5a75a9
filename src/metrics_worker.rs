//! The metrics endpoint: a background worker, registered at server start when
//! `strata.metrics_listen` is set, that serves `GET /metrics` (the Prometheus text of
//! `metrics_sql::render_text`) on that address only.
//!
//! One thread, one request at a time: it sleeps on its latch and the listening socket
//! (`WaitLatchOrSocket`), accepts what is pending and serves each connection within the bounds of
//! `strata_core::metrics::http` (head size, time), so a garbage or stalled client costs a few seconds
//! at most. SIGHUP reloads the settings; SIGTERM (server shutdown) ends it with exit code 0. If it
//! fails (the address is taken, say), it exits with an ERROR and the postmaster starts it again after
//! `RESTART_SECS`. It connects to no database: shared memory and the repository are all it reads.

use crate::metrics_sql;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::Duration;
use strata_core::metrics::http::{self, Limits, Request};

const RESTART_SECS: u64 = 10;

/// Registers the worker (at `_PG_init`, while the preload libraries load) when an address is set.
pub fn register() {
    if crate::gucs::metrics_listen().is_none() {
        return;
    }
    BackgroundWorkerBuilder::new("pg_strata metrics")
        .set_type("pg_strata metrics")
        .set_library("pg_strata")
        .set_function("pg_strata_metrics_worker_main")
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(RESTART_SECS)))
        .load();
}

fn shutdown_requested() -> bool {
    // SAFETY: a flag set by our SIGTERM handler; read on the main thread.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// Entry point named in the worker's registration (`bgw_function_name`).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_strata_metrics_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(addr) = crate::gucs::metrics_listen() else {
        return;
    };
    let listener = match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
        Ok(l) => l,
        Err(e) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                format!("pg_strata: cannot serve metrics on {addr} (strata.metrics_listen): {e}"),
                format!("Choose a free address and restart; the worker tries again every {RESTART_SECS} s.")
            );
        }
    };
    log!("pg_strata: serving metrics on http://{addr}/metrics");
    let limits = Limits::default();
    let stop = shutdown_requested;
    while !shutdown_requested() {
        // SAFETY: main thread; the standard latch wait of a background process.
        unsafe {
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET
                    | pg_sys::WL_SOCKET_READABLE
                    | pg_sys::WL_TIMEOUT
                    | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                listener.as_raw_fd(),
                1000,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: main thread; what PostgreSQL's own processes do on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        while !shutdown_requested() {
            match listener.accept() {
                Ok((stream, _)) => {
                    let served = http::serve(stream, limits, &stop, &mut metrics_sql::render_text);
                    if let Request::Bad(why) = served {
                        log!("pg_strata: metrics endpoint: refused a request: {why}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, say: wait for the next wake-up.
                    warning!("pg_strata: metrics endpoint: accept failed: {e}");
                    break;
                }
            }
        }
    }
}
