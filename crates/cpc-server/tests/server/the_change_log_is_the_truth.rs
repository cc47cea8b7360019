//! The change log: gapless seq in commit order under concurrent pushers,
//! durable across a restart, exported as JSON lines.

use std::collections::BTreeSet;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_pushers_get_a_gapless_log_with_every_op_once() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.rate = cpc_server::RateLimit {
        per_second: 10_000.0,
        burst: 10_000.0,
    };
    let server = std::sync::Arc::new(start_with(config).await);
    let mut tasks = Vec::new();
    for client in 0..16u128 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            for batch in 0..5u128 {
                let ops = (0..8u128)
                    .map(|i| {
                        op(
                            client << 64 | batch << 8 | i,
                            &format!("c{client}-{i}"),
                            "x",
                            None,
                        )
                    })
                    .collect();
                let (status, answer) =
                    push(&server, &push_body(&format!("dev-{client}"), ops)).await;
                assert_eq!(status, 200, "{answer}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let server = std::sync::Arc::into_inner(server).unwrap();
    server.shutdown().await.unwrap();
    let log = dir.exported().await;
    assert_eq!(log.len(), 16 * 5 * 8);
    let seqs: Vec<u64> = log.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=640).collect::<Vec<_>>(), "gapless, in order");
    let ops: BTreeSet<(String, String)> = log
        .iter()
        .map(|l| {
            (
                l["origin"]["client_id"].to_string(),
                l["origin"]["op"].to_string(),
            )
        })
        .collect();
    assert_eq!(ops.len(), 640, "every op exactly once");
    // Per entity, versions follow seq.
    let mut last = std::collections::HashMap::new();
    for l in &log {
        let v = l["version"].as_u64().unwrap();
        let prev = last.insert(l["entity"]["id"].to_string(), v).unwrap_or(0);
        assert!(v > prev);
    }
}

#[tokio::test]
async fn acknowledged_ops_survive_a_restart_and_replay_as_already_applied() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    let body = push_body("dev-1", vec![op(1, "a", "x", None), op(2, "b", "y", None)]);
    let (_, first) = push(&server, &body).await;
    let store_id = first["head"]["store_id"].clone();
    server.shutdown().await.unwrap();
    let server = start(&dir).await;
    let (_, again) = push(&server, &body).await;
    assert_eq!(outcome_of(&again, 1).0, "already_applied");
    assert_eq!(again["head"], first["head"]);
    assert_eq!(again["head"]["store_id"], store_id);
    // The log says the same, fingerprints included.
    let log = dir.exported().await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[1]["fp"], first["head"]["fp"]);
    assert_eq!(log[0]["payload"], "eA==");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_server_on_the_same_directory_is_refused() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    if dir.is_postgres() {
        // Several instances on one database is what PostgreSQL is for.
        return;
    }
    let server = start(&dir).await;
    let second = cpc_server::start(dir.config()).await;
    let err = second.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("in use by another server"), "{err}");
    server.shutdown().await.unwrap();
}

#[test]
fn a_closed_store_gives_its_directory_back_while_still_referenced() {
    // The conformance suite's restart check once found the directory still
    // locked: shutdown had returned while an aborted task still held an
    // `Arc` of the store. Closing, not the last drop, must free the data.
    let dir = tempfile::tempdir().unwrap();
    let store = cpc_server::Store::open(dir.path(), Default::default()).unwrap();
    let store = std::sync::Arc::new(store);
    let straggler = std::sync::Arc::clone(&store);
    store.close();
    let again = cpc_server::Store::open(dir.path(), Default::default());
    assert!(again.is_ok(), "{:?}", again.err().map(|e| e.to_string()));
    drop(straggler);
}
