//! The error type of `cpc-storage`.

use std::path::PathBuf;

/// Errors of the queue storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The payload is larger than the configured limit; nothing was stored.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The operation is invalid (see `cpc_core::Operation::validate`).
    #[error("invalid operation")]
    InvalidOperation(#[source] cpc_core::Error),
    /// A repair ([`QueueStorageExt::repair`](crate::QueueStorageExt::repair))
    /// whose operation is not the stored one: another entity.
    #[error("repair of operation {id} refused: {reason}")]
    RepairMismatch {
        /// The operation.
        id: cpc_core::OperationId,
        /// What differs.
        reason: &'static str,
    },
    /// A [`QueueOptions`](crate::QueueOptions) value out of its range.
    #[error("invalid queue option {field}: {reason}")]
    InvalidOption {
        /// The field.
        field: &'static str,
        /// Its range.
        reason: &'static str,
    },
    /// An operation with this id is already stored.
    #[error("operation {0} is already queued")]
    Duplicate(cpc_core::OperationId),
    /// The disk is full (ENOSPC / SQLITE_FULL); nothing already stored is damaged.
    #[error("storage full")]
    StorageFull(#[source] std::io::Error),
    /// A stored record failed its checksum or could not be decoded.
    #[error("corrupt record {key}")]
    Corrupt {
        /// The record's key (for display).
        key: String,
        /// What was wrong.
        #[source]
        source: cpc_core::EnvelopeError,
    },
    /// An earlier sync or commit failed; the handle refuses all work until
    /// the store is reopened (after a failed fsync the kernel may have
    /// dropped the dirty pages, so retrying cannot be trusted).
    #[error("storage handle poisoned by an earlier I/O failure; reopen the store")]
    Poisoned,
    /// Another handle (this or another process) has the queue directory open.
    #[error("queue directory {path} is locked by another handle")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The queue directory exists and group or others can read or write
    /// it: a queue holds the user's unsent work, so it is refused unless
    /// [`QueueOptions::allow_shared_directory`](crate::QueueOptions) says
    /// otherwise. `chmod 700` the directory, or let the library create it.
    #[error("queue directory {path} has mode {mode:o}: group or others can read or write it (chmod 700 it, or set allow_shared_directory)")]
    SharedDirectory {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory has no format marker: it is not a queue (nothing in
    /// it was touched).
    #[error("not a cpc-sync queue: {} (no format marker)", path.display())]
    NotAQueue {
        /// The directory.
        path: PathBuf,
    },
    /// The directory is not a queue, or was written by a newer format.
    #[error("{path} is not a usable queue: {reason}")]
    Format {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// An I/O error.
    #[error("i/o error during {context}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An error from the SQLite backend.
    #[error("sqlite error during {context}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An error from the sled backend.
    #[error("sled error during {context}")]
    Sled {
        /// What the store was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record could not be encoded.
    #[error("encode failed")]
    Encode(#[source] cpc_core::EnvelopeError),
}

/// `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
