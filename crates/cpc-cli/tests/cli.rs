//! The `cpc-sync` binary on real queues, as support staff would run it:
//! every subcommand, a damaged record, a locked queue, a bad import line,
//! colours on a terminal and NO_COLOR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use assert_cmd::Command;
use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, Operation, OperationId, OperationKind, OperationPriority,
    RemoteRecord,
};
use cpc_storage::{
    Completion, QueueOptions, QueueStorage, QueueStorageExt, RetainAcked, SqliteStorage,
};
use rand::SeedableRng;

const T0: u64 = 1_767_225_600_000;
const CANARY: &str = "secret-payload-canary";

fn cli() -> Command {
    let mut c = Command::cargo_bin("cpc-sync").unwrap();
    c.env_remove("NO_COLOR");
    c
}

fn op(entity: &str, n: u64) -> Operation {
    Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
        .payload(format!("{CANARY} {n}").into_bytes())
        .priority(if n.is_multiple_of(2) {
            OperationPriority::High
        } else {
            OperationPriority::Normal
        })
        .build_at(
            HlcTimestamp::new(T0 + n, 0, NodeId(1)),
            &mut rand::rngs::StdRng::seed_from_u64(n),
        )
}

/// A queue as an engine leaves it: 3 ready, 1 waiting, 1 dead, 1 deferred,
/// 2 acknowledged (retained in the journal).
struct Queue {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ops: Vec<Operation>,
}

fn queue() -> Queue {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("queue");
    let store = SqliteStorage::open_at(
        &dir,
        QueueOptions {
            retain_acked: Some(RetainAcked::default()),
            ..QueueOptions::default()
        },
        T0,
    )
    .unwrap();
    let ops: Vec<Operation> = (1..=8).map(|n| op(&format!("n{n}"), n)).collect();
    store.enqueue_batch(ops.clone(), T0).unwrap();
    let claimed = store.claim_ready(T0, 5).unwrap();
    let ids: Vec<OperationId> = claimed.iter().map(|c| c.op.id).collect();
    store
        .complete(
            &[
                Completion::AckAt { id: ids[0], seq: 7 },
                Completion::AckAt { id: ids[1], seq: 8 },
            ],
            T0 + 1,
        )
        .unwrap();
    store
        .schedule_retry(ids[2], T0 + 3_600_000, "timed out", T0 + 1)
        .unwrap();
    store.dead_letter(ids[3], "rejected: bad", T0 + 1).unwrap();
    let remote = RemoteRecord {
        version: 3,
        timestamp: HlcTimestamp::new(T0, 0, NodeId(2)),
        payload: Some(b"theirs".to_vec()),
        node: NodeId(2),
    };
    store.defer(ids[4], remote, T0 + 1).unwrap();
    drop(store);
    Queue {
        _tmp: tmp,
        dir,
        ops,
    }
}

/// Held (shared) while a child is spawned: a child forked while a test of
/// this process holds a queue open carries a copy of its lock until the
/// child's `exec`; a test that closes a queue and reopens it at once takes
/// it exclusively around the close, so no such copy outlives the close.
static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn stdout(c: &mut Command) -> (i32, String, String) {
    let o = {
        let _spawning = SPAWNING.read().unwrap_or_else(|e| e.into_inner());
        c.output().unwrap()
    };
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn claimed_order(q: &Queue) -> Vec<OperationId> {
    // Claims go by priority then seq: the order `queue` claimed in.
    let mut ops = q.ops.clone();
    ops.sort_by_key(|o| std::cmp::Reverse(o.priority));
    ops.iter().take(5).map(|o| o.id).collect()
}

fn row<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.split("  ").next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
}

#[test]
fn status_counts_every_state_and_says_what_the_journal_holds() {
    let q = queue();
    let (code, out, err) = stdout(cli().arg("status").arg(&q.dir));
    assert_eq!(code, 0, "{err}");
    assert!(row(&out, "ready").ends_with(" 3"), "{out}");
    assert!(row(&out, "waiting").ends_with(" 1"), "{out}");
    assert!(row(&out, "dead").ends_with(" 1"), "{out}");
    assert!(row(&out, "deferred").ends_with(" 1"), "{out}");
    assert!(row(&out, "acked journal").contains("2 entries"), "{out}");
    assert!(row(&out, "format").contains("6 (sqlite)"), "{out}");
    assert!(!out.contains('\x1b'), "no colour off a terminal: {out:?}");
    // JSON says the same.
    let (code, out, _) = stdout(cli().arg("status").arg(&q.dir).arg("--json"));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["counts"]["ready"], 3);
    assert_eq!(v["counts"]["dead"], 1);
    assert_eq!(v["acked_journal"], 2);
    assert_eq!(v["format"], 6);
}

