//! `drained()` resolves once nothing sendable is left: what waits for the
//! application (a deferred or dead head and the operations behind it) is
//! reported by `stats()`, not waited for.

use cpc_storage::QueueStorageExt;
use std::sync::Arc;
use std::time::Duration;

use cpc_conflict::DeferAll;
use cpc_core::{HlcTimestamp, NodeId, OpOutcome, Operation, OperationPriority, PushOutcome};
use cpc_core::{RemoteRecord, Resolution};
use cpc_storage::QueueStorage;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn drained_resolves_with_a_deferred_head_and_the_edits_behind_it_reported_apart() {
    let s = storage();
    let c = clock();
    let h = hlc(&c);
    let head = enqueue(&s, &c, op(&h, "a", OperationPriority::Normal));
    let behind: Vec<_> = (0..2)
        .map(|_| enqueue(&s, &c, op(&h, "a", OperationPriority::Normal)))
        .collect();
    let other = enqueue(&s, &c, op(&h, "b", OperationPriority::Normal));
    let t = Scripted::new(Box::new(move |batch: &[Operation]| {
        Ok(batch
            .iter()
            .map(|o| {
                let outcome = if o.id == head {
                    PushOutcome::Conflict {
                        remote: RemoteRecord {
                            version: 2,
                            timestamp: HlcTimestamp::new(1, 0, NodeId(9)),
                            payload: None,
                            node: NodeId(9),
                        },
                    }
                } else {
                    PushOutcome::Applied { version: 1 }
                };
                OpOutcome::new(o.id, outcome)
            })
            .collect())
    }));
    let w = worker(&s, &t, &c)
        .resolver(Arc::new(DeferAll))
        .build()
        .unwrap();
    w.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), w.drained())
        .await
        .expect("drained() resolves although edits wait behind the deferred head")
        .unwrap();
    assert!(s.get(other).unwrap().is_none());
    let stats = s.stats().unwrap();
    assert_eq!(
        (stats.deferred, stats.pending, stats.blocked),
        (1, 2, 2),
        "{stats:?}"
    );
    // Settled by the application: the entity drains, in order.
    assert!(s.settle(head, Resolution::KeepRemote, c.now_ms()).unwrap());
    w.notify_changed();
    tokio::time::timeout(Duration::from_secs(60), w.drained())
        .await
        .unwrap()
        .unwrap();
    for id in &behind {
        assert!(s.get(*id).unwrap().is_none());
    }
    assert_eq!(s.stats().unwrap().pending, 0);
    w.shutdown().await.unwrap();
}
