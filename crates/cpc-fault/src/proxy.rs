//! `FaultProxy` (feature `proxy`): a seeded TCP proxy on loopback that
//! puts real-socket faults between a client and a server, modelled on
//! Toxiproxy's toxics: latency with jitter, a bandwidth limit, a slicer
//! (writes split and spaced), a reset (RST) after N bytes, a close after N
//! bytes, a black hole (accepted, never answered), a slow close; plus the
//! simulation's scheduled down windows ([`Schedule`]), during which new
//! connections are reset at once and open ones are reset.
//!
//! Each toxic acts on one direction (`Upstream`: client → server,
//! `Downstream`: server → client) of a connection with a probability,
//! drawn once per connection from the seed and the connection's number:
//! the same seed gives every connection the same toxics in the same order
//! of accepts. Timing follows the real clock (tokio's), so what a client
//! sees depends on its own timing too; the draws do not.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cpc_fault::proxy::{Direction, FaultProxy, ProxyConfig, Toxic, ToxicKind};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // A server that answers "pong" to anything.
//! let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = server.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut s, _)) = server.accept().await {
//!         let mut buf = [0u8; 4];
//!         let _ = s.read_exact(&mut buf).await;
//!         let _ = s.write_all(b"pong").await;
//!     }
//! });
//! // Every answer cut after 2 bytes.
//! let mut config = ProxyConfig::new(upstream, 7);
//! config.toxics.push(Toxic::new(Direction::Downstream, ToxicKind::LimitData { bytes: 2 }, 1.0));
//! let proxy = FaultProxy::start(config).await?;
//! let mut client = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! client.write_all(b"ping").await?;
//! let mut answer = Vec::new();
//! client.read_to_end(&mut answer).await?;
//! assert_eq!(answer, b"po");
//! assert_eq!(proxy.counters().limited, 1);
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::schedule::{LinkCondition, Schedule};
use cpc_core::SimClock;

/// Bytes read from a socket at a time.
const CHUNK: usize = 16 * 1024;
/// Connections handled at once at most; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → server.
    Upstream,
    /// Server → client.
    Downstream,
}

/// What a toxic does to its direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ToxicKind {
    /// Each chunk waits `latency` ± up to `jitter` before it goes on.
    Latency {
        /// The delay.
        latency: Duration,
        /// The most it varies either way.
        jitter: Duration,
    },
    /// At most this many bytes per second.
    Bandwidth {
        /// The rate.
        bytes_per_second: u64,
    },
    /// Each chunk goes on in pieces of about `size` bytes (± `variation`),
    /// `delay` apart.
    Slicer {
        /// Mean piece size.
        size: usize,
        /// How much a piece's size varies either way.
        variation: usize,
        /// Pause between pieces.
        delay: Duration,
    },
    /// After `after_bytes` in this direction, both sides get a TCP reset.
    ResetPeer {
        /// Bytes let through first.
        after_bytes: u64,
    },
    /// After `bytes` in this direction, both sides are closed cleanly.
    LimitData {
        /// Bytes let through.
        bytes: u64,
    },
    /// Nothing goes through in this direction, and the connection stays
    /// open (a black hole): the peer waits for its own timeout.
    Timeout,
    /// When the sender closes, the close reaches the receiver `delay`
    /// later.
    SlowClose {
        /// The delay.
        delay: Duration,
    },
}

/// A toxic on one direction, applied to a connection with `probability`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Toxic {
    /// Which way.
    pub direction: Direction,
    /// What it does.
    pub kind: ToxicKind,
    /// The chance a connection gets it (0.0 ..= 1.0).
    pub probability: f64,
}

impl Toxic {
    /// A toxic on `direction` with `probability`.
    pub fn new(direction: Direction, kind: ToxicKind, probability: f64) -> Toxic {
        Toxic {
            direction,
            kind,
            probability,
        }
    }
}

