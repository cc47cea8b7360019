//! Behaviour of `cargo xtask simulate`, run as the real binary on `--quick`
//! sizes.

// Test helpers panic on setup failures, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod canary_never_reaches_the_logs;
mod malformed_scenario_exits_2_naming_field_and_line;
mod same_seed_prints_the_same_bytes;
mod support;
mod the_timeline_draws_the_run;
mod without_dedupe_the_checker_reports_duplicates;
