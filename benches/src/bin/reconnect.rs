//! The reconnect figure: a device holding a large offline queue sees the
//! network come back. The queue is `N` operations of 4 KiB (default
//! 1,000,000, so 4 GB of payloads), each a retry that failed while the link
//! was going down and is now waiting; the engine is the default one
//! (`SyncEngine::builder().path(..)`, SQLite, default options) with a
//! network monitor fed by a manual link signal.
//!
//! Measured in a fresh process: peak RSS (VmHWM) from open through the
//! Offline → Online transition and the first batches, and the time from
//! the transition to the first push. The same program on 1,000 operations
//! is the baseline of the same run (what the engine costs with a small
//! queue). Targets: peak RSS ≤ 64 MiB and first push ≤ 100 ms.
//!
//! ```text
//! cargo run -p cpc-benches --release --bin reconnect [-- N]
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cpc_benches::{phase, vm_hwm_kib};
use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, OpOutcome, Operation, OperationKind, PushOutcome, Transport,
    TransportError,
};
use cpc_network::{ManualSource, MonitorConfig, NetworkMonitor};
use cpc_storage::{Completion, QueueOptions, QueueStorage, SqliteStorage};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Payload of each operation: a photo thumbnail or a filled-in form.
const PAYLOAD: usize = 4096;
/// Operations written and postponed per transaction while filling.
const CHUNK: u64 = 5_000;
/// The baseline queue's size.
const BASELINE_OPS: u64 = 1_000;
/// Batches pushed after the first before the peak is read: the drain is
/// under way, not just started.
const BATCHES_AFTER_FIRST: u64 = 20;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn op(n: u64) -> Operation {
    Operation::builder(
        EntityKey::new("photos", format!("p{n}")),
        OperationKind::Update,
    )
    .payload(vec![(n % 251) as u8; PAYLOAD])
    .build_at(
        HlcTimestamp::new(1_700_000_000_000 + n, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(n),
    )
}

/// Writes `n` operations and turns each into a waiting retry (claimed once,
/// failed, due again at once): the state a queue is in after the link
/// dropped under a busy drain.
fn fill(dir: &Path, n: u64) -> Res<()> {
    let store = SqliteStorage::open(dir, QueueOptions::default())?;
    let mut next = 0;
    while next < n {
        let k = (n - next).min(CHUNK);
        store.enqueue_batch((next..next + k).map(op).collect(), 1_000)?;
        next += k;
        let claimed = store.claim_ready(1_000, k as usize)?;
        let failed: Vec<_> = claimed
            .iter()
            .map(|c| Completion::Retry {
                id: c.op.id,
                at: 2_000,
                error: "connection reset".into(),
            })
            .collect();
        store.complete(&failed, 1_000)?;
    }
    let stats = store.stats()?;
    println!("FILLED {} {}", stats.pending, stats.in_flight);
    Ok(())
}

/// Acknowledges every operation; remembers when the first push came.
#[derive(Debug, Default)]
struct Recorder {
    first: OnceLock<Instant>,
    batches: AtomicU64,
    ops: AtomicU64,
}

#[async_trait]
impl Transport for Recorder {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        let _ = self.first.set(Instant::now());
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.ops.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(batch
            .iter()
            .map(|op| OpOutcome::new(op.id, PushOutcome::Applied { version: 1 }))
            .collect())
    }
}

/// Opens the engine offline, brings the link up, and reports the open
/// time, the time to the first push, the peak RSS and what was pushed.
fn reconnect(dir: &Path) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let monitor = NetworkMonitor::new(MonitorConfig {
            // The figure is the engine's own latency: no resume jitter.
            resume_jitter_max: Duration::ZERO,
            min_dwell: Duration::ZERO,
            seed: Some(1),
            ..MonitorConfig::default()
        })?;
        let link = ManualSource::new();
        link.connect(monitor.sink("manual"));
        link.set_offline();
        let recorder = Arc::new(Recorder::default());
        let t = Instant::now();
        let engine = cpc_sync::SyncEngine::builder()
            .path(dir)
            .transport(recorder.clone())
            .network(monitor)
            .seed(7)
            .start()
            .await?;
        let opened = t.elapsed();
        let queued = engine.stats().await?.pending;
        // Let the worker settle while offline (nothing may be sent).
        tokio::time::sleep(Duration::from_millis(300)).await;
        if recorder.first.get().is_some() {
            return Err("pushed while offline".into());
        }
        let online = Instant::now();
        link.set_online();
        let deadline = online + Duration::from_secs(60);
        let want = (BATCHES_AFTER_FIRST + 1).min(queued.div_ceil(64).max(1));
        while recorder.batches.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = recorder
            .first
            .get()
            .ok_or("no push within 60 s of the network coming back")?
            .duration_since(online);
        println!(
            "RECONNECT {queued} {:.1} {:.1} {} {} {}",
            opened.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            vm_hwm_kib(),
            recorder.batches.load(Ordering::SeqCst),
            recorder.ops.load(Ordering::SeqCst),
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // Exit without draining the rest: the figure is the reconnect.
    std::process::exit(0);
}

fn fields(out: &str, tag: &str) -> Res<Vec<f64>> {
    out.lines()
        .find_map(|l| l.strip_prefix(tag))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .ok_or_else(|| format!("no {tag} line in {out:?}").into())
}

fn run(n: u64) -> Res<()> {
    let root = std::env::temp_dir().join(format!("cpc-reconnect-{}", std::process::id()));
    println!(
        "reconnect: {n} waiting retries of {PAYLOAD} B ({} MB of payloads), Offline -> Online, \
         default engine on SQLite; baseline: the same with {BASELINE_OPS}",
        n * PAYLOAD as u64 / 1_000_000
    );
    println!(
        "{:>10} {:>8} {:>10} {:>16} {:>14} {:>10}",
        "ops", "fill s", "open ms", "first push ms", "peak RSS MiB", "pushed"
    );
    let mut rows = Vec::new();
    for count in [BASELINE_OPS, n] {
        let dir = root.join(format!("q{count}"));
        let dir_s = dir.to_string_lossy().into_owned();
        let t = Instant::now();
        let filled = phase(&["fill", &dir_s, &count.to_string()])?;
        let fill_s = t.elapsed().as_secs_f64();
        let waiting = fields(&filled, "FILLED")?;
        let r = fields(&phase(&["reconnect", &dir_s])?, "RECONNECT")?;
        let get = |i: usize| r.get(i).copied().unwrap_or(f64::NAN);
        println!(
            "{:>10} {:>8.1} {:>10.1} {:>16.1} {:>14.1} {:>10}",
            waiting.first().copied().unwrap_or(0.0),
            fill_s,
            get(1),
            get(2),
            get(3) / 1024.0,
            get(5),
        );
        rows.push((get(2), get(3) / 1024.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&root);
    if let [(base_first, base_rss), (first, rss)] = rows[..] {
        println!(
            "{n} ops against {BASELINE_OPS}: first push {first:.1} ms ({:.2}x; target <= 100 ms), \
             peak RSS {rss:.1} MiB ({:.2}x; target <= 64 MiB): {}",
            first / base_first,
            rss / base_rss,
            if first <= 100.0 && rss <= 64.0 {
                "within both targets"
            } else {
                "TARGET MISSED"
            }
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "fill" => fill(Path::new(arg(1)), arg(2).parse()?),
        "reconnect" => reconnect(Path::new(arg(1))),
        _ => run(args
            .first()
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000)),
    }
}
