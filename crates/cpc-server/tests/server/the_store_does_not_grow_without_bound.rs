//! What a store keeps of past work: compaction reclaims the change rows
//! below its horizon (keeping only each position's fingerprint, for the
//! history check of §8), and `low_water` prunes a client's idempotency
//! rows (§6.7). Outside testing found every change row and idempotency
//! row of a 15,000-op churn kept after compaction, and `low_water`
//! accepted and ignored.

use serde_json::{json, Value};

use crate::support::{self, id, op, push, push_body};

const CLIENT: &str = "dev-1";

/// `n` edits of `records` records with `size`-byte payloads, then a
/// delete of each record: a churn that leaves nothing live.
async fn churn(server: &cpc_server::RunningServer, n: u128, records: u128, size: usize) -> u128 {
    let payload = "x".repeat(size);
    let mut next = 1u128;
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|i| op(next + i, &format!("r{}", i % records), &payload, None))
            .collect();
        let (status, answer) = push(server, &push_body(CLIENT, ops)).await;
        assert_eq!(status, 200, "{answer}");
    }
    next += n;
    let deletes: Vec<Value> = (0..records)
        .map(|r| {
            let mut d = op(next + r, &format!("r{r}"), "", None);
            d["kind"] = json!("delete");
            d
        })
        .collect();
    for chunk in deletes.chunks(64) {
        let (status, answer) = push(server, &push_body(CLIENT, chunk.to_vec())).await;
        assert_eq!(status, 200, "{answer}");
    }
    next + records
}

