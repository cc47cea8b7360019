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
//! - `netns` (as root): kernel-level faults instead of the proxy (see
//!   `netfault.rs`).
//!
//! Each device logs every operation `submit` acknowledged (durably
//! queued). After the run, the server's committed log (`export_log`) is
//! compared with those logs: lost (acknowledged, never committed),
//! duplicated (committed twice) and reordered (a device's operations on
//! one record out of submission order) must be 0. One line per run:
//! `run NAME, ops N, acked A, lost 0, duplicated 0, reordered 0, retries R,
//! wall S`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpc_fault::proxy::{Direction, FaultProxy, ProxyConfig, Toxic, ToxicKind};
use cpc_fault::Schedule;

use crate::XtaskError;

/// The bearer token of every run.
const TOKEN: &str = "e2e-token";
/// Records per device.
const RECORDS: u64 = 25;
/// How long a run may take at most.
const RUN_LIMIT: Duration = Duration::from_secs(600);

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
}

impl Verdict {
    fn line(&self, name: &str) -> String {
        format!(
            "run {name}, ops {}, acked {}, lost {}, duplicated {}, reordered {}, retries {}, wall {:.1}s",
            self.ops,
            self.acked,
            self.lost.len(),
            self.duplicated.len(),
            self.reordered.len(),
            self.retries,
            self.wall.as_secs_f64()
        )
    }

    fn holds(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.reordered.is_empty()
    }

    /// Prints the run's line, and the first ids of each failure; answers
    /// whether every guarantee held.
    pub(crate) fn report(&self, name: &str) -> bool {
        println!("{}", self.line(name));
        for (what, ids) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("reordered", &self.reordered),
        ] {
            if !ids.is_empty() {
                println!("  {what}: {}", first(ids));
            }
        }
        self.holds()
    }
}

/// `cargo xtask e2e`.
pub fn main(sizes: Sizes) -> Result<(), XtaskError> {
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
    for (name, plan) in runs {
        if !runtime.block_on(run(plan, sizes))?.report(name) {
            failed.push(name);
        }
    }
    // Every connection loses an answer after its commit: resends are sure
    // to happen, and a server without dedupe applies them again.
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
    // Kernel-level faults in network namespaces (root only).
    match crate::netfault::unavailable() {
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

pub(crate) fn io(what: &'static str) -> impl Fn(std::io::Error) -> XtaskError {
    move |e| XtaskError::Io(what, e)
}

/// A command running this xtask binary, inside network namespace `netns`
/// when given (`ip netns exec` execs it: the child's pid is xtask's own,
/// so SIGKILL reaches it).
pub(crate) fn xtask_command(netns: Option<&str>) -> Result<Command, XtaskError> {
    let exe = std::env::current_exe().map_err(io("finding xtask"))?;
    Ok(match netns {
        None => Command::new(exe),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(exe);
            cmd
        }
    })
}

/// Starts `xtask e2e-serve` on `listen` (inside `netns` when given);
/// answers the child and its address.
pub(crate) fn spawn_server(
    data: &Path,
    listen: SocketAddr,
    no_dedupe: bool,
    netns: Option<&str>,
) -> Result<(Child, SocketAddr), XtaskError> {
    let mut cmd = xtask_command(netns)?;
    cmd.arg("e2e-serve")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(listen.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if no_dedupe {
        cmd.arg("--no-dedupe");
    }
    let mut child = cmd.spawn().map_err(io("starting the server"))?;
    let mut line = String::new();
    let stdout = child
        .stdout
        .take()
        .ok_or(XtaskError::StepFailed("no server stdout".into()))?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(io("reading the server's address"))?;
    let addr = line.trim().parse().map_err(|_| {
        XtaskError::StepFailed(format!("the server said {line:?}, not its address"))
    })?;
    Ok((child, addr))
}

/// How the device processes of a run are started.
#[derive(Debug, Clone)]
pub(crate) struct Devices<'a> {
    /// Where their queues and acknowledgement logs live.
    pub dir: &'a Path,
    /// The server's (or the proxy's) URL.
    pub url: String,
    /// Operations per device.
    pub ops: u64,
    /// The network namespace they run in, if any (their URL is then not
    /// loopback: plain http is allowed explicitly).
    pub netns: Option<&'a str>,
    /// Pause between two submits, so that a run lasts long enough to meet
    /// time-based faults.
    pub pace: Duration,
}

impl Devices<'_> {
    pub(crate) fn spawn(&self, device: u32) -> Result<Child, XtaskError> {
        let mut cmd = xtask_command(self.netns)?;
        cmd.arg("e2e-client")
            .arg("--url")
            .arg(&self.url)
            .arg("--name")
            .arg(format!("dev-{device}"))
            .arg("--queue")
            .arg(self.dir.join(format!("dev-{device}")))
            .arg("--log")
            .arg(self.dir.join(format!("dev-{device}.acked")))
            .arg("--ops")
            .arg(self.ops.to_string())
            .arg("--pace-ms")
            .arg(self.pace.as_millis().to_string())
            .stdout(Stdio::piped());
        if self.netns.is_some() {
            cmd.arg("--allow-plain-http");
        }
        cmd.spawn().map_err(io("starting a client"))
    }
}

