//! Behaviour suite of `cpc-backoff`: one binary, one file per behaviour.

// Helpers outside `#[test]` functions unwrap too; this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod breaker_walks_every_transition;
mod delays_are_deterministic_under_a_seed;
mod huge_attempts_saturate_without_overflow;
mod jittered_delays_stay_in_their_interval;
mod limits_give_up_when_due;
mod retry_after_is_a_floor_and_is_capped;
mod thundering_herd_favours_jitter;
