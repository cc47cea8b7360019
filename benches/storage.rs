//! `cpc-storage`: enqueue and drain rates of every backend with honest
//! durability, beside baselines measured in the same run (payload 256 B):
//!
//! - a raw preallocated file written with `pwrite` and `fdatasync` per
//!   operation and per group of 64, and the same without any sync: the
//!   floor the disk sets;
//! - a plain SQLite WAL outbox table (rusqlite, `synchronous=FULL`), one
//!   transaction per operation and per group of 64: what SQLite costs
//!   before our indexes and bookkeeping;
//! - per backend (sqlite, sled, memory): `Immediate` enqueue, `GroupCommit`
//!   with 64 concurrent writers (throughput; the p99 enqueue latency is
//!   printed after the group) and draining by `claim_ready(64)` + one
//!   `complete` of the acks per batch (one durable commit per batch);
//! - the submit cost of coalescing (`enqueue_coalescing`, SQLite and
//!   memory, `Immediate`): `off` is the plain enqueue, `on_keep` a
//!   coalescing enqueue whose coalescer keeps both (the look at the
//!   entity's newest operation, then a plain store), `on_merge` one where
//!   every edit merges into its record's queued operation (the
//!   `StandardCoalescer`, 1,000 records).
//!
//! The 1,000,000-pending figures (open time, RSS, disk use) come from
//! `cargo run -p cpc-benches --release --bin queue_scale`.

// A benchmark that cannot set up or write must stop loudly, not measure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_storage::QueueStorageExt;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpc_benches::PAYLOAD;
use cpc_core::Operation;
use cpc_storage::{
    Completion, Durability, MemoryStorage, QueueOptions, QueueStorage, SledStorage, SqliteStorage,
};
use criterion::{BenchmarkId, Criterion, Throughput};

const GROUP: usize = 64;
/// Size of the preallocated raw file; writes wrap around inside it.
const RAW_FILE_LEN: u64 = 64 * 1024 * 1024;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh operation with a 256-byte payload, spread over 1,000 entities
/// and the four priorities.
fn next_op() -> Operation {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    cpc_benches::bench_op("bench", n, 1000)
}

fn configure(c: &mut Criterion) -> Criterion {
    std::mem::take(c)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

// ----- baselines ---------------------------------------------------------------

fn preallocated(dir: &Path) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("raw.bin"))
        .unwrap();
    // Really allocated (written), not sparse, so the measured syncs carry
    // data only, not block allocation.
    let chunk = vec![0u8; 1024 * 1024];
    for i in 0..RAW_FILE_LEN / chunk.len() as u64 {
        f.write_at(&chunk, i * chunk.len() as u64).unwrap();
    }
    f.sync_all().unwrap();
    f
}

fn raw_baselines(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let f = preallocated(tmp.path());
    let record = vec![0xA5u8; PAYLOAD];
    let mut offset = 0u64;
    let mut next = move || {
        let at = offset;
        offset = (offset + PAYLOAD as u64) % RAW_FILE_LEN;
        at
    };
    let mut g = c.benchmark_group("baseline_raw_file");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fdatasync_per_op", |b| {
        b.iter(|| {
            f.write_at(&record, next()).unwrap();
            f.sync_data().unwrap();
        })
    });
    g.bench_function("no_sync_per_op", |b| {
        b.iter(|| f.write_at(black_box(&record), next()).unwrap())
    });
    g.throughput(Throughput::Elements(GROUP as u64));
    g.bench_function("fdatasync_per_64", |b| {
        b.iter(|| {
            for _ in 0..GROUP {
                f.write_at(&record, next()).unwrap();
            }
            f.sync_data().unwrap();
        })
    });
    g.bench_function("no_sync_per_64", |b| {
        b.iter(|| {
            for _ in 0..GROUP {
                f.write_at(black_box(&record), next()).unwrap();
            }
        })
    });
    g.finish();
}

fn sqlite_outbox_baseline(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let conn = rusqlite::Connection::open(tmp.path().join("outbox.sqlite3")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id BLOB NOT NULL, body BLOB NOT NULL);",
    )
    .unwrap();
    let record = vec![0xA5u8; PAYLOAD];
    let mut n = 0u64;
    let mut g = c.benchmark_group("baseline_sqlite_outbox");
    g.throughput(Throughput::Elements(1));
    g.bench_function("insert_per_op", |b| {
        b.iter(|| {
            n += 1;
            conn.execute(
                "INSERT INTO outbox (id, body) VALUES (?1, ?2)",
                rusqlite::params![n.to_be_bytes(), record],
            )
            .unwrap();
        })
    });
    g.throughput(Throughput::Elements(GROUP as u64));
    g.bench_function("insert_per_64", |b| {
        b.iter(|| {
            conn.execute_batch("BEGIN").unwrap();
            for _ in 0..GROUP {
                n += 1;
                conn.execute(
                    "INSERT INTO outbox (id, body) VALUES (?1, ?2)",
                    rusqlite::params![n.to_be_bytes(), record],
                )
                .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
        })
    });
    g.finish();
}

