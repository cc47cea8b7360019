//! The durable operation queue of cpc-sync.
//!
//! (Crate docs and the runnable example are completed with the backends.)

mod api;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dir;
mod engine;
mod error;
mod memory;
#[cfg(feature = "sled")]
mod sled_backend;
mod sqlite;

pub use api::{
    Claimed, Completion, ConflictFilter, DeadHeadPolicy, DeferredConflict, Durability, EpochMillis,
    ListFilter, OpState, QuarantinedRecord, QueueOptions, QueueStats, QueueStorage,
    StoredOperation,
};
#[doc(hidden)]
pub use dir::InjectedFault;
pub use error::{Result, StorageError};
pub use memory::MemoryStorage;
#[cfg(feature = "sled")]
pub use sled_backend::{SledOptions, SledStorage, DEFAULT_SLED_CACHE_CAPACITY};
pub use sqlite::{SqliteStorage, RELAXED_SYNC_INTERVAL};

#[cfg(test)]
mod object_safety {
    fn _queue_storage_is_object_safe(_: &dyn super::QueueStorage) {}
}
