//! Batches are cut to the advertised `max_batch_ops` before sending, and
//! halved on a 413 (§6.9); the outcomes of the requests are joined.

use cpc_core::{Transport, TransportError};
use cpc_protocol::Limits;

use crate::support::PushOps as _;
use crate::support::{self, info_requests, on_push, ops, pushes, transport, Applier};

fn sizes(sent: &[(wiremock::Request, cpc_protocol::PushRequest)]) -> Vec<usize> {
    sent.iter().map(|(_, p)| p.ops.len()).collect()
}

/// A server advertising (and applying) at most two operations a request.
async fn serving_two_op_batches() -> wiremock::MockServer {
    let server = support::server_with(Limits {
        max_batch_ops: 2,
        ..Limits::default()
    })
    .await;
    on_push(&server, Applier { max_ops: 2 }).await;
    server
}

#[tokio::test]
async fn a_413_on_a_batch_of_four_sends_the_halves_and_joins_their_outcomes() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 2 }).await;
    let batch = ops(4);
    let outcomes = transport(&server).push_ops(&batch).await.unwrap();
    let matched = cpc_core::match_outcomes(&batch, outcomes).unwrap();
    assert_eq!(matched.len(), 4);
    let sent = pushes(&server).await;
    assert_eq!(sizes(&sent), [4, 2, 2]);
    // The halves are the batch, in order.
    let ids = |i: usize| sent[i].1.ops.iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!([ids(1), ids(2)].concat(), ids(0));
    // §4: the limits are asked for again after a 413.
    assert_eq!(info_requests(&server).await, 2);
}

#[tokio::test]
async fn halving_goes_on_until_the_server_accepts() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 1 }).await;
    let batch = ops(3);
    let outcomes = transport(&server).push_ops(&batch).await.unwrap();
    assert!(cpc_core::match_outcomes(&batch, outcomes).is_ok());
    assert_eq!(sizes(&pushes(&server).await), [3, 1, 2, 1, 1]);
}

#[tokio::test]
async fn a_single_operation_answered_413_is_a_server_error() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 0 }).await;
    let result = transport(&server).push_ops(&ops(2)).await;
    // 2 → 1 + 1: the first single op fails the push.
    assert_eq!(result, Err(TransportError::Server { status: 413 }));
    assert_eq!(sizes(&pushes(&server).await), [2, 1]);
}

#[tokio::test]
async fn a_batch_over_the_advertised_max_batch_ops_is_sent_in_several_requests() {
    let server = serving_two_op_batches().await;
    let batch = ops(5);
    let outcomes = transport(&server).push_ops(&batch).await.unwrap();
    assert!(cpc_core::match_outcomes(&batch, outcomes).is_ok());
    assert_eq!(sizes(&pushes(&server).await), [2, 2, 1], "no 413 needed");
    assert_eq!(info_requests(&server).await, 1, "the limits are cached");
}

#[tokio::test]
async fn a_batch_over_the_advertised_max_body_bytes_is_cut_before_sending() {
    let server = support::server_with(Limits {
        max_body_bytes: 700,
        ..Limits::default()
    })
    .await;
    on_push(&server, Applier { max_ops: 1000 }).await;
    let batch = ops(4);
    let outcomes = transport(&server).push_ops(&batch).await.unwrap();
    assert!(cpc_core::match_outcomes(&batch, outcomes).is_ok());
    // 4 operations encode to about 1 KiB, 2 to about 550 bytes: halved
    // once, before anything was sent (no 413 was needed).
    let sent = pushes(&server).await;
    assert_eq!(sizes(&sent), [2, 2]);
    assert!(sent.iter().all(|(r, _)| r.body.len() <= 700));
}

#[tokio::test]
async fn an_empty_batch_sends_nothing() {
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 1000 }).await;
    assert_eq!(transport(&server).push_ops(&[]).await, Ok(Vec::new()));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_cut_batch_sends_the_query_known_then_what_earlier_requests_answered() {
    let server = serving_two_op_batches().await;
    let batch = ops(5);
    let known = cpc_core::RemotePosition {
        store_id: "s1".into(),
        seq: 1,
        fp: 1,
    };
    let answer = transport(&server)
        .push(&cpc_core::PushQuery::new(&batch).known(Some(&known)))
        .await
        .unwrap();
    let sent = pushes(&server).await;
    let seqs: Vec<Option<u64>> = sent
        .iter()
        .map(|(_, p)| p.known.as_ref().map(|k| k.seq))
        .collect();
    // The stand-in answers a head of seq = the request's size: 2, 2, 1.
    assert_eq!(seqs, [Some(1), Some(2), Some(2)]);
    assert_eq!(
        answer.head.map(|h| (h.store_id, h.seq)),
        Some(("s1".to_owned(), 2)),
        "the highest head answered"
    );
    // A query without `known` sends none: the transport keeps nothing.
    let server = support::server().await;
    on_push(&server, Applier { max_ops: 8 }).await;
    let t = transport(&server);
    t.push(&cpc_core::PushQuery::new(&ops(1))).await.unwrap();
    t.push(&cpc_core::PushQuery::new(&ops(1))).await.unwrap();
    assert!(pushes(&server).await.iter().all(|(_, p)| p.known.is_none()));
}
