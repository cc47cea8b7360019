//! Sources against real inputs: a probe against 127.0.0.1 listeners, the
//! Linux link parsers against fixture copies of the kernel's files.
// Helpers outside #[test] functions panic on broken setups, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "linux-link")]
mod link_files_parse_with_malformed_lines_ignored;
#[cfg(all(feature = "linux-link", target_os = "linux"))]
mod link_source_reports_link_changes;
mod probe_failures_carry_their_cause;
mod probe_follows_a_real_listener;
mod probe_settings_and_answers_are_checked_at_the_edges;
mod probe_treats_a_captive_portal_as_a_failure;
