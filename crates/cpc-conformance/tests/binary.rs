//! The `cpc-conformance` command against an in-process reference server:
//! one line per check and the counts, exit 0 when nothing failed, 1 when
//! a check failed, 2 on bad usage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Output;

use cpc_conformance::CHECKS;
use cpc_server::Faults;
use support::{Restartable, CLIENT, FOREIGN_TOKEN, TOKEN};

/// Runs the command with `args` (off the runtime: the server under test
/// runs on it meanwhile).
async fn conformance(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("cpc-conformance")
            .unwrap()
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(server: &Restartable, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--server".into(),
        server.base_url(),
        "--token".into(),
        TOKEN.into(),
        "--client-id".into(),
        CLIENT.into(),
    ];
    args.extend(more.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_gets_a_line_per_check_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Restartable::start(dir.path(), Faults::default(), true).await;
    // `true` as the restart: the command path runs and the server stays up.
    let out = conformance(args(
        &server,
        &["--foreign-token", FOREIGN_TOKEN, "--restart-cmd", "true"],
    ))
    .await;
    server.shutdown().await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), CHECKS.len() + 1, "{stdout}");
    for (line, name) in lines.iter().zip(CHECKS) {
        assert_eq!(*line, format!("PASS {name}"));
    }
    assert_eq!(
        lines[CHECKS.len()],
        format!("{} passed, 0 failed", CHECKS.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        no_cache_header: true,
        ..Faults::default()
    };
    let server = Restartable::start(dir.path(), faults, true).await;
    let out = conformance(args(
        &server,
        &[
            "--only",
            "health",
            "--only",
            "no-store-on-every-answer",
            "--restart-cmd",
            "exit 3",
            "--only",
            "durable-after-restart",
        ],
    ))
    .await;
    server.shutdown().await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], "PASS health");
    assert!(
        lines[1].starts_with("FAIL no-store-on-every-answer: answers without Cache-Control"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("FAIL durable-after-restart: restart: `exit 3` exited with"),
        "{stdout}"
    );
    assert_eq!(lines[3], "1 passed, 2 failed");
}

#[tokio::test]
async fn bad_usage_exits_two() {
    for args in [
        vec![],
        vec!["--server", "http://127.0.0.1:1", "--token", "t"],
        vec![
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--client-id",
            "dev-1",
            "--only",
            "no-such-check",
        ],
        vec![
            "--server",
            "ftp://x",
            "--token",
            "t",
            "--client-id",
            "dev-1",
        ],
        vec![
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--client-id",
            "not valid",
        ],
    ] {
        let out = conformance(args.iter().map(|s| (*s).to_owned()).collect()).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
