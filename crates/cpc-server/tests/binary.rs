//! The `cpc-server` binary as an operator runs it: a real process, its
//! signals, its exit codes, and `export-log` after a kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

const TOKEN: &str = "bin-token";

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!("[[token]]\nsecret = \"{TOKEN}\"\nclients = [\"dev-*\"]\n"),
    )
    .unwrap();
    path
}

/// Starts `cpc-server serve` on a free port; returns it and its address.
fn serve(data: &Path, tokens: &Path) -> (Child, String) {
    let mut child = Command::cargo_bin("cpc-server")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tokens")
        .arg(tokens)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (child, addr)
}

fn export(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::cargo_bin("cpc-server")
        .unwrap()
        .args(["export-log", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn push(addr: &str, n: u32) -> u16 {
    let body = format!(
        r#"{{"protocol":1,"client_id":"dev-1","ops":[{{"id":"{:0>26}","entity":{{"collection":"c","id":"e{n}"}},"kind":"create","payload":"eA==","base_version":0,"timestamp":{{"wall_ms":{n},"logical":0,"node":"0000000000000001"}}}}]}}"#,
        n
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/push"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

#[test]
fn sigterm_finishes_and_exits_zero_and_kill_9_loses_no_acknowledged_op() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = tokens_file(dir.path());
    let (mut child, addr) = serve(&data, &tokens);
    assert_eq!(push(&addr, 1), 200);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "SIGTERM is a clean exit");

    // Restart, push, kill -9 right after the acknowledgements.
    let (mut child, addr) = serve(&data, &tokens);
    let acked: Vec<u32> = (2..40).filter(|n| push(&addr, *n) == 200).collect();
    assert_eq!(acked.len(), 38);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = export(&data);
    let ids: Vec<String> = log
        .iter()
        .map(|l| l["entity"]["id"].as_str().unwrap().to_owned())
        .collect();
    for n in std::iter::once(1).chain(acked) {
        assert_eq!(
            ids.iter().filter(|i| **i == format!("e{n}")).count(),
            1,
            "acknowledged op {n} exactly once in the log"
        );
    }
}

#[test]
fn a_bad_tokens_file_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "[[token]]\nsecret = \"\"\nclients = [\"a\"]\n").unwrap();
    let out = Command::cargo_bin("cpc-server")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--tokens")
        .arg(&tokens)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token 1"), "{err}");
}
