//! Runnable examples of cpc-sync; see the `[[example]]` entries of this
//! package and run them with `cargo run --example NAME`.
