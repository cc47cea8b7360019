//! Durability audit: `kill -9` keeps the OS page cache, so the crash loop
//! cannot catch a missing fsync. This test counts the real sync system calls
//! with `strace -f -c` and asserts that every durable backend issues at
//! least one `fsync`/`fdatasync` per `Immediate` enqueue, and at least one
//! per group under `GroupCommit` (sled 0.34's own `flush()` issues only
//! `sync_file_range`, which does not count).
//!
//! The test binary re-executes itself as the traced child (the
//! `audit_child` test, selected by `CPC_AUDIT_CHILD`). Each count is taken
//! relative to a baseline child that only opens and closes the store, so
//! syncs made at open or close cannot stand in for per-write syncs.
//! Skipped, with a printed reason, where `strace` is not installed.

// Test helpers outside `#[test]` functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_storage::QueueStorageExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind};
use cpc_storage::{Durability, QueueOptions, QueueStorage, StorageError};
use rand::rngs::StdRng;
use rand::SeedableRng;

const IMMEDIATE_OPS: u64 = 200;
const GROUP_WRITERS: u64 = 16;
const GROUP_OPS_PER_WRITER: u64 = 50;

/// Opens a backend; for sled also returns the handle, to read its sync count.
/// The store, and for sled its count of syncs.
type Opened = (Arc<dyn QueueStorage>, Option<Box<dyn Fn() -> u64>>);

fn open(backend: &str, dir: &Path, options: QueueOptions) -> Result<Opened, StorageError> {
    match backend {
        #[cfg(feature = "sled")]
        "sled" => {
            let s = Arc::new(cpc_storage::SledStorage::open(dir, options)?);
            let counted = s.clone();
            Ok((s, Some(Box::new(move || counted.sync_count()))))
        }
        "sqlite" => Ok((
            Arc::new(cpc_storage::SqliteStorage::open(dir, options)?),
            None,
        )),
        other => panic!("unknown backend {other}"),
    }
}

fn op(n: u64) -> Operation {
    Operation::builder(
        EntityKey::new("audit", format!("e{}", n % 13)),
        OperationKind::Update,
    )
    .payload(vec![n as u8; 256])
    .build_at(
        HlcTimestamp::new(1_000 + n, 0, NodeId(3)),
        &mut StdRng::seed_from_u64(n),
    )
}

