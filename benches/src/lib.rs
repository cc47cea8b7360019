//! Benchmarks of cpc-sync (criterion, `harness = false`), each beside a
//! baseline measured in the same run; see `cargo xtask bench`.
