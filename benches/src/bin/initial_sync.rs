//! Initial sync: 1,000,000 records of 256 B pulled from `cpc-server` on
//! loopback into a sink that keeps an in-memory map (key hash → version),
//! by a `SyncEngine` with `HttpTransport` (issue 18).
//!
//! - **Rate.** Records/s of the whole initial sync (snapshot pages of up
//!   to 10,000 records / 4 MiB, each applied by the sink and its cursor
//!   persisted in the engine's SQLite store), against the server's own
//!   read rate of its entity table measured in the same run (a plain
//!   `SELECT` of every live entity in key order on a read-only connection,
//!   median of 3). Target: ≥ 0.5×.
//! - **Memory.** The client's peak RSS (`VmHWM`), in its own process.
//!   Target: ≤ 64 MiB whatever the total.
//! - **Resume.** A second client is killed with SIGKILL once half the
//!   records are applied, then started again on the same queue directory:
//!   the records downloaded twice (applied before the kill plus after the
//!   restart, minus the total) must be at most one page.
//!
//! ```text
//! cargo run -p cpc-benches --release --bin initial_sync [-- --records N]
//! ```

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use cpc_core::{RemoteSink, SinkError, SinkPage};
use cpc_protocol::{EntityKey, Hex64, Kind, OpId, Payload, Timestamp, WireOp};
use cpc_sync::worker::PullConfig;
use cpc_sync::SyncEngine;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const TOKEN: &str = "bench-token";
const PAYLOAD: usize = 256;
const DEFAULT_RECORDS: u64 = 1_000_000;
const PAGE: u32 = 10_000;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--serve") => serve(&args[2]),
        Some("--client") => client(
            &args[2],
            &args[3],
            args.get(4).map(String::as_str) != Some("no-prefetch"),
        ),
        _ => {
            let records = args
                .iter()
                .position(|a| a == "--records")
                .and_then(|i| args.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(DEFAULT_RECORDS);
            measure(records)
        }
    }
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Child mode: a cpc-server on the data in `dir`, its address on stdout.
fn serve(dir: &str) -> Res<()> {
    runtime()?.block_on(async {
        let mut config =
            cpc_server::ServerConfig::new(dir, cpc_server::Tokens::single(TOKEN, &["bench-*"]));
        config.rate = cpc_server::RateLimit {
            per_second: 1e9,
            burst: 1e9,
        };
        config.compaction_interval = None;
        let server = cpc_server::start(config).await?;
        println!("{}", server.addr());
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        })
        .await;
        server.shutdown().await?;
        Ok(())
    })
}

/// The application's map: key hash → version (a B-tree: about 20 bytes an
/// entry, and no doubling of a hash table's buckets).
#[derive(Debug, Default)]
struct MapSink {
    map: Mutex<BTreeMap<u64, u64>>,
}

#[async_trait]
impl RemoteSink for MapSink {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for c in &page.changes {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            c.change.entity.hash(&mut h);
            map.insert(h.finish(), c.change.version);
        }
        Ok(())
    }
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

