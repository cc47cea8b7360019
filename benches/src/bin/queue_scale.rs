//! The 1,000,000-pending figures of `cpc-storage`, per durable backend:
//! open + first `claim_ready(64)` after a clean close and after `kill -9`,
//! peak RSS (VmHWM) of a process draining the queue by `claim_ready(64)` +
//! one durable `complete` per batch, the drain rate, and disk bytes against
//! payload bytes before and after the drain.
//!
//! Each phase runs in its own process (this binary re-executed with a phase
//! argument), so the peak RSS of the drain is not the fill's.
//!
//! ```text
//! cargo run -p cpc-benches --release --bin queue_scale [-- N [backend ...]]
//! ```

use cpc_storage::QueueStorageExt;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cpc_benches::{phase, vm_hwm_kib, PAYLOAD};
use cpc_core::Operation;
use cpc_storage::{Completion, QueueOptions, QueueStorage, SledStorage, SqliteStorage};

const ENTITIES: u64 = 10_000;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn op(n: u64) -> Operation {
    cpc_benches::bench_op("scale", n, ENTITIES)
}

fn open(backend: &str, dir: &Path) -> Res<Box<dyn QueueStorage>> {
    let options = QueueOptions::default();
    Ok(match backend {
        "sqlite" => Box::new(SqliteStorage::open(dir, options)?),
        "sled" => Box::new(SledStorage::open(dir, options)?),
        other => return Err(format!("unknown backend {other}").into()),
    })
}

/// Allocated bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                total += if m.is_dir() {
                    disk_bytes(&e.path())
                } else {
                    m.blocks() * 512
                };
            }
        }
    }
    total
}

// ----- phases (each its own process) -------------------------------------------

fn fill(backend: &str, dir: &Path, n: u64) -> Res<()> {
    let store = open(backend, dir)?;
    let mut next = 0;
    while next < n {
        let k = (n - next).min(10_000);
        store.enqueue_batch((next..next + k).map(op).collect(), 1)?;
        next += k;
    }
    println!("FILLED {}", store.pending()?);
    Ok(())
}

fn open_and_claim(backend: &str, dir: &Path) -> Res<()> {
    let t = Instant::now();
    let store = open(backend, dir)?;
    let opened = t.elapsed();
    let batch = store.claim_ready(2, 64)?;
    let first = t.elapsed();
    // Give the claim back so later phases see the same queue.
    let release: Vec<_> = batch.iter().map(|c| Completion::Release(c.op.id)).collect();
    store.complete(&release, 3)?;
    println!(
        "OPEN {:.3} {:.3} {}",
        opened.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3,
        batch.len()
    );
    Ok(())
}

/// Opens, then keeps enqueueing and draining until killed.
fn busy(backend: &str, dir: &Path) -> Res<()> {
    let store = open(backend, dir)?;
    println!("BUSY");
    let mut n = 10_000_000_000u64;
    loop {
        store.enqueue(op(n), 5)?;
        n += 1;
        let batch = store.claim_ready(6, 8)?;
        let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
        store.complete(&acks, 7)?;
        println!("ACK {n}");
    }
}

fn drain(backend: &str, dir: &Path) -> Res<()> {
    let store = open(backend, dir)?;
    let before = store.pending()?;
    let t = Instant::now();
    let mut drained = 0u64;
    let mut now = 10;
    loop {
        let batch = store.claim_ready(now, 64)?;
        if batch.is_empty() {
            break;
        }
        let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
        store.complete(&acks, now)?;
        drained += batch.len() as u64;
        now += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "DRAIN {drained} {before} {secs:.3} {:.0} {}",
        drained as f64 / secs,
        vm_hwm_kib()
    );
    Ok(())
}

// ----- orchestration -------------------------------------------------------------

fn field(out: &str, tag: &str, i: usize) -> Res<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix(tag))
        .and_then(|rest| rest.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {tag} field {i} in {out:?}").into())
}

fn kill_while_busy(backend: &str, dir: &Path) -> Res<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["busy", backend])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut acks = 0;
    for line in BufReader::new(stdout).lines() {
        if line?.starts_with("ACK") {
            acks += 1;
            if acks >= 200 {
                break;
            }
        }
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    Ok(())
}

fn run(n: u64, backends: &[String]) -> Res<()> {
    let root = std::env::temp_dir().join(format!("cpc-queue-scale-{}", std::process::id()));
    println!(
        "queue_scale: {n} pending ops of {PAYLOAD} B payload ({} MB), in {}",
        n * PAYLOAD as u64 / 1_000_000,
        root.display()
    );
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "backend",
        "fill s",
        "open+claim",
        "after kill",
        "drain op/s",
        "drain MiB",
        "disk/pay",
        "disk after",
        "pay MB"
    );
    for backend in backends {
        let dir: PathBuf = root.join(backend);
        let dir_s = dir.to_string_lossy().into_owned();
        let t = Instant::now();
        phase(&["fill", backend, &dir_s, &n.to_string()])?;
        let fill_s = t.elapsed().as_secs_f64();
        let before = disk_bytes(&dir);
        let clean = phase(&["open", backend, &dir_s])?;
        kill_while_busy(backend, &dir)?;
        let crashed = phase(&["open", backend, &dir_s])?;
        let drained = phase(&["drain", backend, &dir_s])?;
        let after = disk_bytes(&dir);
        let payload = n * PAYLOAD as u64;
        println!(
            "{:<8} {:>10.1} {:>9.1} ms {:>9.1} ms {:>12.0} {:>12.1} {:>9.2}x {:>7.1} MB {:>10.1}",
            backend,
            fill_s,
            field(&clean, "OPEN", 1)?,
            field(&crashed, "OPEN", 1)?,
            field(&drained, "DRAIN", 3)?,
            field(&drained, "DRAIN", 4)? / 1024.0,
            before as f64 / payload as f64,
            after as f64 / 1e6,
            payload as f64 / 1e6,
        );
        println!(
            "         open only: clean {:.1} ms, after kill -9 {:.1} ms; drained {} in {:.1} s; disk before {:.1} MB",
            field(&clean, "OPEN", 0)?,
            field(&crashed, "OPEN", 0)?,
            field(&drained, "DRAIN", 0)?,
            field(&drained, "DRAIN", 2)?,
            before as f64 / 1e6
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "fill" => fill(arg(1), Path::new(arg(2)), arg(3).parse()?),
        "open" => open_and_claim(arg(1), Path::new(arg(2))),
        "busy" => busy(arg(1), Path::new(arg(2))),
        "drain" => drain(arg(1), Path::new(arg(2))),
        _ => {
            let n = args
                .first()
                .and_then(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            let backends: Vec<String> = if args.len() > 1 {
                args[1..].to_vec()
            } else {
                vec!["sqlite".into(), "sled".into()]
            };
            run(n, &backends)
        }
    }
}
