//! A pull answer is held to the client's page rules (§7.3, §7.4) before
//! anything of it reaches the engine: a hostile or broken server's page is
//! a `Protocol` error, whole. Own writes are recognised by origin, and the
//! highest head seen travels as `known`; a 409 says where the server is.

use cpc_core::{PullCursor, PullQuery, RemotePosition, Transport, TransportError};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{self, transport, CLIENT};

const STORE: &str = "5f0c2a9e7b3d4c18a6e2f1d09b8c7a64";

fn change(seq: u64, id: &str, client: &str) -> Value {
    json!({
        "seq": seq, "entity": {"collection": "notes", "id": id}, "version": seq,
        "deleted": false, "payload": "eyJ0Ijoibm90ZSJ9",
        "timestamp": {"wall_ms": 1767229200000u64, "logical": 0, "node": "7f3a000000000001"},
        "node": "7f3a000000000001",
        "origin": {"client_id": client, "op": "01KDVH35M00000002Y98FGS6SQ"}
    })
}

fn position(seq: u64) -> Value {
    json!({"store_id": STORE, "seq": seq, "fp": format!("{:016x}", seq * 7)})
}

/// A good change page after seq 3: seqs 4 and 5, one of them this
/// client's, more to come.
fn good_page() -> Value {
    json!({
        "changes": [change(4, "n4", CLIENT), change(5, "n5", "dev-other")],
        "cursor": position(5),
        "has_more": true,
        "reset": null,
        "snapshot": null,
        "head": position(9),
    })
}

async fn serving(page: Value) -> MockServer {
    let server = support::server().await;
    Mock::given(method("POST"))
        .and(path("/v1/pull"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(serde_json::to_vec(&page).unwrap(), "application/json"),
        )
        .mount(&server)
        .await;
    server
}

fn query_after(seq: u64) -> PullQuery {
    PullQuery {
        cursor: Some(PullCursor {
            position: RemotePosition {
                store_id: STORE.into(),
                seq,
                fp: seq * 7,
            },
            after: None,
        }),
        known: None,
        wait: std::time::Duration::ZERO,
        limit: 100,
        collections: None,
    }
}

async fn pulled_requests(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r: &&Request| r.url.path() == "/v1/pull")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_good_page_maps_own_writes_and_each_request_sends_its_query_known() {
    let server = serving(good_page()).await;
    let t = transport(&server);
    let page = t.pull(&query_after(3)).await.unwrap();
    assert_eq!(page.changes.len(), 2);
    assert!(page.changes[0].own_op.is_some(), "this client's change");
    assert!(page.changes[1].own_op.is_none(), "another client's change");
    assert_eq!((page.cursor.position.seq, page.head.seq), (5, 9));
    // The next request carries the `known` its query holds, here the head
    // the engine saw (the stand-in answers the same page again, which is
    // refused: it is not above the cursor).
    let mut next = query_after(5);
    next.known = Some(page.head.clone());
    let again = t.pull(&next).await;
    assert!(
        matches!(again, Err(TransportError::Protocol(_))),
        "{again:?}"
    );
    let sent = pulled_requests(&server).await;
    assert_eq!(sent[0]["known"], Value::Null);
    assert_eq!(sent[1]["known"], position(9));
    assert_eq!(sent[1]["cursor"]["seq"], json!(5));
}

/// A change to a good page that breaks it.
type Edit = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn pages_that_break_the_rules_are_protocol_errors() {
    let cases: Vec<(&str, Edit)> = vec![
        (
            "out of order",
            Box::new(|p| {
                let changes = p["changes"].as_array_mut().unwrap();
                changes.swap(0, 1);
            }),
        ),
        (
            "a gap",
            Box::new(|p| {
                p["changes"][1] = change(6, "n6", "dev-other");
                p["cursor"] = position(6);
            }),
        ),
        (
            "a cursor going back",
            Box::new(|p| p["cursor"] = position(2)),
        ),
        (
            "has_more without progress",
            Box::new(|p| {
                p["changes"] = json!([]);
                p["cursor"] = position(3);
            }),
        ),
        (
            "an unknown reset reason",
            Box::new(|p| p["reset"] = json!({"reason": "because"})),
        ),
        (
            "payload null without deleted",
            Box::new(|p| p["changes"][0]["payload"] = Value::Null),
        ),
        (
            "a page over max_bytes",
            Box::new(|p| p["padding"] = json!("x".repeat(4_300_000))),
        ),
        (
            "another store in the cursor",
            Box::new(|p| p["cursor"]["store_id"] = json!("another")),
        ),
    ];
    for (what, edit) in cases {
        let mut page = good_page();
        edit(&mut page);
        let server = serving(page).await;
        match transport(&server).pull(&query_after(3)).await {
            Err(TransportError::Protocol(_)) => {}
            other => panic!("{what}: expected a protocol error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_409_is_history_diverged_and_each_pull_sends_the_known_of_its_query() {
    let server = support::server().await;
    let problem = json!({
        "type": "urn:cpc-sync:problem:history_diverged", "title": "History diverged",
        "status": 409, "detail": "the server went back in time", "code": "history_diverged",
        "head": position(7), "known": position(9)
    });
    Mock::given(method("POST"))
        .and(path("/v1/pull"))
        .respond_with(ResponseTemplate::new(409).set_body_raw(
            serde_json::to_vec(&problem).unwrap(),
            "application/problem+json",
        ))
        .mount(&server)
        .await;
    let t = transport(&server);
    let mut query = query_after(3);
    query.known = Some(RemotePosition {
        store_id: STORE.into(),
        seq: 9,
        fp: 63,
    });
    let head = match t.pull(&query).await {
        Err(TransportError::HistoryDiverged { head }) => head,
        other => panic!("expected history_diverged, got {other:?}"),
    };
    assert_eq!(head.seq, 7);
    // The transport keeps no position: the engine keeps sending its own
    // until it has re-queued what it retained, then the head. A query
    // without one sends none.
    query.known = None;
    let _ = t.pull(&query).await;
    query.known = Some(head);
    let _ = t.pull(&query).await;
    let sent = pulled_requests(&server).await;
    assert_eq!(sent[0]["known"], position(9));
    assert_eq!(sent[1]["known"], serde_json::Value::Null);
    assert_eq!(sent[2]["known"], position(7));
}
