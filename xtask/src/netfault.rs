//! `cargo xtask netfault [--quick]`: the engine's guarantees under faults
//! the kernel makes on the real TCP stack, not our proxy (issue 19).
//!
//! Two network namespaces joined by a veth pair: the server's
//! (`cpcnf-PID-s`, 10.213.0.1) and the devices' (`cpcnf-PID-c`,
//! 10.213.0.2). `cpc-server` runs in the first, each device's engine in a
//! process of its own in the second. The host's namespace gets nothing:
//! no interface, no address, no rule. While the devices write, nftables
//! rules in the server's namespace only (a table of its own) go through
//! [`PHASES`]: 30% of the server port's packets dropped both ways
//! (`numgen random`), 20% of its incoming packets answered with a TCP
//! reset, then a 20 s black hole. The log comparison is `e2e`'s.
//!
//! Everything it creates it deletes, also on failure and on Ctrl-C (a
//! guard's `Drop`); namespaces left by a run that was killed with SIGKILL
//! are deleted by the next run. Before and after, `ip netns list`,
//! `nft list ruleset` and `ip -o link` of the host are read and must be
//! equal. Without root, `ip` or `nft` it prints why and skips.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::{io, spawn_server, Devices, Fleet, ServerStore, Sizes, Verdict};
use crate::XtaskError;

/// The server namespace's address (the devices' is `.2`).
const SERVER_IP: [u8; 4] = [10, 213, 0, 1];
/// Prefix of every namespace this command makes.
const PREFIX: &str = "cpcnf-";

/// A kernel-level fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `numgen random mod 100 < 30 drop`, both directions.
    Drop30,
    /// `numgen random mod 100 < 20 reject with tcp reset`, incoming.
    Reset20,
    /// Every packet of the server port dropped, both directions.
    Blackhole,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Drop30 => "drop 30%",
            Fault::Reset20 => "reset 20%",
            Fault::Blackhole => "blackhole",
        }
    }

    /// The rules, for the table `inet cpcnf` of the server's namespace.
    fn rules(self, port: u16) -> String {
        let (input, output) = match self {
            Fault::Drop30 => (
                "numgen random mod 100 < 30 counter drop",
                Some("numgen random mod 100 < 30 counter drop"),
            ),
            Fault::Reset20 => (
                "numgen random mod 100 < 20 counter reject with tcp reset",
                None,
            ),
            Fault::Blackhole => ("counter drop", Some("counter drop")),
        };
        let mut rules = format!("add rule inet cpcnf input tcp dport {port} {input}\n");
        if let Some(output) = output {
            rules.push_str(&format!(
                "add rule inet cpcnf output tcp sport {port} {output}\n"
            ));
        }
        rules
    }
}

/// When each fault is on, from the devices' start: a clean start, 30%
/// loss for 10 s, resets for 6 s, a 20 s black hole, then a clean network
/// to drain on.
const PHASES: &[(u64, u64, Fault)] = &[
    (2, 12, Fault::Drop30),
    (12, 18, Fault::Reset20),
    (18, 38, Fault::Blackhole),
];

/// `cargo xtask netfault`: runs, or prints why it skips. An error if a
/// guarantee broke or the host's network state changed.
pub fn main(sizes: Sizes) -> Result<(), XtaskError> {
    if let Some(reason) = unavailable() {
        println!("SKIP netns: {reason}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    if runtime.block_on(run_interruptible(sizes))?.report("netns") {
        Ok(())
    } else {
        Err(XtaskError::Invariant(
            "the netns run lost, duplicated or reordered operations".into(),
        ))
    }
}

/// Why this machine cannot run it, if it cannot.
pub(crate) fn unavailable() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("network namespaces and nftables need root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed (iproute2, nftables)"));
        }
    }
    None
}

/// [`run`], cancelled by Ctrl-C: the guards' `Drop` then cleans up.
pub(crate) async fn run_interruptible(sizes: Sizes) -> Result<Verdict, XtaskError> {
    clean_stale()?;
    let before = host_state()?;
    let outcome = tokio::select! {
        outcome = run(sizes) => outcome,
        _ = tokio::signal::ctrl_c() => Err(XtaskError::StepFailed("interrupted".into())),
    };
    // The guards dropped with the run: the host must be as it was.
    let after = host_state()?;
    if before != after {
        return Err(XtaskError::Invariant(format!(
            "the host's network state changed during the run:\nbefore:\n{before}\nafter:\n{after}"
        )));
    }
    outcome
}

