//! `cargo xtask e2e [--quick]`: the engine's guarantees over real sockets
//! and real processes (issue 19). `cpc-server` runs in a child process,
//! each device's engine in a child process of its own (`HttpTransport`,
//! a SQLite queue), all talking through a [`FaultProxy`] on loopback that
//! resets connections mid-request (10%) and mid-answer after the commit
//! (10% at once, 30% a few answers in), black-holes 10% and goes down
//! twice. Runs:
//!
//! - `proxy`: the faults alone;
//! - `server-kill`: the same, and the server killed with SIGKILL mid-run
//!   and restarted on its data;
//! - `client-kill`: the same, and one device killed with SIGKILL mid-run
//!   and restarted on its queue directory;
//! - `control-no-dedupe`: the negative control: a server that does not
//!   deduplicate (feature `test-faults`) must be caught applying twice;
//! - `control-broken-sink`: the convergence check's negative control: a
//!   device whose sink drops another device's records must be caught;
//! - `instances` (with `CPC_TEST_DATABASE_URL`): two servers on one
//!   PostgreSQL database, devices failing over between them, one server
//!   killed and left dead (see `e2e/instances.rs`);
//! - `restore` (with `CPC_TEST_DATABASE_URL`): the PostgreSQL store
//!   restored from a `pg_dump` while devices write (see `e2e/restore.rs`);
//! - `restore-embedded`: the embedded store backed up online with
//!   `cpc-server backup` and restored with `cpc-server restore` while
//!   devices write;
//! - `netns` (as root): kernel-level faults instead of the proxy (see
//!   `netfault.rs`).
//!
//! Each device logs every operation `submit` acknowledged (durably
//! queued). After the run, the server's committed log (`export_log`) is
//! compared with those logs: lost (acknowledged, never committed),
//! duplicated (committed twice) and reordered (a device's operations on
//! one record out of submission order) must be 0. Devices also pull
//! (into a sink saved to a file) all along; once every device has pushed
//! everything, each pulls up to the head, and its state must equal the
//! server's live entities (converged). One line per run: `run NAME, ops N,
//! acked A, lost 0, duplicated 0, reordered 0, retries R, wall S,
//! converged yes`.

mod device;
mod fleet;
mod instances;
mod restore;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cpc_fault::proxy::{Direction, FaultProxy, ProxyConfig, Toxic, ToxicKind};
use cpc_fault::Schedule;

pub use self::device::{client, serve, ClientArgs};
use self::fleet::{acked, DeviceState};
pub(crate) use self::fleet::{io, spawn_server, Devices, Fleet, ServerStore};
use crate::XtaskError;

/// The bearer token of every run.
const TOKEN: &str = "e2e-token";

/// Sizes of the runs.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Devices (one process each).
    pub devices: u32,
    /// Operations per device.
    pub ops: u64,
}

/// What a run does besides the proxy's faults.
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    kill_server: bool,
    kill_client: bool,
    no_dedupe: bool,
    /// Device 0's sink drops device 1's records (a negative control).
    broken_sink: bool,
    /// Connections whose answer is cut a few answers in, after the commit
    /// (default 30%).
    answer_resets: Option<f64>,
}

/// What a run found.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    ops: u64,
    acked: u64,
    lost: Vec<String>,
    duplicated: Vec<String>,
    reordered: Vec<String>,
    retries: u64,
    wall: Duration,
    /// Devices whose pulled state differs from the server's, and how.
    diverged: Vec<String>,
    /// Whether convergence was checked.
    converged: Option<bool>,
    /// Acknowledged operations a restore from a backup took back and the
    /// devices did not push again (the `restore` run; also counted in
    /// `lost`).
    taken_back: Option<usize>,
}

