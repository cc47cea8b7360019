//! The `instances` run (issue 20): two `cpc-server` processes on one
//! PostgreSQL database, each behind a fault proxy that cuts answers after
//! the commit (so a retry lands on the other instance: the transport
//! fails over on a broken connection), devices spread over both with
//! failover, and one instance killed with SIGKILL mid-run and left dead:
//! its devices must move to the other and lose nothing. Needs
//! `CPC_TEST_DATABASE_URL` (a cluster where it may create a database);
//! skips, saying so, without it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cpc_fault::proxy::{Direction, FaultProxy, ProxyConfig, Toxic, ToxicKind};

use super::fleet::{kill9, spawn_server, Devices, Fleet, Guard, ServerStore};
use super::{io, judge, Sizes, Verdict};
use crate::XtaskError;

/// Answers cut after the commit, and requests cut on the way in.
fn cutting_proxy(upstream: SocketAddr, seed: u64) -> ProxyConfig {
    let mut config = ProxyConfig::new(upstream, seed);
    config.toxics = vec![
        Toxic::new(
            Direction::Downstream,
            ToxicKind::ResetPeer { after_bytes: 40 },
            0.15,
        ),
        // A few answers into a kept-alive connection.
        Toxic::new(
            Direction::Downstream,
            ToxicKind::ResetPeer { after_bytes: 3000 },
            0.30,
        ),
        Toxic::new(
            Direction::Upstream,
            ToxicKind::ResetPeer { after_bytes: 200 },
            0.05,
        ),
    ];
    config
}

/// Runs it; `None` when there is no PostgreSQL to run it on.
pub(crate) async fn run(sizes: Sizes) -> Result<Option<Verdict>, XtaskError> {
    let Ok(admin) = std::env::var("CPC_TEST_DATABASE_URL") else {
        println!("SKIP instances: CPC_TEST_DATABASE_URL is not set (see CONTRIBUTING.md)");
        return Ok(None);
    };
    let started = Instant::now();
    let failed = |e: &dyn std::fmt::Display| XtaskError::StepFailed(format!("instances: {e}"));
    let db = cpc_server::ScratchDatabase::create(&admin)
        .await
        .map_err(|e| failed(&e))?;
    let dir = tempfile::tempdir().map_err(io("making a temp dir"))?;
    let store = ServerStore::Postgres(db.url());
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let (a, a_addr) = spawn_server(store, loopback, false, None)?;
    let (b, b_addr) = spawn_server(store, loopback, false, None)?;
    let mut b = Guard(b);
    let proxy_a = FaultProxy::start(cutting_proxy(a_addr, 20))
        .await
        .map_err(|e| failed(&e))?;
    let proxy_b = FaultProxy::start(cutting_proxy(b_addr, 21))
        .await
        .map_err(|e| failed(&e))?;
    let devices = Devices {
        dir: dir.path(),
        urls: vec![
            format!("http://{}", proxy_a.addr()),
            format!("http://{}", proxy_b.addr()),
        ],
        ops: sizes.ops,
        netns: None,
        pace: Duration::ZERO,
        pull: true,
        broken_sink: false,
        retain: false,
    };
    // The fleet's server is instance A: the one killed.
    let mut fleet = Fleet::start(a, &devices, sizes.devices)?;
    let total = u64::from(sizes.devices) * sizes.ops;
    let mut killed = false;
    while !fleet.finished(started)? {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked_now = devices.acked_total(sizes.devices);
        if !killed && acked_now >= total * 2 / 5 {
            kill9(&mut fleet.server);
            killed = true;
            println!("  instances: A killed with SIGKILL at {acked_now} acknowledged; left dead");
        }
    }
    let (ca, cb) = (proxy_a.counters(), proxy_b.counters());
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
    println!(
        "  proxies: connections {} + {}, resets {} + {}",
        ca.connections, cb.connections, ca.resets, cb.resets
    );
    drop(b.0.stdin.take());
    let _ = b.0.wait();
    let log = store.export().await?;
    judge(&log, &devices, &fleet, started).map(Some)
}
