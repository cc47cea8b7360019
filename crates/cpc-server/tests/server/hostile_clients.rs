//! What a hostile client cannot do: hold every push or pull slot with one
//! token, guess tokens at full speed, make the two stores disagree with a
//! U+0000, or read the metrics without their own token.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Sends a request's head and one byte of its body, and leaves the rest
/// unsent: the request holds its slot while the server waits for the body.
async fn hold(addr: SocketAddr, path: &str, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// A pull of everything for `client`, from nothing.
fn pull_body(client: &str) -> Value {
    json!({"protocol": 1, "client_id": client, "cursor": null, "limit": 10,
           "max_bytes": 4_194_304, "wait_ms": 0, "collections": null})
}

/// Sends `body` to `path` with `token`; the status and the body.
async fn post(
    server: &cpc_server::RunningServer,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", base(server)))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A finding against the release server: 64 pushes of one token, each
/// sending one body byte, held every push slot, and every other client got
/// 503 for as long as they were renewed. Now one token holds at most its
/// share; the others' pushes and pulls go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holding_its_whole_share_leaves_the_other_tokens_their_slots() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = db.config();
    config.max_concurrent_pushes = 4;
    config.max_pushes_per_token = 2;
    config.max_concurrent_pulls = 4;
    config.max_pulls_per_token = 2;
    // The probes below must meet the caps, not the rate limit.
    config.rate = cpc_server::RateLimit {
        per_second: 1000.0,
        burst: 1000.0,
    };
    let server = start_with(config).await;
    for (path, good_body, probe_body) in [
        (
            "/v1/push",
            push_body("other", vec![op(1, "o1", "x", None)]),
            push_body("other", vec![op(2, "o2", "x", None)]),
        ),
        ("/v1/pull", pull_body("other"), pull_body("other")),
    ] {
        // TOKEN asks for the whole cap, with bodies that never come.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(hold(server.addr(), path, TOKEN).await);
        }
        // Once TOKEN's holds are in, its next request is refused at the
        // cap. (The probe is for a client TOKEN is not bound to: when it
        // gets through, it is a 403 that changes nothing.)
        let mut refused = false;
        for attempt in 1..=200u64 {
            let (status, answer) = post(&server, path, TOKEN, &probe_body).await;
            if status == 503 {
                assert_eq!(answer["code"], "unavailable", "{answer}");
                refused = true;
                break;
            }
            assert_eq!(status, 403, "{path}: the probe: {answer}");
            tokio::time::sleep(Duration::from_millis(5 * attempt.min(20))).await;
        }
        assert!(refused, "{path}: TOKEN's holds never filled its share");
        // Another token still gets through, for as long as TOKEN holds.
        let (status, answer) = post(&server, path, OTHER_TOKEN, &good_body).await;
        assert_eq!(status, 200, "{path}: another token's request: {answer}");
        drop(held);
    }
    server.shutdown().await.unwrap();
}

/// A finding: 400 wrong tokens at about 1,600/s, and no 429. Now an
/// address that failed too often is answered 429 with a wait, before any
/// token it sends is compared (a right one included).
#[tokio::test]
async fn failed_authentications_from_one_address_are_answered_429_before_any_token_is_compared() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = db.config();
    config.auth_failure_rate = cpc_server::RateLimit {
        per_second: 0.01,
        burst: 3.0,
    };
    let server = start_with(config).await;
    let body = push_body("dev-1", vec![op(1, "a", "x", None)]);
    for _ in 0..3 {
        let (status, answer) = push_as(&server, "a-wrong-token-guess", &body).await;
        assert_eq!(status, 401, "{answer}");
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/push", base(&server)))
        .bearer_auth("another-wrong-guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let seconds: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let ms: u64 = r.headers()["cpc-retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        ms >= 1000 && seconds == ms.div_ceil(1000),
        "{seconds} s, {ms} ms"
    );
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    assert_eq!(answer["retry_after_ms"], ms, "{answer}");
    // The limit is the address's: its right token waits too, for pull as
    // for push, and nothing was applied.
    let (status, _) = push(&server, &body).await;
    assert_eq!(status, 429);
    let (status, _) = post(&server, "/v1/pull", TOKEN, &pull_body("dev-1")).await;
    assert_eq!(status, 429);
    // Another address has its own bucket.
    let from_elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = from_elsewhere
        .post(format!("http://127.0.0.1:{}/v1/push", server.addr().port()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "another address is not limited");
    server.shutdown().await.unwrap();
}

/// A finding: U+0000 in `cursor.after` was answered 200 on SQLite and 503
/// (with an error logged per request) on PostgreSQL. Both now answer 400,
/// naming the member, as for a pushed key.
#[tokio::test]
async fn u0000_in_a_cursor_after_key_or_an_entity_id_is_400_on_every_store() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let server = start(&db).await;
    let (status, answer) = push(
        &server,
        &push_body("dev-1", vec![op(1, "n\u{0}1", "x", None)]),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["pointer"], "/ops/0/entity/id", "{answer}");
    let (status, page) = post(&server, "/v1/pull", TOKEN, &pull_body("dev-1")).await;
    assert_eq!(status, 200, "{page}");
    for (key, pointer) in [
        (
            json!({"collection": "notes", "id": "n\u{0}"}),
            "/cursor/after/id",
        ),
        (
            json!({"collection": "no\u{0}tes", "id": "n"}),
            "/cursor/after/collection",
        ),
    ] {
        let mut body = pull_body("dev-1");
        body["cursor"] = page["cursor"].clone();
        body["cursor"]["after"] = key;
        let (status, answer) = post(&server, "/v1/pull", TOKEN, &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "bad_request", "{answer}");
        assert_eq!(answer["pointer"], pointer, "{answer}");
    }
    server.shutdown().await.unwrap();
}

/// A finding: `/metrics` answered anyone on the API listener. Now it is
/// off (404) without a metrics token, and answers only that token (not a
/// client's).
#[tokio::test]
async fn metrics_need_their_own_token_and_are_off_without_one() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let get = |server: &cpc_server::RunningServer, token: Option<&str>| {
        let mut r = reqwest::Client::new().get(format!("{}/metrics", base(server)));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let server = start(&db).await;
    assert_eq!(get(&server, None).await, 404);
    assert_eq!(get(&server, Some(TOKEN)).await, 404);
    server.shutdown().await.unwrap();

    let mut config = db.config();
    config.metrics_token = Some(cpc_server::MetricsToken::new(METRICS_TOKEN).unwrap());
    let server = start_with(config).await;
    assert_eq!(get(&server, None).await, 401);
    assert_eq!(get(&server, Some(TOKEN)).await, 401);
    assert_eq!(get(&server, Some("metrics-token-012345678")).await, 401);
    assert_eq!(get(&server, Some(METRICS_TOKEN)).await, 200);
    server.shutdown().await.unwrap();
    assert!(cpc_server::MetricsToken::new("short").is_err());
}
