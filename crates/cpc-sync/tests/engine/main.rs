//! Behaviour of `SyncEngine` against cpc-fault's simulated remote, on a
//! paused clock.

// Test support code panics on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod a_failed_write_is_retried_whole;
mod a_server_down_for_hours_buries_nothing;
mod adversarial_remote;
mod coalescing;
mod composite_adapter_answers;
mod composite_adapter_keeps_order;
mod configuration_is_checked;
mod delivery_survives_faults;
mod errors_name_their_cause;
mod inline_storage_calls_are_deterministic;
mod managing_the_queue;
mod offline_for_weeks;
mod payload_limits_on_disk;
mod priorities_and_order;
mod pulls_and_outages;
mod restart_and_limits;
mod time_follows_the_wall_clock;
