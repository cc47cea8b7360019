//! Deferred conflicts and the conflict log are kept by the durable storage
//! backends across a restart: defer one conflict, log decisions, drop the
//! store, reopen the same directory, find both, and settle after the restart.

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod deferred_conflicts_and_the_log_survive_a_restart;
