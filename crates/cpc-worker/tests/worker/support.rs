//! Test doubles: a scripted transport and helpers.

use cpc_storage::QueueStorageExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cpc_backoff::{BackoffExt, Exponential, Jitter};
use cpc_core::TokioWallClock;
use cpc_core::{
    EntityKey, HybridClock, NodeId, OpOutcome, Operation, OperationId, OperationKind,
    OperationPriority, PushOutcome, Transport, TransportError,
};
use cpc_storage::{MemoryStorage, QueueOptions};
use cpc_worker::{RetryPolicy, SyncWorker, SyncWorkerBuilder, WorkerConfig};

pub const START_MS: u64 = 1_700_000_000_000;

/// What the transport does with one push.
pub type Answer = Box<dyn Fn(&[Operation]) -> Result<Vec<OpOutcome>, TransportError> + Send + Sync>;

/// A transport answering from a script (then from a default), recording
/// every batch it saw.
pub struct Scripted {
    script: Mutex<VecDeque<Answer>>,
    default: Answer,
    pub calls: Mutex<Vec<Vec<OperationId>>>,
    /// Optional delay before answering (on tokio's clock).
    pub latency: Mutex<Option<Duration>>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl Scripted {
    pub fn new(default: Answer) -> Arc<Self> {
        Arc::new(Scripted {
            script: Mutex::new(VecDeque::new()),
            default,
            calls: Mutex::new(Vec::new()),
            latency: Mutex::new(None),
        })
    }

    pub fn applied() -> Arc<Self> {
        Self::new(all(|_| PushOutcome::Applied { version: 1 }))
    }

    pub fn then(&self, answer: Answer) {
        self.script.lock().unwrap().push_back(answer);
    }

    pub fn pushes(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn sent(&self) -> Vec<OperationId> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect()
    }
}

#[async_trait]
impl Transport for Scripted {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        self.calls
            .lock()
            .unwrap()
            .push(batch.iter().map(|op| op.id).collect());
        let latency = *self.latency.lock().unwrap();
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(answer) => answer(batch),
            None => (self.default)(batch),
        }
        .map(Into::into)
    }
}

/// The same outcome for every op of a batch.
pub fn all(f: impl Fn(&Operation) -> PushOutcome + Send + Sync + 'static) -> Answer {
    Box::new(move |batch| {
        Ok(batch
            .iter()
            .map(|op| OpOutcome::new(op.id, f(op)))
            .collect())
    })
}

pub fn fail(e: TransportError) -> Answer {
    Box::new(move |_| Err(e.clone()))
}

pub fn storage() -> Arc<MemoryStorage> {
    Arc::new(MemoryStorage::new(QueueOptions::default()))
}

pub fn clock() -> TokioWallClock {
    TokioWallClock::starting_at(START_MS)
}

pub fn hlc(clock: &TokioWallClock) -> HybridClock {
    HybridClock::with_wall_clock(NodeId(1), Arc::new(clock.clone()))
}

/// 1 s doubling to 8 s, no jitter, at most `attempts` attempts; no budget, no breaker.
pub fn plain_policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(Arc::new(
        Exponential::new(
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(8),
            Jitter::None,
        )
        .unwrap()
        .with_max_attempts(attempts),
    ))
}

pub fn worker(
    storage: &Arc<MemoryStorage>,
    transport: &Arc<Scripted>,
    clock: &TokioWallClock,
) -> SyncWorkerBuilder {
    SyncWorker::builder(storage.clone(), transport.clone())
        .clock(clock.clone())
        .retry_policy(plain_policy(5))
        .config(WorkerConfig {
            seed: Some(7),
            ..WorkerConfig::default()
        })
}

pub fn op(hlc: &HybridClock, entity: &str, priority: OperationPriority) -> Operation {
    Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
        .payload(entity.as_bytes().to_vec())
        .priority(priority)
        .build(hlc)
        .unwrap()
}

pub fn enqueue(storage: &Arc<MemoryStorage>, clock: &TokioWallClock, op: Operation) -> OperationId {
    let id = op.id;
    storage.enqueue(op, clock.now_ms()).unwrap();
    id
}

/// Installs a test-writer tracing subscriber (RUST_LOG filters it).
#[allow(dead_code)]
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
