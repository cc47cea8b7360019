//! Scenarios: the example files (`files/`) and the docs parse, bad files
//! are refused with the field and line, and reference runs are
//! reproducible from a seed.

// Test helpers outside #[test] functions may unwrap too: a failure is a
// test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod a_cancelled_reference_run_is_a_driver_error;
mod builder_and_workloads;
mod each_bad_field_is_refused_with_its_name_and_line;
mod files_parse_and_errors_point_at_the_line;
mod no_input_panics;
mod same_seed_same_run;
