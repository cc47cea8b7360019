//! The one error type of the facade.

use cpc_storage::StorageError;
use cpc_worker::WorkerError;

/// Everything that can go wrong through a [`SyncEngine`](crate::SyncEngine).
///
/// Ask it questions rather than matching: [`is_user_recoverable`]
/// (the application or its user can fix it: a payload too large, a full
/// disk, a bad setting) and [`is_retryable`] (a transient system fault:
/// trying the same call again later may succeed). Causes are chained with
/// `#[source]`.
///
/// [`is_user_recoverable`]: Error::is_user_recoverable
/// [`is_retryable`]: Error::is_retryable
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload is larger than the configured limit; nothing was stored.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The operation is invalid (empty collection, key too long, ...);
    /// nothing was stored.
    #[error("invalid operation")]
    InvalidOperation(#[source] cpc_core::Error),
    /// The hybrid logical clock could not issue a timestamp.
    #[error("clock failure")]
    Clock(#[source] cpc_core::Error),
    /// The queue storage failed.
    #[error("storage failure")]
    Storage(#[source] StorageError),
    /// The sync worker failed.
    #[error("sync worker failure")]
    Worker(#[source] WorkerError),
    /// A backoff, budget or breaker setting was refused.
    #[error("invalid backoff configuration")]
    BackoffConfig(#[source] cpc_backoff::ConfigError),
    /// The builder was given an inconsistent or incomplete configuration;
    /// says which setting.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// `submit_batch` was given no operation.
    #[error("an empty batch was submitted")]
    EmptyBatch,
    /// The engine was shut down.
    #[error("the engine is shut down")]
    ShutDown,
    /// A blocking storage task panicked or was cancelled.
    #[error("blocking storage task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A pull call on an engine built without a
    /// [`remote_sink`](crate::SyncEngineBuilder::remote_sink).
    #[error("the engine has no remote sink: it only pushes")]
    NoRemoteSink,
    /// A page could not be pulled or applied; the cursor did not move.
    #[error("pull failed")]
    Pull(#[source] cpc_worker::PullError),
}

impl From<cpc_worker::PullError> for Error {
    fn from(e: cpc_worker::PullError) -> Self {
        Error::Pull(e)
    }
}

/// What is wrong with an engine's configuration, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No transport was given.
    #[error("a transport is required (`SyncEngineBuilder::transport`)")]
    MissingTransport,
    /// Neither a queue directory nor a storage was given.
    #[error("a queue is required (`SyncEngineBuilder::path` or `::storage`)")]
    MissingStorage,
    /// Both a queue directory and a storage were given.
    #[error("give either `SyncEngineBuilder::path` or `::storage`, not both")]
    PathAndStorage,
    /// A setting is out of range, or inconsistent with another.
    #[error("`{field}` {reason}")]
    Invalid {
        /// The setting (a `WorkerConfig` or `QueueOptions` field).
        field: &'static str,
        /// What it must be.
        reason: &'static str,
    },
}

impl Error {
    /// True if the application or its user can fix the cause: a payload too
    /// large or an invalid operation (change the input), a full disk (free
    /// space), a locked or foreign queue directory, a bad setting.
    pub fn is_user_recoverable(&self) -> bool {
        match self {
            Error::PayloadTooLarge { .. }
            | Error::InvalidOperation(_)
            | Error::BackoffConfig(_)
            | Error::Config(_)
            | Error::EmptyBatch
            | Error::NoRemoteSink => true,
            Error::Storage(e) => storage_user_recoverable(e),
            _ => false,
        }
    }

    /// True if the same call may succeed when tried again later without any
    /// change (a transient I/O error, a busy database, a full disk once
    /// space is freed, a task cancelled by a runtime shutting down). A
    /// poisoned store is not retryable: reopen it; nor is a task that
    /// panicked: the same call would panic again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage(e) => storage_retryable(e),
            Error::Pull(cpc_worker::PullError::Storage(e)) => storage_retryable(e),
            Error::Pull(_) => true,
            Error::Worker(WorkerError::Task { source, .. }) | Error::Task(source) => {
                source.is_cancelled()
            }
            _ => false,
        }
    }
}

fn storage_user_recoverable(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::PayloadTooLarge { .. }
            | StorageError::InvalidOperation(_)
            | StorageError::Duplicate(_)
            | StorageError::StorageFull(_)
            | StorageError::Locked { .. }
            | StorageError::Format { .. }
    )
}

fn storage_retryable(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::StorageFull(_)
            | StorageError::Locked { .. }
            | StorageError::Io { .. }
            | StorageError::Sqlite { .. }
            | StorageError::Sled { .. }
    )
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::PayloadTooLarge { size, max } => Error::PayloadTooLarge { size, max },
            other => Error::Storage(other),
        }
    }
}

