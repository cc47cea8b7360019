//! docs/protocol.md §10, replayed: the worked examples are the exact bytes
//! this test sends to the reference server and the answers it expects, so
//! that a client written from the document alone is right.
//!
//! How a block is read (what a test in another language would do):
//! - `<!-- example: NAME request|response -->`, then a fenced `http` block:
//!   the start line, the headers up to a blank line, then the body: every
//!   following line, each ending with a line feed (the health body is the
//!   12 bytes `cpc-sync ok\n`). A body in parentheses is described, not
//!   literal (the 413 example: 9,000,000 bytes that are not JSON).
//! - A request is sent as written (its `Host` too), lines ending in CRLF,
//!   with `Content-Length` added when the block has a body and none, and
//!   `Connection: close`.
//! - An answer is compared on its status code, the headers the example
//!   shows (`Date` and `Cpc-Request-Id` are left out of the examples) and
//!   its body: JSON as a value (whitespace and member order ignored), text
//!   as bytes. Human text is not compared, only checked to be text: a
//!   problem's `detail` (§2.4), a rejection's `message` (§6.4), the
//!   informative `server` of `/v1/info` (§4.2). The jittered waits of 429
//!   and 503 are compared within their announced range.
//!
//! The examples that only show an answer are provoked as the §10 preamble
//! says: 415 with a wrong `Content-Type` (in document order, on the main
//! server), 429 on a server with a small rate limit and 503 on one with a
//! concurrency cap of 1 (their own tests below).
//!
//! Every example is replayed; `pull-longpoll` waits its 20 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use cpc_server::{RateLimit, RunningServer, ServerConfig, Tokens};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The store id the examples are written for (§10 preamble).
const STORE_ID: &str = "5f0c2a9e7b3d4c18a6e2f1d09b8c7a64";
/// The example whose request is re-sent with a wrong `Content-Type` (415),
/// twice to a small rate limit (429), and held open (503).
const PUSH_EXAMPLE: &str = "push-simple";
/// The example whose request probes the concurrency cap: a known token
/// (the cap comes after authentication and the token's rate, §6.2), bound
/// to another client, so it is refused at step 10 (403, nothing applied)
/// when a push may run, and at step 4 (503) when none may.
const PROBE_EXAMPLE: &str = "err-403";
/// The small rate limit of the 429 example: one request, then the bucket
/// needs 2 s for the next, announced × [1.0, 1.5).
const SMALL_RATE: RateLimit = RateLimit {
    per_second: 0.5,
    burst: 1.0,
};
/// The wait a 429 under [`SMALL_RATE`] announces, in ms.
const RATE_LIMITED_WAIT: Range<u64> = 1..3000;
/// The wait the reference server announces with a 503: at least 1 s,
/// × [1.0, 1.5) (§2.5).
const UNAVAILABLE_WAIT: Range<u64> = 1000..1500;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The document

fn read_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A block's body.
#[derive(Debug, Clone)]
enum Body {
    None,
    /// The bytes to send or expect.
    Literal(Vec<u8>),
    /// A body "in parentheses": described, not literal.
    Described(String),
}

/// One `http` block: a request or an answer.
#[derive(Debug, Clone)]
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Message {
    fn parse(lines: &[&str]) -> Message {
        let start = lines.first().copied().unwrap_or_default().trim().to_owned();
        let mut headers = Vec::new();
        let mut at = 1;
        while at < lines.len() && !lines[at].trim().is_empty() {
            let (name, value) = lines[at]
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {:?}", lines[at]));
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
            at += 1;
        }
        let body_lines = lines.get(at + 1..).unwrap_or_default();
        let text: String = body_lines.iter().map(|l| format!("{l}\n")).collect();
        let trimmed = text.trim();
        let body = if trimmed.is_empty() {
            Body::None
        } else if trimmed.starts_with('(') && trimmed.ends_with(')') {
            Body::Described(trimmed.to_owned())
        } else {
            Body::Literal(text.into_bytes())
        };
        Message {
            start,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// An answer's status code.
    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.start))
    }

    /// The body as JSON, if it is literal JSON.
    fn json(&self) -> Option<Value> {
        match &self.body {
            Body::Literal(bytes) => serde_json::from_slice(bytes).ok(),
            _ => None,
        }
    }

    /// The problem code of an answer with a problem body.
    fn problem_code(&self) -> Option<String> {
        self.json()?.get("code")?.as_str().map(str::to_owned)
    }

    /// This request with one header's value replaced.
    fn with_header(&self, name: &str, value: &str) -> Message {
        let mut m = self.clone();
        for (n, v) in &mut m.headers {
            if n.eq_ignore_ascii_case(name) {
                value.clone_into(v);
            }
        }
        m
    }
}