#[tokio::test]
async fn compaction_reclaims_the_change_rows_and_keeps_the_history_checkable() {
    let Some(db) = support::Db::fresh().await else {
        return;
    };
    let config = || {
        let mut c = db.config();
        c.rate.per_second = 1e6;
        c.rate.burst = 1e6;
        c
    };
    let server = support::start_with(config()).await;
    let n: u128 = std::env::var("CPC_CHURN_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let end = churn(&server, n, 5, 2048).await;
    let changes = (n + 5) as u64;
    // Sizes on disk after a clean stop (the WAL checkpointed and gone).
    server.shutdown().await.unwrap();
    let server = support::start_with(config()).await;
    let before = server.store().size_bytes().await.unwrap();
    // Everything is older than the end of time.
    let horizon = server.store().compact(u64::MAX).await.unwrap();
    assert_eq!(horizon, changes);
    server.shutdown().await.unwrap();
    let server = support::start_with(config()).await;
    let after = server.store().size_bytes().await.unwrap();
    eprintln!(
        "churn of {n} edits of 5 records (2 KiB) then 5 deletes: store {before} bytes before \
         compaction, {after} after"
    );
    let log = db.exported().await;
    assert_eq!(log.len() as u64, changes, "one line per position, still");
    assert!(log.iter().all(|l| l["compacted"] == json!(true)));
    assert!(
        log.iter()
            .all(|l| l.get("payload").is_none() && l.get("entity").is_none()),
        "a reclaimed change keeps its seq and fp only"
    );
    if !db.is_postgres() {
        // The pages go back to the file system (PostgreSQL keeps them for
        // reuse until its own vacuum).
        assert!(
            after < before / 2,
            "the store did not shrink: {before} -> {after} bytes"
        );
    }
    // A device that saw an old position is still recognised as on this
    // history (§8): its push is applied, not refused 409.
    let old = &log[10];
    let known = json!({
        "store_id": server.store().store_id(),
        "seq": old["seq"],
        "fp": old["fp"],
    });
    let mut body = push_body(CLIENT, vec![op(end, "after", "y", None)]);
    body["known"] = known.clone();
    let (status, answer) = push(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(support::outcome_of(&answer, end).0, "applied", "{answer}");
    // A forged fingerprint at the same position is still caught.
    let mut forged = known;
    forged["fp"] = json!("0123456789abcdef");
    let mut body = push_body(CLIENT, vec![op(end + 1, "after", "z", None)]);
    body["known"] = forged;
    let (status, _) = push(&server, &body).await;
    assert_eq!(status, 409);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn below_the_free_space_floor_or_at_the_size_cap_a_push_is_refused_with_a_long_wait() {
    let Some(db) = support::Db::fresh().await else {
        return;
    };
    let mut config = db.config();
    config.max_store_bytes = Some(1);
    let server = support::start_with(config).await;
    let (status, answer) = push(&server, &push_body(CLIENT, vec![op(1, "e1", "a", None)])).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], json!("unavailable"));
    assert!(
        answer["retry_after_ms"].as_u64().unwrap() >= 30_000,
        "{answer}"
    );
    assert!(answer["detail"]
        .as_str()
        .unwrap()
        .contains("storage is full"));
    server.shutdown().await.unwrap();
    if !db.is_postgres() {
        let mut config = db.config();
        config.min_free_bytes = u64::MAX;
        let server = support::start_with(config).await;
        let (status, _) = push(&server, &push_body(CLIENT, vec![op(2, "e2", "a", None)])).await;
        assert_eq!(status, 503);
        server.shutdown().await.unwrap();
    }
    // Within both, the same push goes through.
    let server = support::start(&db).await;
    let (status, _) = push(&server, &push_body(CLIENT, vec![op(3, "e3", "a", None)])).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn low_water_prunes_the_clients_idempotency_rows_only_on_an_answered_push() {
    let Some(db) = support::Db::fresh().await else {
        return;
    };
    let mut config = db.config();
    config.rate.per_second = 1e6;
    config.rate.burst = 1e6;
    let server = support::start_with(config).await;
    let first: Vec<Value> = (1..=3)
        .map(|n| op(n, &format!("e{n}"), "a", None))
        .collect();
    let (status, _) = push(&server, &push_body(CLIENT, first)).await;
    assert_eq!(status, 200);
    // A push answered 409 (a known position from another history) prunes
    // nothing, whatever its low_water.
    let mut refused = push_body(CLIENT, vec![op(10, "e10", "b", None)]);
    refused["low_water"] = json!(id(3));
    refused["known"] =
        json!({"store_id": server.store().store_id(), "seq": 1, "fp": "0123456789abcdef"});
    let (status, _) = push(&server, &refused).await;
    assert_eq!(status, 409);
    let (_, answer) = push(&server, &push_body(CLIENT, vec![op(1, "e1", "a", None)])).await;
    assert_eq!(support::outcome_of(&answer, 1).0, "already_applied");
    // Answered 200 with low_water = op 3: the rows of ops 1 and 2 go; a
    // replay of op 1 (which the client promised never to send) is no
    // longer recognised, op 3's still is.
    let mut body = push_body(CLIENT, vec![op(11, "e11", "c", None)]);
    body["low_water"] = json!(id(3));
    let (status, answer) = push(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    let (_, answer) = push(&server, &push_body(CLIENT, vec![op(3, "e3", "a", None)])).await;
    assert_eq!(support::outcome_of(&answer, 3).0, "already_applied");
    let (_, answer) = push(&server, &push_body(CLIENT, vec![op(1, "e1", "a", None)])).await;
    assert_eq!(support::outcome_of(&answer, 1).0, "applied", "{answer}");
    // Another client's rows are never touched by this one's low_water.
    let (status, _) = push(&server, &push_body("dev-2", vec![op(2, "x2", "a", None)])).await;
    assert_eq!(status, 200);
    let mut body = push_body(CLIENT, vec![op(12, "e12", "d", None)]);
    body["low_water"] = json!(id(1_000));
    push(&server, &body).await;
    let (_, answer) = push(&server, &push_body("dev-2", vec![op(2, "x2", "a", None)])).await;
    assert_eq!(support::outcome_of(&answer, 2).0, "already_applied");
    server.shutdown().await.unwrap();
}
