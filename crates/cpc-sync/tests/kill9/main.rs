//! Crash loop: a child process runs an engine on SQLite and is killed with
//! SIGKILL at random points, again and again; every submission it
//! acknowledged must reach the remote exactly once, in per-entity order.
//!
//! The test binary re-runs itself as the child (`kill9_child`, inert unless
//! `CPC_KILL9_CHILD` is set). The remote is an append-only file written and
//! fsynced before `Applied` is answered, deduplicated by operation id, so it
//! survives the kills like a real server would.
//!
//! `CPC_KILL9_CYCLES` (default 20) sets the number of kills and
//! `CPC_KILL9_SEED` the seed of the kill points; `cargo xtask crash --cycles
//! 1000` runs this test with `CPC_KILL9_CYCLES=1000`.

// Test support code panics on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cpc_sync::core::{
    EntityKey, OpOutcome, OperationId, OperationKind, PushOutcome, Transport, TransportError,
};
use cpc_sync::storage::Durability;
use cpc_sync::SyncEngine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ENTITIES: u64 = 5;

/// The remote: one line `id n entity` per applied operation, fsynced before
/// the answer; replays of a logged id answer `AlreadyApplied`.
#[derive(Debug)]
struct FileRemote {
    file: Mutex<File>,
    seen: Mutex<HashSet<OperationId>>,
}

impl FileRemote {
    fn open(path: &Path) -> Self {
        let seen = read_log(path).into_iter().map(|(id, _, _)| id).collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        FileRemote {
            file: Mutex::new(file),
            seen: Mutex::new(seen),
        }
    }
}

#[async_trait]
impl Transport for FileRemote {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        let mut out = Vec::with_capacity(batch.len());
        let mut seen = self.seen.lock().unwrap();
        let mut file = self.file.lock().unwrap();
        let mut text = String::new();
        for op in batch {
            if seen.insert(op.id) {
                let n = String::from_utf8_lossy(&op.payload).into_owned();
                text.push_str(&format!("{} {} {}\n", op.id, n, op.entity.id));
                out.push(OpOutcome::new(op.id, PushOutcome::Applied { version: 1 }));
            } else {
                out.push(OpOutcome::new(
                    op.id,
                    PushOutcome::AlreadyApplied { version: 1 },
                ));
            }
        }
        file.write_all(text.as_bytes())
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        file.sync_data()
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok(out.into())
    }
}

/// The remote log: (id, n, entity) in apply order; a torn last line is ignored.
fn read_log(path: &Path) -> Vec<(OperationId, u64, String)> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let id = parts.next()?.parse().ok()?;
            let n = parts.next()?.parse().ok()?;
            let entity = parts.next()?.to_string();
            Some((id, n, entity))
        })
        .collect()
}