/// A named example: its request (absent for the answer-only ones) and its
/// answer, with the document line where it starts.
#[derive(Debug)]
struct Example {
    name: String,
    line: usize,
    request: Option<Message>,
    response: Option<Message>,
}

impl Example {
    fn request(&self) -> &Message {
        self.request
            .as_ref()
            .unwrap_or_else(|| panic!("example {} has no request", self.name))
    }

    fn response(&self) -> &Message {
        self.response
            .as_ref()
            .unwrap_or_else(|| panic!("example {} has no response", self.name))
    }
}

/// Every example of the document, in document order.
fn examples(doc: &str) -> Vec<Example> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: Vec<Example> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let marker = lines[i]
            .trim()
            .strip_prefix("<!-- example:")
            .and_then(|r| r.strip_suffix("-->"));
        let Some(marker) = marker else {
            i += 1;
            continue;
        };
        let line = i + 1;
        let mut words = marker.split_whitespace();
        let (Some(name), Some(role), None) = (words.next(), words.next(), words.next()) else {
            panic!("line {line}: a marker is `<!-- example: NAME request|response -->`");
        };
        assert_eq!(
            lines.get(i + 1).map(|l| l.trim()),
            Some("```http"),
            "line {line}: example {name} must be followed by a ```http block"
        );
        let end = (i + 2..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("line {line}: the block of {name} is not closed"));
        let message = Message::parse(&lines[i + 2..end]);
        let at = match out.iter().position(|e| e.name == name) {
            Some(at) => at,
            None => {
                out.push(Example {
                    name: name.to_owned(),
                    line,
                    request: None,
                    response: None,
                });
                out.len() - 1
            }
        };
        let slot = match role {
            "request" => &mut out[at].request,
            "response" => &mut out[at].response,
            other => panic!("line {line}: example {name}: unknown role {other}"),
        };
        assert!(slot.is_none(), "line {line}: example {name} {role} twice");
        *slot = Some(message);
        i = end + 1;
    }
    out
}

fn example<'a>(all: &'a [Example], name: &str) -> &'a Example {
    all.iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("docs/protocol.md has no example {name}"))
}

/// What the test does with an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Send its request to the main server, in document order.
    Replay,
    /// Answer only: a push with a wrong `Content-Type` (415).
    WrongContentType,
    /// Answer only: a server with a small rate limit (429).
    SmallRateLimit,
    /// Answer only: a server with a concurrency cap of 1 (503).
    ConcurrencyCapOfOne,
}

fn plan(e: &Example) -> Plan {
    match (&e.request, &e.response) {
        (Some(_), Some(_)) => Plan::Replay,
        (None, Some(response)) => match response.problem_code().as_deref() {
            Some("unsupported_media_type") => Plan::WrongContentType,
            Some("rate_limited") => Plan::SmallRateLimit,
            Some("unavailable") => Plan::ConcurrencyCapOfOne,
            other => panic!(
                "line {}: answer-only example {} ({other:?}): the preamble says no way to provoke it",
                e.line, e.name
            ),
        },
        (_, None) => panic!("line {}: example {} has no response", e.line, e.name),
    }
}

/// The store state and tokens of the §10 preamble.
#[derive(Debug)]
struct Preamble {
    store_id: String,
    device: String,
    node: String,
    tokens: Vec<(String, String)>,
    seed: Vec<SeedRow>,
}

