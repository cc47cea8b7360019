//! `status` on a queue a real engine left behind: the pull cursor, the
//! known server position, the acked journal and a regression it handled
//! (a restore of the remote) are all read back by the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use cpc_core::{EntityKey, MemorySink, NodeId, OperationKind, SimClock};
use cpc_fault::{RemoteOptions, SimulatedRemote};
use cpc_storage::RetainAcked;
use cpc_sync::worker::WorkerEvent;
use cpc_sync::SyncEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_an_engine_left_after_a_restore_of_its_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("queue");
    let remote = SimulatedRemote::new(RemoteOptions::default(), SimClock::start_now());
    let engine = SyncEngine::builder()
        .path(&dir)
        .transport_arc(Arc::new(remote.as_client(NodeId(1))))
        .node_id(NodeId(1))
        .remote_sink(Arc::new(MemorySink::new()))
        .retain_acked(Some(RetainAcked::default()))
        .start()
        .await
        .unwrap();
    let mut events = engine.subscribe();
    for i in 0..5 {
        engine
            .operation(
                EntityKey::new("notes", format!("n{i}")),
                OperationKind::Update,
            )
            .payload(format!("edit {i}"))
            .submit()
            .await
            .unwrap();
    }
    engine.drained().await.unwrap();
    while engine.pull_once().await.unwrap().has_more {}
    // The remote goes back to seq 2: three of the five are gone.
    assert_eq!(remote.restore(2).unwrap(), 3);
    let _ = engine.pull_once().await;
    let (requeued, unrecoverable) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(WorkerEvent::RemoteRegressed {
                requeued,
                unrecoverable,
                ..
            }) = events.recv().await
            {
                return (requeued, unrecoverable);
            }
        }
    })
    .await
    .expect("the engine reports the restore");
    assert_eq!((requeued, unrecoverable), (5, 0));
    engine.drained().await.unwrap();
    while engine.pull_once().await.unwrap().has_more {}
    engine.shutdown().await.unwrap();
    assert_eq!(
        remote.head().seq,
        5,
        "the three lost ones were pushed again"
    );

    let out = Command::cargo_bin("cpc-sync")
        .unwrap()
        .arg("status")
        .arg(&dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["counts"]["pending"], 0);
    assert_eq!(v["known"]["seq"], 5);
    assert_eq!(v["pull_cursor"]["seq"], 5);
    assert_eq!(v["regression_pending"], serde_json::Value::Null);
    let handled = &v["regressions"][0];
    assert_eq!(
        (
            &handled["known_seq"],
            &handled["head_seq"],
            &handled["requeued"]
        ),
        (
            &serde_json::json!(5),
            &serde_json::json!(2),
            &serde_json::json!(5)
        )
    );
    // Re-pushed, the five were acknowledged again: journaled twice over.
    assert_eq!(v["acked_journal"], 5);
}
