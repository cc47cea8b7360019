//! Behaviour of the sync worker against `MemoryStorage` on a paused clock.

// Test support code panics on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod a_restored_remote_gets_the_acked_back;
mod batch_failures_ack_nothing;
mod drained_waits_only_for_sendable_work;
mod lifecycle_and_network;
mod outcomes_become_completions;
mod panics_and_poison_are_contained;
mod payload_limit_at_every_door;
mod queue_never_stalls;
