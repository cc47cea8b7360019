//! Whole-request answers (docs/protocol.md §6.2, §9.1): each a problem
//! body with its code, and nothing applied.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Status, headers and body (JSON when it parses) of an answer.
type Answer = (u16, reqwest::header::HeaderMap, Value);

async fn raw(
    server: &cpc_server::RunningServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", base(server)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn good() -> Vec<u8> {
    serde_json::to_vec(&push_body("dev-1", vec![op(1, "a", "x", None)])).unwrap()
}

async fn head_seq(server: &cpc_server::RunningServer) -> u64 {
    // A replay-free probe: push a fresh op and read the seq before it.
    let n = u128::from(rand::random::<u32>()) | (1 << 40);
    let (status, a) = push(
        server,
        &push_body("dev-probe", vec![op(n, "probe", "p", None)]),
    )
    .await;
    assert_eq!(status, 200, "{a}");
    a["head"]["seq"].as_u64().unwrap() - 1
}

#[tokio::test]
async fn every_refusal_is_a_problem_with_its_code_and_applies_nothing() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    // The least body a 1 KiB payload allows is 4·⌈1024/3⌉ + 20 KiB
    // (docs/protocol.md §3): 24 KiB is just above it.
    config.limits.max_body_bytes = 24 * 1024;
    config.limits.max_payload_bytes = 1024;
    config.limits.max_batch_ops = 2;
    let server = start_with(config).await;
    let post = reqwest::Method::POST;
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        (
            "no token",
            raw(&server, post.clone(), "/v1/push", None, json_ct, good()).await,
            401,
            "unauthorized",
        ),
        (
            "wrong token",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some("nope"),
                json_ct,
                good(),
            )
            .await,
            401,
            "unauthorized",
        ),
        (
            "foreign client",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(OTHER_TOKEN),
                json_ct,
                good(),
            )
            .await,
            403,
            "forbidden_client",
        ),
        (
            "text body",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(TOKEN),
                Some("text/plain"),
                good(),
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (
            "over the body limit, not JSON",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(TOKEN),
                json_ct,
                vec![b'x'; 25_000],
            )
            .await,
            413,
            "too_large",
        ),
        (
            "malformed",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(TOKEN),
                json_ct,
                b"{\"protocol\":1,".to_vec(),
            )
            .await,
            400,
            "bad_request",
        ),
        (
            "body version",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(TOKEN),
                json_ct,
                br#"{"protocol":2}"#.to_vec(),
            )
            .await,
            400,
            "unsupported_version",
        ),
        (
            "path version",
            raw(
                &server,
                post.clone(),
                "/v2/push",
                Some(TOKEN),
                json_ct,
                good(),
            )
            .await,
            400,
            "unsupported_version",
        ),
        (
            // No store can be asked to keep a NUL in a name (PostgreSQL's
            // text cannot), so none is.
            "a NUL in an entity id",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(TOKEN),
                json_ct,
                serde_json::to_vec(&push_body("dev-1", vec![op(6, "a\u{0}b", "x", None)])).unwrap(),
            )
            .await,
            400,
            "bad_request",
        ),
        (
            "too many ops",
            raw(
                &server,
                post.clone(),
                "/v1/push",
                Some(TOKEN),
                json_ct,
                serde_json::to_vec(&push_body(
                    "dev-1",
                    vec![
                        op(7, "a", "x", None),
                        op(8, "b", "x", None),
                        op(9, "c", "x", None),
                    ],
                ))
                .unwrap(),
            )
            .await,
            413,
            "too_large",
        ),
        (
            "unknown path",
            raw(
                &server,
                reqwest::Method::GET,
                "/v1/nothing",
                None,
                None,
                vec![],
            )
            .await,
            404,
            "not_found",
        ),
        (
            "wrong method",
            raw(
                &server,
                reqwest::Method::GET,
                "/v1/push",
                Some(TOKEN),
                None,
                vec![],
            )
            .await,
            405,
            "method_not_allowed",
        ),
    ];
    for (name, (status, headers, body), want_status, want_code) in cases {
        assert_eq!(status, want_status, "{name}: {body}");
        assert_eq!(body["code"], want_code, "{name}: {body}");
        assert_eq!(body["status"], want_status, "{name}");
        assert_eq!(
            body["type"],
            format!("urn:cpc-sync:problem:{want_code}"),
            "{name}"
        );
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{name}"
        );
        assert_eq!(
            headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{name}"
        );
        if want_status == 401 {
            assert!(headers.get("www-authenticate").is_some(), "{name}");
        }
        if want_code == "unsupported_version" {
            assert_eq!(body["supported"], json!([1]), "{name}");
        }
    }
    // None of the refused requests applied anything.
    assert_eq!(head_seq(&server).await, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flood_from_one_token_is_answered_429_with_a_wait() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.rate = cpc_server::RateLimit {
        per_second: 1.0,
        burst: 3.0,
    };
    let server = start_with(config).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for n in 0..6u128 {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/push", base(&server)))
            .bearer_auth(TOKEN)
            .json(&push_body("dev-1", vec![op(n, "a", "x", None)]))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = limited.unwrap();
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let ms: u64 = r.headers()["cpc-retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    assert!((500..=1500).contains(&ms), "{ms}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["retry_after_ms"], ms);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_that_never_finishes_is_cut_off_and_the_server_stays_up() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.request_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let head = format!(
        "POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"protocol\":1"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server must end a trickling request");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    // Still serving.
    let (status, _) = push(&server, &push_body("dev-1", vec![op(1, "a", "x", None)])).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_info_say_what_the_server_is() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    let r = reqwest::get(format!("{}/v1/health", base(&server)))
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.text().await.unwrap(), "cpc-sync ok\n");
    let info: Value = reqwest::get(format!("{}/v1/info", base(&server)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["protocols"], json!([1]));
    assert_eq!(info["limits"]["max_batch_ops"], 1000);
    assert_eq!(info["store_id"].as_str().map(str::len), Some(32));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_outcomes_and_latency() {
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.metrics_token = Some(cpc_server::MetricsToken::new(METRICS_TOKEN).unwrap());
    let server = start_with(config).await;
    push(
        &server,
        &push_body("dev-1", vec![op(1, "a", "x", None), op(2, "b", "y", None)]),
    )
    .await;
    push(&server, &push_body("dev-1", vec![op(1, "a", "x", None)])).await;
    let _ = raw(
        &server,
        reqwest::Method::POST,
        "/v1/push",
        None,
        None,
        vec![],
    )
    .await;
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", base(&server)))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "cpc_requests_total{route=\"push\",status=\"200\"} 2",
        "cpc_requests_total{route=\"push\",status=\"401\"} 1",
        "cpc_ops_total{outcome=\"applied\"} 2",
        "cpc_ops_total{outcome=\"already_applied\"} 1",
        "cpc_push_seconds_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("cpc_store_bytes ") && l != "cpc_store_bytes 0"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_over_limit_body_sent_whole_by_a_real_client_is_answered_413() {
    // reqwest (hyper) writes the whole body before reading the answer. The
    // server reads and drops an over-limit body (up to 4x the limit) before
    // answering, so such a client reads the 413 that tells it to split its
    // batch rather than a write error on a closed connection (hyper#2384;
    // not reproduced on this loopback, where the kernel buffers absorb it).
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.limits.max_body_bytes = 8 << 20;
    let server = start_with(config).await;
    for size in [(8 << 20) + 1, 9_000_000, 20 << 20] {
        let (status, _, body) = raw(
            &server,
            reqwest::Method::POST,
            "/v1/push",
            Some(TOKEN),
            Some("application/json"),
            vec![b' '; size],
        )
        .await;
        assert_eq!(status, 413, "{size} bytes: {body}");
        assert_eq!(body["limit"], "max_body_bytes");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_answer_echoes_a_well_formed_request_id_or_makes_one() {
    // docs/protocol.md §2.1: a well-formed `Cpc-Request-Id` comes back as
    // sent; without one (or with a malformed one) the server makes its own.
    let Some(dir) = Db::fresh().await else {
        return;
    };
    let server = start(&dir).await;
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, id: Option<&str>, body: Vec<u8>| {
        let mut req = client
            .request(method, format!("{}{path}", base(&server)))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body);
        if let Some(id) = id {
            req = req.header("Cpc-Request-Id", id);
        }
        async move {
            let r = req.send().await.unwrap();
            let id = r
                .headers()
                .get("cpc-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), id)
        }
    };
    let made = |id: &Option<String>| {
        id.as_deref()
            .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let echoed = "Az09-._~req-1";
    let longest = "r".repeat(64);
    for (method, path, body, status) in [
        (get.clone(), "/v1/health", vec![], 200),
        (get.clone(), "/v1/info", vec![], 200),
        (post.clone(), "/v1/push", good(), 200),
        (post.clone(), "/v1/push", b"{".to_vec(), 400),
        (get.clone(), "/nowhere", vec![], 404),
    ] {
        let (s, id) = send(method.clone(), path, Some(echoed), body.clone()).await;
        assert_eq!((s, id.as_deref()), (status, Some(echoed)), "{path}");
        let (_, id) = send(method.clone(), path, Some(&longest), body.clone()).await;
        assert_eq!(id.as_deref(), Some(longest.as_str()), "{path}");
        let (s, first) = send(method.clone(), path, None, body.clone()).await;
        assert_eq!(s, status, "{path}");
        assert!(made(&first), "{path}: {first:?}");
        let (_, second) = send(method.clone(), path, None, body.clone()).await;
        assert!(made(&second), "{path}: {second:?}");
        assert_ne!(first, second, "{path}: a fresh id per request");
        for malformed in ["", "has space", "a/b", &"r".repeat(65)] {
            let (_, id) = send(method.clone(), path, Some(malformed), body.clone()).await;
            assert!(made(&id), "{path}: {malformed:?} answered {id:?}");
        }
    }
    // A refusal before anything is read carries it too.
    let r = client
        .post(format!("{}/v1/push", base(&server)))
        .header("Cpc-Request-Id", echoed)
        .body(good())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["cpc-request-id"], echoed);
    server.shutdown().await.unwrap();
}
