//! Retries made above object_store. object_store retries a request after a 5xx or 429 reply, after a
//! connection that could not be made, and after a timeout of a read; it leaves to its caller a reply
//! lost after a request that is not idempotent was sent (a create that timed out or whose connection
//! dropped) and a reply body cut short. A remote backend retries those here, within the same budget:
//! for a create the retry finds the object there, and `Storage::put_new` reads it back to tell ours
//! from another's.

use super::Io;
use std::time::{Duration, Instant};

/// How many times and for how long a remote backend retries a request.
#[derive(Clone, Copy, Debug)]
pub struct RetryBudget {
    pub max_retries: usize,
    pub retry_timeout: Duration,
}

/// Runs `attempt` until it succeeds, fails otherwise than in transport, or the budget is spent (no
/// budget: once).
pub(super) fn run<T, F, Fut>(
    budget: Option<RetryBudget>,
    io: &Io,
    mut attempt: F,
) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    let start = Instant::now();
    let mut retries = 0;
    loop {
        match io.block_on(attempt()) {
            Err(e)
                if budget.is_some_and(|b| {
                    retries < b.max_retries
                        && start.elapsed() < b.retry_timeout
                        && transport_failure_after_send(&e)
                }) =>
            {
                retries += 1;
                std::thread::sleep(backoff(retries));
            }
            r => return r,
        }
    }
}

/// Whether a request failed in transport after it was sent (a timeout, a connection reset, a body cut
/// short): object_store does not retry those for a request that is not idempotent, nor a response body
/// cut short. A connection never made was retried by object_store already.
fn transport_failure_after_send(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<HttpError>() {
            return !matches!(h.kind(), HttpErrorKind::Connect);
        }
        cur = c.source();
    }
    false
}

/// The pause before the n-th retry (n >= 1): 100 ms doubling, at most 5 s.
fn backoff(n: usize) -> Duration {
    Duration::from_millis(100u64 << n.min(6).saturating_sub(1)).min(Duration::from_secs(5))
}
