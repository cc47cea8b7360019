//! The `restore` run (issue 20): a server on PostgreSQL restored from a
//! backup while devices write. `pg_dump` at 30% acknowledged; writes go
//! on; at 60% the server is killed, the database dropped and restored from
//! the dump, and a server started again on it; writes go on. Every device
//! must notice (`RemoteRegressed`: its `known` position is not in the
//! restored history), and converge on the restored state by pull.
//!
//! What the log comparison expects: nothing lost, not even the operations
//! the first server committed after the dump (the restore took them back;
//! the devices retain acknowledged operations and push them again),
//! nothing applied twice, each record's order kept. Needs
//! `CPC_TEST_DATABASE_URL` and `pg_dump`/`pg_restore`; skips, saying so,
//! without them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::fleet::{kill9, spawn_server, Devices, Fleet, ServerStore};
use super::{io, judge, Sizes, Verdict};
use crate::XtaskError;

/// A PostgreSQL client program: on `PATH`, or in Debian's directory.
fn pg_tool(name: &str) -> Option<PathBuf> {
    let on_path = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from(name));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

fn run_tool(tool: &PathBuf, args: &[&str]) -> Result<(), XtaskError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(io("running a PostgreSQL tool"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(XtaskError::StepFailed(format!(
            "{}: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One statement on a connection of its own.
async fn sql(url: &str, statement: &str) -> Result<Vec<tokio_postgres::Row>, XtaskError> {
    let failed = |e: tokio_postgres::Error| XtaskError::StepFailed(format!("restore: {e}"));
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(failed)?;
    let driver = tokio::spawn(connection);
    let rows = client.query(statement, &[]).await.map_err(failed);
    drop(client);
    let _ = driver.await;
    rows
}

/// The op ids of an exported log's rows above `seq`.
fn ops_after(log: &[u8], seq: u64) -> HashSet<String> {
    String::from_utf8_lossy(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["seq"].as_u64().is_some_and(|s| s > seq))
        .filter_map(|v| v["origin"]["op"].as_str().map(str::to_owned))
        .collect()
}

/// The `restore-embedded` run: the same, on the embedded store, with the
/// operator's commands: `cpc-server backup` (the library call behind it)
/// while the server serves at 30%, `cpc-server restore` into the killed
/// server's data directory at 60%.
pub(crate) async fn run_embedded(sizes: Sizes) -> Result<Option<Verdict>, XtaskError> {
    let started = Instant::now();
    let failed =
        |e: &dyn std::fmt::Display| XtaskError::StepFailed(format!("restore-embedded: {e}"));
    let dir = tempfile::tempdir().map_err(io("making a temp dir"))?;
    let data = dir.path().join("server");
    let backup = dir.path().join("backup.sqlite3");
    let store = ServerStore::Dir(&data);
    let (server, addr) = spawn_server(store, SocketAddr::from(([127, 0, 0, 1], 0)), false, None)?;
    let devices = Devices {
        dir: dir.path(),
        urls: vec![format!("http://{addr}")],
        ops: sizes.ops,
        netns: None,
        pace: Duration::from_millis((20_000 / sizes.ops.max(1)).clamp(2, 50)),
        pull: true,
        broken_sink: false,
        retain: true,
    };
    let mut fleet = Fleet::start(server, &devices, sizes.devices)?;
    let total = u64::from(sizes.devices) * sizes.ops;
    let (mut backed_up, mut restored) = (false, false);
    let mut gone = HashSet::new();
    while !fleet.finished(started)? {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked_now = devices.acked_total(sizes.devices);
        if !backed_up && acked_now >= total * 3 / 10 {
            // Online, while the server commits.
            let (data, backup) = (data.clone(), backup.clone());
            let report = tokio::task::spawn_blocking(move || cpc_server::backup(&data, &backup))
                .await
                .map_err(|e| failed(&e))?
                .map_err(|e| failed(&e))?;
            println!("  restore-embedded: backup at seq {}", report.head_seq);
            backed_up = true;
        }
        if backed_up && !restored && acked_now >= total * 6 / 10 {
            kill9(&mut fleet.server);
            let before = store.export().await?;
            let report = cpc_server::restore(&data, &backup).map_err(|e| failed(&e))?;
            gone = ops_after(&before, report.head_seq);
            fleet.server = spawn_server(store, addr, false, None)?.0;
            restored = true;
            println!(
                "  restore-embedded: restored at seq {}; {} changes committed after it are gone",
                report.head_seq,
                gone.len()
            );
        }
    }
    fleet.stop_server();
    if !restored {
        return Err(failed(&"the devices finished before the restore"));
    }
    let log = store.export().await?;
    let (verdict, _) = judge_restore(&log, &devices, &fleet, started, &gone)?;
    Ok(Some(verdict))
}

/// The verdict of a restore run: the log judged as any run's, what the
/// restore took back and the devices did not push again counted, and a
/// device that never noticed the restore named. Also answers how many
/// took it back and pushed again (`gone` minus what is still missing).
fn judge_restore(
    log: &[u8],
    devices: &Devices<'_>,
    fleet: &Fleet,
    started: Instant,
    gone: &HashSet<String>,
) -> Result<(Verdict, usize), XtaskError> {
    let mut verdict = judge(log, devices, fleet, started)?;
    let not_back = verdict.lost.iter().filter(|op| gone.contains(*op)).count();
    verdict.taken_back = Some(not_back);
    verdict.diverged.extend(
        fleet
            .regressed()
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == 0)
            .map(|(d, _)| format!("dev-{d} (never saw RemoteRegressed)")),
    );
    Ok((verdict, gone.len() - not_back))
}

/// Runs it; `None` when it cannot run here.
pub(crate) async fn run(sizes: Sizes) -> Result<Option<Verdict>, XtaskError> {
    let Ok(admin) = std::env::var("CPC_TEST_DATABASE_URL") else {
        println!("SKIP restore: CPC_TEST_DATABASE_URL is not set (see CONTRIBUTING.md)");
        return Ok(None);
    };
    let (Some(pg_dump), Some(pg_restore)) = (pg_tool("pg_dump"), pg_tool("pg_restore")) else {
        println!("SKIP restore: pg_dump and pg_restore are not installed");
        return Ok(None);
    };
    let started = Instant::now();
    let failed = |e: &dyn std::fmt::Display| XtaskError::StepFailed(format!("restore: {e}"));
    let db = cpc_server::ScratchDatabase::create(&admin)
        .await
        .map_err(|e| failed(&e))?;
    let dir = tempfile::tempdir().map_err(io("making a temp dir"))?;
    let dump = dir.path().join("backup.dump");
    let store = ServerStore::Postgres(db.url());
    let (server, addr) = spawn_server(store, SocketAddr::from(([127, 0, 0, 1], 0)), false, None)?;
    let devices = Devices {
        dir: dir.path(),
        urls: vec![format!("http://{addr}")],
        ops: sizes.ops,
        netns: None,
        // Still writing when the backup is taken and when it is restored.
        pace: Duration::from_millis((20_000 / sizes.ops.max(1)).clamp(2, 50)),
        pull: true,
        broken_sink: false,
        // What the restore takes back must come back from the devices.
        retain: true,
    };
    let mut fleet = Fleet::start(server, &devices, sizes.devices)?;
    let total = u64::from(sizes.devices) * sizes.ops;
    let (mut dumped, mut restored) = (false, false);
    let mut gone = HashSet::new();
    while !fleet.finished(started)? {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked_now = devices.acked_total(sizes.devices);
        if !dumped && acked_now >= total * 3 / 10 {
            let target = dump.to_string_lossy().into_owned();
            run_tool(&pg_dump, &["-Fc", "-f", &target, db.url()])?;
            dumped = true;
        }
        if dumped && !restored && acked_now >= total * 6 / 10 {
            kill9(&mut fleet.server);
            // What the first server committed, up to its end.
            let before = store.export().await?;
            let name = db.name();
            sql(
                db.admin_url(),
                &format!("DROP DATABASE {name} WITH (FORCE)"),
            )
            .await?;
            sql(db.admin_url(), &format!("CREATE DATABASE {name}")).await?;
            let source = dump.to_string_lossy().into_owned();
            run_tool(&pg_restore, &["-d", db.url(), &source])?;
            let head = sql(db.url(), "SELECT head_seq FROM cpc_meta WHERE id = 1").await?;
            let backup_seq = head
                .first()
                .and_then(|r| r.try_get::<_, i64>(0).ok())
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| failed(&"the restored store has no head"))?;
            gone = ops_after(&before, backup_seq);
            fleet.server = spawn_server(store, addr, false, None)?.0;
            restored = true;
            println!(
                "  restore: backup at seq {backup_seq}; {} changes committed after it are gone",
                gone.len()
            );
        }
    }
    fleet.stop_server();
    let log = store.export().await?;
    if !restored {
        return Err(failed(&"the devices finished before the restore"));
    }
    // The devices retain what was acknowledged: what the restore took back
    // is pushed again, so nothing may be missing from the final log.
    let (verdict, pushed_again) = judge_restore(&log, &devices, &fleet, started, &gone)?;
    let regressed = fleet.regressed();
    println!(
        "  restore: every device saw RemoteRegressed: {}; taken back by the restore {}, pushed again {}",
        if regressed.iter().all(|n| *n > 0) { "yes" } else { "no" },
        gone.len(),
        pushed_again
    );
    Ok(Some(verdict))
}
