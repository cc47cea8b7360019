//! The error type of `cpc-worker`.

use cpc_storage::StorageError;

/// Errors of the sync worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A storage call failed.
    #[error("storage call failed during {context}")]
    Storage {
        /// What the worker was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: StorageError,
    },
    /// A blocking storage task panicked or was cancelled.
    #[error("blocking storage task failed during {context}")]
    Task {
        /// What the worker was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// `start` was called on a worker that is already running.
    #[error("the worker is already running")]
    AlreadyRunning,
    /// The worker was shut down; it cannot be started again.
    #[error("the worker is shut down")]
    ShutDown,
    /// A setting of the worker's configuration is out of range.
    #[error("invalid worker configuration: `{field}` {reason}")]
    Config {
        /// The `WorkerConfig` field.
        field: &'static str,
        /// What it must be.
        reason: &'static str,
    },
}

impl WorkerError {
    pub(crate) fn storage(context: &'static str) -> impl FnOnce(StorageError) -> WorkerError {
        move |source| WorkerError::Storage { context, source }
    }

    /// True if the storage handle is poisoned (reopen needed).
    pub fn is_poisoned(&self) -> bool {
        matches!(
            self,
            WorkerError::Storage {
                source: StorageError::Poisoned,
                ..
            }
        )
    }
}

/// `Result` with [`WorkerError`].
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
