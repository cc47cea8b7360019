//! Scenario files: the shipped examples and the docs parse, bad files are
//! refused with the field and line, and runs are reproducible from a seed.

mod files_parse_and_errors_point_at_the_line;
mod same_seed_same_run;
