//! Worker overhead and end-to-end drain, each beside a same-run baseline.
//!
//! - `worker/overhead_memory_100k` vs `worker/store_loop_memory_100k`:
//!   `MemoryStorage` and a transport that answers at once; the time to
//!   drain 100,000 queued ops through `process_once` vs the store's own
//!   `claim_ready(64)` + `complete(acks)` loop. Worker overhead per op =
//!   (worker time − store loop time) / 100,000 (target ≤ 5 µs per op).
//!   `overhead_memory_100k` makes its storage calls on tokio's blocking pool
//!   (the default, `StorageCalls::Blocking`), `overhead_memory_inline_100k`
//!   on the worker's task (`StorageCalls::Inline`).
//! - `worker/drain_sqlite_group_commit_100k` vs
//!   `worker/store_loop_sqlite_group_commit_100k`: draining 100,000 queued
//!   ops through the worker vs the store's own claim + complete(Ack) loop,
//!   both on SQLite with GroupCommit (target ratio ≥ 0.5).
//! - `worker/drain_sqlite_group_commit_durable_claims_100k`: the same drain
//!   with `WorkerConfig::durable_claims` (what coalescing turns on: one
//!   more sync per batch), against `drain_sqlite_group_commit_100k`.
//!
//! `cargo bench -p cpc-benches --bench worker`

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cpc_core::TokioWallClock;
use cpc_core::{
    EntityKey, HybridClock, NodeId, OpOutcome, Operation, OperationKind, PushOutcome, Transport,
    TransportError,
};
use cpc_storage::{
    Completion, Durability, MemoryStorage, QueueOptions, QueueStorage, SqliteStorage,
};
use cpc_worker::{RetryPolicy, StorageCalls, SyncWorker, WorkerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

const OPS: usize = 100_000;
const START_MS: u64 = 1_700_000_000_000;

#[derive(Debug)]
struct Instant0;
#[async_trait]
impl Transport for Instant0 {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        Ok(batch
            .iter()
            .map(|op| OpOutcome::new(op.id, PushOutcome::Applied { version: 1 }))
            .collect())
    }
}

fn ops(n: usize) -> Vec<Operation> {
    let hlc = HybridClock::with_wall_clock(
        NodeId(1),
        Arc::new(cpc_core::ManualWallClock::new(START_MS)),
    );
    let mut rng = StdRng::seed_from_u64(1);
    (0..n)
        .map(|i| {
            let ts = hlc.now().unwrap_or_default();
            Operation::builder(
                EntityKey::new("bench", format!("e{}", i % 1_000)),
                OperationKind::Update,
            )
            .payload(vec![7u8; 64])
            .build_at(ts, &mut rng)
        })
        .collect()
}

fn fill(storage: &dyn QueueStorage, ops: &[Operation]) {
    for chunk in ops.chunks(10_000) {
        storage
            .enqueue_batch(chunk.to_vec(), START_MS)
            .unwrap_or_default();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Drains `storage` through a worker's `process_once`; returns the time.
fn drain_with_worker(
    rt: &tokio::runtime::Runtime,
    storage: Arc<dyn QueueStorage>,
    storage_calls: StorageCalls,
) -> Duration {
    drain_with(rt, storage, storage_calls, false)
}

/// [`drain_with_worker`], with `durable_claims` (what coalescing turns on).
fn drain_with(
    rt: &tokio::runtime::Runtime,
    storage: Arc<dyn QueueStorage>,
    storage_calls: StorageCalls,
    durable_claims: bool,
) -> Duration {
    rt.block_on(async move {
        let worker = SyncWorker::builder(storage, Arc::new(Instant0))
            .clock(TokioWallClock::starting_at(START_MS + 1))
            .retry_policy(RetryPolicy::default())
            .config(WorkerConfig {
                seed: Some(1),
                storage_calls,
                durable_claims,
                ..WorkerConfig::default()
            })
            .build()
            .unwrap_or_else(|e| panic!("worker: {e}"));
        let start = Instant::now();
        let mut done = 0;
        while done < OPS {
            let s = worker.process_once().await.unwrap_or_default();
            if s.attempted == 0 {
                break;
            }
            done += s.applied;
        }
        assert_eq!(done, OPS);
        start.elapsed()
    })
}

/// The store's own loop: `claim_ready(64)` then one `complete` of the acks
/// per batch, until empty; returns the time.
fn store_loop(storage: &dyn QueueStorage) -> Duration {
    let start = Instant::now();
    let mut done = 0;
    while done < OPS {
        let claimed = storage.claim_ready(START_MS + 1, 64).unwrap_or_default();
        if claimed.is_empty() {
            break;
        }
        let acks: Vec<Completion> = claimed.iter().map(|c| Completion::Ack(c.op.id)).collect();
        storage.complete(&acks, START_MS + 1).unwrap_or_default();
        done += acks.len();
    }
    assert_eq!(done, OPS);
    start.elapsed()
}

/// A fresh queue directory, private to this user as the stores require.
fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn sqlite(dir: &std::path::Path) -> SqliteStorage {
    let options = QueueOptions {
        durability: Durability::GroupCommit {
            max_delay: Duration::from_millis(1),
        },
        ..QueueOptions::default()
    };
    SqliteStorage::open_at(dir, options, START_MS).unwrap_or_else(|e| panic!("open: {e}"))
}

fn bench(c: &mut Criterion) {
    let all = ops(OPS);
    let rt = runtime();
    let mut group = c.benchmark_group("worker");
    group.sample_size(10);
    group.throughput(Throughput::Elements(OPS as u64));

    group.bench_function("overhead_memory_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let storage = Arc::new(MemoryStorage::new(QueueOptions::default()));
                fill(storage.as_ref(), &all);
                total += drain_with_worker(&rt, storage, StorageCalls::Blocking);
            }
            total
        })
    });

    group.bench_function("overhead_memory_inline_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let storage = Arc::new(MemoryStorage::new(QueueOptions::default()));
                fill(storage.as_ref(), &all);
                total += drain_with_worker(&rt, storage, StorageCalls::Inline);
            }
            total
        })
    });

    group.bench_function("store_loop_memory_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let storage = MemoryStorage::new(QueueOptions::default());
                fill(&storage, &all);
                total += store_loop(&storage);
            }
            total
        })
    });

    // A fresh SQLite queue of every op per iteration, drained by a worker.
    let drain_sqlite = |iters: u64, durable_claims: bool| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let dir = private_dir();
            let storage = Arc::new(sqlite(dir.path()));
            fill(storage.as_ref(), &all);
            total += drain_with(&rt, storage, StorageCalls::Blocking, durable_claims);
        }
        total
    };
    group.bench_function("drain_sqlite_group_commit_100k", |b| {
        b.iter_custom(|iters| drain_sqlite(iters, false))
    });
    // The price of coalescing on the drain: one more sync per batch.
    group.bench_function("drain_sqlite_group_commit_durable_claims_100k", |b| {
        b.iter_custom(|iters| drain_sqlite(iters, true))
    });

    group.bench_function("store_loop_sqlite_group_commit_100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = private_dir();
                let storage = sqlite(dir.path());
                fill(&storage, &all);
                total += store_loop(&storage);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