/// How a proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where it listens (default `127.0.0.1:0`: a free loopback port).
    pub listen: SocketAddr,
    /// Where it connects for each client.
    pub upstream: SocketAddr,
    /// Seeds every draw.
    pub seed: u64,
    /// The toxics, drawn in this order for each connection.
    pub toxics: Vec<Toxic>,
    /// Down windows, in time since the proxy started.
    pub schedule: Schedule,
}

impl ProxyConfig {
    /// A proxy to `upstream` with no toxics and no down window.
    pub fn new(upstream: SocketAddr, seed: u64) -> ProxyConfig {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            seed,
            toxics: Vec::new(),
            schedule: Schedule::always_online(),
        }
    }
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A toxic's probability is not in 0.0 ..= 1.0.
    #[error("toxic {index}: probability {probability} is not in 0..=1")]
    Probability {
        /// The toxic's index.
        index: usize,
        /// Its probability.
        probability: f64,
    },
    /// A toxic's figures cannot work (a zero bandwidth or slice size).
    #[error("toxic {index}: {reason}")]
    Toxic {
        /// The toxic's index.
        index: usize,
        /// Why.
        reason: &'static str,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the proxy did, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCounters {
    /// Connections accepted.
    pub connections: u64,
    /// Connections reset at accept or while open during a down window.
    pub offline: u64,
    /// Connections whose upstream could not be reached (reset at once).
    pub upstream_failed: u64,
    /// Bytes forwarded client → server.
    pub bytes_up: u64,
    /// Bytes forwarded server → client.
    pub bytes_down: u64,
    /// Connections reset by a `ResetPeer` toxic.
    pub resets: u64,
    /// Connections closed by a `LimitData` toxic.
    pub limited: u64,
    /// Directions black-holed by a `Timeout` toxic.
    pub blackholes: u64,
    /// Chunks delayed by `Latency`.
    pub delayed: u64,
    /// Chunks sliced by `Slicer`.
    pub sliced: u64,
    /// Closes delayed by `SlowClose`.
    pub slow_closes: u64,
}

