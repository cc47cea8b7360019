//! The processes of an e2e run: starting the server and the devices
//! (directly or inside a network namespace), following what each device
//! says on its stdout, and telling them when to converge.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::XtaskError;

/// How long a run may take at most.
const RUN_LIMIT: Duration = Duration::from_secs(600);

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

/// Where a server of a run stores.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerStore<'a> {
    /// The embedded store in this data directory.
    Dir(&'a Path),
    /// This PostgreSQL database (given to the child in its environment,
    /// not on its command line).
    Postgres(&'a str),
}

impl ServerStore<'_> {
    /// The committed change log, exported.
    pub(crate) async fn export(&self) -> Result<Vec<u8>, XtaskError> {
        let mut out = Vec::new();
        match self {
            ServerStore::Dir(data) => cpc_server::export_log(data, &mut out).map(|_| ()),
            ServerStore::Postgres(url) => cpc_server::export_log_postgres(url, &mut out)
                .await
                .map(|_| ()),
        }
        .map_err(|e| XtaskError::StepFailed(format!("export-log: {e}")))?;
        Ok(out)
    }
}

/// Starts `xtask e2e-serve` on `listen` (inside `netns` when given);
/// answers the child and its address.
pub(crate) fn spawn_server(
    store: ServerStore<'_>,
    listen: SocketAddr,
    no_dedupe: bool,
    netns: Option<&str>,
) -> Result<(Child, SocketAddr), XtaskError> {
    let mut cmd = xtask_command(netns)?;
    cmd.arg("e2e-serve");
    match store {
        ServerStore::Dir(data) => {
            cmd.arg("--data").arg(data).env_remove("CPC_DATABASE_URL");
        }
        ServerStore::Postgres(url) => {
            cmd.env("CPC_DATABASE_URL", url);
        }
    }
    cmd.arg("--listen")
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
    /// The server's (or the proxy's) URLs: instances of one store. Device
    /// `d` starts at the `d % n`-th and fails over to the others.
    pub urls: Vec<String>,
    /// Operations per device.
    pub ops: u64,
    /// The network namespace they run in, if any (their URL is then not
    /// loopback: plain http is allowed explicitly).
    pub netns: Option<&'a str>,
    /// Pause between two submits, so that a run lasts long enough to meet
    /// time-based faults.
    pub pace: Duration,
    /// Pull into a sink and converge at the end (the negative control
    /// does not: every answer of its proxy is cut, pages included).
    pub pull: bool,
    /// The convergence check's negative control: device 0's sink drops
    /// every change to device 1's records.
    pub broken_sink: bool,
    /// Devices keep acknowledged operations (`retain_acked`), to push
    /// them again after a restore of the server.
    pub retain: bool,
}

impl Devices<'_> {
    /// Device `device`'s acknowledgement log.
    pub(crate) fn log(&self, device: u32) -> std::path::PathBuf {
        self.dir.join(format!("dev-{device}.acked"))
    }

    /// Operations acknowledged so far by the first `count` devices.
    pub(crate) fn acked_total(&self, count: u32) -> u64 {
        (0..count).map(|d| acked(&self.log(d)).len() as u64).sum()
    }

    pub(crate) fn spawn(&self, device: u32) -> Result<Child, XtaskError> {
        let mut cmd = xtask_command(self.netns)?;
        let n = self.urls.len().max(1);
        let first = device as usize % n;
        cmd.arg("e2e-client");
        for (k, url) in self.urls.iter().cycle().skip(first).take(n).enumerate() {
            cmd.arg(if k == 0 { "--url" } else { "--failover-url" })
                .arg(url);
        }
        cmd.arg("--name")
            .arg(format!("dev-{device}"))
            .arg("--queue")
            .arg(self.dir.join(format!("dev-{device}")))
            .arg("--log")
            .arg(self.log(device))
            .arg("--ops")
            .arg(self.ops.to_string())
            .arg("--pace-ms")
            .arg(self.pace.as_millis().to_string())
            .stdout(Stdio::piped());
        if self.netns.is_some() {
            cmd.arg("--allow-plain-http");
        }
        if !self.pull {
            cmd.arg("--no-pull");
        }
        if self.broken_sink && device == 0 {
            cmd.args(["--test-sink-ignores", "dev-1-"]);
        }
        if self.retain {
            cmd.arg("--retain-acked");
        }
        cmd.stdin(Stdio::piped());
        cmd.spawn().map_err(io("starting a client"))
    }
}

pub(crate) fn kill9(child: &mut Child) {
    // SIGKILL: no shutdown, no flush.
    let _ = child.kill();
    let _ = child.wait();
}

/// Lines of an acknowledgement log: `(op id, record)`.
pub(crate) fn acked(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// What a device process said, and whether it ended.
#[derive(Debug, Default)]
struct Said {
    /// It pushed everything it submitted (`drained`).
    drained: bool,
    /// Its sink's state once converged (`state N DIGEST`).
    state: Option<DeviceState>,
    /// Retries it counted (`retries N`).
    retries: u64,
    /// `RemoteRegressed` events it saw (`regressed N`).
    regressed: u64,
    /// It exited with success.
    done: bool,
}

/// A device's pulled state: live entities and their digest
/// ([`super::device::digest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceState {
    /// Live entities held.
    pub entities: u64,
    /// Digest of their canonical listing.
    pub digest: String,
}

