//! Crash loop: an `enqueue` acknowledged under `Immediate` or `GroupCommit`
//! survives `kill -9` at any instant, for every durable backend.
//!
//! The test binary re-executes itself as the child (the `child_process`
//! test, selected by the `CPC_CRASH_CHILD` environment variable; without it
//! that test does nothing). The child opens the store, enqueues numbered
//! operations (one writer under `Immediate`, 16 under `GroupCommit`) and
//! prints `ACK <n>` after each acknowledged one, flushing stdout. The parent
//! SIGKILLs it at a point drawn from a seeded RNG (right after spawn, during
//! open, or after the k-th acknowledgement: no sleeps), then reopens the
//! store and checks that it opens, that every acknowledged operation is
//! present exactly once with its payload intact, that nothing was
//! quarantined, and that draining it obeys the ordering rules (priority
//! order within a claim, strict FIFO per entity). The store is drained at
//! the end of each cycle and reused by the next, so recovery also runs over
//! a log that has seen many crashes.
//!
//! Environment: `CPC_CRASH_CYCLES` (default 50 per backend), `CPC_CRASH_SEED`
//! (default fixed; printed), `CPC_CRASH_BACKENDS` (comma list, default every
//! durable backend). `cargo xtask crash` runs the same test with 1,000
//! cycles.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod coalesce;