/// A running proxy.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    counters: Arc<Mutex<ProxyCounters>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Checks `config`, binds its address and starts proxying.
    pub async fn start(config: ProxyConfig) -> Result<FaultProxy, ProxyError> {
        for (index, t) in config.toxics.iter().enumerate() {
            if !(0.0..=1.0).contains(&t.probability) {
                return Err(ProxyError::Probability {
                    index,
                    probability: t.probability,
                });
            }
            let bad = match t.kind {
                ToxicKind::Bandwidth {
                    bytes_per_second: 0,
                } => Some("bandwidth of 0"),
                ToxicKind::Slicer { size: 0, .. } => Some("slices of 0 bytes"),
                _ => None,
            };
            if let Some(reason) = bad {
                return Err(ProxyError::Toxic { index, reason });
            }
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let counters = Arc::new(Mutex::new(ProxyCounters::default()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::new(config),
            Arc::clone(&counters),
            stopped,
        ));
        Ok(FaultProxy {
            addr,
            counters,
            stop,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it did so far.
    pub fn counters(&self) -> ProxyCounters {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops accepting and resets every open connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn count(counters: &Mutex<ProxyCounters>, f: impl FnOnce(&mut ProxyCounters)) {
    f(&mut counters.lock().unwrap_or_else(|e| e.into_inner()));
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ProxyConfig>,
    counters: Arc<Mutex<ProxyCounters>>,
    mut stop: watch::Receiver<bool>,
) {
    let clock = SimClock::start_now();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut n = 0u64;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        n += 1;
        count(&counters, |c| c.connections += 1);
        // One RNG per connection, from the seed and its number: the draws
        // do not depend on how other connections interleave.
        let rng = StdRng::seed_from_u64(crate::remote::splitmix64(config.seed ^ n));
        let (config, counters, stop) = (Arc::clone(&config), Arc::clone(&counters), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            connection(client, rng, config, counters, clock, stop).await;
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// The toxics a connection got, per direction.
#[derive(Debug, Default, Clone)]
struct Drawn {
    up: Vec<ToxicKind>,
    down: Vec<ToxicKind>,
}

/// Resets a socket: linger 0, then close (the kernel sends RST).
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    client: TcpStream,
    mut rng: StdRng,
    config: Arc<ProxyConfig>,
    counters: Arc<Mutex<ProxyCounters>>,
    clock: SimClock,
    stop: watch::Receiver<bool>,
) {
    if config.schedule.condition_at(clock.elapsed()) == LinkCondition::Offline {
        count(&counters, |c| c.offline += 1);
        return reset(client);
    }
    let mut drawn = Drawn::default();
    for t in &config.toxics {
        if rng.gen::<f64>() < t.probability {
            match t.direction {
                Direction::Upstream => drawn.up.push(t.kind),
                Direction::Downstream => drawn.down.push(t.kind),
            }
        }
    }
    let Ok(server) = TcpStream::connect(config.upstream).await else {
        count(&counters, |c| c.upstream_failed += 1);
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction may decide the connection's end: a reset or close
    // of both sides, told to the other pump through `end`.
    let (end, ended) = watch::channel(End::Open);
    let outcome = ended.clone();
    let up = pump(
        Pipe {
            from: client_read,
            to: server_write,
            toxics: drawn.up,
            direction: Direction::Upstream,
        },
        StdRng::seed_from_u64(rng.gen()),
        Shared {
            counters: Arc::clone(&counters),
            config: Arc::clone(&config),
            clock,
            end: end.clone(),
            ended: ended.clone(),
            stop: stop.clone(),
        },
    );
    let down = pump(
        Pipe {
            from: server_read,
            to: client_write,
            toxics: drawn.down,
            direction: Direction::Downstream,
        },
        StdRng::seed_from_u64(rng.gen()),
        Shared {
            counters,
            config,
            clock,
            end,
            ended,
            stop,
        },
    );
    let ((client_read, server_write), (server_read, client_write)) = tokio::join!(up, down);
    if *outcome.borrow() == End::Reset {
        // Both halves back: a reset needs the whole socket.
        for stream in [
            client_read.reunite(client_write),
            server_read.reunite(server_write),
        ]
        .into_iter()
        .flatten()
        {
            reset(stream);
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// Reset both sides.
    Reset,
    /// Close both sides cleanly.
    Close,
}

struct Pipe {
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    toxics: Vec<ToxicKind>,
    direction: Direction,
}

struct Shared {
    counters: Arc<Mutex<ProxyCounters>>,
    config: Arc<ProxyConfig>,
    clock: SimClock,
    end: watch::Sender<End>,
    ended: watch::Receiver<End>,
    stop: watch::Receiver<bool>,
}

/// Moves one direction's bytes through its toxics until it ends; hands
/// the halves back.
async fn pump(
    mut pipe: Pipe,
    mut rng: StdRng,
    mut shared: Shared,
) -> (OwnedReadHalf, OwnedWriteHalf) {
    let mut buf = vec![0u8; CHUNK];
    let mut passed = 0u64;
    let blackhole = pipe.toxics.contains(&ToxicKind::Timeout);
    if blackhole {
        count(&shared.counters, |c| c.blackholes += 1);
    }
    // Bytes until a reset or a close, the smallest first.
    let reset_at = pipe
        .toxics
        .iter()
        .filter_map(|t| match t {
            ToxicKind::ResetPeer { after_bytes } => Some(*after_bytes),
            _ => None,
        })
        .min();
    let limit_at = pipe
        .toxics
        .iter()
        .filter_map(|t| match t {
            ToxicKind::LimitData { bytes } => Some(*bytes),
            _ => None,
        })
        .min();
    loop {
        let read = tokio::select! {
            r = pipe.from.read(&mut buf) => r,
            _ = shared.ended.changed() => break,
            _ = shared.stop.changed() => {
                let _ = shared.end.send(End::Reset);
                break;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                // The sender closed: pass the close on (late, if asked).
                if let Some(delay) = pipe.toxics.iter().find_map(|t| match t {
                    ToxicKind::SlowClose { delay } => Some(*delay),
                    _ => None,
                }) {
                    count(&shared.counters, |c| c.slow_closes += 1);
                    tokio::time::sleep(delay).await;
                }
                let _ = pipe.to.shutdown().await;
                break;
            }
            Ok(n) => n,
        };
        if shared.config.schedule.condition_at(shared.clock.elapsed()) == LinkCondition::Offline {
            count(&shared.counters, |c| c.offline += 1);
            let _ = shared.end.send(End::Reset);
            break;
        }
        if blackhole {
            continue;
        }
        let mut chunk = &buf[..n];
        // A reset or a close cuts the chunk at its byte count.
        let reset_left = reset_at.map(|r| r.saturating_sub(passed));
        let limit_left = limit_at.map(|l| l.saturating_sub(passed));
        let mut stop_after = None;
        if let Some(left) = [reset_left, limit_left].into_iter().flatten().min() {
            if chunk.len() as u64 >= left {
                chunk = &chunk[..usize::try_from(left).unwrap_or(chunk.len())];
                stop_after = Some(if reset_left == Some(left) {
                    End::Reset
                } else {
                    End::Close
                });
            }
        }
        if forward(&mut pipe, chunk, &mut rng, &shared).await.is_err() {
            let _ = shared.end.send(End::Reset);
            break;
        }
        passed += chunk.len() as u64;
        match pipe.direction {
            Direction::Upstream => count(&shared.counters, |c| c.bytes_up += chunk.len() as u64),
            Direction::Downstream => {
                count(&shared.counters, |c| c.bytes_down += chunk.len() as u64)
            }
        }
        if let Some(how) = stop_after {
            match how {
                End::Reset => count(&shared.counters, |c| c.resets += 1),
                _ => count(&shared.counters, |c| c.limited += 1),
            }
            if how == End::Close {
                let _ = pipe.to.shutdown().await;
            }
            let _ = shared.end.send(how);
            break;
        }
    }
    (pipe.from, pipe.to)
}

/// Writes `chunk` on through the latency, bandwidth and slicer toxics.
async fn forward(
    pipe: &mut Pipe,
    chunk: &[u8],
    rng: &mut StdRng,
    shared: &Shared,
) -> std::io::Result<()> {
    for t in &pipe.toxics {
        match *t {
            ToxicKind::Latency { latency, jitter } => {
                let j = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
                let shift = if j == 0 { 0 } else { rng.gen_range(0..=2 * j) };
                let base = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                let wait = (base + shift).saturating_sub(j);
                count(&shared.counters, |c| c.delayed += 1);
                tokio::time::sleep(Duration::from_micros(wait)).await;
            }
            ToxicKind::Bandwidth { bytes_per_second } => {
                let secs = chunk.len() as f64 / bytes_per_second as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs.min(3600.0))).await;
            }
            _ => {}
        }
    }
    let slicer = pipe.toxics.iter().find_map(|t| match *t {
        ToxicKind::Slicer {
            size,
            variation,
            delay,
        } => Some((size, variation, delay)),
        _ => None,
    });
    match slicer {
        None => pipe.to.write_all(chunk).await,
        Some((size, variation, delay)) => {
            count(&shared.counters, |c| c.sliced += 1);
            let mut rest = chunk;
            while !rest.is_empty() {
                let low = size.saturating_sub(variation).max(1);
                let take = rng.gen_range(low..=size + variation).min(rest.len());
                pipe.to.write_all(&rest[..take]).await?;
                rest = &rest[take..];
                if !rest.is_empty() {
                    tokio::time::sleep(delay).await;
                }
            }
            Ok(())
        }
    }
}
