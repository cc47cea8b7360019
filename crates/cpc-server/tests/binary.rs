//! The `cpc-server` binary as an operator runs it: a real process, its
//! signals, its exit codes, and `export-log` after a kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

const TOKEN: &str = "bin-token-0123456789";

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens.toml");
    write_private(
        &path,
        &format!("[[token]]\nsecret = \"{TOKEN}\"\nclients = [\"dev-*\"]\n"),
    );
    path
}

/// Writes a file only its owner may read, as a tokens file must be.
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts `cpc-server serve` on a free port; returns it and its address.
fn serve(data: &Path, tokens: &Path) -> (Child, String) {
    serve_logging(data, tokens, None)
}

/// [`serve`], with `RUST_LOG=level` and stderr kept when a level is given.
fn serve_logging(data: &Path, tokens: &Path, level: Option<&str>) -> (Child, String) {
    let mut command = Command::cargo_bin("cpc-server").unwrap();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tokens")
        .arg(tokens)
        .stdout(Stdio::piped());
    match level {
        Some(level) => command.env("RUST_LOG", level).stderr(Stdio::piped()),
        None => command.stderr(Stdio::null()),
    };
    let mut child = command.spawn().unwrap();
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
    write_private(&tokens, "[[token]]\nsecret = \"\"\nclients = [\"a\"]\n");
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

/// A tokens file other users may read is refused at start, saying how to
/// fix it; a repeated secret is refused by its lines, never its text.
#[test]
fn an_open_or_ambiguous_tokens_file_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let serve_with = |tokens: &Path| {
        Command::cargo_bin("cpc-server")
            .unwrap()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--tokens")
            .arg(tokens)
            .output()
            .unwrap()
    };
    let tokens = tokens_file(dir.path());
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = serve_with(&tokens);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");

    let twice = dir.path().join("twice.toml");
    write_private(
        &twice,
        &format!(
            "[[token]]\nsecret = \"{TOKEN}\"\nclients = [\"a\"]\n\
             [[token]]\nsecret = \"{TOKEN}\"\nclients = [\"b\"]\n"
        ),
    );
    let out = serve_with(&twice);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 5") && err.contains("line 2"), "{err}");
    assert!(!err.contains(TOKEN), "the secret is never shown: {err}");
}

