//! Findings of a hostile client against the release server, over raw
//! loopback sockets: half-sent request headers and idle keep-alive
//! connections were kept for ever, connections had no cap, an answer
//! nobody read held its memory (and, now, its pull slot) for ever, and a
//! shutdown waited for every stuck client. Each limit is set short here;
//! the bounds the tests wait within are long, so that only a missing limit
//! fails them.

use std::net::SocketAddr;
use std::time::Duration;

use cpc_server::{RunningServer, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

use crate::support::*;

/// How long a test waits for what a limit must cause within a fraction of
/// it: far above every limit set here, far below the limits' defaults.
const BOUND: Duration = Duration::from_secs(10);

/// A limit long enough never to be what a test meets.
const LONG: Duration = Duration::from_secs(120);

const CLIENT: &str = "dev-big";

/// A configuration whose connection limits are all [`LONG`]: each test
/// shortens the one it proves.
fn config(db: &Db) -> ServerConfig {
    let mut config = db.config();
    config.header_read_timeout = LONG;
    config.send_timeout = LONG;
    config.shutdown_deadline = LONG;
    // Pages of 16 MiB: far more than the client's receive buffer and the
    // server's send buffer (4 MiB at most by default) together.
    config.pull_limits.max_pull_bytes = 16 << 20;
    // The probes meet the caps, never the rate limit.
    config.rate = cpc_server::RateLimit {
        per_second: 1000.0,
        burst: 1000.0,
    };
    config
}

/// Reads until the server closes the connection (end of stream or reset);
/// the bytes read. Panics if it is still open after [`BOUND`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection is still open after {BOUND:?} ({} bytes read)",
                got.len()
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A pull of everything from nothing, as JSON.
fn pull_request(max_bytes: u64) -> Value {
    json!({"protocol": 1, "client_id": CLIENT, "known": null, "cursor": null,
           "limit": 1000, "max_bytes": max_bytes, "wait_ms": 0, "collections": null})
}

/// 20 changes of 700,000 payload bytes (933,336 in base64): a page of
/// 16 MiB holds 17 of them, about 15.9 MB.
async fn seed_large_changes(server: &RunningServer) {
    let payload = "x".repeat(700_000);
    for batch in 0..4u128 {
        let ops = (0..5u128)
            .map(|i| {
                let n = batch * 5 + i + 1;
                op(n, &format!("big-{n}"), &payload, None)
            })
            .collect();
        let (status, answer) = push(server, &push_body(CLIENT, ops)).await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// A client that asks for a 16 MiB page and never reads it: a receive
/// buffer of a few KiB, and only the answer's head read (so the server has
/// built the page and started sending). The stream and the answer's
/// `Content-Length`.
async fn never_reading_pull(addr: SocketAddr) -> (TcpStream, usize) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = pull_request(16 << 20).to_string();
    let head = format!(
        "POST /v1/pull HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = timeout(BOUND, stream.read(&mut byte))
            .await
            .expect("the answer's head within the bound")
            .unwrap();
        assert_eq!(n, 1, "closed before the answer's head");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    assert!(length > 15_000_000, "a page of {length} bytes");
    (stream, length)
}

/// A small pull on a fresh connection: its status and, for a refusal, the
/// problem (a page is not worth printing).
async fn probe_pull(server: &RunningServer) -> (u16, Value) {
    let (status, body) = pull_raw(server, &pull_request(2 << 20)).await;
    if status == 200 {
        return (status, Value::Null);
    }
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_that_trickles_is_cut_after_the_header_timeout() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = config(&db);
    config.header_read_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    // A byte every 50 ms: each read makes progress, the headers never end.
    let header = b"POST /v1/pull HTTP/1.1\r\nhost: x\r\nx-slow: "
        .iter()
        .copied();
    let mut header = header.chain(std::iter::repeat(b'a'));
    let deadline = Instant::now() + BOUND;
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "a trickling header still open after {BOUND:?}"
        );
        let byte = header.next().unwrap();
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        match timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => panic!(
                "an answer to a request never sent: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = config(&db);
    config.header_read_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"cpc-sync ok\n") {
        let n = timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("the health answer within the bound")
            .unwrap();
        assert_ne!(n, 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    // Kept alive after the answer, then closed for idling.
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_a_connection_is_answered_503_and_health_answers_once_one_closes() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = config(&db);
    config.max_connections = 2;
    config.metrics_token = Some(cpc_server::MetricsToken::new(METRICS_TOKEN).unwrap());
    let server = start_with(config).await;
    // Accepted in the order they connected: the first two take the slots.
    let first = TcpStream::connect(server.addr()).await.unwrap();
    let _second = TcpStream::connect(server.addr()).await.unwrap();
    let mut third = TcpStream::connect(server.addr()).await.unwrap();
    let answer = String::from_utf8(read_until_closed(&mut third).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the cap: {answer:?}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: "), "{answer}");
    assert!(lower.contains("connection: close"), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let problem: Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["code"], "unavailable", "{problem}");
    assert!(problem["retry_after_ms"].as_u64().unwrap() >= 1000);

    // One closes: its slot comes back (as soon as the server has seen the
    // close), and health answers on a fresh connection.
    drop(first);
    let deadline = Instant::now() + BOUND;
    let client = loop {
        // A client of its own each time: a refused one's connection is
        // closed, and the one that gets in keeps its slot (keep-alive).
        let client = reqwest::Client::new();
        let health = client
            .get(format!("{}/v1/health", base(&server)))
            .send()
            .await;
        if let Ok(r) = health {
            if r.status() == 200 {
                assert_eq!(r.text().await.unwrap(), "cpc-sync ok\n");
                break client;
            }
            assert_eq!(r.status(), 503);
        }
        assert!(
            Instant::now() < deadline,
            "health still refused {BOUND:?} after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let metrics = client
        .get(format!("{}/metrics", base(&server)))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cpc_requests_total{route=\"connection\",status=\"503\"}"),
        "refusals are counted: {metrics}"
    );
    server.shutdown().await.unwrap();
}

/// A pull whose answer is never read still holds what `configure` makes
/// scarce: a probe pull is refused, its detail naming `scarce`.
async fn a_stuck_answer_holds(configure: impl FnOnce(&mut cpc_server::ServerConfig), scarce: &str) {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = config(&db);
    configure(&mut config);
    config.shutdown_deadline = Duration::from_millis(200);
    let server = start_with(config).await;
    seed_large_changes(&server).await;
    let (_stuck, _) = never_reading_pull(server.addr()).await;
    // The handler has returned the page; the client has read a few KiB of
    // it. What it holds is still taken.
    let (status, answer) = probe_pull(&server).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "unavailable", "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains(scarce),
        "{answer}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_answer_holds_its_pull_slot_until_it_is_sent() {
    a_stuck_answer_holds(|c| c.max_concurrent_pulls = 1, "pulls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_answer_holds_its_bytes_of_the_budget_until_it_is_sent() {
    // One full page: the stuck one leaves less than the probe's 2 MiB.
    a_stuck_answer_holds(|c| c.max_pull_bytes_in_flight = 16 << 20, "bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_after_the_send_timeout_and_its_slot_and_bytes_return() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = config(&db);
    config.max_concurrent_pulls = 1;
    config.max_pull_bytes_in_flight = 16 << 20;
    config.send_timeout = Duration::from_millis(300);
    let server = start_with(config).await;
    seed_large_changes(&server).await;
    let (mut stuck, length) = never_reading_pull(server.addr()).await;
    // Refused while the stuck answer holds the slot and the bytes; then,
    // once the send timeout has cut it, served.
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, answer) = probe_pull(&server).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            Instant::now() < deadline,
            "pulls still refused {BOUND:?} after a client stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stuck client gets what was in flight, then the end: not the page.
    let rest = read_until_closed(&mut stuck).await;
    assert!(
        rest.len() < length,
        "the whole page ({length} bytes) went to a client that did not read"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_stuck_connections_at_its_deadline() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let mut config = config(&db);
    config.shutdown_deadline = Duration::from_millis(300);
    let server = start_with(config).await;
    seed_large_changes(&server).await;
    let addr = server.addr();
    let (mut never_reads, _) = never_reading_pull(addr).await;
    let mut half_header = TcpStream::connect(addr).await.unwrap();
    half_header
        .write_all(b"POST /v1/push HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = timeout(BOUND, idle.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let started = Instant::now();
    timeout(BOUND, server.shutdown())
        .await
        .unwrap_or_else(|_| panic!("shutdown still waiting after {BOUND:?}"))
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited for its deadline"
    );
    // Every one of them is closed.
    read_until_closed(&mut never_reads).await;
    read_until_closed(&mut half_header).await;
    read_until_closed(&mut idle).await;
}
