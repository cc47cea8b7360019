//! Worker options.

use std::time::Duration;

use crate::error::{Result, WorkerError};

/// How the worker (and the `SyncEngine` facade) calls its
/// [`QueueStorage`](cpc_storage::QueueStorage).
///
/// Storage calls are synchronous. A store that syncs to disk may block for
/// milliseconds, which must not stall the async runtime, so by default every
/// call runs on tokio's blocking pool. A store that never blocks gains
/// nothing from that handoff and pays two thread switches per batch for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StorageCalls {
    /// Each call runs on tokio's blocking pool (`spawn_blocking`): for stores
    /// that fsync (`SqliteStorage`, `SledStorage`). The default.
    #[default]
    Blocking,
    /// Each call runs on the calling async task. For stores that never block
    /// (`MemoryStorage`), where it removes the thread handoffs; and for
    /// deterministic simulations on a paused current-thread runtime, where
    /// every step then happens on the runtime's one thread in program order
    /// (a blocking-pool completion arrives from another thread, at a moment
    /// the paused clock does not control). Do not use it with a store that
    /// may block on I/O: a call would stall every task of its runtime thread.
    Inline,
}

impl StorageCalls {
    /// Runs the storage call `f` on `storage` as this mode says: on the
    /// calling task, or on tokio's blocking pool. The one place the worker
    /// and the facade call their store from async code. `Err` only when a
    /// blocking-pool task panicked or was cancelled.
    pub async fn run<T, F>(
        self,
        storage: &std::sync::Arc<dyn cpc_storage::QueueStorage>,
        f: F,
    ) -> std::result::Result<cpc_storage::Result<T>, tokio::task::JoinError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn cpc_storage::QueueStorage) -> cpc_storage::Result<T> + Send + 'static,
    {
        match self {
            StorageCalls::Inline => Ok(f(storage.as_ref())),
            StorageCalls::Blocking => {
                let storage = std::sync::Arc::clone(storage);
                tokio::task::spawn_blocking(move || f(storage.as_ref())).await
            }
        }
    }

    /// Short lowercase name (`blocking`, `inline`).
    pub fn name(self) -> &'static str {
        match self {
            StorageCalls::Blocking => "blocking",
            StorageCalls::Inline => "inline",
        }
    }
}

/// Largest [`WorkerConfig::batch_size`].
pub const MAX_BATCH_SIZE: usize = 100_000;
/// Largest [`WorkerConfig::max_in_flight`].
pub const MAX_IN_FLIGHT: usize = 1024;
/// Largest [`WorkerConfig::event_capacity`].
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;
/// Longest duration any [`WorkerConfig`] field may hold: 7 days.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default of [`WorkerConfig::max_conflicts`].
pub const DEFAULT_MAX_CONFLICTS: u32 = 10;

/// Options of a [`SyncWorker`](crate::SyncWorker). Build with
/// `WorkerConfig::default()` and change what you need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Operations claimed and pushed together (default 64).
    pub batch_size: usize,
    /// Batches pushed concurrently (default 1). More than one keeps per-entity
    /// order because only an entity's head is claimable.
    pub max_in_flight: usize,
    /// A push taking longer counts as `TransportError::Timeout` for the whole
    /// batch (default 30 s; keep it below the store's lease timeout so an
    /// abandoned push does not outlive its lease).
    pub push_timeout: Duration,
    /// Longest `shutdown` waits for in-flight batches before abandoning them
    /// and returning their leases (default 10 s).
    pub shutdown_timeout: Duration,
    /// Upper bound of the random delay added to each waiting retry when the
    /// network comes back, on top of the monitor's `resume_after`, so retries
    /// are spread instead of firing together (default 5 s).
    pub reconnect_spread: Duration,
    /// Capacity of the event channel (default 1024).
    pub event_capacity: usize,
    /// Wait after a failed storage call before the loop tries again (default 1 s).
    pub storage_retry: Duration,
    /// Shortest sleep when the store reports a wake-up that is already due
    /// but nothing could be claimed; guards against a spin (default 50 ms).
    pub min_wakeup_interval: Duration,
    /// Seed of the worker's RNG (jitter); `None` seeds from entropy.
    pub seed: Option<u64>,
    /// Send only when the network monitor (if any) reports Online or
    /// Degraded; `Unknown` counts as sendable, so a monitor without sources
    /// learns from the worker's own reports (default true).
    pub respect_network: bool,
    /// How storage calls are made (default [`StorageCalls::Blocking`]).
    pub storage_calls: StorageCalls,
    /// An operation whose conflict is resolved keep-local or merged is
    /// resent after a backoff (the retry policy's, growing with each
    /// conflict in a row); at this many conflicts in a row it is deferred
    /// for the application instead, so two devices that both keep their own
    /// edit cannot loop forever (default 10; at least 1). Counted in memory:
    /// a restart starts the count over.
    pub max_conflicts: u32,
    /// Make every claim durable (`QueueStorage::flush`) before its batch
    /// is sent: one more sync per batch. A claim is otherwise committed
    /// without a sync (it survives a process crash, not a power loss).
    /// Coalescing needs it: a claim lost to a power loss after the
    /// remote applied the operation would let a later edit be merged into
    /// it. `SyncEngineBuilder::coalesce` turns it on (default false).
    pub durable_claims: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_size: 64,
            max_in_flight: 1,
            push_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            reconnect_spread: Duration::from_secs(5),
            event_capacity: 1024,
            storage_retry: Duration::from_secs(1),
            min_wakeup_interval: Duration::from_millis(50),
            seed: None,
            respect_network: true,
            storage_calls: StorageCalls::Blocking,
            max_conflicts: DEFAULT_MAX_CONFLICTS,
            durable_claims: false,
        }
    }
}