/// A process killed (SIGKILL) when this is dropped.
pub(crate) struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        kill9(&mut self.0);
    }
}

/// The processes of a run: the server and the devices. Dropping it kills
/// whatever still runs, so a failed or cancelled run leaves no process.
pub(crate) struct Fleet {
    /// The server process.
    pub server: Child,
    clients: Vec<Child>,
    said: Vec<Said>,
    /// Lines of the devices' stdout: `(device, generation, line)`.
    lines: mpsc::Receiver<(usize, u32, String)>,
    sender: mpsc::Sender<(usize, u32, String)>,
    /// Per device, how many times it was started (a restarted device's
    /// old reader may still deliver a line).
    generation: Vec<u32>,
    told: bool,
}

impl Fleet {
    /// Starts `count` devices beside `server`.
    pub(crate) fn start(server: Child, devices: &Devices, count: u32) -> Result<Self, XtaskError> {
        let (sender, lines) = mpsc::channel();
        let mut fleet = Fleet {
            server,
            clients: Vec::new(),
            said: Vec::new(),
            lines,
            sender,
            generation: Vec::new(),
            told: false,
        };
        for d in 0..count {
            fleet.clients.push(devices.spawn(d)?);
            fleet.said.push(Said::default());
            fleet.generation.push(0);
            fleet.follow(d as usize);
        }
        Ok(fleet)
    }

    /// Reads device `i`'s stdout on a thread of its own.
    fn follow(&mut self, i: usize) {
        let Some(out) = self.clients[i].stdout.take() else {
            return;
        };
        let (sender, generation) = (self.sender.clone(), self.generation[i]);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if sender.send((i, generation, line)).is_err() {
                    return;
                }
            }
        });
    }

    /// Kills device `i` with SIGKILL and starts it again on its queue.
    pub(crate) fn restart(&mut self, i: usize, devices: &Devices) -> Result<(), XtaskError> {
        kill9(&mut self.clients[i]);
        self.clients[i] = devices.spawn(i as u32)?;
        self.said[i] = Said::default();
        self.generation[i] += 1;
        self.follow(i);
        Ok(())
    }

    /// Whether every device finished; an error if one failed or the run
    /// outlived [`RUN_LIMIT`]. Once every device has pushed everything, it
    /// tells them to converge (pull up to the head).
    pub(crate) fn finished(&mut self, started: Instant) -> Result<bool, XtaskError> {
        while let Ok(line) = self.lines.try_recv() {
            self.hear(line);
        }
        for (i, c) in self.clients.iter_mut().enumerate() {
            if !self.said[i].done {
                if let Ok(Some(status)) = c.try_wait() {
                    if !status.success() {
                        return Err(XtaskError::StepFailed(format!(
                            "client dev-{i} exited with {status}"
                        )));
                    }
                    self.said[i].done = true;
                }
            }
        }
        if !self.told && self.said.iter().all(|s| s.drained) {
            // Nothing more will be pushed: the head is final. (A device
            // that does not pull has exited already: its pipe is closed.)
            for c in &mut self.clients {
                if let Some(stdin) = c.stdin.as_mut() {
                    let _ = writeln!(stdin, "converge");
                }
            }
            self.told = true;
        }
        if self.said.iter().all(|s| s.done) {
            // Their last lines may still be on the way (the readers end
            // when the pipes close).
            while !self.said.iter().all(|s| s.state.is_some()) {
                match self.lines.recv_timeout(Duration::from_secs(2)) {
                    Ok(line) => self.hear(line),
                    Err(_) => break,
                }
            }
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

    /// Takes in one line a device said.
    fn hear(&mut self, (i, generation, line): (usize, u32, String)) {
        if generation != self.generation[i] {
            return;
        }
        let said = &mut self.said[i];
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("drained"), _, _) => said.drained = true,
            (Some("retries"), Some(n), _) => said.retries = n.parse().unwrap_or(0),
            (Some("regressed"), Some(n), _) => said.regressed = n.parse().unwrap_or(0),
            (Some("state"), Some(n), Some(digest)) => {
                said.state = Some(DeviceState {
                    entities: n.parse().unwrap_or(0),
                    digest: digest.to_owned(),
                })
            }
            _ => {}
        }
    }

    /// `RemoteRegressed` events each device saw.
    pub(crate) fn regressed(&self) -> Vec<u64> {
        self.said.iter().map(|s| s.regressed).collect()
    }

    /// Retries the devices reported.
    pub(crate) fn retries(&self) -> u64 {
        self.said.iter().map(|s| s.retries).sum()
    }

    /// Each device's converged state.
    pub(crate) fn states(&self) -> Vec<Option<DeviceState>> {
        self.said.iter().map(|s| s.state.clone()).collect()
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