impl Verdict {
    fn line(&self, name: &str) -> String {
        format!(
            "run {name}, ops {}, acked {}, lost {}, duplicated {}, reordered {}, retries {}, wall {:.1}s, converged {}",
            self.ops,
            self.acked,
            self.lost.len(),
            self.duplicated.len(),
            self.reordered.len(),
            self.retries,
            self.wall.as_secs_f64(),
            match (self.converged, self.diverged.is_empty()) {
                (None, _) => "not checked",
                (Some(_), true) => "yes",
                (Some(_), false) => "no",
            }
        ) + &self
            .taken_back
            .map(|n| format!(", taken back by the restore and not pushed again {n}"))
            .unwrap_or_default()
    }

    fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.reordered.is_empty()
            && self.diverged.is_empty()
    }

    /// Prints the run's line, and the first ids of each failure; answers
    /// whether every guarantee held.
    pub(crate) fn report(&self, name: &str) -> bool {
        println!("{}", self.line(name));
        for (what, ids) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("reordered", &self.reordered),
            ("not converged", &self.diverged),
        ] {
            if !ids.is_empty() {
                println!("  {what}: {}", first(ids));
            }
        }
        self.holds()
    }
}

/// Every run's name, in the order they run.
pub const RUNS: &[&str] = &[
    "proxy",
    "server-kill",
    "client-kill",
    "control-no-dedupe",
    "control-broken-sink",
    "instances",
    "restore",
    "restore-embedded",
    "netns",
];