async fn child_main(dir: PathBuf, start: u64, drain: bool) {
    let remote = FileRemote::open(&dir.join("remote.log"));
    let engine = SyncEngine::builder()
        .path(dir.join("queue"))
        .transport(remote)
        .durability(Durability::Immediate)
        .lease_timeout(Duration::from_millis(200))
        // Shorter than the lease, as the builder requires; the file remote
        // answers in well under a millisecond.
        .push_timeout(Duration::from_millis(150))
        .batch_size(8)
        .start()
        .await
        .unwrap();
    let stdout = std::io::stdout();
    if drain {
        // Leases of the killed child expire after 200 ms; then all drains.
        tokio::time::timeout(Duration::from_secs(60), engine.drained())
            .await
            .unwrap()
            .unwrap();
        writeln!(stdout.lock(), "DRAINED").unwrap();
        engine.shutdown().await.unwrap();
        return;
    }
    let mut n = start;
    loop {
        let op = engine
            .operation(
                EntityKey::new("k", format!("e{}", n % ENTITIES)),
                OperationKind::Update,
            )
            .payload(n.to_string().into_bytes())
            .build()
            .unwrap();
        let id = engine.submit(op).await.unwrap();
        let mut out = stdout.lock();
        writeln!(out, "ACK {n} {id}").unwrap();
        out.flush().unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs in the child process only.
#[test]
fn kill9_child() {
    let Ok(dir) = std::env::var("CPC_KILL9_CHILD") else {
        return;
    };
    let start = std::env::var("CPC_KILL9_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let drain = std::env::var("CPC_KILL9_DRAIN").is_ok();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child_main(PathBuf::from(dir), start, drain));
}

fn spawn_child(dir: &Path, start: u64, drain: bool) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "kill9_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("CPC_KILL9_CHILD", dir)
    .env("CPC_KILL9_START", start.to_string())
    .stdout(Stdio::piped());
    if drain {
        cmd.env("CPC_KILL9_DRAIN", "1").stderr(Stdio::inherit());
    } else {
        // Killed children leave nothing worth reading.
        cmd.stderr(Stdio::null());
    }
    cmd.spawn().unwrap()
}

/// What a crash loop saw.
#[derive(Debug, Default)]
struct CrashReport {
    cycles: u32,
    acknowledged: BTreeMap<u64, OperationId>,
}

/// Runs `cycles` kill -9 cycles then a final drain in `dir`; returns what the
/// children acknowledged.
fn crash_loop(dir: &Path, cycles: u32, seed: u64) -> CrashReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = CrashReport::default();
    let mut next = 0u64;
    for _ in 0..cycles {
        let mut child = spawn_child(dir, next, false);
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints "test kill9_child ... " before the first line.
                let Some(at) = line.find("ACK ") else {
                    continue;
                };
                let mut parts = line[at..].split(' ');
                if parts.next() == Some("ACK") {
                    let n: u64 = parts.next().unwrap().parse().unwrap();
                    let id: OperationId = parts.next().unwrap().parse().unwrap();
                    acks.push((n, id));
                }
            }
            acks
        });
        // A random instant: during start-up, recovery, submits or sends.
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(5..400));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        for (n, id) in acks {
            report.acknowledged.insert(n, id);
            next = next.max(n + 1);
        }
        // A submission in flight at the kill may be stored without its ack
        // printed: skip its number so numbers stay unique.
        next += 1;
        report.cycles += 1;
    }
    let mut child = spawn_child(dir, next, true);
    let stdout = child.stdout.take().unwrap();
    // Read to the end: closing the pipe early would kill the child on
    // its last write.
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let drained = lines.iter().any(|l| l.ends_with("DRAINED"));
    let status = child.wait().unwrap();
    assert!(drained && status.success(), "final drain failed: {status}");
    report
}

/// What the remote's log shows against what the children acknowledged.
#[derive(Debug, Default)]
struct Verdict {
    lost: Vec<(u64, OperationId)>,
    duplicated: Vec<OperationId>,
    reordered: Vec<String>,
}

fn check(dir: &Path, report: &CrashReport) -> Verdict {
    let log = read_log(&dir.join("remote.log"));
    let mut count: HashMap<OperationId, u32> = HashMap::new();
    for (id, _, _) in &log {
        *count.entry(*id).or_default() += 1;
    }
    let mut duplicated: Vec<OperationId> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    duplicated.sort();
    let lost = report
        .acknowledged
        .iter()
        .filter(|(_, id)| !count.contains_key(id))
        .map(|(n, id)| (*n, *id))
        .collect();
    let mut verdict = Verdict {
        lost,
        duplicated,
        reordered: Vec::new(),
    };
    // Per entity, the numbers (submission order) increase along the log.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (id, n, entity) in &log {
        if let Some(prev) = last.insert(entity, *n) {
            if prev >= *n {
                verdict
                    .reordered
                    .push(format!("entity {entity}: {n} ({id}) applied after {prev}"));
            }
        }
    }
    verdict
}

#[test]
fn acknowledged_submissions_survive_kill_9_exactly_once_in_order() {
    if std::env::var("CPC_KILL9_CHILD").is_ok() {
        return;
    }
    let cycles = std::env::var("CPC_KILL9_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("CPC_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b69_6c6c);
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    eprintln!(
        "kill9: seed {seed}, {cycles} cycles in {}",
        dir.path().display()
    );
    let report = crash_loop(dir.path(), cycles, seed);
    assert!(
        !report.acknowledged.is_empty(),
        "the children acknowledged nothing"
    );
    let verdict = check(dir.path(), &report);
    // The summary line `cargo xtask crash` sums across loops.
    eprintln!(
        "kill9: cycles {}, acknowledged {}, lost {}, duplicated {}, reordered {}",
        report.cycles,
        report.acknowledged.len(),
        verdict.lost.len(),
        verdict.duplicated.len(),
        verdict.reordered.len()
    );
    assert!(
        verdict.duplicated.is_empty(),
        "applied twice: {:?}",
        verdict.duplicated
    );
    assert!(
        verdict.lost.is_empty(),
        "acknowledged but never applied: {:?}",
        verdict.lost
    );
    assert!(
        verdict.reordered.is_empty(),
        "reordered: {:?}",
        verdict.reordered
    );
}