impl WorkerConfig {
    /// Checks every value against its documented range (see the
    /// constants [`MAX_BATCH_SIZE`], [`MAX_IN_FLIGHT`],
    /// [`MAX_EVENT_CAPACITY`] and [`MAX_DURATION`]); the error names the
    /// field. Within these bounds no instant the worker computes from a
    /// configured duration can overflow.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, field: &'static str, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(WorkerError::Config { field, reason })
            }
        };
        check(
            (1..=MAX_BATCH_SIZE).contains(&self.batch_size),
            "batch_size",
            "must be between 1 and 100000",
        )?;
        check(
            (1..=MAX_IN_FLIGHT).contains(&self.max_in_flight),
            "max_in_flight",
            "must be between 1 and 1024",
        )?;
        check(
            (1..=MAX_EVENT_CAPACITY).contains(&self.event_capacity),
            "event_capacity",
            "must be between 1 and 1048576",
        )?;
        check(
            self.max_conflicts >= 1,
            "max_conflicts",
            "must be at least 1",
        )?;
        let positive = |d: Duration| !d.is_zero() && d <= MAX_DURATION;
        check(
            positive(self.push_timeout),
            "push_timeout",
            "must be positive and at most 7 days",
        )?;
        check(
            self.shutdown_timeout <= MAX_DURATION,
            "shutdown_timeout",
            "must be at most 7 days",
        )?;
        check(
            self.reconnect_spread <= MAX_DURATION,
            "reconnect_spread",
            "must be at most 7 days",
        )?;
        check(
            positive(self.storage_retry),
            "storage_retry",
            "must be positive and at most 7 days",
        )?;
        check(
            positive(self.min_wakeup_interval),
            "min_wakeup_interval",
            "must be positive and at most 7 days",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_at_its_extreme_is_refused_with_its_field_named() {
        type Set = fn(&mut WorkerConfig, Duration);
        let fields: [(&str, Set); 5] = [
            ("push_timeout", |c, d| c.push_timeout = d),
            ("shutdown_timeout", |c, d| c.shutdown_timeout = d),
            ("reconnect_spread", |c, d| c.reconnect_spread = d),
            ("storage_retry", |c, d| c.storage_retry = d),
            ("min_wakeup_interval", |c, d| c.min_wakeup_interval = d),
        ];
        for (name, set) in fields {
            let mut c = WorkerConfig::default();
            set(&mut c, Duration::MAX);
            match c.validate() {
                Err(WorkerError::Config { field, .. }) => assert_eq!(field, name),
                other => panic!("{name} = Duration::MAX: {other:?}"),
            }
            let mut c = WorkerConfig::default();
            set(&mut c, MAX_DURATION);
            assert!(c.validate().is_ok(), "{name} at the bound is valid");
        }
        for bad in [
            WorkerConfig {
                batch_size: MAX_BATCH_SIZE + 1,
                ..WorkerConfig::default()
            },
            WorkerConfig {
                event_capacity: usize::MAX,
                ..WorkerConfig::default()
            },
            WorkerConfig {
                max_in_flight: 0,
                ..WorkerConfig::default()
            },
            WorkerConfig {
                storage_retry: Duration::ZERO,
                ..WorkerConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_is_valid_and_zero_batch_is_not() {
        assert!(WorkerConfig::default().validate().is_ok());
        let c = WorkerConfig {
            batch_size: 0,
            ..WorkerConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