/// One row of the seed table.
#[derive(Debug)]
struct SeedRow {
    seq: u64,
    collection: String,
    id: String,
    version: u64,
    payload: String,
    wall_ms: u64,
    logical: u32,
    op: String,
    fp: String,
}

/// The text between backticks, in order.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn preamble(doc: &str) -> Preamble {
    let start = doc.find("## 10. Worked examples").expect("§10 heading");
    let end = start + doc[start..].find("### 10.1").expect("§10.1 heading");
    let text = &doc[start..end];
    let paragraph = |opening: &str| -> &str {
        let at = text
            .find(opening)
            .unwrap_or_else(|| panic!("§10 preamble: no paragraph {opening:?}"));
        let rest = &text[at..];
        &rest[..rest.find("\n\n").unwrap_or(rest.len())]
    };
    let store_id = text
        .split("`store_id` `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .expect("§10 preamble: the store's `store_id`")
        .to_owned();
    let state = paragraph("Store state before");
    let [device, node, ..] = backticked(state)[..] else {
        panic!("§10 preamble: the seed paragraph names the device and its node");
    };
    let tokens: Vec<(String, String)> = backticked(paragraph("Tokens:"))
        .chunks(2)
        .map(|p| (p[0].to_owned(), p[1].to_owned()))
        .collect();
    let seed = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells[0].parse::<u64>().is_ok())
        .map(|c| {
            let (collection, id) = c[1].split_once('/').expect("entity as collection/id");
            let (wall_ms, logical) = c[4].split_once('.').expect("timestamp as wall_ms.logical");
            SeedRow {
                seq: c[0].parse().unwrap(),
                collection: collection.to_owned(),
                id: id.to_owned(),
                version: c[2].parse().unwrap(),
                payload: c[3].to_owned(),
                wall_ms: wall_ms.parse().unwrap(),
                logical: logical.parse().unwrap(),
                op: c[5].to_owned(),
                fp: c[6].to_owned(),
            }
        })
        .collect();
    Preamble {
        store_id,
        device: device.to_owned(),
        node: node.to_owned(),
        tokens,
        seed,
    }
}

// ---------------------------------------------------------------------------
// The server and the wire

async fn start(dir: &Path, pre: &Preamble, tune: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    assert_eq!(pre.store_id, STORE_ID, "the §10 preamble's store id");
    let toml: String = pre
        .tokens
        .iter()
        .map(|(secret, client)| {
            format!("[[token]]\nsecret = \"{secret}\"\nclients = [\"{client}\"]\n")
        })
        .collect();
    let mut config = ServerConfig::new(dir, Tokens::parse(&toml, "§10 preamble").unwrap());
    config.store_id = Some(STORE_ID.to_owned());
    tune(&mut config);
    cpc_server::start(config).await.unwrap()
}

/// An answer as received.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The bytes of a described body: `(9,000,000 bytes, not read)` is that
/// many bytes that are not JSON, as many as its `Content-Length` says.
fn described_body(request: &Message, description: &str) -> Vec<u8> {
    let count: usize = description
        .trim_start_matches('(')
        .split_whitespace()
        .next()
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a described body starts with its size: {description}"));
    assert_eq!(
        request
            .header("Content-Length")
            .and_then(|v| v.parse().ok()),
        Some(count),
        "the described body {description} and its Content-Length"
    );
    vec![b'x'; count]
}

/// The request's head (CRLF lines, `Content-Length` added when missing,
/// `Connection: close`) and body.
fn wire(request: &Message) -> (Vec<u8>, Vec<u8>) {
    let body = match &request.body {
        Body::None => Vec::new(),
        Body::Literal(bytes) => bytes.clone(),
        Body::Described(text) => described_body(request, text),
    };
    let mut head = format!("{}\r\n", request.start);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if request.header("Content-Length").is_none() && !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    (head.into_bytes(), body)
}