/// The traced half: does nothing unless `CPC_AUDIT_CHILD` is set.
#[test]
fn audit_child() {
    if std::env::var_os("CPC_AUDIT_CHILD").is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let backend = var("CPC_AUDIT_BACKEND");
    let dir = PathBuf::from(var("CPC_AUDIT_DIR"));
    let mode = var("CPC_AUDIT_MODE");
    let durability = if mode == "group" {
        Durability::GroupCommit {
            max_delay: Duration::from_millis(2),
        }
    } else {
        Durability::Immediate
    };
    let options = QueueOptions {
        durability,
        ..QueueOptions::default()
    };
    let (store, sled) = open(&backend, &dir, options).unwrap();
    match mode.as_str() {
        "baseline" => {}
        "immediate" => {
            for n in 0..IMMEDIATE_OPS {
                store.enqueue(op(n), 1_000 + n).unwrap();
            }
        }
        "group" => {
            let threads: Vec<_> = (0..GROUP_WRITERS)
                .map(|w| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        for k in 0..GROUP_OPS_PER_WRITER {
                            let n = w * GROUP_OPS_PER_WRITER + k;
                            store.enqueue(op(n), 1_000 + n).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        other => panic!("unknown mode {other}"),
    }
    if let Some(sync_count) = sled {
        println!("COMMITS {}", sync_count());
    }
}

/// Calls per traced system call, parsed from `strace -c` output.
fn parse_strace_summary(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        // `% time  seconds  usecs/call  calls  [errors]  syscall`: the
        // errors column is blank when zero, so count from the front.
        if tokens.len() < 5 || tokens[0].starts_with('%') || tokens[0].starts_with('-') {
            continue;
        }
        let Some(name) = tokens.last() else { continue };
        if *name == "total" {
            continue;
        }
        if let Ok(calls) = tokens[3].parse::<u64>() {
            *out.entry((*name).to_owned()).or_default() += calls;
        }
    }
    out
}

struct Traced {
    syncs: u64,
    /// Of `syncs`, the `fdatasync` calls.
    fdatasync: u64,
    sync_file_range: u64,
    commits: Option<u64>,
}

fn traced_run(backend: &str, mode: &str) -> Traced {
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let report = tmp.path().join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&report)
        .args(["-e", "trace=fsync,fdatasync,sync_file_range"])
        .arg(std::env::current_exe().unwrap())
        .args(["audit_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("CPC_AUDIT_CHILD", "1")
        .env("CPC_AUDIT_BACKEND", backend)
        .env("CPC_AUDIT_DIR", tmp.path().join("queue"))
        .env("CPC_AUDIT_MODE", mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{backend} {mode}: traced child failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let commits = stdout
        .lines()
        .find_map(|l| l[l.find("COMMITS ")? + 8..].trim().parse().ok());
    let text = std::fs::read_to_string(&report).unwrap();
    let calls = parse_strace_summary(&text);
    let get = |k: &str| calls.get(k).copied().unwrap_or(0);
    Traced {
        syncs: get("fsync") + get("fdatasync"),
        fdatasync: get("fdatasync"),
        sync_file_range: get("sync_file_range"),
        commits,
    }
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn audit(backend: &str) {
    if !strace_available() {
        println!("skipped: strace not found (install it to run the durability audit)");
        return;
    }
    let base = traced_run(backend, "baseline");
    let imm = traced_run(backend, "immediate");
    let extra = imm.syncs.saturating_sub(base.syncs);
    println!(
        "{backend} immediate: {IMMEDIATE_OPS} enqueues, {} fsync+fdatasync ({} above the open/close baseline of {}), {} sync_file_range",
        imm.syncs, extra, base.syncs, imm.sync_file_range
    );
    assert!(
        extra >= IMMEDIATE_OPS,
        "{backend}: {IMMEDIATE_OPS} Immediate enqueues made only {extra} fsync/fdatasync calls"
    );
    if backend == "sqlite" {
        // This workspace builds the bundled SQLite with HAVE_FDATASYNC
        // (.cargo/config.toml): its commits fdatasync, they do not fsync.
        assert!(
            imm.fdatasync >= IMMEDIATE_OPS,
            "sqlite: {IMMEDIATE_OPS} Immediate enqueues made {} fdatasync calls: built without \
             LIBSQLITE3_FLAGS=-DHAVE_FDATASYNC?",
            imm.fdatasync
        );
    }

    let group = traced_run(backend, "group");
    let n = GROUP_WRITERS * GROUP_OPS_PER_WRITER;
    let extra = group.syncs.saturating_sub(base.syncs);
    // Each writer waits for its operation to be durable before the next,
    // so one sync covers at most one operation per writer. Commits are
    // counted above the baseline's too (creating the store commits once).
    let floor = n
        .div_ceil(GROUP_WRITERS)
        .max(
            group
                .commits
                .unwrap_or(0)
                .saturating_sub(base.commits.unwrap_or(0)),
        )
        .max(1);
    println!(
        "{backend} group commit: {n} enqueues by {GROUP_WRITERS} writers, {} fsync+fdatasync ({extra} above baseline), commits reported {:?}, {} sync_file_range",
        group.syncs, group.commits, group.sync_file_range
    );
    assert!(
        extra >= floor,
        "{backend}: group commit made {extra} syncs for {n} enqueues, fewer than {floor}"
    );
}

#[test]
fn immediate_and_group_commit_fsync_for_real_sqlite() {
    audit("sqlite");
}

#[cfg(feature = "sled")]
#[test]
fn immediate_and_group_commit_fsync_for_real_sled() {
    audit("sled");
}

/// The parser reads strace's table whether or not the errors column is
/// filled, and the audit's comparison fails on too few syncs.
#[test]
fn the_summary_parser_reads_strace_tables() {
    let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 99.10    0.123456         123      1000           fdatasync
  0.60    0.000700           1      1001         2 sync_file_range
  0.30    0.000300           3        12           fsync
------ ----------- ----------- --------- --------- ----------------
100.00    0.124456          61      2013         2 total
";
    let calls = parse_strace_summary(text);
    assert_eq!(calls.get("fdatasync"), Some(&1000));
    assert_eq!(calls.get("sync_file_range"), Some(&1001));
    assert_eq!(calls.get("fsync"), Some(&12));
    assert_eq!(calls.get("total"), None);
    // sled's bare flush: only sync_file_range, which the audit ignores.
    let sled_flush_only = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.010000          10      1001           sync_file_range
------ ----------- ----------- --------- --------- ----------------
100.00    0.010000          10      1001           total
";
    let calls = parse_strace_summary(sled_flush_only);
    let syncs =
        calls.get("fsync").copied().unwrap_or(0) + calls.get("fdatasync").copied().unwrap_or(0);
    assert!(
        syncs < IMMEDIATE_OPS,
        "a sync_file_range-only run must fail the audit"
    );
}
