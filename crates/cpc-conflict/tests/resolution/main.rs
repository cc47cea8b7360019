//! Behaviour suite of the resolvers: each file is named for what it proves.

// Test helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod causally_later_edit_wins_under_clock_skew;
mod field_merge_is_a_state_based_crdt;
mod lww_is_antisymmetric_and_deterministic;
mod resolutions_are_traced_without_payloads;