impl From<WorkerError> for Error {
    /// Storage errors reach the application by one route,
    /// [`Error::Storage`] (or [`Error::PayloadTooLarge`]), whichever
    /// component met them; a bad worker setting is an [`Error::Config`].
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::ShutDown => Error::ShutDown,
            WorkerError::Storage { source, .. } => Error::from(source),
            WorkerError::Config { field, reason } => {
                Error::Config(ConfigError::Invalid { field, reason })
            }
            other => Error::Worker(other),
        }
    }
}

impl From<cpc_backoff::ConfigError> for Error {
    fn from(e: cpc_backoff::ConfigError) -> Self {
        Error::BackoffConfig(e)
    }
}

/// Maps a validation error of `cpc-core` onto the facade's variants.
pub(crate) fn invalid(e: cpc_core::Error) -> Error {
    match e {
        cpc_core::Error::PayloadTooLarge { size, max } => Error::PayloadTooLarge { size, max },
        other => Error::InvalidOperation(other),
    }
}

/// `Result` with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn questions_answer_by_cause() {
        let e = Error::PayloadTooLarge { size: 2, max: 1 };
        assert!(e.is_user_recoverable());
        assert!(!e.is_retryable());
        let e = Error::from(StorageError::Io {
            context: "enqueue",
            source: std::io::Error::other("disk went away"),
        });
        assert!(!e.is_user_recoverable());
        assert!(e.is_retryable());
        assert!(e.source().is_some());
        let e = Error::from(StorageError::Poisoned);
        assert!(!e.is_retryable());
        assert!(!e.is_user_recoverable());
        let e = Error::from(StorageError::StorageFull(std::io::Error::other("full")));
        assert!(e.is_user_recoverable() && e.is_retryable());
        assert!(matches!(
            Error::from(StorageError::PayloadTooLarge { size: 3, max: 2 }),
            Error::PayloadTooLarge { size: 3, max: 2 }
        ));
        assert!(matches!(
            Error::from(WorkerError::ShutDown),
            Error::ShutDown
        ));
        // One route for storage errors, whoever met them.
        let from_worker = Error::from(WorkerError::Storage {
            context: "claim",
            source: StorageError::Poisoned,
        });
        assert!(matches!(
            from_worker,
            Error::Storage(StorageError::Poisoned)
        ));
        assert!(matches!(
            Error::from(WorkerError::Config {
                field: "batch_size",
                reason: "must be between 1 and 100000"
            }),
            Error::Config(ConfigError::Invalid {
                field: "batch_size",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_panicked_task_is_not_retryable_a_cancelled_one_is() {
        let panicked = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        assert!(!Error::Task(panicked).is_retryable());
        let cancelled = || async {
            let pending = tokio::spawn(std::future::pending::<()>());
            pending.abort();
            pending.await.unwrap_err()
        };
        assert!(Error::Task(cancelled().await).is_retryable());
        // The same through the worker.
        let e = Error::from(WorkerError::Task {
            context: "claim",
            source: cancelled().await,
        });
        assert!(
            matches!(e, Error::Worker(WorkerError::Task { .. })),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let panicked = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let e = Error::from(WorkerError::Task {
            context: "claim",
            source: panicked,
        });
        assert!(!e.is_retryable() && !e.is_user_recoverable());
    }

    #[test]
    fn a_failed_pull_is_retryable_unless_its_store_is_poisoned() {
        use cpc_worker::PullError;
        let e = Error::from(PullError::Transport(cpc_core::TransportError::Timeout));
        assert!(matches!(e, Error::Pull(PullError::Transport(_))));
        assert!(e.is_retryable() && !e.is_user_recoverable());
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("pull failed: timed out")
        );
        assert!(Error::from(PullError::Refused("cursor goes back".into())).is_retryable());
        let busy = PullError::Storage(StorageError::Io {
            context: "cursor",
            source: std::io::Error::other("busy"),
        });
        assert!(Error::from(busy).is_retryable());
        assert!(!Error::from(PullError::Storage(StorageError::Poisoned)).is_retryable());
        // Neither a pull failure nor a shutdown is the user's to fix.
        assert!(!Error::ShutDown.is_user_recoverable() && !Error::ShutDown.is_retryable());
    }
}
