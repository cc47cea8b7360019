//! Two-way sync over real sockets: three engines with `HttpTransport` and a
//! `MemorySink` edit overlapping records through `cpc-server`, which is
//! stopped and restarted on its data mid-run. After quiescence every sink
//! equals the server's state, and the exported log shows each operation
//! once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cpc_http::{HttpConfig, HttpTransport, StaticToken};
use cpc_server::{RateLimit, RunningServer, ServerConfig, Tokens};
use cpc_sync::core::{EntityKey, MemorySink, NodeId, OperationKind};
use cpc_sync::worker::PullConfig;
use cpc_sync::SyncEngine;
use serde_json::Value;

const TOKEN: &str = "two-way-token";

async fn server(dir: &std::path::Path, listen: SocketAddr) -> RunningServer {
    let mut config = ServerConfig::new(dir.join("server"), Tokens::single(TOKEN, &["dev-*"]));
    config.listen = listen;
    config.rate = RateLimit {
        per_second: 10_000.0,
        burst: 10_000.0,
    };
    cpc_server::start(config).await.unwrap()
}

async fn engine(
    dir: &std::path::Path,
    base: &str,
    name: &str,
    node: u64,
    sink: Arc<MemorySink>,
) -> SyncEngine {
    engine_retaining(dir, base, name, node, sink, None).await
}

async fn engine_retaining(
    dir: &std::path::Path,
    base: &str,
    name: &str,
    node: u64,
    sink: Arc<MemorySink>,
    retain: Option<cpc_sync::storage::RetainAcked>,
) -> SyncEngine {
    let transport = HttpTransport::new(
        HttpConfig::new(base, name),
        Arc::new(StaticToken::new(TOKEN)),
    )
    .unwrap();
    SyncEngine::builder()
        .path(dir.join(name))
        .transport(transport)
        .node_id(NodeId(node))
        .remote_sink(sink)
        .retain_acked(retain)
        .pull_config(PullConfig {
            long_poll: Duration::from_secs(5),
            backoff_max: Duration::from_secs(2),
            seed: Some(node),
            ..PullConfig::default()
        })
        .start()
        .await
        .unwrap()
}

/// The server's committed log, and its live entities (the last change of
/// each, unless a deletion): version and payload.
/// Live entities: version and payload.
type State = BTreeMap<EntityKey, (u64, Vec<u8>)>;

fn truth(dir: &std::path::Path) -> (Vec<Value>, State) {
    use base64::Engine as _;
    let mut out = Vec::new();
    cpc_server::export_log(&dir.join("server"), &mut out).unwrap();
    let rows: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut live = BTreeMap::new();
    for r in &rows {
        let key = EntityKey::new(
            r["entity"]["collection"].as_str().unwrap(),
            r["entity"]["id"].as_str().unwrap(),
        );
        if r["deleted"].as_bool().unwrap() {
            live.remove(&key);
        } else {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(r["payload"].as_str().unwrap())
                .unwrap();
            live.insert(key, (r["version"].as_u64().unwrap(), payload));
        }
    }
    (rows, live)
}

