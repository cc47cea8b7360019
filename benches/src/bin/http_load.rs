//! The remote's figures: server apply throughput over HTTP on loopback
//! against the embedded store's own durable commit rate, push latency,
//! server memory, and what `HttpTransport` costs per operation beyond the
//! round trip.
//!
//! - **Server throughput.** 16 concurrent clients push batches of 64
//!   operations of 256 B to `cpc-server` (run in a child process, so its
//!   memory is its own) over loopback. Baseline of the same run: the same
//!   batches committed straight into the server's `Store` (no HTTP, no
//!   JSON) by 16 concurrent tasks. Target: HTTP ≥ 0.5× the store.
//! - **Client cost.** One client pushes the same 64-operation batch to a
//!   server that answers a canned body, once through `HttpTransport` and
//!   once as a pre-encoded body through a bare reqwest client; the
//!   difference per operation is what the transport adds (mapping, JSON,
//!   base64, the answer's checks). Target: ≤ 20 µs per operation.
//!
//! Rounds alternate between the measured and the baseline side; medians are
//! reported.
//!
//! ```text
//! cargo run -p cpc-benches --release --bin http_load
//! ```

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, Transport};
use cpc_http::{HttpConfig, HttpTransport, StaticToken};
use cpc_protocol::{EntityKey as WireKey, Hex64, Kind, OpId, Payload, Timestamp, WireOp};
use rand::rngs::StdRng;
use rand::SeedableRng;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const CLIENTS: usize = 16;
const BATCH: usize = 64;
const PAYLOAD: usize = 256;
const BATCHES_PER_CLIENT: usize = 40;
const ROUNDS: usize = 3;
const TOKEN: &str = "bench-token";

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(&args[2]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(measure())
}

/// Child mode: a cpc-server on a free loopback port, its address on stdout.
fn serve(dir: &str) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut config =
            cpc_server::ServerConfig::new(dir, cpc_server::Tokens::single(TOKEN, &["bench-*"]));
        config.rate = cpc_server::RateLimit {
            per_second: 1e9,
            burst: 1e9,
        };
        config.max_concurrent_pushes = 256;
        let server = cpc_server::start(config).await?;
        println!("{}", server.addr());
        // Until the parent closes our stdin (read on a blocking thread:
        // the workspace's tokio has no async stdin).
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        })
        .await;
        server.shutdown().await?;
        Ok(())
    })
}

fn wire_batch(client: usize, batch: usize) -> Vec<WireOp> {
    (0..BATCH)
        .map(|i| WireOp {
            id: OpId(((client as u128) << 64) | ((batch as u128) << 16) | i as u128 | (1 << 100)),
            entity: WireKey {
                collection: "bench".into(),
                id: format!("c{client}-e{i}"),
            },
            kind: Kind::Update,
            payload: Payload(vec![(i % 251) as u8; PAYLOAD]),
            base_version: None,
            timestamp: Timestamp {
                wall_ms: 1_767_225_600_000 + batch as u64,
                logical: i as u32,
                node: Hex64(client as u64 + 1),
            },
        })
        .collect()
}

