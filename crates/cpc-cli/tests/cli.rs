//! The `cpc-sync` binary on real queues, as support staff would run it:
//! every subcommand, a damaged record, a locked queue, a bad import line,
//! colours on a terminal and NO_COLOR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use cpc_cli::Style;
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

// ---------------------------------------------------------------------------
// In this process, through `cpc_cli::run`: the same command line with its
// output captured (or a writer that fails). No child of another test is
// between fork and exec meanwhile (see SPAWNING), so none carries a copy of
// a lock these commands take.

/// `SUB DIR EXTRA...` as arguments.
fn on(sub: &str, dir: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args = vec![OsString::from(sub), dir.as_os_str().to_owned()];
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Runs `cpc-sync ARGS` here, `stdin` as its input.
fn here(args: &[OsString], stdin: &[u8], style: Style) -> (i32, String, String) {
    let _alone = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
    let mut argv = vec![OsString::from("cpc-sync")];
    argv.extend(args.iter().cloned());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cpc_cli::run(argv, &mut &stdin[..], &mut out, &mut err, style);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn plain() -> Style {
    Style::default()
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

/// Opens the queue for a change the test makes as an engine would, and
/// closes it with no child of another test holding a copy of its lock.
fn with_store<T>(q: &Queue, change: impl FnOnce(&SqliteStorage) -> T) -> T {
    let _alone = SPAWNING.write().unwrap_or_else(|e| e.into_inner());
    let store = SqliteStorage::open_at(&q.dir, QueueOptions::default(), now_ms()).unwrap();
    let result = change(&store);
    drop(store);
    result
}

/// A writer whose every write fails, as a closed pipe does.
struct ClosedPipe;

impl std::io::Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
}

#[test]
fn an_output_that_cannot_be_written_is_reported_with_exit_2() {
    let q = queue();
    for args in [
        on("status", &q.dir, &[]),
        on("status", &q.dir, &["--json"]),
        on("list", &q.dir, &[]),
        on("list", &q.dir, &["--json"]),
        on("verify", &q.dir, &[]),
        on("export", &q.dir, &[]),
        on("watch", &q.dir, &["--count", "1"]),
    ] {
        let mut argv = vec![OsString::from("cpc-sync")];
        argv.extend(args.iter().cloned());
        let mut err = Vec::new();
        let code = cpc_cli::run(
            argv,
            &mut std::io::empty(),
            &mut ClosedPipe,
            &mut err,
            plain(),
        );
        let err = String::from_utf8(err).unwrap();
        assert_eq!(code, cpc_cli::EXIT_INPUT, "{args:?}: {err}");
        assert!(
            err.starts_with("cpc-sync: writing the output: "),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_bad_command_line_is_refused_on_stderr_in_colour_only_when_allowed() {
    let frobnicate = [OsString::from("frobnicate")];
    let (code, out, err) = here(&frobnicate, b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "{err:?}");
    let coloured = Style {
        color: true,
        terminal: true,
    };
    let (code, _, err) = here(&frobnicate, b"", coloured);
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(err.contains("\x1b["), "colour on a terminal: {err:?}");
    // An out-of-range value is refused before the queue is looked at.
    let args = on("watch", Path::new("/nonexistent"), &["--interval-ms", "10"]);
    let (code, _, err) = here(&args, b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(err.contains("10 is not in 50..=3600000"), "{err}");
}

#[test]
fn watch_draws_count_frames_and_clears_the_screen_only_on_a_terminal() {
    let q = queue();
    let terminal = Style {
        color: false,
        terminal: true,
    };
    let args = on("watch", &q.dir, &["--interval-ms", "50", "--count", "2"]);
    let (code, out, err) = here(&args, b"", terminal);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 2, "{out:?}");
    assert_eq!(out.matches("cpc-sync watch").count(), 2, "{out}");
    let frame = out.rsplit("\x1b[H\x1b[2J").next().unwrap();
    assert!(frame.contains("(every 50ms; Ctrl-C to stop)"), "{frame}");
    assert!(row(frame, "ready").ends_with(" 3"), "{frame}");
    assert!(frame.contains("acked journal 2"), "{frame}");

    let (code, out, _) = here(&on("watch", &q.dir, &["--count", "1"]), b"", plain());
    assert_eq!(code, 0);
    assert!(!out.contains('\x1b'), "no redraw off a terminal: {out:?}");
    assert_eq!(out.matches("cpc-sync watch").count(), 1, "{out}");
}

#[test]
fn each_state_filter_lists_exactly_its_operations_and_a_limit_says_there_is_more() {
    let q = queue();
    // Two claimed now (the fixture's retry is long due): one stays in
    // flight, its lease running; the other waits for a retry in an hour.
    let (leased, retried) = with_store(&q, |s| {
        let now = now_ms();
        let claimed = s.claim_ready(now, 2).unwrap();
        let retried = claimed[1].op.id;
        s.schedule_retry(retried, now + 3_600_000, "timed out", now)
            .unwrap();
        (claimed[0].op.id, retried)
    });
    let listed = |state: &str| {
        let args = on("list", &q.dir, &["--json", "--state", state]);
        let (code, out, err) = here(&args, b"", plain());
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["operations"].as_array().unwrap().clone()
    };
    let in_flight = listed("in-flight");
    assert_eq!(in_flight.len(), 1);
    assert_eq!(in_flight[0]["id"], leased.to_string());
    let waiting = listed("waiting");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["id"], retried.to_string());
    assert_eq!(waiting[0]["last_error"], "timed out");
    for (state, count) in [
        ("ready", 2),
        ("dead", 1),
        ("deferred", 1),
        ("quarantined", 0),
    ] {
        let ops = listed(state);
        assert_eq!(ops.len(), count, "{state}: {ops:?}");
        for op in &ops {
            assert_eq!(op["state"], state, "{op}");
        }
    }

    // Two of six shown, and the rest announced.
    let (code, out, _) = here(&on("list", &q.dir, &["--limit", "2"]), b"", plain());
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4, "header, two, more: {out}");
    assert_eq!(out.lines().last(), Some("… more (raise --limit)"));
    let args = on(
        "list",
        &q.dir,
        &["--limit", "2", "--json", "--show-payload"],
    );
    let (_, out, _) = here(&args, b"", plain());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["more"], true);
    let ops = v["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2);
    for op in ops {
        let shown = op["payload"].as_str().unwrap_or_default();
        assert!(shown.starts_with(CANARY), "asked for: {op}");
    }

    // An engine's lease still running: putting acked ones back ahead of
    // it could reorder an entity's edits.
    let args = on("requeue-acked", &q.dir, &["--since", "7", "--yes"]);
    let (code, _, err) = here(&args, b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(
        err.contains("1 operation(s) are still leased (in flight) from the last run"),
        "{err}"
    );
}

/// The puller's stored state, field by field as stored: written by hand so
/// that a change of the stored form (cpc_storage::sync_state) fails here.
#[derive(serde::Serialize)]
struct PullState {
    scope: Option<Vec<String>>,
    cursor: Option<cpc_core::PullCursor>,
    known: Option<cpc_core::RemotePosition>,
}

fn meta(value: &impl serde::Serialize) -> Vec<u8> {
    cpc_core::envelope::encode(cpc_core::envelope::RecordKind::Meta, value).unwrap()
}

#[test]
fn status_shows_a_pull_inside_a_snapshot_then_a_pending_and_a_handled_regression() {
    let q = queue();
    let position = |seq| cpc_core::RemotePosition {
        // From the remote: must not reach the terminal raw.
        store_id: "srv\x1b[2J".into(),
        seq,
        fp: 9,
    };
    let pending = cpc_storage::sync_state::Regression {
        known: Some(position(41)),
        head: position(12),
    };
    with_store(&q, |s| {
        let state = PullState {
            scope: None,
            cursor: Some(cpc_core::PullCursor {
                position: position(40),
                after: Some(EntityKey::new("notes", "n3")),
            }),
            known: Some(position(41)),
        };
        s.sync_state(cpc_storage::sync_state::PULL_KEY, Some(meta(&state)))
            .unwrap();
        s.sync_state(
            cpc_storage::sync_state::PENDING_REGRESSION_KEY,
            Some(meta(&pending)),
        )
        .unwrap();
    });
    let (code, out, err) = here(&on("status", &q.dir, &[]), b"", plain());
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b'), "{out:?}");
    let cursor = row(&out, "pull cursor");
    assert!(
        cursor.ends_with("seq 40 (store srv\u{FFFD}[2J), in a snapshot"),
        "{out}"
    );
    let known = row(&out, "known position");
    assert!(known.ends_with("seq 41 (store srv\u{FFFD}[2J)"), "{out}");
    let regressions = row(&out, "regressions");
    assert!(
        regressions.ends_with("pending: the server went back to seq 12; not yet re-queued"),
        "{out}"
    );

    // Handled: the pending report cleared, the history keeps it.
    let handled = vec![cpc_storage::sync_state::HandledRegression {
        regression: pending,
        requeued: 3,
        unrecoverable: 1,
        // 2h5m30s ago: shown as 2h5m for the next 30 s.
        at: now_ms() - 7_530_000,
    }];
    with_store(&q, |s| {
        s.sync_state(
            cpc_storage::sync_state::PENDING_REGRESSION_KEY,
            Some(Vec::new()),
        )
        .unwrap();
        s.sync_state(
            cpc_storage::sync_state::REGRESSION_HISTORY_KEY,
            Some(meta(&handled)),
        )
        .unwrap();
    });
    let (code, out, _) = here(&on("status", &q.dir, &[]), b"", plain());
    assert_eq!(code, 0);
    assert!(
        row(&out, "regressions")
            .ends_with("1 (last: back to seq 12 2h5m ago, 3 re-queued, 1 unrecoverable)"),
        "{out}"
    );
}

#[test]
fn a_record_the_engine_quarantined_is_named_by_verify_and_listed_apart() {
    let q = queue();
    let (_, out, _) = here(
        &on("list", &q.dir, &["--json", "--state", "ready"]),
        b"",
        plain(),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let seq = v["operations"][0]["seq"].as_i64().unwrap();
    let conn = rusqlite::Connection::open(q.dir.join("queue.sqlite3")).unwrap();
    conn.execute(
        "UPDATE ops SET body = x'00016761726261676500' WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    drop(conn);
    // The engine meets it when it claims: quarantined in place, dead.
    with_store(&q, |s| s.claim_ready(now_ms(), 10).unwrap());
    let (code, out, _) = here(&on("verify", &q.dir, &[]), b"", plain());
    assert_eq!(code, cpc_cli::EXIT_DAMAGED, "{out}");
    assert!(
        out.contains("quarantined: 1 records were quarantined earlier"),
        "{out}"
    );
    assert!(!out.contains("ok: every record decodes"), "{out}");
    let args = on("list", &q.dir, &["--state", "quarantined"]);
    let (code, out, _) = here(&args, b"", plain());
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(row(&out, "seq").contains("last error"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().starts_with(&seq.to_string()),
        "{out}"
    );
}

#[test]
fn revive_drop_and_settle_name_what_they_could_not_change() {
    let q = queue();
    let order = claimed_order(&q);
    let (dead, deferred) = (order[3], order[4]);
    let ready = q
        .ops
        .iter()
        .map(|o| o.id)
        .find(|id| !order.contains(id))
        .unwrap();
    let absent = op("absent", 99).id;
    let (dead, deferred, ready, absent) = (
        dead.to_string(),
        deferred.to_string(),
        ready.to_string(),
        absent.to_string(),
    );

    let args = on("revive", &q.dir, &[&dead, &absent, "--dead-head", "skip"]);
    let (code, out, err) = here(&args, b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert_eq!(out, "revived 1\n", "the dead one is revived all the same");
    assert!(
        err.contains(&format!(
            "not dead or deferred (nothing done for them): {absent}"
        )),
        "{err}"
    );
    let (code, out, err) = here(&on("drop", &q.dir, &[&absent, "--yes"]), b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert_eq!(out, "dropped 0\n");
    assert!(
        err.contains(&format!("not in the queue: {absent}")),
        "{err}"
    );

    let args = on("settle", &q.dir, &[&ready, "--keep", "local"]);
    let (code, _, err) = here(&args, b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(
        err.contains(&format!("{ready} is not a deferred conflict")),
        "{err}"
    );
    let args = on("settle", &q.dir, &[&deferred, "--keep", "remote", "--yes"]);
    let (code, out, err) = here(&args, b"", plain());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("settled {deferred}: the local change was dropped\n")
    );
    let stats = with_store(&q, |s| s.stats().unwrap());
    assert_eq!((stats.ready, stats.deferred, stats.dead), (4, 0, 0));
}

#[test]
fn import_skips_blank_lines_and_refuses_a_repeat_or_an_overlong_line() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("queue");
    let lines: Vec<String> = (1..=2)
        .map(|n| serde_json::to_string(&cpc_cli::Line::of(&op(&format!("i{n}"), n))).unwrap())
        .collect();

    let repeated = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[0]);
    let (code, _, err) = here(&on("import", &target, &[]), repeated.as_bytes(), plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(
        err.contains("line 3: operation") && err.ends_with(" is in the file twice\n"),
        "{err}"
    );
    assert!(!target.exists(), "nothing written");

    // Longer than any line a payload under --max-payload could make.
    let overlong = format!("{}\n{}\n", "x".repeat(70_000), lines[0]);
    let args = on("import", &target, &["--max-payload", "10"]);
    let (code, _, err) = here(&args, overlong.as_bytes(), plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert!(
        err.contains("line 1: longer than 65552 bytes (a payload over --max-payload?)"),
        "{err}"
    );
    assert!(!target.exists(), "nothing written");

    let spaced = format!("\n{}\n   \n\n{}\n\n", lines[0], lines[1]);
    let (code, out, err) = here(&on("import", &target, &[]), spaced.as_bytes(), plain());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "imported 2\n");
}

#[test]
fn every_kind_and_priority_survives_a_line_and_an_unknown_kind_is_named() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let kinds = [
        OperationKind::Create,
        OperationKind::Update,
        OperationKind::Delete,
        OperationKind::Custom("merge".into()),
    ];
    let priorities = [
        OperationPriority::Critical,
        OperationPriority::High,
        OperationPriority::Normal,
        OperationPriority::Background,
    ];
    for (kind, priority) in kinds.iter().zip(priorities) {
        let op = Operation::builder(EntityKey::new("notes", "k"), kind.clone())
            .payload(b"p".to_vec())
            .priority(priority)
            .build_at(HlcTimestamp::new(T0, 1, NodeId(3)), &mut rng);
        let line = cpc_cli::Line::of(&op);
        assert!(line.operation(1024) == Ok(op), "{line:?}");
    }
    let update = cpc_cli::Line::of(&op("k", 1));
    assert_eq!(update.kind, "update");
    let renamed = cpc_cli::Line {
        kind: "rename".into(),
        ..update
    };
    assert_eq!(
        renamed.operation(1024).unwrap_err(),
        "kind: unknown kind \"rename\""
    );
}

/// The fixture queue with one of its tables gone, as a damaged or
/// hand-edited database leaves it.
fn without_table(table: &str) -> Queue {
    let q = queue();
    let conn = rusqlite::Connection::open(q.dir.join("queue.sqlite3")).unwrap();
    conn.execute_batch(&format!("DROP TABLE {table}")).unwrap();
    q
}

#[test]
fn a_damaged_database_is_refused_with_exit_2_naming_the_step_that_failed() {
    // Read-only: counting fails.
    let q = without_table("quarantine");
    let (code, out, err) = here(&on("status", &q.dir, &[]), b"", plain());
    assert_eq!((code, out.as_str()), (cpc_cli::EXIT_INPUT, ""));
    assert_eq!(err, "cpc-sync: sqlite error during stats\n");

    // For writing: opening recovers ended leases first, and that fails.
    let q = without_table("entities");
    let (code, _, err) = here(&on("revive", &q.dir, &["--all-dead"]), b"", plain());
    assert_eq!(code, cpc_cli::EXIT_INPUT);
    assert_eq!(err, "cpc-sync: sqlite error during recover\n");

    // Opened, but the journal cannot be read back: nothing is re-queued.
    let q = without_table("acked");
    let args = on("requeue-acked", &q.dir, &["--since", "1", "--yes"]);
    let (code, out, err) = here(&args, b"", plain());
    assert_eq!((code, out.as_str()), (cpc_cli::EXIT_INPUT, ""));
    assert_eq!(err, "cpc-sync: sqlite error during read acked journal\n");
    let (code, out, _) = here(&on("status", &q.dir, &["--json"]), b"", plain());
    assert_eq!(code, 0, "read-only, it still counts");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["counts"]["ready"], 3, "nothing put back");
}