/// Sends `request` on a new connection and reads the answer. The body is
/// written while the answer is read: a server may answer (413) without
/// reading it.
async fn exchange(addr: SocketAddr, request: &Message) -> Answer {
    let (head, body) = wire(request);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(&head).await.unwrap();
    let sending = tokio::spawn(async move {
        // A server that answered without reading may close: not an error.
        let _ = writer.write_all(&body).await;
        writer
    });
    let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, read_answer(&mut reader))
        .await
        .unwrap_or_else(|_| panic!("no answer to {:?} in time", request.start));
    sending.abort();
    answer
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads more of the answer into `buf`; `false` at the end of the
/// connection. A reset after the answer (a body left unread) ends it too.
async fn read_more(reader: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    let n = reader.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n > 0
}

/// Reads one HTTP/1.1 answer: its head, then a body of `Content-Length`
/// bytes, chunked, or up to the end of the connection.
async fn read_answer(reader: &mut (impl AsyncReadExt + Unpin)) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        assert!(
            read_more(reader, &mut buf).await,
            "connection closed before the answer's head: {:?}",
            String::from_utf8_lossy(&buf)
        );
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf.split_off(head_end + 4);
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = answer
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while body.len() < len {
            assert!(
                read_more(reader, &mut body).await,
                "the answer ended before its Content-Length"
            );
        }
        body.truncate(len);
    } else {
        while read_more(reader, &mut body).await {}
        if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            body = dechunk(&body);
        }
    }
    answer.body = body;
    answer
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").expect("a chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

/// A `POST /v1/push` of `body` with the token of `client`.
fn push_request(pre: &Preamble, client: &str, body: &Value) -> Message {
    let token = pre
        .tokens
        .iter()
        .find(|(_, c)| c == client)
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("§10 preamble: no token for {client}"));
    Message {
        start: "POST /v1/push HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "127.0.0.1:8080".into()),
            ("Authorization".into(), format!("Bearer {token}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: Body::Literal(serde_json::to_vec(body).unwrap()),
    }
}

/// Writes the change log of the §10 preamble: device `dev-91c2` pushes each
/// row (a create at version 1, an update otherwise, on the version before),
/// and every answer must land at the row's `seq`, `version` and `fp`.
async fn seed(server: &RunningServer, pre: &Preamble) {
    assert!(!pre.seed.is_empty(), "§10 preamble: no seed table");
    for row in &pre.seed {
        let body = json!({
            "protocol": 1,
            "client_id": pre.device,
            "known": null,
            "low_water": null,
            "ops": [{
                "id": row.op,
                "entity": {"collection": row.collection, "id": row.id},
                "kind": if row.version == 1 { "create" } else { "update" },
                "payload": base64::engine::general_purpose::STANDARD.encode(&row.payload),
                "base_version": row.version - 1,
                "timestamp": {"wall_ms": row.wall_ms, "logical": row.logical, "node": pre.node},
            }],
        });
        let answer = exchange(server.addr(), &push_request(pre, &pre.device, &body)).await;
        assert_eq!(answer.status, 200, "seed row {}: {:?}", row.seq, answer);
        assert_eq!(
            answer.json(),
            json!({
                "outcomes": [{"op": row.op, "applied": {"version": row.version, "seq": row.seq}}],
                "head": {"store_id": STORE_ID, "seq": row.seq, "fp": row.fp},
            }),
            "seed row {}: the table's seq, version and fp (Appendix A)",
            row.seq
        );
    }
}

// ---------------------------------------------------------------------------
// Comparing an answer with its example

/// Takes out the members that are human text (`detail` of a problem,
/// `message` of a rejection, `server` of `/v1/info`), checking they are
/// text.
fn without_human_text(name: &str, side: &str, mut v: Value) -> Value {
    let take = |object: &mut serde_json::Map<String, Value>, member: &str, max: usize| {
        let text = object.remove(member);
        assert!(
            text.as_ref()
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty() && t.len() <= max),
            "example {name} ({side}): `{member}` must be human text of at most {max} bytes: {text:?}"
        );
    };
    let is_problem = v
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("urn:cpc-sync:problem:"));
    let is_info = v.get("protocols").is_some();
    if let Some(object) = v.as_object_mut() {
        if is_problem {
            take(object, "detail", cpc_protocol::MAX_DETAIL_BYTES);
        }
        if is_info {
            take(object, "server", 256);
        }
        if let Some(outcomes) = object.get_mut("outcomes").and_then(Value::as_array_mut) {
            for outcome in outcomes {
                if let Some(rejected) = outcome.get_mut("rejected").and_then(Value::as_object_mut) {
                    take(rejected, "message", 1024);
                }
            }
        }
    }
    v
}