fn body(client: usize, batch: usize) -> Vec<u8> {
    let request = cpc_protocol::PushRequest {
        protocol: 1,
        client_id: format!("bench-{client}"),
        known: None,
        low_water: None,
        ops: wire_batch(client, batch),
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn measure() -> Res<()> {
    let dir = tempfile::tempdir()?;
    // The server in a child process: its memory is measured alone.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(dir.path().join("server"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let base = format!("http://{}", line.trim());
    let client = reqwest::Client::new();

    let mut http_rates = Vec::new();
    let mut store_rates = Vec::new();
    let mut latencies = Vec::new();
    for round in 0..ROUNDS {
        // HTTP: 16 clients, pre-encoded bodies.
        let bodies: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
            .map(|c| {
                (0..BATCHES_PER_CLIENT)
                    .map(|b| body(c, round * 1000 + b))
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (c, bodies) in bodies.into_iter().enumerate() {
            let client = client.clone();
            let url = format!("{base}/v1/push");
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for b in bodies {
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(b)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        other => eprintln!("client {c}: {other:?}"),
                    }
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        for t in tasks {
            latencies.extend(t.await?);
        }
        let ops = (CLIENTS * BATCHES_PER_CLIENT * BATCH) as f64;
        http_rates.push(ops / started.elapsed().as_secs_f64());

        // Baseline: the same work straight into a Store.
        let store_dir = dir.path().join(format!("store-{round}"));
        let store = Arc::new(cpc_server::Store::open(
            &store_dir,
            cpc_protocol::Limits::default(),
        )?);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for b in 0..BATCHES_PER_CLIENT {
                    let _ = store
                        .push(format!("bench-{c}"), wire_batch(c, b), None, None)
                        .await;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        store_rates.push(ops / started.elapsed().as_secs_f64());
        let store = Arc::into_inner(store).ok_or("store still shared")?;
        tokio::task::spawn_blocking(move || store.close()).await?;
    }
    let pid = child.id();
    let (rss, hwm) = (vm_kib(pid, "VmRSS:"), vm_kib(pid, "VmHWM:"));
    drop(child.stdin.take());
    child.wait()?;

    let http = median(http_rates);
    let store = median(store_rates);
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99);
    println!("server apply, {CLIENTS} clients, batches of {BATCH} x {PAYLOAD} B, median of {ROUNDS} rounds:");
    println!(
        "  over HTTP:             {http:>10.0} ops/s  (push p50 {:.1} ms, p99 {:.1} ms)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!("  store alone (baseline):{store:>10.0} ops/s");
    println!("  ratio: {:.2}x (target >= 0.5x)", http / store);
    println!(
        "  server RSS after the load: {} KiB (peak {} KiB)",
        rss, hwm
    );

    client_cost().await?;
    Ok(())
}

/// What `HttpTransport` adds per operation beyond the round trip.
async fn client_cost() -> Res<()> {
    const PUSHES: usize = 400;
    let mut rng = StdRng::seed_from_u64(7);
    let ops: Vec<Operation> = (0..BATCH)
        .map(|i| {
            Operation::builder(
                EntityKey::new("bench", format!("e{i}")),
                OperationKind::Update,
            )
            .payload(vec![(i % 251) as u8; PAYLOAD])
            .build_at(
                HlcTimestamp::new(1_767_225_600_000, i as u32, NodeId(1)),
                &mut rng,
            )
        })
        .collect();
    // A canned answer naming every op: the server does no work.
    let outcomes: Vec<String> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            format!(
                r#"{{"op":"{}","applied":{{"version":1,"seq":{}}}}}"#,
                op.id,
                i + 1
            )
        })
        .collect();
    let answer = format!(
        r#"{{"outcomes":[{}],"head":{{"store_id":"s","seq":{},"fp":"0000000000000001"}}}}"#,
        outcomes.join(","),
        BATCH
    );
    let server = canned::start(answer).await?;
    let base = format!("http://{server}");
    let transport = HttpTransport::new(
        HttpConfig::new(base.clone(), "bench-1"),
        Arc::new(StaticToken::new(TOKEN)),
    )?;
    let raw_body = {
        let wire: Vec<serde_json::Value> = ops
            .iter()
            .map(|op| {
                serde_json::json!({
                    "id": op.id.to_string(),
                    "entity": {"collection": "bench", "id": op.entity.id},
                    "kind": "update",
                    "payload": base64::engine::general_purpose::STANDARD.encode(&op.payload),
                    "base_version": null,
                    "timestamp": {"wall_ms": 1_767_225_600_000u64, "logical": 0, "node": "0000000000000001"},
                })
            })
            .collect();
        serde_json::to_vec(
            &serde_json::json!({"protocol": 1, "client_id": "bench-1", "ops": wire}),
        )?
    };
    let raw = reqwest::Client::new();
    // Warm both (the transport fetches /v1/info once).
    transport.push(&cpc_core::PushQuery::new(&ops)).await?;
    let mut with_transport = Vec::new();
    let mut with_raw = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..PUSHES {
            transport.push(&cpc_core::PushQuery::new(&ops)).await?;
        }
        with_transport.push(t.elapsed().as_secs_f64() / PUSHES as f64);
        let t = Instant::now();
        for _ in 0..PUSHES {
            let r = raw
                .post(format!("{base}/v1/push"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(raw_body.clone())
                .send()
                .await?;
            let _ = r.bytes().await?;
        }
        with_raw.push(t.elapsed().as_secs_f64() / PUSHES as f64);
    }
    let t = median(with_transport);
    let r = median(with_raw);
    let per_op_us = (t - r) / BATCH as f64 * 1e6;
    println!("client cost, batches of {BATCH} x {PAYLOAD} B to a canned answer, median of 5 x {PUSHES} pushes:");
    println!(
        "  HttpTransport: {:.1} us/push; bare reqwest, pre-encoded (baseline): {:.1} us/push",
        t * 1e6,
        r * 1e6
    );
    println!("  transport cost beyond the round trip: {per_op_us:.2} us/op (target <= 20 us/op)");
    Ok(())
}

/// A loopback server answering every request with the same body.
mod canned {
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub async fn start(answer: String) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let response = std::sync::Arc::new(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{}",
            answer.len(),
            answer
        ));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let response = std::sync::Arc::clone(&response);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut have = 0;
                    loop {
                        let Ok(n) = s.read(&mut buf[have..]).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        have += n;
                        // One request: headers, then content-length bytes.
                        let Some(end) = find(&buf[..have], b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if have < end + 4 + len {
                            continue;
                        }
                        // A GET of /v1/info gets the same canned JSON: not an
                        // Info, so the transport falls back to the defaults.
                        if s.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4 + len..have, 0);
                        have -= end + 4 + len;
                    }
                });
            }
        });
        Ok(addr)
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}
