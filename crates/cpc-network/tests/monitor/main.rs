//! Behaviour of the monitor's state machine, on tokio's paused clock.
// Helpers outside #[test] functions panic on broken setups, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod degraded_when_many_but_not_all_checks_fail;
mod every_transition_of_the_state_machine;
mod flapping_is_bounded_by_min_dwell;
mod handles_and_sinks_describe_their_monitor;
mod names_and_reasons_read_the_same_in_every_log;
mod observers_see_exactly_the_watch_transitions;
mod sources_from_other_crates_drive_the_monitor;