// ----- backends ----------------------------------------------------------------

const BACKENDS: [&str; 3] = ["sqlite", "sled", "memory"];

fn open(backend: &str, dir: &Path, durability: Durability) -> Arc<dyn QueueStorage> {
    let options = QueueOptions {
        durability,
        ..QueueOptions::default()
    };
    match backend {
        "sqlite" => Arc::new(SqliteStorage::open(dir, options).unwrap()),
        "sled" => Arc::new(SledStorage::open(dir, options).unwrap()),
        _ => Arc::new(MemoryStorage::new(options)),
    }
}

fn enqueue_immediate(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue_immediate");
    g.throughput(Throughput::Elements(1));
    for backend in BACKENDS {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let store = open(backend, &tmp.path().join("q"), Durability::Immediate);
        g.bench_function(BenchmarkId::from_parameter(backend), |b| {
            b.iter(|| store.enqueue(next_op(), 1).unwrap())
        });
    }
    g.finish();
}

/// A coalescer that never merges: what looking costs when nothing merges.
#[derive(Debug)]
struct KeepBoth;

impl cpc_core::Coalescer for KeepBoth {
    fn coalesce(&self, _: &Operation, _: &Operation) -> cpc_core::Coalesced {
        cpc_core::Coalesced::Keep
    }
}

fn enqueue_coalescing(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue_coalescing");
    g.throughput(Throughput::Elements(1));
    let keep: Arc<dyn cpc_core::Coalescer> = Arc::new(KeepBoth);
    let merge: Arc<dyn cpc_core::Coalescer> = Arc::new(cpc_core::StandardCoalescer::new());
    for backend in ["sqlite", "memory"] {
        for mode in ["off", "on_keep", "on_merge"] {
            let tmp = tempfile::Builder::new()
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()
                .unwrap();
            let store = open(backend, &tmp.path().join("q"), Durability::Immediate);
            let id = format!("{backend}_{mode}");
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| match mode {
                    "off" => {
                        store.enqueue(next_op(), 1).unwrap();
                    }
                    "on_keep" => {
                        store
                            .enqueue_coalesced(vec![next_op()], 1, Arc::clone(&keep))
                            .unwrap();
                    }
                    _ => {
                        store
                            .enqueue_coalesced(vec![next_op()], 1, Arc::clone(&merge))
                            .unwrap();
                    }
                })
            });
        }
    }
    g.finish();
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_commit_64_writers");
    g.throughput(Throughput::Elements(GROUP as u64));
    let mut p99s = Vec::new();
    for backend in BACKENDS {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let store = open(
            backend,
            &tmp.path().join("q"),
            Durability::GroupCommit {
                max_delay: Duration::from_millis(1),
            },
        );
        let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
        g.bench_function(BenchmarkId::from_parameter(backend), |b| {
            // One iteration: each of 64 writers enqueues one operation.
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..GROUP {
                        let store = store.clone();
                        let latencies = latencies.clone();
                        s.spawn(move || {
                            let mut mine = Vec::with_capacity(iters as usize);
                            for _ in 0..iters {
                                let op = next_op();
                                let t = Instant::now();
                                store.enqueue(op, 1).unwrap();
                                mine.push(t.elapsed());
                            }
                            latencies.lock().unwrap().extend(mine);
                        });
                    }
                });
                start.elapsed()
            })
        });
        let mut all = latencies.lock().unwrap().clone();
        all.sort();
        p99s.push((
            backend,
            percentile(&all, 50.0),
            percentile(&all, 99.0),
            all.len(),
        ));
    }
    g.finish();
    for (backend, p50, p99, n) in p99s {
        println!(
            "group_commit_64_writers/{backend}: enqueue latency p50 {:.3} ms, p99 {:.3} ms over {n} enqueues",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

fn drain(c: &mut Criterion) {
    let mut g = c.benchmark_group("drain_claim64_ack");
    g.throughput(Throughput::Elements(GROUP as u64));
    for backend in BACKENDS {
        let tmp = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let store = open(backend, &tmp.path().join("q"), Durability::Immediate);
        g.bench_function(BenchmarkId::from_parameter(backend), |b| {
            b.iter_custom(|iters| {
                // Fill (untimed) with enough work for `iters` batches.
                let need = iters * GROUP as u64;
                let mut have = store.pending().unwrap();
                while have < need {
                    let n = (need - have).min(10_000);
                    let ops: Vec<_> = (0..n).map(|_| next_op()).collect();
                    store.enqueue_batch(ops, 1).unwrap();
                    have += n;
                }
                let start = Instant::now();
                for i in 0..iters {
                    let batch = store.claim_ready(2 + i, GROUP).unwrap();
                    let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
                    store.complete(&acks, 2 + i).unwrap();
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = configure(&mut Criterion::default()).configure_from_args();
    raw_baselines(&mut c);
    sqlite_outbox_baseline(&mut c);
    enqueue_immediate(&mut c);
    enqueue_coalescing(&mut c);
    group_commit(&mut c);
    drain(&mut c);
    c.final_summary();
}
