//! How fast can a durable drain be on SQLite, with and without per-entity
//! FIFO? Three drains of the same queue shape, measured in one run on the
//! same disk, so their ratios hold on a noisy machine (issue 3's drain
//! target is 75,000 ops/s):
//!
//! 1. **outbox**: the plain SQLite outbox the target was first measured on
//!    (`rowid` + body); a claim reads the 64 oldest rows, an ack deletes
//!    them; no priority, no entity order, no lease, no retry count.
//! 2. **entity heads (ideal)**: the least a store must do to give strict
//!    FIFO per entity with priority across entities in O(batch · log n):
//!    the head's state lives in its entity's row (partial indexes for due
//!    and leased heads), operations are chained per entity and found by
//!    id. A claim reads 64 due heads with their bodies and marks each
//!    leased; an ack finds the operation by id, moves its entity's head to
//!    the next operation (reading that one's priority) and deletes it. No
//!    counters, checksums, aging, retry bookkeeping or quarantine: a
//!    ceiling, not a queue.
//! 3. **`SqliteStorage`**: this crate's queue (with its default
//!    `secure_delete`, and once more without it, to state what erasing
//!    acknowledged payloads costs on enqueue and drain), `claim_ready(64)` + one
//!    `complete` of the acks per batch.
//!
//! Every variant commits each claim at `synchronous=NORMAL` and each ack
//! batch at `FULL` (one fdatasync per batch), as `SqliteStorage` does.
//! Operations: 256 B payloads over 10,000 entities, four priorities by
//! entity. The median of `--runs` runs of each is printed, with ratios.
//!
//! ```text
//! cargo run --release -p cpc-benches --bin drain_ceiling [-- N [RUNS]]
//! ```
//! `CPC_SCALE_DIR` sets where the databases are made (default: the system
//! temporary directory).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
use cpc_storage::{Completion, QueueOptions, QueueStorage, SqliteStorage};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rusqlite::{params, Connection, TransactionBehavior};

const PAYLOAD: usize = 256;
const ENTITIES: u64 = 10_000;
const CLAIM: usize = 64;
const FILL_BATCH: u64 = 10_000;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn open(path: &Path) -> Res<Connection> {
    let c = Connection::open(path)?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(format!("journal mode {mode}, not wal").into());
    }
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "cache_size", -8192)?;
    Ok(c)
}