pub(crate) fn kill9(child: &mut Child) {
    // SIGKILL: no shutdown, no flush.
    let _ = child.kill();
    let _ = child.wait();
}

/// Lines of an acknowledgement log: `(op id, record)`.
fn acked(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// The retries a client reported when it finished (`retries N`).
fn retries(child: &mut Child) -> u64 {
    let Some(out) = child.stdout.take() else {
        return 0;
    };
    BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("retries ")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn run(plan: Plan, sizes: Sizes) -> Result<Verdict, XtaskError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(io("making a temp dir"))?;
    let data = dir.path().join("server");
    let (server, addr) = spawn_server(
        &data,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        plan.no_dedupe,
        None,
    )?;
    let proxy = FaultProxy::start(proxy_config(addr, plan.answer_resets.unwrap_or(0.30)))
        .await
        .map_err(|e| XtaskError::StepFailed(format!("fault proxy: {e}")))?;
    let devices = Devices {
        dir: dir.path(),
        url: format!("http://{}", proxy.addr()),
        ops: sizes.ops,
        netns: None,
        pace: Duration::ZERO,
    };
    let mut fleet = Fleet::start(server, &devices, sizes.devices)?;
    let total = u64::from(sizes.devices) * sizes.ops;
    let (mut server_killed, mut client_killed) = (false, false);
    while !fleet.finished(started)? {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked_now: u64 = (0..sizes.devices)
            .map(|d| acked(&dir.path().join(format!("dev-{d}.acked"))).len() as u64)
            .sum();
        if plan.kill_server && !server_killed && acked_now >= total * 2 / 5 {
            kill9(&mut fleet.server);
            server_killed = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            fleet.server = spawn_server(&data, addr, plan.no_dedupe, None)?.0;
        }
        let first = acked(&dir.path().join("dev-0.acked")).len() as u64;
        if plan.kill_client && !client_killed && first >= sizes.ops * 2 / 5 {
            kill9(&mut fleet.clients[0]);
            client_killed = true;
            fleet.clients[0] = devices.spawn(0)?;
        }
    }
    let counters = proxy.counters();
    proxy.shutdown().await;
    println!(
        "  proxy: connections {}, resets {}, black holes {}, reset in a down window {}",
        counters.connections, counters.resets, counters.blackholes, counters.offline
    );
    fleet.stop_server();
    judge(&data, &devices, sizes.devices, fleet.retried, started)
}

/// The processes of a run: the server and the devices. Dropping it kills
/// whatever still runs, so a failed or cancelled run leaves no process.
pub(crate) struct Fleet {
    /// The server process.
    pub server: Child,
    /// One process per device.
    pub clients: Vec<Child>,
    done: Vec<bool>,
    /// Retries the finished devices reported.
    pub retried: u64,
}

impl Fleet {
    /// Starts `count` devices beside `server`.
    pub(crate) fn start(server: Child, devices: &Devices, count: u32) -> Result<Self, XtaskError> {
        let mut fleet = Fleet {
            server,
            clients: Vec::new(),
            done: vec![false; count as usize],
            retried: 0,
        };
        for d in 0..count {
            fleet.clients.push(devices.spawn(d)?);
        }
        Ok(fleet)
    }

    /// Whether every device finished; an error if one failed or the run
    /// outlived [`RUN_LIMIT`].
    pub(crate) fn finished(&mut self, started: Instant) -> Result<bool, XtaskError> {
        for (i, c) in self.clients.iter_mut().enumerate() {
            if !self.done[i] {
                if let Ok(Some(status)) = c.try_wait() {
                    if !status.success() {
                        return Err(XtaskError::StepFailed(format!(
                            "client dev-{i} exited with {status}"
                        )));
                    }
                    self.retried += retries(c);
                    self.done[i] = true;
                }
            }
        }
        if self.done.iter().all(|d| *d) {
            return Ok(true);
        }
        if started.elapsed() > RUN_LIMIT {
            return Err(XtaskError::StepFailed(format!(
                "an e2e run did not finish in {} s",
                RUN_LIMIT.as_secs()
            )));
        }
        Ok(false)
    }

    /// Stops the server cleanly (it exits when its stdin closes).
    pub(crate) fn stop_server(&mut self) {
        drop(self.server.stdin.take());
        let _ = self.server.wait();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.clients {
            kill9(c);
        }
        kill9(&mut self.server);
    }
}

/// Compares the server's committed log in `data` with what every device
/// acknowledged.
pub(crate) fn judge(
    data: &Path,
    devices: &Devices,
    count: u32,
    retries: u64,
    started: Instant,
) -> Result<Verdict, XtaskError> {
    let mut out = Vec::new();
    cpc_server::export_log(data, &mut out)
        .map_err(|e| XtaskError::StepFailed(format!("export-log: {e}")))?;
    let committed: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["origin"]["op"].as_str().map(str::to_owned))
        .collect();
    let mut verdict = Verdict {
        ops: u64::from(count) * devices.ops,
        retries,
        ..Verdict::default()
    };
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
        let log = acked(&devices.dir.join(format!("dev-{d}.acked")));
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

/// `xtask e2e-serve`: a `cpc-server` on `listen` over `data`, its address
/// on stdout, until stdin closes.
pub fn serve(data: PathBuf, listen: SocketAddr, no_dedupe: bool) -> Result<(), XtaskError> {
    // Warnings and errors only, on stderr (a failed commit says why).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    runtime.block_on(async {
        let mut config =
            cpc_server::ServerConfig::new(data, cpc_server::Tokens::single(TOKEN, &["dev-*"]));
        config.listen = listen;
        config.rate = cpc_server::RateLimit {
            per_second: 1e6,
            burst: 1e6,
        };
        config.faults.no_dedupe = no_dedupe;
        let server = cpc_server::start(config)
            .await
            .map_err(|e| XtaskError::StepFailed(format!("cpc-server: {e}")))?;
        println!("{}", server.addr());
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        })
        .await;
        server
            .shutdown()
            .await
            .map_err(|e| XtaskError::StepFailed(format!("cpc-server: {e}")))
    })
}

