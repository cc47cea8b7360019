//! Two devices sync both ways over real HTTP with the reference server.
//!
//! Starts `cpc-server` in-process on a free loopback port, gives two
//! engines an `HttpTransport` and a `MemorySink` each (the sink is where
//! the other device's changes land: in an app, its local database),
//! submits a few hundred edits to shared notes (unconditional writes: the
//! server keeps the last one; give an operation a `base_version` to make
//! it conditional), waits for both queues to drain and both sinks to pull
//! through the server's head, checks they hold the same notes, and prints
//! what the events counted and the head of the server's change log.
//! `cargo run --example http_sync`

use std::sync::Arc;
use std::time::Duration;

use cpc_http::{HttpConfig, HttpTransport, StaticToken};
use cpc_server::{RateLimit, ServerConfig, Tokens};
use cpc_sync::core::{EntityKey, MemorySink, NodeId, OperationKind};
use cpc_sync::worker::WorkerEvent;
use cpc_sync::SyncEngine;

const TOKEN: &str = "example-token";
const EDITS_PER_DEVICE: usize = 300;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // The server: one token for every device of this example.
    let mut config = ServerConfig::new(
        dir.path().join("server"),
        Tokens::single(TOKEN, &["phone-*"]),
    );
    config.rate = RateLimit {
        per_second: 500.0,
        burst: 500.0,
    };
    let server = cpc_server::start(config).await?;
    let base = format!("http://{}", server.addr());
    println!("cpc-server listening on {base}");

    // Two devices, each with its own queue and HTTP transport.
    let mut engines = Vec::new();
    let mut sinks = Vec::new();
    for (n, name) in ["phone-a", "phone-b"].into_iter().enumerate() {
        let transport = HttpTransport::new(
            HttpConfig::new(base.clone(), name),
            Arc::new(StaticToken::new(TOKEN)),
        )?;
        let sink = Arc::new(MemorySink::new());
        let engine = SyncEngine::builder()
            .path(dir.path().join(name))
            .transport(transport)
            .remote_sink(sink.clone())
            .node_id(NodeId(n as u64 + 1))
            .start()
            .await?;
        engines.push((name, engine));
        sinks.push(sink);
    }

    let mut watchers = Vec::new();
    for (name, engine) in &engines {
        let mut events = engine.subscribe();
        let name = *name;
        watchers.push(tokio::spawn(async move {
            let (mut applied, mut replays, mut conflicts, mut batches, mut missed) =
                (0, 0, 0, 0, 0);
            loop {
                match events.recv().await {
                    // Each operation is reported applied once: by its push's
                    // answer, or (`replay`) as already applied: a resend, or
                    // an answer lost and the pull feed showing it applied.
                    Ok(WorkerEvent::Applied { replay: false, .. }) => applied += 1,
                    Ok(WorkerEvent::Applied { replay: true, .. }) => replays += 1,
                    Ok(WorkerEvent::ConflictResolved { .. }) => conflicts += 1,
                    Ok(WorkerEvent::BatchCompleted { .. }) => batches += 1,
                    Ok(_) => {}
                    // A slow subscriber misses events; the queue is the truth.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => missed += n,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            println!(
                "{name}: {} of {EDITS_PER_DEVICE} edits applied ({replays} as replays), \
                 {conflicts} conflicts resolved, {batches} batches, {missed} events missed",
                applied + replays
            );
        }));
    }

    for i in 0..EDITS_PER_DEVICE {
        for (name, engine) in &engines {
            // 20 shared notes: the devices edit the same ones.
            engine
                .operation(
                    EntityKey::new("notes", format!("note-{}", i % 20)),
                    OperationKind::Update,
                )
                .payload(format!("{name} edit {i}").into_bytes())
                .submit()
                .await?;
        }
    }
    for (name, engine) in &engines {
        tokio::time::timeout(Duration::from_secs(120), engine.drained()).await??;
        println!("{name}: {} left to sync", engine.pending().await?);
    }
    // Every edit was pushed: 2 x EDITS_PER_DEVICE changes in the log. Each
    // device pulls through that position (the other's edits and its own).
    let head = (2 * EDITS_PER_DEVICE) as u64;
    for (name, engine) in &engines {
        tokio::time::timeout(Duration::from_secs(60), engine.pulled_through(head)).await??;
        println!("{name}: pulled through seq {head}");
    }
    let (a, b) = (sinks[0].live(), sinks[1].live());
    println!("both devices hold {} notes; identical: {}", a.len(), a == b);
    if a != b {
        return Err("the two devices did not converge".into());
    }
    for (_, engine) in &engines {
        engine.shutdown().await?;
    }
    // Dropping the engines closes their event channels: the watchers print
    // their counts and end.
    drop(engines);
    for w in watchers {
        if tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .is_err()
        {
            println!("(a watcher did not end)");
        }
    }
    server.shutdown().await?;

    // The ground truth: the server's committed change log.
    let mut log = Vec::new();
    let lines = cpc_server::export_log(&dir.path().join("server"), &mut log)?;
    println!("server change log: {lines} changes; the last three:");
    let text = String::from_utf8(log)?;
    for line in text
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let v: serde_json::Value = serde_json::from_str(line)?;
        println!(
            "  seq {} {}/{} version {} from {}",
            v["seq"],
            v["entity"]["collection"],
            v["entity"]["id"],
            v["version"],
            v["origin"]["client_id"]
        );
    }
    Ok(())
}