/// The wait a 429/503 announces: the exact header, the rounded-up header
/// and the body agree, and lie in `range`.
fn announced_wait(
    name: &str,
    side: &str,
    ms: Option<&str>,
    secs: Option<&str>,
    body: &Value,
    range: &Range<u64>,
) {
    let ms: u64 = ms
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("example {name} ({side}): Cpc-Retry-After-Ms {ms:?}"));
    assert!(
        range.contains(&ms),
        "example {name} ({side}): a wait of {ms} ms is outside {range:?}"
    );
    assert_eq!(
        secs,
        Some(ms.div_ceil(1000).to_string().as_str()),
        "example {name} ({side}): Retry-After is Cpc-Retry-After-Ms in seconds, rounded up"
    );
    assert_eq!(
        body.get("retry_after_ms"),
        Some(&json!(ms)),
        "example {name} ({side}): retry_after_ms is the header's value"
    );
}

/// Compares an answer with its example: status, the headers shown, body.
fn check_answer(name: &str, expected: &Message, actual: &Answer, wait: Option<Range<u64>>) {
    let body_text = String::from_utf8_lossy(&actual.body);
    assert_eq!(
        actual.status,
        expected.status(),
        "example {name}: status; the server answered {body_text}"
    );
    for (header, value) in &expected.headers {
        let lower = header.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "date" | "cpc-request-id" | "retry-after" | "cpc-retry-after-ms"
        ) {
            continue;
        }
        assert_eq!(
            actual.header(header),
            Some(value.as_str()),
            "example {name}: header {header}"
        );
    }
    let Body::Literal(expected_body) = &expected.body else {
        panic!("example {name}: an answer's body is literal");
    };
    let is_json = expected
        .header("Content-Type")
        .is_some_and(|t| t.contains("json"));
    if !is_json {
        assert_eq!(
            body_text,
            String::from_utf8_lossy(expected_body),
            "example {name}: body bytes"
        );
        return;
    }
    let mut want: Value = serde_json::from_slice(expected_body)
        .unwrap_or_else(|e| panic!("example {name}: the document's body is not JSON: {e}"));
    let mut got = actual.json();
    if expected.header("Cpc-Retry-After-Ms").is_some() {
        let range = wait.unwrap_or_else(|| panic!("example {name}: a wait, but no range to check"));
        announced_wait(
            name,
            "document",
            expected.header("Cpc-Retry-After-Ms"),
            expected.header("Retry-After"),
            &want,
            &range,
        );
        announced_wait(
            name,
            "server",
            actual.header("Cpc-Retry-After-Ms"),
            actual.header("Retry-After"),
            &got,
            &range,
        );
        for v in [&mut want, &mut got] {
            v.as_object_mut().map(|o| o.remove("retry_after_ms"));
        }
    }
    let want = without_human_text(name, "document", want);
    let got = without_human_text(name, "server", got);
    assert!(
        want == got,
        "example {name}: the answer differs from the document (human text left out)\n\
         document: {}\n\
         server:   {}",
        serde_json::to_string_pretty(&want).unwrap(),
        serde_json::to_string_pretty(&got).unwrap()
    );
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worked_examples_are_the_reference_servers_answers() {
    let doc = read_doc();
    let pre = preamble(&doc);
    let all = examples(&doc);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &pre, |_| {}).await;
    seed(&server, &pre).await;

    let mut replayed = Vec::new();
    for e in &all {
        match plan(e) {
            Plan::Replay => {
                let answer = exchange(server.addr(), e.request()).await;
                check_answer(&e.name, e.response(), &answer, None);
                replayed.push(e.name.as_str());
            }
            Plan::WrongContentType => {
                let request = example(&all, PUSH_EXAMPLE)
                    .request()
                    .with_header("Content-Type", "text/plain");
                let answer = exchange(server.addr(), &request).await;
                check_answer(&e.name, e.response(), &answer, None);
                replayed.push(e.name.as_str());
            }
            // Their own tests, below.
            Plan::SmallRateLimit | Plan::ConcurrencyCapOfOne => {}
        }
    }
    for must in [
        "health",
        "info",
        "push-simple",
        "push-mixed",
        "push-resend",
        "err-bad-base64",
        "err-version",
        "err-401",
        "err-403",
        "err-413",
        "err-415",
        "pull-page1",
        "pull-page2",
        "pull-longpoll",
        "pull-initial1",
        "pull-initial2",
        "pull-diverged",
        "push-diverged",
    ] {
        assert!(
            replayed.contains(&must),
            "example {must} was not replayed: {replayed:?}"
        );
    }

    // Nothing but the 200s applied anything: the last applied operation
    // (push-resend) is still the head.
    let resend = example(&all, "push-resend");
    let again = exchange(server.addr(), resend.request()).await;
    let applied = resend.response().json().unwrap();
    let mut want = applied.clone();
    want["outcomes"][0]["already_applied"] = applied["outcomes"][0]["applied"].clone();
    want["outcomes"][0]
        .as_object_mut()
        .unwrap()
        .remove("applied");
    assert_eq!(
        (again.status, again.json()),
        (200, want),
        "after every example the head is push-resend's, replayed as already_applied"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_429_example_is_what_a_small_rate_limit_answers() {
    let doc = read_doc();
    let pre = preamble(&doc);
    let all = examples(&doc);
    let limited: Vec<&Example> = all
        .iter()
        .filter(|e| plan(e) == Plan::SmallRateLimit)
        .collect();
    assert!(!limited.is_empty(), "docs/protocol.md shows a 429");
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &pre, |c| c.rate = SMALL_RATE).await;
    let request = example(&all, PUSH_EXAMPLE).request();
    for (i, e) in limited.into_iter().enumerate() {
        if i > 0 {
            // A full bucket again.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        // The first request takes the bucket's only token and is answered
        // (409: this scratch store lacks the history its `known` names);
        // the next one is refused before its body is read.
        let first = exchange(server.addr(), request).await;
        assert_eq!(first.status, 409, "{first:?}");
        let answer = exchange(server.addr(), request).await;
        check_answer(&e.name, e.response(), &answer, Some(RATE_LIMITED_WAIT));
    }
    server.shutdown().await.unwrap();
}

/// Sends `request`'s head and half its body, and leaves the rest unsent:
/// the push holds the server's only slot while it waits for the body.
async fn hold(addr: SocketAddr, request: &Message) -> TcpStream {
    let (head, body) = wire(request);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&head).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_503_example_is_what_a_concurrency_cap_of_one_answers() {
    let doc = read_doc();
    let pre = preamble(&doc);
    let all = examples(&doc);
    let busy: Vec<&Example> = all
        .iter()
        .filter(|e| plan(e) == Plan::ConcurrencyCapOfOne)
        .collect();
    assert!(!busy.is_empty(), "docs/protocol.md shows a 503");
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &pre, |c| c.max_concurrent_pushes = 1).await;
    let held_request = example(&all, PUSH_EXAMPLE).request();
    let probe = example(&all, PROBE_EXAMPLE).request();
    for e in busy {
        // The held push takes the slot once its head has been read; until
        // then a probe finds the slot free and is refused later, as not
        // bound to its client (403). Each try gives the held push more
        // time.
        let mut answer = None;
        for attempt in 1..=20u64 {
            let held = hold(server.addr(), held_request).await;
            tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
            let probed = exchange(server.addr(), probe).await;
            drop(held);
            if probed.status == 503 {
                answer = Some(probed);
                break;
            }
            assert_eq!(probed.status, 403, "the probe: {probed:?}");
        }
        let answer = answer.expect("a push held open must make the next one 503");
        check_answer(&e.name, e.response(), &answer, Some(UNAVAILABLE_WAIT));
    }
    server.shutdown().await.unwrap();
}
