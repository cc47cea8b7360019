//! A remote that lies, then tells the truth: reordered, short, long and
//! mismatched answers, panics, hangs, absurd Retry-After hints, 100 MiB
//! remote records and `u64::MAX` versions. Once it is honest again every
//! operation is applied exactly once, in order per entity, `drained()`
//! resolves in bounded time and nothing healthy was quarantined.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cpc_core::SimClock;
use cpc_fault::{check_with, CheckOptions, RemoteOptions, SimulatedRemote};
use cpc_sync::conflict::LocalWins;
use cpc_sync::core::{
    HlcTimestamp, NodeId, OpOutcome, OperationId, OperationPriority, PushAnswer, PushOutcome,
    PushQuery, RemoteRecord, Transport, TransportError,
};
use cpc_sync::storage::{MemoryStorage, QueueOptions};
use cpc_sync::worker::StorageCalls;
use cpc_sync::SyncEngine;

use crate::support::{op, START_MS};

/// The lies, one per push, in this order; then the truth.
const LIES: usize = 9;

#[derive(Debug)]
struct Adversary {
    remote: SimulatedRemote,
    pushes: AtomicUsize,
}

impl Adversary {
    /// The remote's own answer (the query's `known` goes with it).
    async fn honest(&self, query: &PushQuery<'_>) -> Result<Vec<OpOutcome>, TransportError> {
        self.remote.push(query).await.map(|a| a.outcomes)
    }
}

fn conflict(version: u64, payload: Option<Vec<u8>>) -> PushOutcome {
    PushOutcome::Conflict {
        remote: RemoteRecord {
            version,
            timestamp: HlcTimestamp::new(u64::MAX >> 16, u32::MAX, NodeId(u64::MAX)),
            payload,
            node: NodeId(u64::MAX),
        },
    }
}

#[async_trait]
impl Transport for Adversary {
    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        self.lie(query).await.map(PushAnswer::from)
    }
}

impl Adversary {
    /// Lies in a new way on each of the first pushes, then tells the truth.
    async fn lie(&self, query: &PushQuery<'_>) -> Result<Vec<OpOutcome>, TransportError> {
        let batch = query.ops;
        let n = self.pushes.fetch_add(1, Ordering::SeqCst);
        let each = |outcome: &dyn Fn() -> PushOutcome| -> Vec<OpOutcome> {
            batch
                .iter()
                .map(|o| OpOutcome::new(o.id, outcome()))
                .collect()
        };
        match n {
            0 => {
                let mut answer = self.honest(query).await?;
                answer.reverse();
                Ok(answer)
            }
            1 => {
                let mut answer = self.honest(query).await?;
                answer.pop();
                Ok(answer)
            }
            2 => {
                let mut answer = self.honest(query).await?;
                let first = answer[0].clone();
                answer.push(first);
                Ok(answer)
            }
            3 => {
                let mut answer = self.honest(query).await?;
                answer[0].op = OperationId::from_u128(u128::MAX);
                Ok(answer)
            }
            4 => panic!("adversary panics"),
            5 => std::future::pending().await,
            6 => Err(TransportError::RateLimited {
                retry_after: Some(Duration::MAX),
            }),
            7 => Ok(each(&|| conflict(3, Some(vec![0u8; 100 * 1024 * 1024])))),
            8 => Ok(each(&|| conflict(u64::MAX, Some(b"remote".to_vec())))),
            _ => self.honest(query).await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_lying_remote_then_an_honest_one_applies_everything_once_in_order() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    let adversary = Arc::new(Adversary {
        remote: remote.clone(),
        pushes: AtomicUsize::new(0),
    });
    let engine = SyncEngine::builder()
        .storage(Arc::new(MemoryStorage::new(QueueOptions::default())))
        .storage_calls(StorageCalls::Inline)
        .transport_arc(adversary.clone())
        .resolver(LocalWins)
        .batch_size(8)
        .push_timeout(Duration::from_secs(20))
        .start_time_ms(START_MS)
        .seed(13)
        .start()
        .await
        .unwrap();
    let mut submitted = Vec::new();
    for i in 0..120 {
        let o = op(
            &engine,
            &format!("e{}", i % 15),
            OperationPriority::Normal,
            format!("edit {i}").as_bytes(),
        );
        submitted.push(cpc_fault::SubmittedRecord::new(
            &o,
            clock.elapsed(),
            cpc_fault::SubmitOutcome::Acknowledged,
        ));
        engine.submit(o).await.unwrap();
    }
    // The lies: every one is survived, the 100 MiB remote record in a
    // conflict too (resolved from its timestamps, stored without its body):
    // nothing is left for the application.
    tokio::time::timeout(Duration::from_secs(6 * 3600), engine.drained())
        .await
        .expect("drained within bounded virtual time")
        .unwrap();
    assert!(engine.dead_letters().await.unwrap().is_empty());
    assert!(adversary.pushes.load(Ordering::SeqCst) > LIES);
    let stats = engine.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead, stats.deferred, stats.quarantined),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    let report = check_with(
        &remote.apply_log(),
        &submitted,
        &CheckOptions {
            seed: 13,
            ..Default::default()
        },
    );
    assert!(report.passed, "{report}");
    assert_eq!(report.applies, 120, "every op applied exactly once");
    assert_eq!(engine.worker().in_flight(), 0);
    engine.shutdown().await.unwrap();
}
