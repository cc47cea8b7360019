//! The `QueueStorage` conformance suite, run against `SledStorage`.
#![cfg(feature = "sled")]

cpc_storage::conformance_tests!(cpc_storage::conformance::SledFactory);