#[test]
fn a_body_limit_that_cannot_hold_the_largest_operation_is_refused_at_start() {
    // An outside client's report: both limits at 100,000 bytes started,
    // advertised both, and answered 413 to every push of a payload of
    // max_payload_bytes (its base64 alone is 133,336 bytes).
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let out = Command::cargo_bin("cpc-server")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--tokens")
        .arg(&tokens)
        .args([
            "--max-payload-bytes",
            "100000",
            "--max-body-bytes",
            "100000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_body_bytes 100000"), "{err}");
    assert!(err.contains("max_payload_bytes 100000"), "{err}");
    assert!(
        err.contains(&format!("at least {}", 133_336 + 20 * 1024)),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never listened");
}

/// Peak resident memory of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn ten_thousand_connections_at_once_get_clear_answers_and_memory_stays_bounded() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Both processes need a descriptor per connection: raise the soft limit
    // to the hard one (the child inherits it) and scale down if it is low.
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let connections = 10_000usize.min(usize::try_from(hard).unwrap_or(usize::MAX) - 256);
    if connections < 10_000 {
        println!("descriptor limit {hard}: {connections} connections instead of 10,000");
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = tokens_file(dir.path());
    let (mut child, addr) = serve(&data, &tokens);
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let statuses: Vec<u16> = rt.block_on(async {
        // Open every connection first (256 connects in flight at a time,
        // so the listen backlog is not what is tested), then send on all.
        let mut streams = Vec::with_capacity(connections);
        let mut pending = tokio::task::JoinSet::new();
        let mut opened = 0;
        while opened < connections || !pending.is_empty() {
            while opened < connections && pending.len() < 256 {
                let addr = addr.clone();
                pending.spawn(async move { tokio::net::TcpStream::connect(addr).await });
                opened += 1;
            }
            if let Some(done) = pending.join_next().await {
                streams.push(done.unwrap().unwrap());
            }
        }
        assert_eq!(streams.len(), connections, "every connection is open at once");
        let mut answers = tokio::task::JoinSet::new();
        for (n, mut s) in streams.into_iter().enumerate() {
            answers.spawn(async move {
                let body = format!(
                    r#"{{"protocol":1,"client_id":"dev-1","ops":[{{"id":"{:0>26}","entity":{{"collection":"c","id":"k{n}"}},"kind":"update","payload":"eA==","base_version":null,"timestamp":{{"wall_ms":{n},"logical":0,"node":"0000000000000001"}}}}]}}"#,
                    n + 1
                );
                let request = format!(
                    "POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(request.as_bytes()).await.is_err() {
                    return 0;
                }
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer).await;
                let text = String::from_utf8_lossy(&answer);
                text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
            });
        }
        let mut statuses = Vec::with_capacity(connections);
        while let Some(status) = answers.join_next().await {
            statuses.push(status.unwrap());
        }
        statuses
    });
    let hwm = vm_hwm_kib(pid);
    let mut counts = std::collections::BTreeMap::new();
    for s in &statuses {
        *counts.entry(*s).or_insert(0usize) += 1;
    }
    println!("answers by status: {counts:?}; server peak RSS {hwm} KiB");
    // Every connection got a clear answer: applied, or refused whole (rate
    // limit, concurrency cap) with a problem.
    assert!(
        counts.keys().all(|s| [200, 429, 503].contains(s)),
        "{counts:?}"
    );
    assert!(counts.get(&200).copied().unwrap_or(0) >= 1, "{counts:?}");
    // Still serving afterwards.
    let health = rt.block_on(async {
        reqwest::get(format!("http://{addr}/v1/health"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(health, "cpc-sync ok\n");
    // Memory stays bounded: far below a copy of every request at once.
    assert!(hwm < 256 * 1024, "server peak RSS {hwm} KiB");
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing partially applied: exactly the answered-200 pushes are in the
    // log, each once.
    let log = export(&data);
    let applied = counts.get(&200).copied().unwrap_or(0);
    assert_eq!(
        log.len(),
        applied,
        "the log holds exactly the pushes answered 200"
    );
    let mut ids: Vec<&str> = log
        .iter()
        .map(|l| l["entity"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), log.len(), "each op at most once");
}

/// Runs the server with `RUST_LOG=level`, pushes one op carrying canaries
/// (as the payload, the entity id and the token), stops it, returns stderr.
fn logs_of_a_push(level: &str) -> String {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_private(
        &tokens,
        "[[token]]\nsecret = \"TOKENCANARY42-secret\"\nclients = [\"dev-*\"]\n",
    );
    let (child, addr) = serve_logging(&dir.path().join("data"), &tokens, Some(level));
    let payload = base64::engine::general_purpose::STANDARD.encode("PAYLOADCANARY42");
    let body = format!(
        r#"{{"protocol":1,"client_id":"dev-1","ops":[{{"id":"00000000000000000000000001","entity":{{"collection":"c","id":"ENTITYCANARY42"}},"kind":"update","payload":"{payload}","base_version":null,"timestamp":{{"wall_ms":1,"logical":0,"node":"0000000000000001"}}}}]}}"#
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/v1/push");
        // One good push, one with a wrong token, one malformed.
        let ok = client
            .post(&url)
            .bearer_auth("TOKENCANARY42-secret")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status();
        let _ = client
            .post(&url)
            .bearer_auth("TOKENCANARY43-secret")
            .body(body.clone())
            .send()
            .await;
        let _ = client
            .post(&url)
            .bearer_auth("TOKENCANARY42-secret")
            .header("content-type", "application/json")
            .body(body.replace("\"kind\"", "\"knd\""))
            .send()
            .await;
        ok
    });
    assert_eq!(status.as_u16(), 200);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn logs_never_carry_payloads_or_tokens_and_entity_ids_only_at_debug() {
    let trace = logs_of_a_push("trace");
    assert!(!trace.is_empty(), "trace logging produced nothing");
    for canary in [
        "PAYLOADCANARY42",
        "UEFZTE9BRENBTkFSWTQy",
        "TOKENCANARY42",
        "TOKENCANARY43",
    ] {
        assert!(!trace.contains(canary), "{canary} in the trace logs");
    }
    let info = logs_of_a_push("info");
    assert!(info.contains("serving protocol v1"), "{info}");
    assert!(!info.contains("ENTITYCANARY42"), "an entity id at INFO");
}

#[test]
fn on_postgres_the_url_comes_from_the_environment_and_kill_9_loses_no_acknowledged_op() {
    let Ok(admin) = std::env::var("CPC_TEST_DATABASE_URL") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: CPC_TEST_DATABASE_URL is not set (see CONTRIBUTING.md)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(cpc_server::ScratchDatabase::create(&admin))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    // The URL (with its password, in a real deployment) is not on the
    // command line, where `ps` would show it.
    let mut child = Command::cargo_bin("cpc-server")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .env("CPC_DATABASE_URL", db.url())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let acked: Vec<u32> = (1..20).filter(|n| push(&addr, *n) == 200).collect();
    assert_eq!(acked.len(), 19);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(!logs.contains(db.url()), "the URL is never logged:\n{logs}");

    let out = Command::cargo_bin("cpc-server")
        .unwrap()
        .arg("export-log")
        .env("CPC_DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["entity"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = acked.iter().map(|n| format!("e{n}")).collect();
    assert_eq!(ids, expected, "every acknowledged op once, in order");

    // A data directory and a database at once is a usage error.
    let both = Command::cargo_bin("cpc-server")
        .unwrap()
        .args(["export-log", "--data"])
        .arg(dir.path())
        .env("CPC_DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    drop(db);
}
