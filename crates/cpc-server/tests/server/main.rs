//! The reference server over real loopback sockets: push rules, pull pages, every
//! whole-request answer, durability and the change log.

// Tests panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// These tests run on the embedded store; `tests/server_on_postgres`
/// runs the same files on PostgreSQL.
const POSTGRES: bool = false;

mod a_full_disk_never_corrupts_the_store;
mod answers_every_bad_request_with_a_problem;
mod backup_and_restore;
mod connections_are_bounded_in_time_and_number;
mod hostile_clients;
mod pull_pages;
mod push_rules;
mod support;
mod the_change_log_is_the_truth;
mod the_store_does_not_grow_without_bound;
mod the_stores_answer_as_the_shared_rules;
