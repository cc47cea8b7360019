//! The `QueueStorage` conformance suite, run against every backend.

mod memory {
    cpc_storage::conformance_tests!(cpc_storage::conformance::MemoryFactory);
}

mod sqlite {
    cpc_storage::conformance_tests!(cpc_storage::conformance::SqliteFactory);
}
