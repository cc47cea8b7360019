//! The `QueueStorage` conformance suite, run against `SledStorage`.

cpc_storage::conformance_tests!(cpc_storage::conformance::SledFactory);
