//! What only PostgreSQL does: several instances on one database. A retry
//! that lands on the other instance is applied once; pushes spread over
//! instances get one gapless log; a push that cannot get its lock answers
//! `retry_later`; instances starting together migrate once; a long poll on
//! one instance wakes on a push to another; a database that would
//! acknowledge before its commits are durable is refused, and so is one a
//! newer server migrated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cpc_protocol::PullRequest;
use cpc_server::{PostgresConfig, RateLimit, RunningServer, ServerConfig};
use serde_json::Value;

use crate::support::{self, op, outcome_of, pull, push, push_body, Db};

/// An instance on `db`, without a rate limit in the way.
async fn instance(db: &Db) -> RunningServer {
    let mut config = db.config();
    config.rate = RateLimit {
        per_second: 100_000.0,
        burst: 100_000.0,
    };
    support::start_with(config).await
}

/// Runs one statement as the test's own client of the database.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sent_to_the_other_instance_at_once_is_applied_once() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let (a, b) = (instance(&db).await, instance(&db).await);
    for round in 0..20u128 {
        // The same batch to both instances at the same moment: a client
        // whose first try timed out and whose retry went elsewhere.
        let ops: Vec<Value> = (0..10u128)
            .map(|i| op(round << 8 | i, &format!("e{}", i % 4), "x", None))
            .collect();
        let body = push_body("dev-1", ops);
        let ((sa, ra), (sb, rb)) = tokio::join!(push(&a, &body), push(&b, &body));
        assert_eq!((sa, sb), (200, 200), "{ra}\n{rb}");
        for i in 0..10u128 {
            let n = round << 8 | i;
            let (ka, va) = outcome_of(&ra, n);
            let (kb, vb) = outcome_of(&rb, n);
            let mut kinds = [ka.as_str(), kb.as_str()];
            kinds.sort();
            assert_eq!(kinds, ["already_applied", "applied"], "op {n}: {ra}\n{rb}");
            assert_eq!(va["seq"], vb["seq"], "both answers name the one change");
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let log = db.exported().await;
    assert_eq!(log.len(), 200, "each op once");
    let seqs: Vec<u64> = log.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_spread_over_three_instances_get_one_gapless_log_in_each_entitys_order() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let instances = std::sync::Arc::new(vec![
        instance(&db).await,
        instance(&db).await,
        instance(&db).await,
    ]);
    let mut tasks = Vec::new();
    for client in 0..9u128 {
        let instances = std::sync::Arc::clone(&instances);
        tasks.push(tokio::spawn(async move {
            for batch in 0..6u128 {
                // Each batch to the next instance.
                let server = &instances[((client + batch) % 3) as usize];
                let ops = (0..8u128)
                    .map(|i| {
                        op(
                            client << 64 | batch << 8 | i,
                            &format!("c{client}-{}", i % 3),
                            "x",
                            None,
                        )
                    })
                    .collect();
                let (status, answer) =
                    push(server, &push_body(&format!("dev-{client}"), ops)).await;
                assert_eq!(status, 200, "{answer}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for server in std::sync::Arc::into_inner(instances).unwrap() {
        server.shutdown().await.unwrap();
    }
    let log = db.exported().await;
    let seqs: Vec<u64> = log.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=9 * 6 * 8).collect::<Vec<_>>(),
        "gapless, in order"
    );
    let ops: BTreeSet<&str> = log
        .iter()
        .map(|l| l["origin"]["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.len(), log.len(), "each op once");
    // Versions per entity climb by one in seq order: no lost update.
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &log {
        let v = versions
            .entry(l["entity"]["id"].as_str().unwrap())
            .or_default();
        *v += 1;
        assert_eq!(l["version"].as_u64().unwrap(), *v, "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_cannot_get_its_lock_in_time_answers_retry_later() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let url = db.url().unwrap().to_owned();
    let mut pg = PostgresConfig::new(&url);
    pg.lock_timeout = Duration::from_millis(300);
    let server = support::start_with(ServerConfig::with_postgres(pg, support::tokens())).await;
    // Another instance stalled mid-push: it holds the counter row.
    let mut holder = sql(&url).await;
    let stalled = holder.transaction().await.unwrap();
    stalled
        .execute("SELECT 1 FROM cpc_meta WHERE id = 1 FOR UPDATE", &[])
        .await
        .unwrap();
    let started = Instant::now();
    let (status, answer) = push(&server, &push_body("dev-1", vec![op(1, "e1", "x", None)])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome_of(&answer, 1).0, "retry_later", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after the lock timeout, not hanging: {:?}",
        started.elapsed()
    );
    stalled.rollback().await.unwrap();
    let (_, answer) = push(&server, &push_body("dev-1", vec![op(1, "e1", "x", None)])).await;
    assert_eq!(outcome_of(&answer, 1).0, "applied", "{answer}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_on_an_empty_database_migrate_once() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let starts = (0..4).map(|_| cpc_server::start(db.config()));
    let servers: Vec<RunningServer> = futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(|s| s.expect("every instance starts"))
        .collect();
    let ids: BTreeSet<String> = servers
        .iter()
        .map(|s| s.store().store_id().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one store: {ids:?}");
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_instance_wakes_on_a_push_to_another() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let (a, b) = (instance(&db).await, instance(&db).await);
    let (_, answer) = push(&a, &push_body("dev-1", vec![op(1, "e1", "x", None)])).await;
    assert_eq!(outcome_of(&answer, 1).0, "applied");
    // Catch up on b, then wait there.
    let mut req = PullRequest {
        protocol: 1,
        client_id: "dev-2".into(),
        known: None,
        cursor: None,
        limit: 100,
        max_bytes: 2 << 20,
        wait_ms: 0,
        collections: None,
    };
    let mut page = pull(&b, &req).await;
    while page.has_more {
        req.cursor = Some(page.cursor.clone());
        page = pull(&b, &req).await;
    }
    req.cursor = Some(page.cursor.clone());
    req.wait_ms = 20_000;
    let started = Instant::now();
    let waiting = tokio::spawn({
        let base = support::base(&b);
        let req = serde_json::to_value(&req).unwrap();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/pull"))
                .bearer_auth(support::TOKEN)
                .json(&req)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, answer) = push(&a, &push_body("dev-1", vec![op(2, "e1", "y", None)])).await;
    assert_eq!(outcome_of(&answer, 2).0, "applied");
    let woken = waiting.await.unwrap();
    assert_eq!(woken["changes"][0]["seq"], 2, "{woken}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken by the other instance's commit, not by its wait running out: {:?}",
        started.elapsed()
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_database_that_would_acknowledge_before_durable_commits_is_refused() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let url = db.url().unwrap().to_owned();
    let name = url.rsplit('/').next().unwrap().to_owned();
    sql(&url)
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    let refused = cpc_server::start(db.config()).await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("synchronous_commit is off"), "{err}");
    let mut pg = PostgresConfig::new(&url);
    pg.allow_async_commit = true;
    let allowed = cpc_server::start(ServerConfig::with_postgres(pg, support::tokens())).await;
    allowed
        .expect("allowed explicitly")
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_server_is_refused_and_left_alone() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let url = db.url().unwrap().to_owned();
    let config = PostgresConfig::new(&url);
    let limits = cpc_protocol::Limits::default();
    cpc_server::Store::connect(&config, limits, None)
        .await
        .unwrap()
        .close();
    // A schema version no build of this server has written yet.
    let client = sql(&url).await;
    client
        .batch_execute("UPDATE cpc_schema SET version = 1000 WHERE id = 1")
        .await
        .unwrap();
    let refused = cpc_server::Store::connect(&config, limits, None).await;
    let err = refused.err();
    assert!(
        matches!(err, Some(cpc_server::StoreError::Schema(1000))),
        "{err:?}"
    );
    assert_eq!(
        err.map(|e| e.to_string()).unwrap_or_default(),
        "schema version 1000 is newer than this server's; refusing to open"
    );
    // Refused inside the migration's transaction: nothing was changed.
    let row = client
        .query_one("SELECT version FROM cpc_schema WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1000);
}