/// The arguments of `xtask e2e-client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long)]
    url: String,
    /// The device's name (its client id).
    #[arg(long)]
    name: String,
    /// Its queue directory.
    #[arg(long)]
    queue: PathBuf,
    /// Its acknowledgement log.
    #[arg(long)]
    log: PathBuf,
    /// Operations to submit in all.
    #[arg(long)]
    ops: u64,
    /// Pause between two submits, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Allow plain http to a host that is not loopback (a test network
    /// namespace's address).
    #[arg(long)]
    allow_plain_http: bool,
}

/// `xtask e2e-client`: one device: submits `ops` operations (resuming
/// after the ones its log already holds), logs each acknowledged one,
/// waits until everything is pushed, prints `retries N`.
pub fn client(args: ClientArgs) -> Result<(), XtaskError> {
    let ClientArgs {
        url,
        name,
        queue,
        log,
        ops,
        pace_ms,
        allow_plain_http,
    } = args;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    runtime.block_on(async {
        let failed = |e: &dyn std::fmt::Display| XtaskError::StepFailed(format!("{name}: {e}"));
        let mut http = cpc_http::HttpConfig::new(url, name.clone());
        http.request_timeout = Duration::from_secs(2);
        http.allow_plain_http = allow_plain_http;
        let transport =
            cpc_http::HttpTransport::new(http, Arc::new(cpc_http::StaticToken::new(TOKEN)))
                .map_err(|e| failed(&e))?;
        let engine = cpc_sync::SyncEngine::builder()
            .path(queue)
            .transport(transport)
            .push_timeout(Duration::from_secs(3))
            .start()
            .await
            .map_err(|e| failed(&e))?;
        let retries = Arc::new(AtomicU64::new(0));
        let mut events = engine.subscribe();
        let counted = Arc::clone(&retries);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(cpc_sync::worker::WorkerEvent::RetryScheduled { .. })
                    | Ok(cpc_sync::worker::WorkerEvent::BatchFailed { .. }) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        });
        let already = acked(&log).len() as u64;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("opening the acknowledgement log"))?;
        for i in already..ops {
            let record = format!("{name}-r{}", i % RECORDS);
            let id = engine
                .operation(
                    cpc_sync::core::EntityKey::new("e2e", record.clone()),
                    cpc_sync::core::OperationKind::Update,
                )
                .payload(format!("{name} {i}"))
                .submit()
                .await
                .map_err(|e| failed(&e))?;
            // Written once `submit` returned: the operation is durably
            // queued; a kill before this line leaves it unlogged, never
            // logged and missing.
            writeln!(file, "{id} {record}").map_err(io("writing the acknowledgement log"))?;
            if pace_ms > 0 {
                tokio::time::sleep(Duration::from_millis(pace_ms)).await;
            }
        }
        tokio::time::timeout(Duration::from_secs(300), engine.drained())
            .await
            .map_err(|_| failed(&"did not drain in 300 s"))?
            .map_err(|e| failed(&e))?;
        engine.shutdown().await.map_err(|e| failed(&e))?;
        println!("retries {}", retries.load(Ordering::Relaxed));
        Ok(())
    })
}
