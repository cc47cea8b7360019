//! Real sockets, real faults: three engines push and pull through a
//! `FaultProxy` in front of `cpc-server` that resets connections mid-request
//! and mid-answer (after the commit), black-holes some, and goes down
//! twice. Every operation lands exactly once, in each record's order, and
//! every device converges on the server's state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cpc_fault::proxy::{Direction, FaultProxy, ProxyConfig, Toxic, ToxicKind};
use cpc_fault::Schedule;
use cpc_http::{HttpConfig, HttpTransport, StaticToken};
use cpc_server::{RateLimit, ServerConfig, Tokens};
use cpc_sync::core::{EntityKey, MemorySink, NodeId, OperationId, OperationKind};
use cpc_sync::worker::PullConfig;
use cpc_sync::SyncEngine;
use serde_json::Value;

const TOKEN: &str = "proxy-token";
const OPS_PER_DEVICE: usize = 200;

fn toxics() -> Vec<Toxic> {
    let reset =
        |direction, after_bytes, p| Toxic::new(direction, ToxicKind::ResetPeer { after_bytes }, p);
    vec![
        // Mid-request: nothing applied.
        reset(Direction::Upstream, 150, 0.10),
        // Mid-answer: applied and committed, the answer lost.
        reset(Direction::Downstream, 40, 0.10),
        Toxic::new(Direction::Downstream, ToxicKind::Timeout, 0.10),
        Toxic::new(
            Direction::Downstream,
            ToxicKind::Latency {
                latency: Duration::from_millis(5),
                jitter: Duration::from_millis(5),
            },
            0.5,
        ),
        Toxic::new(
            Direction::Upstream,
            ToxicKind::Slicer {
                size: 64,
                variation: 32,
                delay: Duration::from_micros(200),
            },
            0.3,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_sync_exactly_once_through_resets_black_holes_and_outages() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ServerConfig::new(dir.path().join("server"), Tokens::single(TOKEN, &["dev-*"]));
    config.rate = RateLimit {
        per_second: 10_000.0,
        burst: 10_000.0,
    };
    let server = cpc_server::start(config).await.unwrap();
    let mut proxy_config = ProxyConfig::new(server.addr(), 19);
    proxy_config.toxics = toxics();
    proxy_config.schedule = Schedule::builder()
        .offline(Duration::from_secs(2), Duration::from_secs(3))
        .offline(Duration::from_secs(5), Duration::from_secs(6))
        .build()
        .unwrap();
    let proxy = FaultProxy::start(proxy_config).await.unwrap();
    let base = format!("http://{}", proxy.addr());

    let mut devices = Vec::new();
    for (n, name) in ["dev-a", "dev-b", "dev-c"].into_iter().enumerate() {
        let mut http = HttpConfig::new(base.as_str(), name);
        http.request_timeout = Duration::from_secs(2);
        let transport = HttpTransport::new(http, Arc::new(StaticToken::new(TOKEN))).unwrap();
        let sink = Arc::new(MemorySink::new());
        let engine = SyncEngine::builder()
            .path(dir.path().join(name))
            .transport(transport)
            .node_id(NodeId(n as u64 + 1))
            .push_timeout(Duration::from_secs(3))
            .remote_sink(sink.clone())
            .pull_config(PullConfig {
                long_poll: Duration::from_secs(1),
                backoff_max: Duration::from_secs(2),
                seed: Some(n as u64),
                ..PullConfig::default()
            })
            .start()
            .await
            .unwrap();
        devices.push((name, engine, sink));
    }
    // Per device and record, the ops in submission order.
    let mut submitted: HashMap<(&str, usize), Vec<OperationId>> = HashMap::new();
    for i in 0..OPS_PER_DEVICE {
        for (name, engine, _) in &devices {
            let id = engine
                .operation(
                    EntityKey::new("notes", format!("shared-{}", i % 15)),
                    OperationKind::Update,
                )
                .payload(format!("{name} {i}"))
                .submit()
                .await
                .unwrap();
            submitted.entry((name, i % 15)).or_default().push(id);
        }
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (name, engine, _) in &devices {
        tokio::time::timeout(Duration::from_secs(120), engine.drained())
            .await
            .unwrap_or_else(|_| panic!("{name} did not drain"))
            .unwrap();
    }

    // The committed log: each op once, each device's ops on each record in
    // submission order.
    let mut out = Vec::new();
    cpc_server::export_log(&dir.path().join("server"), &mut out).unwrap();
    let rows: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = rows
        .iter()
        .map(|r| r["origin"]["op"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&str> = ops.iter().copied().collect();
    assert_eq!(distinct.len(), ops.len(), "an operation applied twice");
    assert_eq!(ops.len(), 3 * OPS_PER_DEVICE, "an operation lost");
    for ((name, record), ids) in &submitted {
        let order: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let applied: Vec<&str> = ops
            .iter()
            .copied()
            .filter(|op| order.iter().any(|o| o == op))
            .collect();
        assert_eq!(
            applied,
            order.iter().map(String::as_str).collect::<Vec<_>>(),
            "{name}'s operations on shared-{record} out of submission order"
        );
    }

    // Convergence: every sink holds the server's last state of each note.
    let mut truth: BTreeMap<EntityKey, u64> = BTreeMap::new();
    for r in &rows {
        truth.insert(
            EntityKey::new(
                r["entity"]["collection"].as_str().unwrap(),
                r["entity"]["id"].as_str().unwrap(),
            ),
            r["version"].as_u64().unwrap(),
        );
    }
    let head = rows.len() as u64;
    for (name, engine, sink) in &devices {
        tokio::time::timeout(Duration::from_secs(120), engine.pulled_through(head))
            .await
            .unwrap_or_else(|_| panic!("{name} did not pull through seq {head}"))
            .unwrap();
        let held: BTreeMap<EntityKey, u64> = sink
            .live()
            .into_iter()
            .map(|(k, h)| (k, h.version))
            .collect();
        assert_eq!(held, truth, "{name} converges on the server's state");
    }
    let c = proxy.counters();
    assert!(
        c.resets > 0 && c.blackholes > 0 && c.offline > 0,
        "the faults happened: {c:?}"
    );
    for (_, engine, _) in devices {
        engine.shutdown().await.unwrap();
    }
    proxy.shutdown().await;
    server.shutdown().await.unwrap();
}