#[test]
fn list_filters_by_state_and_entity_and_shows_payloads_only_when_asked() {
    let q = queue();
    let dead = claimed_order(&q)[3];
    let (code, out, _) = stdout(cli().args(["list", "--state", "dead"]).arg(&q.dir));
    assert_eq!(code, 0);
    assert!(out.contains(&dead.to_string()), "{out}");
    assert!(out.contains("rejected: bad"), "{out}");
    assert_eq!(out.lines().count(), 2, "a header and one line: {out}");
    assert!(!out.contains(CANARY), "no payload by default: {out}");
    // The whole queue, as JSON: six stored operations, no payload.
    let (_, out, _) = stdout(cli().args(["list", "--json"]).arg(&q.dir));
    assert!(!out.contains(CANARY));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["operations"].as_array().unwrap().len(), 6);
    // One entity, payload shown.
    let (_, out, _) = stdout(
        cli()
            .args(["list", "--show-payload", "--entity", "notes/n8"])
            .arg(&q.dir),
    );
    assert!(out.contains(&format!("{CANARY} 8")), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    // A bad --entity is refused.
    let (code, _, err) = stdout(cli().args(["list", "--entity", "nope"]).arg(&q.dir));
    assert_eq!(code, 2);
    assert!(err.contains("COLLECTION/ID"), "{err}");
}

#[test]
fn a_directory_that_is_not_a_queue_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
    for args in [vec!["status"], vec!["list"], vec!["verify"]] {
        let (code, _, err) = stdout(cli().args(&args).arg(tmp.path()));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "not a cpc-sync queue: {} (no format marker)",
                tmp.path().display()
            )),
            "{err}"
        );
    }
    let (code, _, _) = stdout(cli().args(["revive", "--all-dead"]).arg(tmp.path()));
    assert_eq!(code, 2);
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
}

#[test]
fn a_queue_of_a_newer_format_is_refused_and_nothing_is_touched() {
    let q = queue();
    let marker = q.dir.join("cpc-queue.marker");
    let text = std::fs::read_to_string(&marker)
        .unwrap()
        .replace("format=6", "format=99");
    std::fs::write(&marker, &text).unwrap();
    let db = std::fs::read(q.dir.join("queue.sqlite3")).unwrap();
    for args in [vec!["status"], vec!["revive", "--all-dead"]] {
        let (code, _, err) = stdout(cli().args(&args).arg(&q.dir));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("format version 99, newer than"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), text);
    assert_eq!(std::fs::read(q.dir.join("queue.sqlite3")).unwrap(), db);
    // An older format is read, but not written (that would upgrade it
    // behind the back of the app that wrote it).
    let older = text.replace("format=99", "format=3");
    std::fs::write(&marker, &older).unwrap();
    let (code, _, err) = stdout(cli().args(["revive", "--all-dead"]).arg(&q.dir));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is format 3, older than"), "{err}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), older);
    let (code, _, _) = stdout(cli().arg("status").arg(&q.dir));
    assert_eq!(code, 0);
}

#[test]
fn verify_names_a_damaged_record_and_status_and_list_still_work() {
    let q = queue();
    let (code, out, _) = stdout(cli().arg("verify").arg(&q.dir));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: every record decodes"), "{out}");
    let conn = rusqlite::Connection::open(q.dir.join("queue.sqlite3")).unwrap();
    let seq: i64 = conn
        .query_row("SELECT seq FROM ops ORDER BY seq DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute(
        "UPDATE ops SET body = x'00016761726261676500' WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    drop(conn);
    let (code, out, _) = stdout(cli().arg("verify").arg(&q.dir));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("damaged: operation seq {seq}")),
        "{out}"
    );
    let (code, out, _) = stdout(cli().arg("status").arg(&q.dir));
    assert_eq!(code, 0);
    assert!(row(&out, "ready").ends_with(" 3"), "{out}");
    let (code, out, _) = stdout(cli().arg("list").arg(&q.dir));
    assert_eq!(code, 0);
    assert!(out.contains("damaged"), "{out}");
    // Export names it on stderr and exits 1; the rest is exported.
    let (code, out, err) = stdout(cli().arg("export").arg(&q.dir));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("(seq {seq})")), "{err}");
    assert_eq!(out.lines().count(), 5);
}