/// Runs `program args`, failing with its stderr if it fails.
fn sh(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, XtaskError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io("starting ip or nft"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())
            .map_err(io("writing nft rules"))?;
    }
    let out = child.wait_with_output().map_err(io("running ip or nft"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(XtaskError::StepFailed(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// What the run must leave unchanged on the host.
fn host_state() -> Result<String, XtaskError> {
    let netns = sh("ip", &["netns", "list"], None)?;
    let rules = sh("nft", &["list", "ruleset"], None)?;
    let links: String = sh("ip", &["-o", "link"], None)?
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|name| format!("{}\n", name.trim()))
        .collect();
    Ok(format!(
        "ip netns list:\n{netns}nft list ruleset:\n{rules}links:\n{links}"
    ))
}

/// Deletes namespaces left by runs whose process is gone (killed with
/// SIGKILL: no `Drop` ran).
fn clean_stale() -> Result<(), XtaskError> {
    for line in sh("ip", &["netns", "list"], None)?.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            println!("  netns: deleting {name}, left by a run that was killed");
            sh("ip", &["netns", "delete", name], None)?;
        }
    }
    Ok(())
}

/// The two namespaces and their veth pair; deleted on drop (the pair and
/// the nftables table live in them and go with them).
struct Namespaces {
    server: String,
    devices: String,
    made: Vec<String>,
}

impl Namespaces {
    fn create() -> Result<Self, XtaskError> {
        let pid = std::process::id();
        let mut ns = Namespaces {
            server: format!("{PREFIX}{pid}-s"),
            devices: format!("{PREFIX}{pid}-c"),
            made: Vec::new(),
        };
        for name in [ns.server.clone(), ns.devices.clone()] {
            sh("ip", &["netns", "add", &name], None)?;
            ns.made.push(name);
        }
        let (s, c) = (ns.server.as_str(), ns.devices.as_str());
        // Made inside the server's namespace with its peer moved straight
        // into the devices': neither end ever exists on the host.
        let (veth_s, veth_c) = (format!("cnf{pid}s"), format!("cnf{pid}c"));
        let server_ip = std::net::Ipv4Addr::from(SERVER_IP);
        let mut device_ip = SERVER_IP;
        device_ip[3] += 1;
        let device_ip = std::net::Ipv4Addr::from(device_ip);
        for args in [
            vec![
                "-n", s, "link", "add", &veth_s, "type", "veth", "peer", "name", &veth_c, "netns",
                c,
            ],
            vec![
                "-n",
                s,
                "addr",
                "add",
                &format!("{server_ip}/30"),
                "dev",
                &veth_s,
            ],
            vec![
                "-n",
                c,
                "addr",
                "add",
                &format!("{device_ip}/30"),
                "dev",
                &veth_c,
            ],
            vec!["-n", s, "link", "set", &veth_s, "up"],
            vec!["-n", c, "link", "set", &veth_c, "up"],
            vec!["-n", s, "link", "set", "lo", "up"],
            vec!["-n", c, "link", "set", "lo", "up"],
        ] {
            sh("ip", &args, None)?;
        }
        // A table of our own in the server's namespace, chains empty.
        ns.nft(
            "add table inet cpcnf\n\
             add chain inet cpcnf input { type filter hook input priority 0; policy accept; }\n\
             add chain inet cpcnf output { type filter hook output priority 0; policy accept; }\n",
        )?;
        Ok(ns)
    }

    /// Applies an nft script in the server's namespace, atomically.
    fn nft(&self, script: &str) -> Result<String, XtaskError> {
        sh(
            "ip",
            &["netns", "exec", &self.server, "nft", "-f", "-"],
            Some(script),
        )
    }

    /// Packets the current rules matched (their counters).
    fn matched(&self) -> Result<u64, XtaskError> {
        let table = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.server,
                "nft",
                "list",
                "table",
                "inet",
                "cpcnf",
            ],
            None,
        )?;
        Ok(table
            .split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.made.drain(..) {
            if let Err(e) = sh("ip", &["netns", "delete", &name], None) {
                eprintln!("netns: could not delete {name}: {e}");
            }
        }
    }
}

async fn run(sizes: Sizes) -> Result<Verdict, XtaskError> {
    let started = Instant::now();
    // Declared first, dropped last: the processes die before their
    // namespaces go.
    let ns = Namespaces::create()?;
    let dir = tempfile::tempdir().map_err(io("making a temp dir"))?;
    let data = dir.path().join("server");
    let listen = std::net::SocketAddr::from((SERVER_IP, 0));
    let (server, addr) = spawn_server(ServerStore::Dir(&data), listen, false, Some(&ns.server))?;
    // Paced so that the devices are still writing when each fault comes.
    let pace_ms = (30_000 / sizes.ops.max(1)).clamp(5, 200);
    let devices = Devices {
        dir: dir.path(),
        urls: vec![format!("http://{addr}")],
        ops: sizes.ops,
        netns: Some(&ns.devices),
        pace: Duration::from_millis(pace_ms),
        pull: true,
        broken_sink: false,
        retain: false,
    };
    let mut fleet = Fleet::start(server, &devices, sizes.devices)?;
    let phases_started = Instant::now();
    let mut phase: Option<usize> = None;
    let mut hit: Vec<(Fault, u64)> = Vec::new();
    while !fleet.finished(started)? {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at = phases_started.elapsed().as_secs();
        let now = PHASES
            .iter()
            .position(|(from, to, _)| (*from..*to).contains(&at));
        if now != phase {
            if let Some(old) = phase {
                hit.push((PHASES[old].2, ns.matched()?));
            }
            let mut script = String::from("flush table inet cpcnf\n");
            if let Some(new) = now {
                script.push_str(&PHASES[new].2.rules(addr.port()));
            }
            ns.nft(&script)?;
            phase = now;
        }
    }
    if let Some(old) = phase {
        hit.push((PHASES[old].2, ns.matched()?));
        ns.nft("flush table inet cpcnf\n")?;
    }
    let seen: Vec<String> = hit
        .iter()
        .map(|(fault, packets)| format!("{} {packets}", fault.name()))
        .collect();
    println!("  kernel: packets hit by {}", seen.join(", "));
    if hit.len() < PHASES.len() {
        println!(
            "  kernel: the devices finished before every fault came ({} of {})",
            hit.len(),
            PHASES.len()
        );
    }
    fleet.stop_server();
    let log = ServerStore::Dir(&data).export().await?;
    crate::e2e::judge(&log, &devices, &fleet, started)
}
