//! Scale figures of `SqliteStorage` in one process (issue 3, Performance):
//!
//! 1. fills N operations (default 1,000,000) of 256 B over 10,000 entities
//!    with `enqueue_batch`, and closes the store;
//! 2. reopens it and times open + the first `claim_ready(64)`;
//! 3. drains it by `claim_ready(64)` + one `complete(acks)` per batch under
//!    `Durability::Immediate` (the claim's commit is crash-safe but not
//!    fsynced, the completion's is fsynced: one durable commit per batch),
//!    reporting ops/s, the time spent in claims and in completions, bytes
//!    the process wrote per batch, and the peak RSS (VmHWM,
//!    reset before the reopen so the fill does not count);
//! 4. reports the files' sizes against the payload bytes before the drain,
//!    once the drained store has given its space back, and after closing;
//! 5. times 5,000 single `enqueue` calls under `Immediate` against a raw
//!    preallocated file with one `fdatasync` per 256 B write, and prints
//!    the ratio.
//!
//! ```text
//! cargo run --release -p cpc-storage --example sqlite_scale [-- N]
//! ```
//! `CPC_SCALE_DIR` sets where the stores are made (default: the system
//! temporary directory; it must be on the disk you mean to measure).

use cpc_storage::QueueStorageExt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
use cpc_storage::{Completion, QueueOptions, QueueStorage, SqliteStorage};
use rand::rngs::StdRng;
use rand::SeedableRng;

const PAYLOAD: usize = 256;
const ENTITIES: u64 = 10_000;
const FILL_BATCH: u64 = 10_000;
const CLAIM: usize = 64;
const SINGLES: u64 = 5_000;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn op(n: u64) -> Operation {
    Operation::builder(
        EntityKey::new("scale", format!("e{}", n % ENTITIES)),
        OperationKind::Update,
    )
    .payload(vec![(n % 251) as u8; PAYLOAD])
    .priority(OperationPriority::from_rank((n % 4) as u8).unwrap_or_default())
    .build_at(
        HlcTimestamp::new(1_700_000_000_000 + n, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(n),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (apparent bytes, allocated bytes) of the files in `dir`, and a listing.
fn sizes(dir: &Path) -> (u64, u64, String) {
    let mut apparent = 0;
    let mut allocated = 0;
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_file() {
                    apparent += m.len();
                    allocated += m.blocks() * 512;
                    names.push(format!("{}={}", e.file_name().to_string_lossy(), m.len()));
                }
            }
        }
    }
    names.sort();
    (apparent, allocated, names.join(" "))
}

fn report_sizes(label: &str, dir: &Path, payload: u64) -> u64 {
    let (apparent, allocated, list) = sizes(dir);
    println!(
        "disk {label}: {:.1} MB apparent ({:.3}x payload), {:.1} MB allocated ({:.3}x) [{list}]",
        apparent as f64 / 1e6,
        apparent as f64 / payload.max(1) as f64,
        allocated as f64 / 1e6,
        allocated as f64 / payload.max(1) as f64,
    );
    apparent
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes this process has written through `write`-like calls (`wchar`).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        println!("(could not reset VmHWM: {e}; the peak includes the fill)");
    }
}