#[test]
fn a_locked_queue_refuses_writes_naming_the_holder_and_still_reads() {
    let q = queue();
    let held = SqliteStorage::open(&q.dir, QueueOptions::default()).unwrap();
    let (code, out, _) = stdout(cli().arg("status").arg(&q.dir));
    assert_eq!(code, 0, "reading works beside the engine");
    assert!(row(&out, "ready").ends_with(" 3"), "{out}");
    let (code, _, err) = stdout(cli().args(["revive", "--all-dead"]).arg(&q.dir));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("in use by process {}", std::process::id())),
        "{err}"
    );
    {
        // No child of another test may carry the lock past this close.
        let _alone = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
        drop(held);
    }
    let (code, out, err) = stdout(cli().args(["revive", "--all-dead"]).arg(&q.dir));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revived 1"), "{out}");
}

#[test]
fn an_import_with_a_bad_line_17_names_it_and_imports_nothing() {
    let q = queue();
    let (code, exported, _) = stdout(cli().arg("export").arg(&q.dir));
    assert_eq!(code, 0);
    assert_eq!(exported.lines().count(), 6);
    // Twenty fresh lines into another queue; line 17 is broken.
    let fresh: Vec<String> = (100..120)
        .map(|n| serde_json::to_string(&cpc_cli::Line::of(&op(&format!("m{n}"), n))).unwrap())
        .collect();
    let mut lines = fresh.clone();
    lines[16] = lines[16].replace("\"priority\":\"", "\"priority\":\"urgent-");
    let target = q._tmp.path().join("other");
    let (code, _, err) = stdout(
        cli()
            .arg("import")
            .arg(&target)
            .write_stdin(lines.join("\n")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 17: priority"), "{err}");
    assert!(!target.exists(), "nothing written");
    // The good file goes in whole.
    let (code, out, err) = stdout(
        cli()
            .arg("import")
            .arg(&target)
            .write_stdin(fresh.join("\n")),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 20"), "{out}");
    // A second time: already there, nothing imported.
    let (code, _, err) = stdout(
        cli()
            .arg("import")
            .arg(&target)
            .write_stdin(fresh.join("\n")),
    );
    assert_eq!(code, 2);
    assert!(err.contains("line 1: operation"), "{err}");
    // Export then import moves a queue's work whole, payloads included.
    let moved = q._tmp.path().join("moved");
    let (code, _, err) = stdout(
        cli()
            .arg("import")
            .arg(&moved)
            .write_stdin(exported.clone()),
    );
    assert_eq!(code, 0, "{err}");
    let (_, again, _) = stdout(cli().arg("export").arg(&moved));
    assert_eq!(again, exported);
}

#[test]
fn drop_settle_and_requeue_acked_change_the_queue_and_destroy_only_with_yes() {
    let q = queue();
    let order = claimed_order(&q);
    let (dead, deferred) = (order[3], order[4]);
    let (code, _, err) = stdout(cli().arg("drop").arg(&q.dir).arg(dead.to_string()));
    assert_eq!(code, 2);
    assert!(err.contains("--yes"), "{err}");
    let (code, out, _) = stdout(
        cli()
            .arg("drop")
            .arg(&q.dir)
            .arg(dead.to_string())
            .arg("--yes"),
    );
    assert_eq!(code, 0);
    assert!(out.contains("dropped 1"), "{out}");
    let (code, _, err) = stdout(cli().arg("drop").arg(&q.dir).arg("not-an-id").arg("--yes"));
    assert_eq!(code, 2);
    assert!(err.contains("is not an operation id"), "{err}");
    let (code, _, err) = stdout(
        cli()
            .arg("settle")
            .arg(&q.dir)
            .arg(deferred.to_string())
            .args(["--keep", "remote"]),
    );
    assert_eq!(
        code, 2,
        "keeping the remote's drops the local change: --yes"
    );
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = stdout(
        cli()
            .arg("settle")
            .arg(&q.dir)
            .arg(deferred.to_string())
            .args(["--keep", "local"]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("settled"), "{out}");
    let (code, _, _) = stdout(
        cli()
            .arg("requeue-acked")
            .arg(&q.dir)
            .args(["--since", "7"]),
    );
    assert_eq!(code, 2, "needs --yes");
    let (code, out, _) = stdout(
        cli()
            .arg("requeue-acked")
            .arg(&q.dir)
            .args(["--since", "7", "--yes"]),
    );
    assert_eq!(code, 0);
    assert!(out.contains("re-queued 2"), "{out}");
    let store = SqliteStorage::open(&q.dir, QueueOptions::default()).unwrap();
    let stats = store.stats().unwrap();
    // 3 ready + 1 settled + 2 re-queued; the dropped one is gone.
    assert_eq!((stats.ready, stats.dead, stats.deferred), (6, 0, 0));
    assert_eq!(stats.acked_journal, 0);
}

#[test]
fn every_subcommand_has_an_example_and_completions_are_generated() {
    for sub in [
        "status",
        "list",
        "watch",
        "verify",
        "revive",
        "drop",
        "settle",
        "requeue-acked",
        "export",
        "import",
        "completions",
    ] {
        let (code, out, _) = stdout(cli().arg(sub).arg("--help"));
        assert_eq!(code, 0, "{sub}");
        assert!(out.contains("Example:"), "{sub}: {out}");
    }
    let (code, out, _) = stdout(cli().args(["completions", "bash"]));
    assert_eq!(code, 0);
    assert!(out.contains("cpc-sync") && out.contains("requeue-acked"));
}

/// Runs `command` in a pseudo-terminal (util-linux `script`); `None` if
/// there is no `script`.
fn in_a_terminal(command: &str, no_color: bool) -> Option<String> {
    let mut c = std::process::Command::new("script");
    c.args(["-qec", command, "/dev/null"]);
    c.env_remove("NO_COLOR");
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = {
        let _spawning = SPAWNING.read().unwrap_or_else(|e| e.into_inner());
        c.output().ok()?
    };
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cpc-sync")
}

#[test]
fn colours_on_a_terminal_and_never_with_no_color() {
    let q = queue();
    let command = format!("{} status {}", bin().display(), q.dir.display());
    let Some(coloured) = in_a_terminal(&command, false) else {
        eprintln!("skipped: no `script` (util-linux) for a pseudo-terminal");
        return;
    };
    assert!(
        coloured.contains("\x1b[1m"),
        "bold header on a terminal: {coloured:?}"
    );
    let plain = in_a_terminal(&command, true).unwrap();
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
    assert!(plain.contains("ready"), "{plain:?}");
}

fn tmux(args: &[&str]) -> Option<String> {
    let out = {
        let _spawning = SPAWNING.read().unwrap_or_else(|e| e.into_inner());
        std::process::Command::new("tmux")
            .args(args)
            .output()
            .ok()?
    };
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The screen of a tmux pane running `command`, once it printed `marker`.
fn screen(session: &str, command: &str, marker: &str) -> Option<String> {
    tmux(&[
        "-L",
        session,
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "120",
        "-y",
        "40",
        command,
    ])?;
    let mut shown = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        shown = tmux(&["-L", session, "capture-pane", "-p", "-t", session]).unwrap_or_default();
        if shown.contains(marker) {
            break;
        }
    }
    let _ = tmux(&["-L", session, "kill-server"]);
    Some(shown)
}

/// The counts table as the screen shows it (trailing blanks trimmed).
fn counts_block(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(str::trim_end)
        .skip_while(|l| !l.starts_with("state"))
        .take(8)
        .map(str::to_owned)
        .collect()
}

#[test]
fn status_and_watch_look_right_in_a_real_terminal() {
    if tmux(&["-V"]).is_none() {
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let q = queue();
    let expected: Vec<String> = [
        "state        count",
        "ready        3",
        "in flight    0",
        "waiting      1",
        "dead         1",
        "deferred     1",
        "quarantined  0",
        "blocked      0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let session = format!("cpc-cli-{}", std::process::id());
    let status = format!(
        "sh -c '{} status {}; sleep 30'",
        bin().display(),
        q.dir.display()
    );
    let shown = screen(&session, &status, "regressions").unwrap();
    assert_eq!(counts_block(&shown), expected, "screen:\n{shown}");
    let watch = format!(
        "{} watch {} --interval-ms 100",
        bin().display(),
        q.dir.display()
    );
    let shown = screen(&format!("{session}-w"), &watch, "acked journal").unwrap();
    assert!(
        shown.starts_with("cpc-sync watch"),
        "redrawn from the top:\n{shown}"
    );
    assert_eq!(counts_block(&shown), expected, "screen:\n{shown}");
}