/// Child mode: pulls from `base` into a `MapSink` until caught up; one
/// line per page (`page CHANGES BYTES APPLIED`), then `done APPLIED SECS
/// HWM_KIB`.
fn client(base: &str, queue: &str, prefetch: bool) -> Res<()> {
    runtime()?.block_on(async {
        let mut http = cpc_http::HttpConfig::new(base, "bench-client");
        http.max_pull_bytes = 4 << 20;
        let transport =
            cpc_http::HttpTransport::new(http, Arc::new(cpc_http::StaticToken::new(TOKEN)))?;
        let sink = Arc::new(MapSink::default());
        let queue = queue.to_owned();
        let engine = tokio::task::spawn_blocking(move || {
            SyncEngine::builder()
                .path(queue)
                .transport(transport)
                .remote_sink(sink)
                .pull_config(PullConfig {
                    limit: PAGE,
                    prefetch,
                    ..PullConfig::default()
                })
                .build()
        })
        .await??;
        let started = Instant::now();
        let mut applied = 0u64;
        let mut out = std::io::stdout();
        loop {
            let page = engine.pull_once().await?;
            applied += page.changes as u64;
            writeln!(out, "page {} {} {}", page.changes, page.bytes, applied)?;
            out.flush()?;
            if !page.has_more {
                break;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        writeln!(
            out,
            "done {applied} {secs:.3} {}",
            vm_kib(std::process::id(), "VmHWM:")
        )?;
        engine.shutdown().await?;
        Ok(())
    })
}

fn wire_op(i: u64) -> WireOp {
    let mut payload = vec![b'x'; PAYLOAD];
    payload[..8].copy_from_slice(&i.to_be_bytes());
    WireOp {
        id: OpId(u128::from(1_767_225_600_000u64) << 80 | u128::from(i) << 16 | 1),
        entity: EntityKey {
            collection: "records".into(),
            id: format!("r{i:08}"),
        },
        kind: Kind::Create,
        payload: Payload(payload),
        base_version: None,
        timestamp: Timestamp {
            wall_ms: 1_767_225_600_000,
            logical: u32::try_from(i % 1_000_000).unwrap_or(0),
            node: Hex64(7),
        },
    }
}

/// Fills the server's store in `dir` with `records` records.
fn preload(dir: &std::path::Path, records: u64) -> Res<()> {
    runtime()?.block_on(async {
        let store = Arc::new(cpc_server::Store::open(
            dir,
            cpc_protocol::Limits::default(),
        )?);
        let mut tasks = Vec::new();
        for chunk in 0..records.div_ceil(1000) {
            let store = Arc::clone(&store);
            let ops: Vec<WireOp> = (chunk * 1000..((chunk + 1) * 1000).min(records))
                .map(wire_op)
                .collect();
            tasks.push(tokio::spawn(async move {
                store.push("bench-loader".into(), ops, None, None).await
            }));
            if tasks.len() >= 16 {
                for t in tasks.drain(..) {
                    t.await??;
                }
            }
        }
        for t in tasks {
            t.await??;
        }
        store.close();
        Ok(())
    })
}

/// The server's own read rate of its entity table: rows/s.
fn scan_rate(dir: &std::path::Path) -> Res<f64> {
    let conn = rusqlite::Connection::open_with_flags(
        cpc_server::database_path(dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let started = Instant::now();
    let mut st = conn.prepare(
        "SELECT collection, id, version, wall_ms, logical, node, payload, last_seq
         FROM entities WHERE deleted = 0 ORDER BY collection, id",
    )?;
    let mut rows = st.query([])?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let payload: Vec<u8> = r.get(6)?;
        bytes += payload.len();
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(n as f64 / secs)
}

struct Run {
    applied: u64,
    secs: f64,
    hwm_kib: u64,
    largest_page: u64,
}

/// Runs a client child on `queue` to the end, or kills it with SIGKILL
/// once `kill_at` records are applied (then `applied` is what it had).
fn run_client(
    base: &str,
    queue: &std::path::Path,
    kill_at: Option<u64>,
    prefetch: bool,
) -> Res<Run> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--client")
        .arg(base)
        .arg(queue)
        .arg(if prefetch { "prefetch" } else { "no-prefetch" })
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let reader = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut run = Run {
        applied: 0,
        secs: 0.0,
        hwm_kib: 0,
        largest_page: 0,
    };
    for line in reader.lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first() {
            Some(&"page") => {
                run.applied = f[3].parse()?;
                run.largest_page = run.largest_page.max(f[1].parse()?);
                if kill_at.is_some_and(|k| run.applied >= k) {
                    child.kill()?;
                    let _ = child.wait();
                    return Ok(run);
                }
            }
            Some(&"done") => {
                run.applied = f[1].parse()?;
                run.secs = f[2].parse()?;
                run.hwm_kib = f[3].parse()?;
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the client exited with {status}").into());
    }
    Ok(run)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(records: u64) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let server_dir = dir.path().join("server");
    let loaded = Instant::now();
    preload(&server_dir, records)?;
    eprintln!(
        "preloaded {records} records in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(&server_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let base = format!("http://{}", line.trim());

    // Prefetch off, then on (the default): the same server, one after the
    // other, so the effect of asking ahead is measured in one run.
    let plain = run_client(&base, &dir.path().join("client-plain"), None, false)?;
    let plain_rate = plain.applied as f64 / plain.secs;
    let full = run_client(&base, &dir.path().join("client-full"), None, true)?;
    let sync_rate = full.applied as f64 / full.secs;
    let scan = median(
        (0..3)
            .map(|_| scan_rate(&server_dir))
            .collect::<Res<Vec<f64>>>()?,
    );
    let resumed_dir = dir.path().join("client-killed");
    let before = run_client(&base, &resumed_dir, Some(records / 2), true)?;
    let after = run_client(&base, &resumed_dir, None, true)?;
    drop(server.stdin.take());
    let _ = server.wait();

    let again = (before.applied + after.applied).saturating_sub(records);
    println!("initial sync of {records} records x {PAYLOAD} B from cpc-server on loopback:");
    println!(
        "  engine + HttpTransport into a map sink: {sync_rate:>10.0} records/s ({:.1} s, {} applied)",
        full.secs, full.applied
    );
    println!("  the same without asking ahead (prefetch off): {plain_rate:>10.0} records/s");
    println!("  server's own read of its entity table: {scan:>10.0} records/s (median of 3)");
    println!("  ratio: {:.2}x (target >= 0.5x)", sync_rate / scan);
    println!(
        "  client peak RSS: {} KiB (target <= 65536 KiB), pages of up to {} records",
        full.hwm_kib, full.largest_page
    );
    println!(
        "  kill -9 at {} of {records} applied, restart: {} more applied, {again} downloaded twice (target <= one page, {} records)",
        before.applied, after.applied, full.largest_page
    );
    if full.applied != records || before.applied + after.applied < records {
        return Err("the sync did not deliver every record".into());
    }
    Ok(())
}
