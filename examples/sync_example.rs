//! Submit while offline, come online, watch the queue drain.
//!
//! Runs on a paused tokio clock against cpc-fault's simulated remote, so a
//! simulated minute passes in milliseconds. `cargo run --example sync_example`

use std::time::Duration;

use cpc_fault::{RemoteOptions, SimClock, SimulatedRemote};
use cpc_sync::core::{EntityKey, OperationKind, OperationPriority};
use cpc_sync::network::{ManualSource, NetworkMonitor};
use cpc_sync::worker::WorkerEvent;
use cpc_sync::SyncEngine;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let remote = SimulatedRemote::new(RemoteOptions::default(), SimClock::start_now());

    // The application forwards the platform's connectivity signals.
    let monitor = NetworkMonitor::default();
    let link = ManualSource::new();
    link.connect(monitor.sink("platform"));
    link.set_offline();

    let engine = SyncEngine::builder()
        .path(dir.path().join("queue"))
        .transport(remote.clone())
        .network(monitor)
        .start()
        .await?;
    let mut events = engine.subscribe();

    println!("offline: submitting 5 edits");
    for i in 0..5 {
        let id = engine
            .operation(
                EntityKey::new("notes", format!("note-{}", i % 2)),
                OperationKind::Update,
            )
            .payload(format!("edit {i}").into_bytes())
            .priority(if i == 4 {
                OperationPriority::High
            } else {
                OperationPriority::Normal
            })
            .submit()
            .await?;
        println!("  stored {id}");
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    println!(
        "after a minute offline: {} waiting to sync, {} applied remotely",
        engine.pending().await?,
        remote.apply_count()
    );

    println!("network back");
    link.set_online();
    tokio::time::timeout(Duration::from_secs(300), engine.drained()).await??;
    while let Ok(event) = events.try_recv() {
        match event {
            WorkerEvent::NetworkChanged { from, to } => println!("  network {from} -> {to}"),
            WorkerEvent::Applied {
                id,
                entity,
                version,
                ..
            } => {
                println!("  applied {id} on {entity} (version {version})")
            }
            WorkerEvent::BatchCompleted { summary } => println!("  batch: {summary}"),
            WorkerEvent::Drained => println!("  drained"),
            _ => {}
        }
    }
    println!(
        "done: {} pending, {} applied remotely",
        engine.pending().await?,
        remote.apply_count()
    );
    engine.shutdown().await?;
    Ok(())
}
