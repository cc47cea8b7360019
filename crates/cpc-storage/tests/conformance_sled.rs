//! The `QueueStorage` conformance suite, run against `SledStorage`.

use std::path::Path;

use cpc_storage::conformance::Factory;
use cpc_storage::{EpochMillis, QueueOptions, QueueStorage, Result, SledStorage};

/// Opens [`SledStorage`] for the suite.
#[derive(Debug, Clone, Copy)]
struct SledFactory;

impl Factory for SledFactory {
    fn name(&self) -> &str {
        "sled"
    }
    fn durable(&self) -> bool {
        true
    }
    fn open(
        &self,
        dir: &Path,
        options: QueueOptions,
        now: EpochMillis,
    ) -> Result<Box<dyn QueueStorage>> {
        Ok(Box::new(SledStorage::open_at(dir, options, now)?))
    }
}

cpc_storage::conformance_tests!(SledFactory);