/// `cargo xtask e2e`: the runs `only` names (every one if empty). With
/// `server_no_dedupe` the plain runs (proxy, server-kill, client-kill) use
/// a server that applies resends again, so they must fail: the checker's
/// negative control as an outside tester runs it.
pub fn main(sizes: Sizes, only: &[String], server_no_dedupe: bool) -> Result<(), XtaskError> {
    if let Some(unknown) = only.iter().find(|n| !RUNS.contains(&n.as_str())) {
        return Err(XtaskError::Usage(format!(
            "no run named {unknown:?}; the runs are {}",
            RUNS.join(", ")
        )));
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|n| n == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| XtaskError::Io("starting a runtime", e))?;
    let mut failed = Vec::new();
    let runs = [
        ("proxy", Plan::default()),
        (
            "server-kill",
            Plan {
                kill_server: true,
                ..Plan::default()
            },
        ),
        (
            "client-kill",
            Plan {
                kill_client: true,
                ..Plan::default()
            },
        ),
    ];
    for (name, mut plan) in runs.into_iter().filter(|(name, _)| wanted(name)) {
        plan.no_dedupe = server_no_dedupe;
        if !runtime.block_on(run(plan, sizes))?.report(name) {
            failed.push(name);
        }
    }
    // Every connection loses an answer after its commit: resends are sure
    // to happen, and a server without dedupe applies them again.
    if wanted("control-no-dedupe") {
        let control = runtime.block_on(run(
            Plan {
                no_dedupe: true,
                answer_resets: Some(1.0),
                ..Plan::default()
            },
            sizes,
        ))?;
        println!("{}", control.line("control-no-dedupe"));
        if control.duplicated.is_empty() {
            failed.push("control-no-dedupe (a server applying resends twice went unnoticed)");
        } else {
            println!(
                "  control caught: duplicated {}",
                first(&control.duplicated)
            );
        }
    }
    // A device whose sink drops another device's records must be caught
    // not converging.
    if wanted("control-broken-sink") {
        let broken = runtime.block_on(run(
            Plan {
                broken_sink: true,
                ..Plan::default()
            },
            sizes,
        ))?;
        println!("{}", broken.line("control-broken-sink"));
        if broken.diverged.is_empty() {
            failed.push("control-broken-sink (a device missing changes went unnoticed)");
        } else {
            println!("  control caught: {}", first(&broken.diverged));
        }
    }
    // Two instances on one PostgreSQL database, one killed (issue 20).
    let verdict = if wanted("instances") {
        runtime.block_on(instances::run(sizes))?
    } else {
        None
    };
    if let Some(verdict) = verdict {
        if !verdict.report("instances") {
            failed.push("instances");
        }
    }
    // A restore from a backup under the devices' feet (issue 20).
    let verdict = if wanted("restore") {
        runtime.block_on(restore::run(sizes))?
    } else {
        None
    };
    if let Some(verdict) = verdict {
        if !verdict.report("restore") {
            failed.push("restore");
        }
    }
    // The same on the embedded store, with cpc-server backup and restore.
    if wanted("restore-embedded") {
        if let Some(verdict) = runtime.block_on(restore::run_embedded(sizes))? {
            if !verdict.report("restore-embedded") {
                failed.push("restore-embedded");
            }
        }
    }
    // Kernel-level faults in network namespaces (root only).
    match crate::netfault::unavailable() {
        _ if !wanted("netns") => {}
        Some(reason) => println!("SKIP netns: {reason}"),
        None => {
            if !runtime
                .block_on(crate::netfault::run_interruptible(sizes))?
                .report("netns")
            {
                failed.push("netns");
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(XtaskError::Invariant(format!(
            "e2e runs failed: {}",
            failed.join(", ")
        )))
    }
}

fn first(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if ids.len() > 10 { ", ..." } else { "" }
    )
}

/// The proxy's faults: resets mid-request and mid-answer (after the
/// commit), black holes, latency, and two down windows.
fn proxy_config(upstream: SocketAddr, answer_resets: f64) -> ProxyConfig {
    let mut config = ProxyConfig::new(upstream, 19);
    config.toxics = vec![
        Toxic::new(
            Direction::Upstream,
            ToxicKind::ResetPeer { after_bytes: 200 },
            0.10,
        ),
        // Answers cut after the commit: at once, or a few answers into a
        // kept-alive connection.
        Toxic::new(
            Direction::Downstream,
            ToxicKind::ResetPeer { after_bytes: 40 },
            0.10,
        ),
        Toxic::new(
            Direction::Downstream,
            ToxicKind::ResetPeer { after_bytes: 3000 },
            answer_resets,
        ),
        Toxic::new(Direction::Downstream, ToxicKind::Timeout, 0.10),
        Toxic::new(
            Direction::Downstream,
            ToxicKind::Latency {
                latency: Duration::from_millis(3),
                jitter: Duration::from_millis(3),
            },
            0.5,
        ),
    ];
    config.schedule = Schedule::builder()
        .offline(Duration::from_secs(3), Duration::from_secs(4))
        .offline(Duration::from_secs(7), Duration::from_secs(8))
        .build()
        .unwrap_or_default();
    config
}

async fn run(plan: Plan, sizes: Sizes) -> Result<Verdict, XtaskError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(io("making a temp dir"))?;
    let data = dir.path().join("server");
    let (server, addr) = spawn_server(
        ServerStore::Dir(&data),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        plan.no_dedupe,
        None,
    )?;
    let proxy = FaultProxy::start(proxy_config(addr, plan.answer_resets.unwrap_or(0.30)))
        .await
        .map_err(|e| XtaskError::StepFailed(format!("fault proxy: {e}")))?;
    let devices = Devices {
        dir: dir.path(),
        urls: vec![format!("http://{}", proxy.addr())],
        ops: sizes.ops,
        netns: None,
        pace: Duration::ZERO,
        pull: !plan.no_dedupe,
        broken_sink: plan.broken_sink,
        retain: false,
    };
    let mut fleet = Fleet::start(server, &devices, sizes.devices)?;
    let total = u64::from(sizes.devices) * sizes.ops;
    let (mut server_killed, mut client_killed) = (false, false);
    while !fleet.finished(started)? {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked_now = devices.acked_total(sizes.devices);
        if plan.kill_server && !server_killed && acked_now >= total * 2 / 5 {
            fleet::kill9(&mut fleet.server);
            server_killed = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            fleet.server = spawn_server(ServerStore::Dir(&data), addr, plan.no_dedupe, None)?.0;
        }
        let first = acked(&devices.log(0)).len() as u64;
        if plan.kill_client && !client_killed && first >= sizes.ops * 2 / 5 {
            fleet.restart(0, &devices)?;
            client_killed = true;
        }
    }
    let counters = proxy.counters();
    proxy.shutdown().await;
    println!(
        "  proxy: connections {}, resets {}, black holes {}, reset in a down window {}",
        counters.connections, counters.resets, counters.blackholes, counters.offline
    );
    fleet.stop_server();
    let log = ServerStore::Dir(&data).export().await?;
    judge(&log, &devices, &fleet, started)
}

