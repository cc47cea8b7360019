//! The durable operation queue of cpc-sync.
//!
//! (Crate docs and the runnable example are completed with the backends.)

mod api;
mod error;

pub use api::{
    Claimed, Completion, ConflictFilter, DeadHeadPolicy, DeferredConflict, Durability, EpochMillis,
    ListFilter, OpState, QuarantinedRecord, QueueOptions, QueueStats, QueueStorage,
    StoredOperation,
};
pub use error::{Result, StorageError};

#[cfg(test)]
mod object_safety {
    fn _queue_storage_is_object_safe(_: &dyn super::QueueStorage) {}
}