fn held(sink: &MemorySink) -> State {
    sink.live()
        .into_iter()
        .map(|(k, h)| (k, (h.version, h.payload.unwrap_or_default())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_editing_the_same_records_converge_through_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = server(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let addr = first.addr();
    let base = format!("http://{addr}");
    let mut devices = Vec::new();
    for (n, name) in ["dev-a", "dev-b", "dev-c"].into_iter().enumerate() {
        let sink = Arc::new(MemorySink::new());
        let e = engine(dir.path(), &base, name, n as u64 + 1, Arc::clone(&sink)).await;
        devices.push((name, e, sink));
    }
    let mut server = Some(first);
    let mut submitted = 0usize;
    for round in 0..6u32 {
        if round == 3 {
            // An outage mid-run: the server stops (its in-flight requests
            // finish) and comes back on the same data and port.
            server.take().unwrap().shutdown().await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            server = Some(self::server(dir.path(), addr).await);
        }
        for (name, e, _) in &devices {
            for i in 0..40u32 {
                // Shared records (every device writes them) and one of each
                // device's own; unconditional updates, and some deletes.
                let (id, kind) = match i % 10 {
                    0..=5 => (format!("shared-{}", i % 7), OperationKind::Update),
                    6 => (format!("shared-{}", (i + round) % 7), OperationKind::Delete),
                    _ => (format!("{name}-{}", i % 5), OperationKind::Update),
                };
                e.operation(EntityKey::new("notes", id), kind)
                    .payload(format!("{name} round {round} edit {i}"))
                    .submit()
                    .await
                    .unwrap();
                submitted += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, e, _) in &devices {
        tokio::time::timeout(Duration::from_secs(60), e.drained())
            .await
            .expect("every device drains")
            .unwrap();
    }
    let (rows, live) = truth(dir.path());
    let head = rows.len() as u64;
    for (name, e, sink) in &devices {
        tokio::time::timeout(Duration::from_secs(60), e.pulled_through(head))
            .await
            .unwrap_or_else(|_| panic!("{name} did not pull through seq {head}"))
            .unwrap();
        assert_eq!(held(sink), live, "{name}'s sink equals the server's state");
    }
    // Each operation once in the log.
    let ops: HashSet<&str> = rows
        .iter()
        .map(|r| r["origin"]["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.len(), rows.len(), "an operation applied twice");
    assert_eq!(rows.len(), submitted, "every operation applied once");
    for (_, e, _) in devices {
        e.shutdown().await.unwrap();
    }
    server.unwrap().shutdown().await.unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restored_from_a_backup_is_detected_and_devices_converge_on_it() {
    // Without retention: the six acknowledged after the backup are lost,
    // and reported as such.
    restore_run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retention_a_restore_loses_nothing_the_device_had_acknowledged() {
    restore_run(Some(cpc_sync::storage::RetainAcked::default())).await;
}

async fn restore_run(retain: Option<cpc_sync::storage::RetainAcked>) {
    let retaining = retain.is_some();
    let dir = tempfile::tempdir().unwrap();
    let first = server(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let addr = first.addr();
    let base = format!("http://{addr}");
    let sink = Arc::new(MemorySink::new());
    let device = engine_retaining(dir.path(), &base, "dev-r", 7, Arc::clone(&sink), retain).await;
    let mut events = device.subscribe();
    let write = |n: u32| {
        let device = device.clone();
        async move {
            for i in 0..n {
                device
                    .operation(
                        EntityKey::new("notes", format!("n{}", i % 4)),
                        OperationKind::Update,
                    )
                    .payload(format!("edit {i}"))
                    .submit()
                    .await
                    .unwrap();
            }
            device.drained().await.unwrap();
        }
    };
    write(10).await;
    device.pulled_through(10).await.unwrap();
    // The backup: taken with the server stopped, then it runs on.
    first.shutdown().await.unwrap();
    copy_dir(&dir.path().join("server"), &dir.path().join("backup"));
    let second = server(dir.path(), addr).await;
    write(6).await;
    device.pulled_through(16).await.unwrap();
    assert_eq!(device.known_position().await.unwrap().unwrap().seq, 16);
    // The restore: the last six changes are gone from the server.
    second.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("server")).unwrap();
    copy_dir(&dir.path().join("backup"), &dir.path().join("server"));
    let restored = server(dir.path(), addr).await;
    device.pull_now().unwrap();
    let regressed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(cpc_sync::worker::WorkerEvent::RemoteRegressed {
                    known,
                    head,
                    requeued,
                    unrecoverable,
                }) => return (known, head, requeued, unrecoverable),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await
    .expect("the device reports the server went back in time");
    assert_eq!((regressed.0.unwrap().seq, regressed.1.seq), (16, 10));
    // The journal held all sixteen acknowledgements: with retention every
    // one is pushed again (the first ten answered `already_applied`);
    // without it the six above the restored head are reported lost.
    let expected = if retaining { (16, 0) } else { (0, 6) };
    assert_eq!((regressed.2, regressed.3), expected);
    // New writes land on the restored history; the device converges on it.
    write(3).await;
    let total = if retaining { 19 } else { 13 };
    device.pulled_through(total).await.unwrap();
    let (rows, live) = truth(dir.path());
    assert_eq!(rows.len() as u64, total);
    if retaining {
        // Each of the sixteen once in the restored server's log.
        let ops: HashSet<&str> = rows
            .iter()
            .map(|r| r["origin"]["op"].as_str().unwrap())
            .collect();
        assert_eq!(ops.len(), rows.len(), "an operation applied twice");
    }
    assert_eq!(
        held(&sink),
        live,
        "the sink equals the restored server's state"
    );
    device.shutdown().await.unwrap();
    restored.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_restarted_after_a_restore_puts_its_lost_ops_back_before_new_ones() {
    // The restore happens while the app is stopped. On relaunch its first
    // push must already carry the position it had seen (persisted with
    // the queue), so the server refuses it (409) until the retained ops
    // are back in the queue ahead of the new one of the same record.
    let dir = tempfile::tempdir().unwrap();
    let first = server(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let addr = first.addr();
    let base = format!("http://{addr}");
    let retain = Some(cpc_sync::storage::RetainAcked::default());
    let sink = Arc::new(MemorySink::new());
    let edit = |device: SyncEngine, from: u32, n: u32| async move {
        for i in from..from + n {
            device
                .operation(EntityKey::new("notes", "n0"), OperationKind::Update)
                .payload(format!("edit {i}"))
                .submit()
                .await
                .unwrap();
        }
        device.drained().await.unwrap();
    };
    let device = engine_retaining(
        dir.path(),
        &base,
        "dev-x",
        9,
        Arc::clone(&sink),
        retain.clone(),
    )
    .await;
    edit(device.clone(), 0, 3).await;
    device.pulled_through(3).await.unwrap();
    first.shutdown().await.unwrap();
    copy_dir(&dir.path().join("server"), &dir.path().join("backup"));
    let second = server(dir.path(), addr).await;
    edit(device.clone(), 3, 3).await;
    device.pulled_through(6).await.unwrap();
    device.shutdown().await.unwrap();
    drop(device);
    // Restored while the app is stopped: edits 3, 4, 5 are gone.
    second.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("server")).unwrap();
    copy_dir(&dir.path().join("backup"), &dir.path().join("server"));
    let restored = server(dir.path(), addr).await;
    let device = engine_retaining(dir.path(), &base, "dev-x", 9, Arc::clone(&sink), retain).await;
    edit(device.clone(), 6, 1).await;
    device.pulled_through(7).await.unwrap();
    let (rows, _) = truth(dir.path());
    let payloads: Vec<String> = rows
        .iter()
        .map(|r| {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(r["payload"].as_str().unwrap())
                .unwrap();
            String::from_utf8(raw).unwrap()
        })
        .collect();
    assert_eq!(
        payloads,
        (0..7).map(|i| format!("edit {i}")).collect::<Vec<_>>(),
        "the record's edits, each once, in the order they were made"
    );
    device.shutdown().await.unwrap();
    restored.shutdown().await.unwrap();
}
