//! The per-operation rules of docs/protocol.md §6.3.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn applied_then_replayed_answers_the_first_result_and_adds_no_change() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    let body = push_body(
        "dev-1",
        vec![op(1, "a", "x", Some(0)), op(2, "b", "y", None)],
    );
    let (status, first) = push(&server, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        outcome_of(&first, 1),
        ("applied".into(), json!({"version": 1, "seq": 1}))
    );
    assert_eq!(
        outcome_of(&first, 2),
        ("applied".into(), json!({"version": 1, "seq": 2}))
    );
    assert_eq!(first["head"]["seq"], 2);
    let (_, again) = push(&server, &body).await;
    assert_eq!(
        outcome_of(&again, 1),
        ("already_applied".into(), json!({"version": 1, "seq": 1}))
    );
    assert_eq!(
        outcome_of(&again, 2),
        ("already_applied".into(), json!({"version": 1, "seq": 2}))
    );
    assert_eq!(again["head"], first["head"], "a replay adds no change");
    // The same id with other content is not silently dropped.
    let (_, reused) = push(
        &server,
        &push_body("dev-1", vec![op(1, "a", "other", Some(0))]),
    )
    .await;
    assert_eq!(outcome_of(&reused, 1).0, "rejected");
    assert_eq!(outcome_of(&reused, 1).1["code"], "op_id_reused");
    // Another client's op with that id is another operation.
    let (_, other) = push(&server, &push_body("dev-2", vec![op(1, "c", "x", None)])).await;
    assert_eq!(outcome_of(&other, 1).0, "applied");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_conflict_is_not_cached_and_the_resend_with_the_remote_version_applies() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    push(
        &server,
        &push_body("dev-1", vec![op(1, "a", "v1", Some(0))]),
    )
    .await;
    // Made on version 0, but the entity is at 1: conflict with the record.
    let stale = push_body("dev-2", vec![op(2, "a", "mine", Some(0))]);
    let (_, answer) = push(&server, &stale).await;
    let (kind, conflict) = outcome_of(&answer, 2);
    assert_eq!(kind, "conflict");
    assert_eq!(conflict["remote"]["version"], 1);
    assert_eq!(conflict["remote"]["payload"], "djE=");
    assert_eq!(conflict["remote"]["node"], "0000000000000001");
    // A base version ahead of the entity is a conflict too.
    let (_, ahead) = push(
        &server,
        &push_body("dev-2", vec![op(2, "a", "mine", Some(7))]),
    )
    .await;
    assert_eq!(outcome_of(&ahead, 2).0, "conflict");
    // Same op id, base_version = remote.version: applied (nothing cached).
    let (_, resent) = push(
        &server,
        &push_body("dev-2", vec![op(2, "a", "mine", Some(1))]),
    )
    .await;
    assert_eq!(
        outcome_of(&resent, 2),
        ("applied".into(), json!({"version": 2, "seq": 2}))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_bad_operation_does_not_take_the_batch_with_it() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.limits.max_payload_bytes = 8;
    config.limits.max_response_bytes = 1 << 20;
    let server = start_with(config).await;
    push(&server, &push_body("dev-1", vec![op(1, "x", "x", None)])).await;
    let body = push_body(
        "dev-1",
        vec![
            op(2, "a", "way too large", None),
            op(3, "b", "fits", None),
            op(4, "x", "stale", Some(0)),
            // Behind a conflicted op of its entity in this batch: waits.
            op(5, "x", "later", Some(1)),
        ],
    );
    let (status, answer) = push(&server, &body).await;
    assert_eq!(status, 200);
    assert_eq!(outcome_of(&answer, 2).1["code"], "payload_too_large");
    assert_eq!(outcome_of(&answer, 3).0, "applied");
    assert_eq!(outcome_of(&answer, 4).0, "conflict");
    assert_eq!(
        outcome_of(&answer, 5),
        ("retry_later".into(), json!({"after_ms": 0}))
    );
    // Rejections are not recorded either: after the limit is raised the
    // same op could be judged again (here: still too large, judged again).
    let (_, again) = push(
        &server,
        &push_body("dev-1", vec![op(2, "a", "way too large", None)]),
    )
    .await;
    assert_eq!(outcome_of(&again, 2).1["code"], "payload_too_large");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_delete_leaves_a_tombstone_whose_conflict_has_no_payload() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    push(&server, &push_body("dev-1", vec![op(1, "a", "x", None)])).await;
    let mut delete = op(2, "a", "", Some(1));
    delete["kind"] = json!("delete");
    let (_, answer) = push(&server, &push_body("dev-1", vec![delete])).await;
    assert_eq!(
        outcome_of(&answer, 2),
        ("applied".into(), json!({"version": 2, "seq": 2}))
    );
    let (_, stale) = push(&server, &push_body("dev-1", vec![op(3, "a", "y", Some(1))])).await;
    let (kind, conflict) = outcome_of(&stale, 3);
    assert_eq!(kind, "conflict");
    assert_eq!(conflict["remote"]["version"], 2);
    assert_eq!(conflict["remote"]["payload"], serde_json::Value::Null);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn later_operations_of_a_batch_see_what_earlier_ones_wrote() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    let body = push_body(
        "dev-1",
        vec![
            op(1, "x", "one", None),
            op(2, "x", "two", Some(1)),
            op(3, "y", "new", Some(0)),
            // Stale against the version op 2 wrote in this very batch.
            op(4, "x", "stale", Some(1)),
        ],
    );
    let (status, answer) = push(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome_of(&answer, 1).1["version"], 1);
    assert_eq!(outcome_of(&answer, 2).1["version"], 2);
    assert_eq!(outcome_of(&answer, 3).1["version"], 1);
    let (kind, conflict) = outcome_of(&answer, 4);
    assert_eq!(kind, "conflict");
    assert_eq!(conflict["remote"]["version"], 2);
    assert_eq!(
        conflict["remote"]["payload"], "dHdv",
        "the payload op 2 wrote"
    );
    assert_eq!(answer["head"]["seq"], 3);
    server.shutdown().await.unwrap();
}
