//! Waiting for a condition that becomes true in the background (a watcher catching up, a
//! replica taking over): [`eventually`] for blocking tests, [`eventually_async`] inside a
//! tokio runtime. Both poll the same way and fail the test, naming what they waited for,
//! if the condition does not hold in time.
//!
//! Declared by `support/mod.rs`; test files that do not use `mod support;` include it with
//! `#[path = "support/wait.rs"] mod wait;`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// How long a condition may take. Generous: the 2-core CI machines run many test binaries
/// at once, and waiting longer only delays a failure, it never hides one.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often the condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// Blocks until `condition` holds; panics after [`PATIENCE`] with "timed out waiting for
/// `what`".
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// [`eventually`] for async tests: sleeps on the runtime between checks, so the tasks that
/// make the condition true keep running.
pub async fn eventually_async(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