/// Compares the server's committed log (exported) with what every device
/// acknowledged, and the server's live entities with each device's pulled
/// state.
pub(crate) fn judge(
    log: &[u8],
    devices: &Devices,
    fleet: &Fleet,
    started: Instant,
) -> Result<Verdict, XtaskError> {
    let states = fleet.states();
    let count = states.len() as u32;
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(log)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let committed: Vec<String> = rows
        .iter()
        .filter_map(|v| v["origin"]["op"].as_str().map(str::to_owned))
        .collect();
    let mut verdict = Verdict {
        ops: u64::from(count) * devices.ops,
        retries: fleet.retries(),
        ..Verdict::default()
    };
    let expected = live_state(&rows)?;
    verdict.converged = devices.pull.then_some(true);
    for (d, state) in states.iter().enumerate().filter(|_| devices.pull) {
        match state {
            None => verdict.diverged.push(format!("dev-{d} (said no state)")),
            Some(s) if *s != expected => verdict.diverged.push(format!(
                "dev-{d} ({} entities, digest {}; the server: {}, {})",
                s.entities, s.digest, expected.entities, expected.digest
            )),
            Some(_) => {}
        }
    }
    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut first_at: HashMap<&str, usize> = HashMap::new();
    for (i, op) in committed.iter().enumerate() {
        *seen.entry(op).or_default() += 1;
        first_at.entry(op).or_insert(i);
    }
    verdict.duplicated = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(op, _)| (*op).to_owned())
        .collect();
    verdict.duplicated.sort();
    for d in 0..count {
        let log = acked(&devices.log(d));
        verdict.acked += log.len() as u64;
        let mut last_at: HashMap<&str, usize> = HashMap::new();
        for (op, record) in &log {
            match first_at.get(op.as_str()) {
                None => verdict.lost.push(op.clone()),
                Some(at) => {
                    if last_at.get(record.as_str()).is_some_and(|prev| prev > at) {
                        verdict.reordered.push(op.clone());
                    }
                    last_at.insert(record, *at);
                }
            }
        }
    }
    verdict.wall = started.elapsed();
    Ok(verdict)
}

/// The live entities of an exported log (each entity's last change, left
/// out if a deletion), as a device reports its state.
fn live_state(rows: &[serde_json::Value]) -> Result<DeviceState, XtaskError> {
    let bad = || XtaskError::StepFailed("export-log wrote a row without its fields".into());
    type Key = (String, String);
    let mut last: BTreeMap<Key, (u64, Option<Vec<u8>>)> = BTreeMap::new();
    for row in rows {
        let key = (
            row["entity"]["collection"]
                .as_str()
                .ok_or_else(bad)?
                .to_owned(),
            row["entity"]["id"].as_str().ok_or_else(bad)?.to_owned(),
        );
        let version = row["version"].as_u64().ok_or_else(bad)?;
        let payload = match row["payload"].as_str() {
            Some(p) if row["deleted"] != serde_json::Value::Bool(true) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .map_err(|_| bad())?,
            ),
            _ => None,
        };
        last.insert(key, (version, payload));
    }
    let live: Vec<(&str, &str, u64, &[u8])> = last
        .iter()
        .filter_map(|((c, i), (v, p))| Some((c.as_str(), i.as_str(), *v, p.as_deref()?)))
        .collect();
    Ok(DeviceState {
        entities: live.len() as u64,
        digest: device::digest(live.into_iter()),
    })
}
