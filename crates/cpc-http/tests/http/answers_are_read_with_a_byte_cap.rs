//! A client caps the bytes it reads from any answer (§2.6): an answer over
//! `max_response_bytes` is a protocol error, announced or not. The answers
//! here are valid push answers padded with whitespace, so only the cap can
//! refuse them.

use std::sync::Arc;

use cpc_core::TransportError;
use cpc_http::{HttpConfig, HttpTransport, StaticToken};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::{Request, ResponseTemplate};

use crate::support::PushOps as _;
use crate::support::{self, applied_answer, on_push, ops, CLIENT, TOKEN};

const CAP: usize = 4096;

fn padded_answer(request: &[u8], padding: usize) -> Vec<u8> {
    let push = cpc_protocol::parse_push(request, &Default::default()).unwrap();
    let mut body = serde_json::to_vec(&applied_answer(&push)).unwrap();
    body.extend(std::iter::repeat_n(b' ', padding));
    body
}

fn capped_transport(base: String) -> HttpTransport {
    let config = HttpConfig {
        max_response_bytes: CAP,
        ..HttpConfig::new(base, CLIENT)
    };
    HttpTransport::new(config, Arc::new(StaticToken::new(TOKEN))).unwrap()
}

#[tokio::test]
async fn an_answer_whose_content_length_exceeds_the_cap_is_a_protocol_error() {
    let server = support::server().await;
    on_push(&server, |request: &Request| {
        ResponseTemplate::new(200)
            .set_body_raw(padded_answer(&request.body, 2 * CAP), "application/json")
    })
    .await;
    match capped_transport(server.uri()).push_ops(&ops(1)).await {
        Err(TransportError::Protocol(text)) => {
            assert!(text.contains("max_response_bytes"), "{text}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_just_under_the_cap_is_read() {
    let server = support::server().await;
    on_push(&server, |request: &Request| {
        let mut body = padded_answer(&request.body, 0);
        body.resize(CAP, b' ');
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    })
    .await;
    let outcomes = capped_transport(server.uri())
        .push_ops(&ops(1))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
}

/// Serves every request on `listener` with a chunked 200 answer (no
/// `Content-Length`): a valid push answer, then `padding` spaces in 1 KiB
/// chunks. `/v1/info` gets a 404 (the client falls back to the defaults).
async fn serve_chunked(listener: TcpListener, padding: usize) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(answer_chunked(stream, padding));
    }
}

async fn answer_chunked(mut stream: TcpStream, padding: usize) {
    let (head, body) = read_request(&mut stream).await;
    if head.starts_with("GET") {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let answer = padded_answer(&body, padding);
    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in answer.chunks(1024) {
        out.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend(chunk);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    // The client may hang up once it has seen enough: not an error here.
    let _ = stream.write_all(&out).await;
}

/// The request's head and its `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "request ended early");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "body ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    (head, buf[head_end..head_end + length].to_vec())
}

async fn chunked_server(padding: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_chunked(listener, padding));
    base
}

#[tokio::test]
async fn a_chunked_answer_is_counted_as_it_arrives() {
    let base = chunked_server(4 * CAP).await;
    match capped_transport(base).push_ops(&ops(1)).await {
        Err(TransportError::Protocol(text)) => {
            assert!(text.contains("max_response_bytes"), "{text}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_chunked_answer_within_the_cap_is_read() {
    // The same server with little padding: proves the refusal above is the
    // cap's, not the chunked encoding's.
    let base = chunked_server(100).await;
    let outcomes = capped_transport(base).push_ops(&ops(2)).await.unwrap();
    assert_eq!(outcomes.len(), 2);
}