/// Runs `claim` at `synchronous=NORMAL` and `ack` (given the claim's
/// result) at `FULL`, until a claim returns nothing; ops/s.
fn drain<T>(
    c: &mut Connection,
    mut claim: impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<T>>,
    mut ack: impl FnMut(&rusqlite::Transaction<'_>, &[T]) -> rusqlite::Result<()>,
) -> Res<f64> {
    let t = Instant::now();
    let mut n = 0usize;
    loop {
        c.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let batch = claim(&tx)?;
        tx.commit()?;
        c.pragma_update(None, "synchronous", "FULL")?;
        if batch.is_empty() {
            break;
        }
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        ack(&tx, &batch)?;
        tx.commit()?;
        n += batch.len();
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn outbox(dir: &Path, n: u64) -> Res<f64> {
    let mut c = open(&dir.join("outbox.sqlite3"))?;
    c.execute_batch("CREATE TABLE q (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    let tx = c.transaction()?;
    {
        let mut st = tx.prepare("INSERT INTO q (body) VALUES (?1)")?;
        for i in 0..n {
            st.execute(params![vec![(i % 251) as u8; PAYLOAD + 40]])?;
        }
    }
    tx.commit()?;
    drain(
        &mut c,
        |tx| {
            tx.prepare_cached("SELECT seq, body FROM q ORDER BY seq LIMIT ?1")?
                .query_map(params![CLAIM as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?
                .collect()
        },
        |tx, batch| {
            let mut st = tx.prepare_cached("DELETE FROM q WHERE seq = ?1")?;
            for (seq, _) in batch {
                st.execute(params![seq])?;
            }
            Ok(())
        },
    )
}

/// The entity of operation `i` (1-based seq) and its first seq.
fn entity_of(seq: u64) -> u64 {
    seq % ENTITIES
}

fn heads(dir: &Path, n: u64) -> Res<f64> {
    let mut c = open(&dir.join("heads.sqlite3"))?;
    c.execute_batch(
        "CREATE TABLE ops (seq INTEGER PRIMARY KEY, eid INTEGER NOT NULL, nxt INTEGER,
             id BLOB NOT NULL, priority INTEGER NOT NULL, body BLOB NOT NULL);
         CREATE UNIQUE INDEX ops_id ON ops (id);
         CREATE TABLE entities (eid INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE,
             head INTEGER, last INTEGER, state INTEGER, lease INTEGER, attempts INTEGER,
             due INTEGER, eff INTEGER);
         CREATE INDEX entities_due ON entities (eff DESC, head) WHERE due = 1;
         CREATE INDEX entities_leased ON entities (lease, head) WHERE state = 1;",
    )?;
    let tx = c.transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO ops (seq, eid, nxt, id, priority, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for seq in 1..=n {
            let e = entity_of(seq);
            let nxt = (seq + ENTITIES <= n).then_some((seq + ENTITIES) as i64);
            let id = id_bytes(seq);
            ins.execute(params![
                seq as i64,
                e as i64,
                nxt,
                &id[..],
                (e % 4) as i64,
                vec![(seq % 251) as u8; PAYLOAD + 24]
            ])?;
        }
        let mut ent = tx.prepare(
            "INSERT INTO entities (eid, key, head, last, state, lease, attempts, due, eff)
             VALUES (?1, ?2, ?3, ?4, 0, NULL, 0, 1, ?5)",
        )?;
        for e in 0..ENTITIES.min(n) {
            let first = if e == 0 { ENTITIES } else { e };
            if first > n {
                continue;
            }
            let last = first + (n - first) / ENTITIES * ENTITIES;
            ent.execute(params![
                e as i64,
                format!("scale/e{e}"),
                first as i64,
                last as i64,
                (e % 4) as i64
            ])?;
        }
    }
    tx.commit()?;
    drain(
        &mut c,
        |tx| {
            let batch: Vec<(i64, Vec<u8>, Vec<u8>)> = tx
                .prepare_cached(
                    "SELECT e.eid, o.id, o.body FROM entities e JOIN ops o ON o.seq = e.head
                     WHERE e.due = 1 ORDER BY e.eff DESC, e.head LIMIT ?1",
                )?
                .query_map(params![CLAIM as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut lease = tx.prepare_cached(
                "UPDATE entities SET state = 1, lease = ?2, attempts = attempts + 1,
                 due = NULL, eff = NULL WHERE eid = ?1",
            )?;
            for (eid, _, _) in &batch {
                lease.execute(params![eid, 60_000i64])?;
            }
            Ok(batch)
        },
        |tx, batch| {
            let mut find = tx.prepare_cached("SELECT seq, eid, nxt FROM ops WHERE id = ?1")?;
            let mut priority = tx.prepare_cached("SELECT priority FROM ops WHERE seq = ?1")?;
            let mut advance = tx.prepare_cached(
                "UPDATE entities SET head = ?2, state = 0, lease = NULL, attempts = 0,
                 due = 1, eff = ?3 WHERE eid = ?1",
            )?;
            let mut done = tx.prepare_cached("DELETE FROM entities WHERE eid = ?1")?;
            let mut delete = tx.prepare_cached("DELETE FROM ops WHERE seq = ?1")?;
            for (_, id, _) in batch {
                let (seq, eid, nxt): (i64, i64, Option<i64>) =
                    find.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                match nxt {
                    Some(next) => {
                        let p: i64 = priority.query_row(params![next], |r| r.get(0))?;
                        advance.execute(params![eid, next, p])?;
                    }
                    None => {
                        done.execute(params![eid])?;
                    }
                }
                delete.execute(params![seq])?;
            }
            Ok(())
        },
    )
}

fn id_bytes(seq: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    id[8..].copy_from_slice(&seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    id
}

fn op(seq: u64) -> Operation {
    let e = entity_of(seq);
    Operation::builder(
        EntityKey::new("scale", format!("e{e}")),
        OperationKind::Update,
    )
    .payload(vec![(seq % 251) as u8; PAYLOAD])
    .priority(OperationPriority::from_rank((e % 4) as u8).unwrap_or_default())
    .build_at(
        HlcTimestamp::new(1_700_000_000_000 + seq, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(seq),
    )
}

/// Fills then drains a `SqliteStorage`; returns (fill ops/s, drain ops/s).
fn storage(dir: &Path, n: u64, secure_delete: bool) -> Res<(f64, f64)> {
    let qdir = dir.join(if secure_delete {
        "queue"
    } else {
        "queue-plain"
    });
    let options = QueueOptions {
        secure_delete,
        ..QueueOptions::default()
    };
    let store = SqliteStorage::open_at(&qdir, options, 1)?;
    let mut seq = 1;
    let filled = Instant::now();
    while seq <= n {
        let end = (seq + FILL_BATCH).min(n + 1);
        store.enqueue_batch((seq..end).map(op).collect(), 1)?;
        seq = end;
    }
    let fill = n as f64 / filled.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut drained = 0usize;
    let mut now = 2;
    loop {
        let batch = store.claim_ready(now, CLAIM)?;
        if batch.is_empty() {
            break;
        }
        let acks: Vec<_> = batch.iter().map(|c| Completion::Ack(c.op.id)).collect();
        store.complete(&acks, now)?;
        drained += acks.len();
        now += 1;
    }
    if drained as u64 != n {
        return Err(format!("drained {drained} of {n}").into());
    }
    Ok((fill, drained as f64 / t.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let root: PathBuf =
        std::env::var_os("CPC_SCALE_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!(
        "drain_ceiling: drain {n} ops of {PAYLOAD} B over {ENTITIES} entities by claim({CLAIM}) \
         + ack, {runs} runs, in {}",
        root.display()
    );
    let (mut o, mut h, mut s) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fill_on, mut fill_off, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let tmp = tempfile::Builder::new()
            .prefix("cpc-drain-ceiling-")
            .tempdir_in(&root)?;
        o.push(outbox(tmp.path(), n)?);
        h.push(heads(tmp.path(), n)?);
        let (f_on, d_on) = storage(tmp.path(), n, true)?;
        let (f_off, d_off) = storage(tmp.path(), n, false)?;
        s.push(d_on);
        plain.push(d_off);
        fill_on.push(f_on);
        fill_off.push(f_off);
        println!(
            "run {run}: outbox {:.0} ops/s, entity heads (ideal) {:.0} ops/s, SqliteStorage {:.0} ops/s \
             (without secure_delete {d_off:.0}; fill {f_on:.0} vs {f_off:.0} ops/s)",
            o[run - 1],
            h[run - 1],
            s[run - 1]
        );
    }
    let (fill_on, fill_off, plain) = (median(fill_on), median(fill_off), median(plain));
    let (o, h, s) = (median(o), median(h), median(s));
    println!(
        "secure_delete (the default): enqueue {fill_on:.0} vs {fill_off:.0} ops/s without = {:.2}x; \
         drain {s:.0} vs {plain:.0} ops/s without = {:.2}x",
        fill_on / fill_off,
        s / plain
    );
    println!(
        "median: outbox {o:.0} ops/s; entity heads (ideal) {h:.0} ops/s = {:.2}x outbox; \
         SqliteStorage {s:.0} ops/s = {:.2}x outbox, {:.2}x ideal heads",
        h / o,
        s / o,
        s / h
    );
    Ok(())
}
