//! Test hooks: a step slowed down on request, so that an end-to-end test can kill a process or run
//! another operation in the middle of it (an expiry killed half-way, an expiry while a restore reads).
//! Each hook is an environment variable naming milliseconds to sleep at that step, capped at ten
//! seconds; unset (as for every user), it costs one environment lookup.

/// Sleeps for the milliseconds the variable `var` names, if it is set.
pub fn pause(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
    }
}

/// Between the deletions of an expiry.
pub const EXPIRE_PAUSE: &str = "STRATA_TEST_EXPIRE_PAUSE_MS";
/// Before each file a restore writes.
pub const RESTORE_PAUSE: &str = "STRATA_TEST_RESTORE_PAUSE_MS";
/// Before a rotation writes the new keyring generation, and again before it deletes the older ones.
pub const REKEY_PAUSE: &str = "STRATA_TEST_REKEY_PAUSE_MS";
/// After a look-ahead worker stored a segment, before the archiver may take it.
pub const ARCHIVE_AHEAD_PAUSE: &str = "STRATA_TEST_ARCHIVE_AHEAD_PAUSE_MS";
