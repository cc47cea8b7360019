//! Backup and restore of the embedded store as an operator does them:
//! `cpc-server backup` while the server serves and devices push, then
//! `cpc-server restore` into the stopped server's data directory.

use serde_json::Value;

use crate::support::{self, op, push, push_body};

/// Pushes ops `from..to` one per request, from a task of its own.
async fn push_many(base: String, from: u128, to: u128) {
    let client = reqwest::Client::new();
    for n in from..to {
        let body = push_body(
            "dev-1",
            vec![op(n, &format!("e{}", n % 17), "payload", None)],
        );
        let r = client
            .post(format!("{base}/v1/push"))
            .bearer_auth(support::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}

async fn push_range(server: &cpc_server::RunningServer, from: u128, to: u128) {
    for n in from..to {
        let body = push_body(
            "dev-1",
            vec![op(n, &format!("e{}", n % 17), "payload", None)],
        );
        let (status, answer) = push(server, &body).await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// The log of the store in `dir`: gapless from 1, each `fp` the one the
/// server chained (checked at open: a server refuses a store whose head is
/// not its last change).
fn log_of(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    cpc_server::export_log(dir, &mut out).unwrap();
    let lines: Vec<Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], serde_json::json!(i as u64 + 1), "a gap: {l}");
    }
    lines
}

#[tokio::test]
async fn a_backup_taken_while_devices_push_restores_to_a_consistent_history() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    let config = || {
        let mut c = cpc_server::ServerConfig::new(&dir, support::tokens());
        c.rate.per_second = 1e6;
        c.rate.burst = 1e6;
        c
    };
    let server = support::start_with(config()).await;
    push_range(&server, 1, 101).await;
    // Pushes go on while the copy is taken.
    let pushing = {
        let base = support::base(&server);
        tokio::spawn(push_many(base, 101, 301))
    };
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("store.sqlite3");
    let report = {
        let (dir, file) = (dir.clone(), file.clone());
        tokio::task::spawn_blocking(move || cpc_server::backup(&dir, &file))
            .await
            .unwrap()
            .unwrap()
    };
    pushing.await.unwrap();
    assert!(
        (100..=300).contains(&report.head_seq),
        "a snapshot of a moment while pushes went on: {report:?}"
    );
    assert_eq!(report.store_id, server.store().store_id());
    // A second backup to the same name is refused, the first untouched.
    assert!(cpc_server::backup(&dir, &file).is_err());

    // Restore refuses while the server holds its directory.
    assert!(matches!(
        cpc_server::restore(&dir, &file),
        Err(cpc_server::StoreError::Locked(_))
    ));
    server.shutdown().await.unwrap();
    let before = log_of(&dir).len();
    assert_eq!(before, 300);
    let restored = cpc_server::restore(&dir, &file).unwrap();
    assert_eq!(restored.head_seq, report.head_seq);
    // The replaced files are kept aside, never deleted.
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("before-restore-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(log_of(&aside[0].path()).len(), 300);

    // The restored server serves the backup's history and goes on from it.
    let log = log_of(&dir);
    assert_eq!(log.len() as u64, report.head_seq);
    let server = support::start_with(config()).await;
    assert_eq!(server.store().store_id(), report.store_id);
    push_range(&server, 1_000, 1_001).await;
    server.shutdown().await.unwrap();
    assert_eq!(log_of(&dir).len() as u64, report.head_seq + 1);
}
