//! The tests of `tests/server`, the same files, on the PostgreSQL backend:
//! one suite, two backends. Each test gets a database of its own in the
//! cluster `CPC_TEST_DATABASE_URL` names, and skips, saying so, without it
//! (CI always sets it; see CONTRIBUTING.md for a local cluster).

// Tests panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// These tests run on PostgreSQL.
const POSTGRES: bool = true;

#[path = "../server/answers_every_bad_request_with_a_problem.rs"]
mod answers_every_bad_request_with_a_problem;
#[path = "../server/hostile_clients.rs"]
mod hostile_clients;
mod instances;
#[path = "../server/pull_pages.rs"]
mod pull_pages;
#[path = "../server/push_rules.rs"]
mod push_rules;
#[path = "../server/support.rs"]
mod support;
#[path = "../server/the_change_log_is_the_truth.rs"]
mod the_change_log_is_the_truth;
#[path = "../server/the_store_does_not_grow_without_bound.rs"]
mod the_store_does_not_grow_without_bound;
#[path = "../server/the_stores_answer_as_the_shared_rules.rs"]
mod the_stores_answer_as_the_shared_rules;