use cpc_storage::QueueStorageExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, Operation, OperationId, OperationKind, OperationPriority,
};
use cpc_storage::{Completion, Durability, QueueOptions, QueueStorage, StorageError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writers in group-commit mode.
const GROUP_WRITERS: u64 = 16;
/// Upper bound on operations one child enqueues (it is normally killed long
/// before).
const CHILD_MAX_OPS: u64 = 3_000;
/// Numbers of one cycle live in `[cycle * STRIDE, (cycle + 1) * STRIDE)`.
const STRIDE: u64 = 1_000_000;
const ENTITIES: u64 = 7;
const PAYLOAD_LEN: usize = 256;

fn durable_backends() -> Vec<&'static str> {
    // sled only when the backend is built (feature `sled`, on by default).
    let all: &[&'static str] = if cfg!(feature = "sled") {
        &["sqlite", "sled"]
    } else {
        &["sqlite"]
    };
    match std::env::var("CPC_CRASH_BACKENDS") {
        Ok(list) => all
            .iter()
            .copied()
            .filter(|b| list.split(',').any(|x| x.trim() == *b))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

fn open(
    backend: &str,
    dir: &Path,
    options: QueueOptions,
) -> Result<Box<dyn QueueStorage>, StorageError> {
    match backend {
        #[cfg(feature = "sled")]
        "sled" => Ok(Box::new(cpc_storage::SledStorage::open(dir, options)?)),
        "sqlite" => Ok(Box::new(cpc_storage::SqliteStorage::open(dir, options)?)),
        other => panic!("unknown backend {other}"),
    }
}

fn options(group: bool) -> QueueOptions {
    QueueOptions {
        durability: if group {
            Durability::GroupCommit {
                max_delay: Duration::from_millis(2),
            }
        } else {
            Durability::Immediate
        },
        // Strict priority: the order check below is exact.
        aging_after: None,
        ..QueueOptions::default()
    }
}

/// The operation numbered `n`: deterministic id, entity, priority, payload.
fn numbered(n: u64) -> Operation {
    let mut payload = vec![0u8; PAYLOAD_LEN];
    payload[..8].copy_from_slice(&n.to_be_bytes());
    for (i, b) in payload[8..].iter_mut().enumerate() {
        *b = (n as u8).wrapping_add(i as u8);
    }
    let priority = OperationPriority::from_rank((n % 4) as u8).unwrap_or_default();
    Operation::builder(
        EntityKey::new("crash", format!("e{}", n % ENTITIES)),
        OperationKind::Update,
    )
    .payload(payload)
    .priority(priority)
    .build_at(
        HlcTimestamp::new(1_000_000 + n, 0, NodeId(7)),
        &mut StdRng::seed_from_u64(n),
    )
}

fn number_of(op: &Operation) -> Option<u64> {
    let n = u64::from_be_bytes(op.payload.get(..8)?.try_into().ok()?);
    (numbered(n) == *op).then_some(n)
}

// ----- child ---------------------------------------------------------------

/// The child half: does nothing unless `CPC_CRASH_CHILD` is set.
#[test]
fn child_process() {
    if std::env::var_os("CPC_CRASH_CHILD").is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let backend = var("CPC_CRASH_BACKEND");
    let dir = var("CPC_CRASH_DIR");
    let mode = var("CPC_CRASH_MODE");
    let start: u64 = var("CPC_CRASH_START").parse().unwrap();
    if let Some(mode) = mode.strip_prefix("coalesce-") {
        return coalesce::child(&backend, Path::new(&dir), mode == "group", start);
    }
    let group = mode == "group";
    say("OPENING");
    let opening = std::time::Instant::now();
    let store: Arc<dyn QueueStorage> =
        Arc::from(open(&backend, Path::new(&dir), options(group)).unwrap());
    say(&format!(
        "OPEN {:.2} ms",
        opening.elapsed().as_secs_f64() * 1e3
    ));
    let writers = if group { GROUP_WRITERS } else { 1 };
    run_writers(writers, CHILD_MAX_OPS, move |k| {
        store.enqueue(numbered(start + k), 1_000 + k).unwrap();
        start + k
    });
}

/// Runs `writers` threads, writer `w` writing numbers `w, w + writers, …`
/// below `max` with `write` (which answers the number it acknowledged),
/// printing `ACK <n>` after each; then `DONE`.
fn run_writers(writers: u64, max: u64, write: impl Fn(u64) -> u64 + Send + Sync + 'static) {
    let write = Arc::new(write);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let write = Arc::clone(&write);
            std::thread::spawn(move || {
                let mut k = w;
                while k < max {
                    say(&format!("ACK {}", write(k)));
                    k += writers;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    say("DONE");
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ----- parent --------------------------------------------------------------

/// Where the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Right after spawning: usually before the store is even opened.
    AtSpawn,
    /// When the child says it is opening the store (recovery in progress).
    DuringOpen,
    /// After the k-th acknowledgement.
    AfterAcks(u64),
}

#[derive(Debug, Default)]
struct Summary {
    cycles: u64,
    acknowledged: u64,
    lost: u64,
    claimed: u64,
}

/// Starts this test binary as the child, enqueuing from number `start`.
fn spawn_child(backend: &str, dir: &Path, group: bool, start: u64) -> std::process::Child {
    spawn_mode(
        backend,
        dir,
        if group { "group" } else { "immediate" },
        start,
    )
}

/// [`spawn_child`] with the child's mode spelled out.
fn spawn_mode(backend: &str, dir: &Path, mode: &str, start: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CPC_CRASH_CHILD", "1")
        .env("CPC_CRASH_BACKEND", backend)
        .env("CPC_CRASH_DIR", dir)
        .env("CPC_CRASH_MODE", mode)
        .env("CPC_CRASH_START", start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_cycle(backend: &str, dir: &Path, cycle: u64, rng: &mut StdRng) -> Summary {
    let group = cycle % 2 == 1;
    let kill = match rng.gen_range(0..100) {
        0..=4 => KillPoint::AtSpawn,
        5..=19 => KillPoint::DuringOpen,
        _ => KillPoint::AfterAcks(rng.gen_range(0..if group { 160 } else { 40 })),
    };
    let start = cycle * STRIDE;
    let mut child = spawn_child(backend, dir, group, start);
    let (acked, killed) = acks_until_killed(
        &mut child,
        matches!(kill, KillPoint::AtSpawn),
        |line, acked| match kill {
            KillPoint::DuringOpen => line.contains("OPENING"),
            KillPoint::AfterAcks(k) => acked as u64 >= k,
            KillPoint::AtSpawn => true,
        },
    );
    let status = child.wait().unwrap();
    assert!(
        killed || status.success(),
        "{backend} cycle {cycle}: child failed on its own: {status}"
    );

    // Reopen and check.
    let store = open(backend, dir, options(false)).unwrap_or_else(|e| {
        panic!("{backend} cycle {cycle}: store does not reopen after kill -9: {e:?}")
    });
    let quarantined = store.list_quarantined(&cpc_storage::Page::ALL).unwrap();
    assert!(
        quarantined.is_empty(),
        "{backend} cycle {cycle}: {} record(s) quarantined after kill -9: {quarantined:?}",
        quarantined.len()
    );
    let stored = store.list(&Default::default()).unwrap();
    let mut present: HashMap<u64, u32> = HashMap::new();
    for s in &stored {
        let n = number_of(&s.op).unwrap_or_else(|| {
            panic!(
                "{backend} cycle {cycle}: stored operation {} does not match its number",
                s.op.id
            )
        });
        *present.entry(n).or_default() += 1;
    }
    let mut lost = 0;
    for n in &acked {
        match present.get(n) {
            Some(1) => {}
            Some(c) => panic!("{backend} cycle {cycle}: operation {n} stored {c} times"),
            None => {
                lost += 1;
                eprintln!("{backend} cycle {cycle}: acknowledged operation {n} LOST");
            }
        }
    }
    assert_eq!(
        lost, 0,
        "{backend} cycle {cycle} ({kill:?}): acknowledged operations lost"
    );
    assert_eq!(store.pending().unwrap(), stored.len() as u64);

    let claimed = drain_checking_order(&*store, backend, cycle);
    assert_eq!(claimed, stored.len() as u64);
    Summary {
        cycles: 1,
        acknowledged: acked.len() as u64,
        lost,
        claimed,
    }
}

/// Reads the child's `ACK <n>` lines and kills it (at once if `at_spawn`)
/// as soon as `kill_now(line, acknowledged so far)` says so, then reads
/// what the pipe still holds: every ACK printed before the kill counts.
/// Returns the acknowledged numbers and whether it was killed.
fn acks_until_killed(
    child: &mut std::process::Child,
    at_spawn: bool,
    mut kill_now: impl FnMut(&str, usize) -> bool,
) -> (Vec<u64>, bool) {
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut acked: Vec<u64> = Vec::new();
    let mut killed = false;
    if at_spawn {
        child.kill().unwrap();
        killed = true;
    }
    for line in reader.lines().map_while(Result::ok) {
        // libtest may print its own "test child_process ... " in front of
        // the child's first line, so markers are searched, not matched.
        if let Some(pos) = line.find("ACK ") {
            acked.push(line[pos + 4..].trim().parse().unwrap());
        }
        if !killed && kill_now(&line, acked.len()) {
            child.kill().unwrap();
            killed = true;
        }
    }
    (acked, killed)
}

/// Drains the store by claim(64) + ack, checking the claim order: within a claim,
/// effective priority never rises and equal priorities come in seq order;
/// per entity, operations are claimed strictly in seq order.
fn drain_checking_order(store: &dyn QueueStorage, backend: &str, cycle: u64) -> u64 {
    let mut last_seq_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: HashSet<OperationId> = HashSet::new();
    let mut total = 0;
    let mut now = 10_000_000;
    loop {
        let batch = store.claim_ready(now, 64).unwrap();
        if batch.is_empty() {
            break;
        }
        for w in batch.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(
                a.effective_priority > b.effective_priority
                    || (a.effective_priority == b.effective_priority && a.seq < b.seq),
                "{backend} cycle {cycle}: claim order violates priority/FIFO: {a:?} before {b:?}"
            );
        }
        let mut entities_in_batch = HashSet::new();
        for c in &batch {
            assert!(
                seen.insert(c.op.id),
                "{backend} cycle {cycle}: {} claimed twice",
                c.op.id
            );
            let e = c.op.entity.to_string();
            assert!(
                entities_in_batch.insert(e.clone()),
                "{backend} cycle {cycle}: two operations of {e} in flight at once"
            );
            if let Some(prev) = last_seq_of.insert(e.clone(), c.seq) {
                assert!(prev < c.seq, "{backend} cycle {cycle}: {e} out of order");
            }
        }
        let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
        store.complete(&acks, now).unwrap();
        total += batch.len() as u64;
        now += 1;
    }
    assert_eq!(
        store.pending().unwrap(),
        0,
        "{backend} cycle {cycle}: not drained"
    );
    total
}

fn cycles() -> u64 {
    std::env::var("CPC_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn seed() -> u64 {
    std::env::var("CPC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_C4A5)
}

fn crash_loop(backend: &str) {
    let seed = seed();
    let cycles = cycles();
    println!("{backend}: crash loop, seed {seed}, {cycles} cycles");
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    let mut rng = StdRng::seed_from_u64(seed ^ backend.len() as u64);
    let mut total = Summary::default();
    for cycle in 0..cycles {
        let s = run_cycle(backend, &dir, cycle, &mut rng);
        total.cycles += s.cycles;
        total.acknowledged += s.acknowledged;
        total.lost += s.lost;
        total.claimed += s.claimed;
    }
    println!(
        "{backend}: cycles {}, acknowledged {}, lost {} (recovered and drained {} operations)",
        total.cycles, total.acknowledged, total.lost, total.claimed
    );
    assert_eq!(total.lost, 0);
    assert!(
        total.acknowledged > 0,
        "{backend}: the child never acknowledged anything"
    );
}

#[test]
fn acknowledged_enqueues_survive_kill_9_sqlite() {
    if durable_backends().contains(&"sqlite") {
        crash_loop("sqlite");
    }
}

#[test]
fn acknowledged_enqueues_survive_kill_9_sled() {
    if durable_backends().contains(&"sled") {
        crash_loop("sled");
    }
}

/// Largest WAL the startup crash loop allows (the WAL's size limit).
const WAL_BOUND: u64 = 32 * 1024 * 1024;

/// A startup crash loop: every run is killed at a random instant 20–300 ms
/// after it started, with no clean run in between (an app the OS kills on
/// short background launches, or that crashes at start). The WAL must stay
/// within [`WAL_BOUND`] and nothing acknowledged may be lost. Cycles from
/// `CPC_WAL_CYCLES` (default 30; `cargo xtask crash` runs 200). Prints the
/// WAL size and the open time (of this build: debug under `cargo test`,
/// release under `cargo xtask crash`) at the end.
#[test]
fn the_wal_stays_short_when_every_run_is_killed_soon_after_start_sqlite() {
    if !durable_backends().contains(&"sqlite") {
        return;
    }
    let cycles: u64 = std::env::var("CPC_WAL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = seed();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("queue");
    let wal = dir.join("queue.sqlite3-wal");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x3A1);
    let mut acked: Vec<u64> = Vec::new();
    let mut max_wal = 0u64;
    let mut open_times: Vec<f64> = Vec::new();
    for cycle in 0..cycles {
        let mut child = spawn_child("sqlite", &dir, false, cycle * STRIDE);
        let stdout = child.stdout.take().unwrap();
        let wal_at_start = std::fs::metadata(&wal).map_or(0, |m| m.len());
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut open_ms = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("ACK ") {
                    seen.push(line[pos + 4..].trim().parse::<u64>().unwrap());
                } else if let Some(pos) = line.find("OPEN ") {
                    open_ms = line[pos + 5..]
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<f64>().ok());
                }
            }
            (seen, open_ms)
        });
        let lifetime = rng.gen_range(20..=300);
        std::thread::sleep(Duration::from_millis(lifetime));
        let _ = child.kill();
        let _ = child.wait();
        let (seen, open_ms) = reader.join().unwrap();
        let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        // The open time of the run (killed before its open ended: "-").
        println!(
            "wal loop cycle {cycle:>3}: killed after {lifetime:>3} ms, WAL {wal_at_start:>9} B at \
             start -> {len:>9} B, open {}, acknowledged {}",
            open_ms.map_or("-".to_string(), |ms| format!("{ms:.2} ms")),
            seen.len()
        );
        if let Some(ms) = open_ms {
            open_times.push(ms);
        }
        acked.extend(seen);
        max_wal = max_wal.max(len);
        assert!(
            len <= WAL_BOUND,
            "cycle {cycle}: WAL of {len} bytes after a kill, above {WAL_BOUND}"
        );
    }
    let wal_before_open = std::fs::metadata(&wal).map_or(0, |m| m.len());
    let opened = std::time::Instant::now();
    let store = open("sqlite", &dir, options(false)).unwrap();
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    let stored: HashSet<u64> = store
        .list(&Default::default())
        .unwrap()
        .iter()
        .filter_map(|s| number_of(&s.op))
        .collect();
    let lost = acked.iter().filter(|n| !stored.contains(n)).count();
    let last_ten = &open_times[open_times.len().saturating_sub(10)..];
    let mut sorted = last_ten.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median_last = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "sqlite startup crash loop: cycles {cycles}, acknowledged {}, lost {lost}, max WAL {max_wal} bytes, \
         WAL at the last open {wal_before_open} bytes, last open {open_ms:.1} ms, \
         median open of the children's last 10 opens {median_last:.2} ms, seed {seed}",
        acked.len()
    );
    assert_eq!(lost, 0, "acknowledged operations lost");
    assert!(
        !acked.is_empty(),
        "the children never acknowledged anything"
    );
}

/// The checker must be able to fail: a store that lost an acknowledged
/// operation, or that breaks FIFO, is caught.
#[test]
fn the_checks_catch_a_lost_operation_and_a_fifo_violation() {
    let store = cpc_storage::MemoryStorage::new(options(false));
    for n in 0..10 {
        store.enqueue(numbered(n), 1).unwrap();
    }
    // Lose operation 3 as a faulty backend would.
    assert!(store.drop_op(numbered(3).id).unwrap());
    let stored = store.list(&Default::default()).unwrap();
    let present: HashSet<u64> = stored.iter().filter_map(|s| number_of(&s.op)).collect();
    let lost: Vec<u64> = (0..10).filter(|n| !present.contains(n)).collect();
    assert_eq!(lost, vec![3]);
    // A corrupted payload no longer matches its number.
    let mut bad = numbered(4);
    bad.payload[100] ^= 1;
    assert_eq!(number_of(&bad), None);
    // The drain check panics on an out-of-order claim (a fake store that
    // returns one entity's operations in reverse).
    let result = std::panic::catch_unwind(|| {
        #[derive(Debug)]
        struct Reversed(cpc_storage::MemoryStorage, std::sync::Mutex<bool>);
        impl QueueStorage for Reversed {
            fn claim_ready(
                &self,
                now: u64,
                limit: usize,
            ) -> cpc_storage::Result<Vec<cpc_storage::Claimed>> {
                let mut first = self.1.lock().unwrap();
                let mut v = self.0.claim_ready(now, limit)?;
                if *first {
                    *first = false;
                    v.reverse();
                }
                Ok(v)
            }
            fn enqueue_batch(
                &self,
                ops: Vec<Operation>,
                now: u64,
            ) -> cpc_storage::Result<Vec<u64>> {
                self.0.enqueue_batch(ops, now)
            }
            fn enqueue_coalesced(
                &self,
                ops: Vec<Operation>,
                now: u64,
                c: std::sync::Arc<dyn cpc_core::Coalescer>,
            ) -> cpc_storage::Result<Vec<cpc_storage::Enqueued>> {
                self.0.enqueue_coalesced(ops, now, c)
            }
            fn complete(&self, c: &[Completion], now: u64) -> cpc_storage::Result<()> {
                self.0.complete(c, now)
            }
            fn max_payload(&self) -> usize {
                self.0.max_payload()
            }
            fn stats(&self) -> cpc_storage::Result<cpc_storage::QueueStats> {
                self.0.stats()
            }
            fn list(
                &self,
                f: &cpc_storage::ListFilter,
            ) -> cpc_storage::Result<Vec<cpc_storage::StoredOperation>> {
                self.0.list(f)
            }
            fn get(
                &self,
                id: OperationId,
            ) -> cpc_storage::Result<Option<cpc_storage::StoredOperation>> {
                self.0.get(id)
            }
            fn recover(&self, now: u64) -> cpc_storage::Result<u64> {
                self.0.recover(now)
            }
            fn next_wakeup(&self) -> cpc_storage::Result<Option<u64>> {
                self.0.next_wakeup()
            }
            fn list_deferred(
                &self,
                p: &cpc_storage::Page,
            ) -> cpc_storage::Result<Vec<cpc_storage::DeferredConflict>> {
                self.0.list_deferred(p)
            }
            fn amend(&self, change: cpc_storage::Amend) -> cpc_storage::Result<u64> {
                self.0.amend(change)
            }
            fn log_conflict(&self, e: &cpc_core::ConflictRecord) -> cpc_storage::Result<u64> {
                self.0.log_conflict(e)
            }
            fn conflict_entries(
                &self,
                f: &cpc_storage::ConflictFilter,
            ) -> cpc_storage::Result<Vec<cpc_storage::LoggedConflict>> {
                self.0.conflict_entries(f)
            }
            fn list_quarantined(
                &self,
                p: &cpc_storage::Page,
            ) -> cpc_storage::Result<Vec<cpc_storage::QuarantinedRecord>> {
                self.0.list_quarantined(p)
            }
            fn take_quarantine_notices(&self) -> Vec<cpc_storage::QuarantineNotice> {
                self.0.take_quarantine_notices()
            }
            fn respread_waiting(
                &self,
                base: u64,
                spread: u64,
                salt: u32,
                page: &cpc_storage::Page,
            ) -> cpc_storage::Result<cpc_storage::Respread> {
                self.0.respread_waiting(base, spread, salt, page)
            }
            fn clock_mark(
                &self,
                raise_to: Option<HlcTimestamp>,
            ) -> cpc_storage::Result<Option<HlcTimestamp>> {
                self.0.clock_mark(raise_to)
            }
            fn sync_state(
                &self,
                key: &str,
                set: Option<Vec<u8>>,
            ) -> cpc_storage::Result<Option<Vec<u8>>> {
                self.0.sync_state(key, set)
            }
            fn flush(&self) -> cpc_storage::Result<()> {
                self.0.flush()
            }
            fn requeue_acked(
                &self,
                head_seq: u64,
                now: u64,
                limit: usize,
            ) -> cpc_storage::Result<cpc_storage::Requeued> {
                self.0.requeue_acked(head_seq, now, limit)
            }
            fn acked(
                &self,
                page: &cpc_storage::Page,
            ) -> cpc_storage::Result<Vec<cpc_storage::AckedOp>> {
                self.0.acked(page)
            }
        }
        let r = Reversed(
            cpc_storage::MemoryStorage::new(options(false)),
            std::sync::Mutex::new(true),
        );
        for n in 0..10 {
            r.enqueue(numbered(n), 1).unwrap();
        }
        drain_checking_order(&r, "reversed", 0);
    });
    assert!(result.is_err(), "the order check accepted a reversed claim");
}