fn fill(dir: &Path, n: u64) -> Res<()> {
    let t = Instant::now();
    let store = SqliteStorage::open(dir, QueueOptions::default())?;
    let mut next = 0;
    while next < n {
        let k = (n - next).min(FILL_BATCH);
        store.enqueue_batch((next..next + k).map(op).collect(), now_ms())?;
        next += k;
    }
    assert_eq!(store.pending()?, n);
    drop(store);
    println!(
        "fill: {n} ops in {:.1} s ({:.0} ops/s, batches of {FILL_BATCH})",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits (at most `max`) for the database file to stop shrinking below
/// `before`, polling: the background thread returns space asynchronously.
fn wait_for_space(dir: &Path, before: u64, max: Duration) -> Duration {
    let t = Instant::now();
    let mut last = sizes(dir).0;
    let mut stable = 0;
    while t.elapsed() < max {
        std::thread::sleep(Duration::from_millis(50));
        let now = sizes(dir).0;
        if now < before / 4 && now == last {
            stable += 1;
            if stable >= 4 {
                break;
            }
        } else {
            stable = 0;
        }
        last = now;
    }
    t.elapsed()
}

fn drain(dir: &Path, n: u64, payload: u64) -> Res<()> {
    reset_peak_rss();
    let before = report_sizes("before drain (closed)", dir, payload);
    let t = Instant::now();
    let store = SqliteStorage::open(dir, QueueOptions::default())?;
    let opened = t.elapsed();
    let mut now = now_ms();
    let mut batch = store.claim_ready(now, CLAIM)?;
    let first = t.elapsed();
    println!(
        "open: {:.2} ms; open + first claim_ready({CLAIM}): {:.2} ms ({} claimed)",
        opened.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
        batch.len()
    );
    let t = Instant::now();
    let w0 = written_bytes();
    let mut drained = 0u64;
    let mut batches = 0u64;
    let mut slowest = Duration::ZERO;
    let mut in_claims = Duration::ZERO;
    let mut in_completes = Duration::ZERO;
    while !batch.is_empty() {
        let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
        let c = Instant::now();
        store.complete(&acks, now)?;
        in_completes += c.elapsed();
        drained += acks.len() as u64;
        batches += 1;
        now = now_ms();
        let b = Instant::now();
        batch = store.claim_ready(now, CLAIM)?;
        slowest = slowest.max(b.elapsed());
        in_claims += b.elapsed();
    }
    let secs = t.elapsed().as_secs_f64();
    let written = written_bytes() - w0;
    assert_eq!(drained, n, "drained everything");
    assert_eq!(store.pending()?, 0);
    println!(
        "drain: {drained} ops in {secs:.2} s = {:.0} ops/s ({batches} batches, \
         {:.1} KiB written per batch of claim + complete, slowest claim {:.1} ms)",
        drained as f64 / secs,
        written as f64 / batches.max(1) as f64 / 1024.0,
        slowest.as_secs_f64() * 1e3,
    );
    println!(
        "drain time per batch: claim {:.3} ms, complete (the durable commit) {:.3} ms",
        in_claims.as_secs_f64() * 1e3 / batches.max(1) as f64,
        in_completes.as_secs_f64() * 1e3 / batches.max(1) as f64,
    );
    println!(
        "peak RSS while opening and draining: VmHWM {} KiB ({:.1} MiB)",
        status_kib("VmHWM:"),
        status_kib("VmHWM:") as f64 / 1024.0
    );
    report_sizes("right after the drain (open)", dir, payload);
    let waited = wait_for_space(dir, before, Duration::from_secs(20));
    report_sizes(
        &format!(
            "after the drain, {:.1} s later (open)",
            waited.as_secs_f64()
        ),
        dir,
        payload,
    );
    drop(store);
    report_sizes("after the drain (closed)", dir, payload);
    Ok(())
}

fn singles(dir: &Path) -> Res<f64> {
    let store = SqliteStorage::open(dir, QueueOptions::default())?;
    let ops: Vec<_> = (0..SINGLES).map(|n| op(50_000_000 + n)).collect();
    let t = Instant::now();
    for o in ops {
        store.enqueue(o, now_ms())?;
    }
    Ok(SINGLES as f64 / t.elapsed().as_secs_f64())
}

fn raw_fdatasync(path: &Path) -> Res<f64> {
    let mut f: File = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    // Preallocate (written and synced), so each timed write only changes data.
    let total = SINGLES as usize * PAYLOAD;
    f.write_all(&vec![0u8; total])?;
    f.sync_all()?;
    let buf = [7u8; PAYLOAD];
    let t = Instant::now();
    for i in 0..SINGLES {
        f.write_all_at(&buf, i * PAYLOAD as u64)?;
        f.sync_data()?;
    }
    Ok(SINGLES as f64 / t.elapsed().as_secs_f64())
}

fn main() -> Res<()> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 1_000_000,
    };
    let root: PathBuf = match std::env::var_os("CPC_SCALE_DIR") {
        Some(d) => d.into(),
        None => std::env::temp_dir(),
    };
    let tmp = tempfile::Builder::new()
        .prefix("cpc-sqlite-scale-")
        .tempdir_in(&root)?;
    let dir = tmp.path().join("queue");
    let payload = n * PAYLOAD as u64;
    println!(
        "sqlite_scale: {n} ops of {PAYLOAD} B over {ENTITIES} entities ({:.0} MB payload) in {}",
        payload as f64 / 1e6,
        tmp.path().display()
    );
    fill(&dir, n)?;
    drain(&dir, n, payload)?;
    std::fs::remove_dir_all(&dir)?;

    let singles_dir = tmp.path().join("singles");
    let enq = singles(&singles_dir)?;
    let raw = raw_fdatasync(&tmp.path().join("raw.bin"))?;
    println!(
        "single Immediate enqueue: {enq:.0} ops/s; raw preallocated write + fdatasync: \
         {raw:.0} ops/s; ratio {:.2}x",
        enq / raw
    );
    std::io::stdout().flush()?;
    Ok(())
}
