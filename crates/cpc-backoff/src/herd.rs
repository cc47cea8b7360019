//! The thundering-herd simulation: many clients fail at the same instant and
//! retry against a remote of limited capacity.
//!
//! It reproduces the experiment of the AWS article "Exponential Backoff And
//! Jitter": without jitter every client that failed together retries
//! together, so each wave of retries hits the remote at one instant and most
//! of it is refused again. Discrete time, no sleeping, deterministic given
//! the seed: `cargo xtask bench` prints the same figures as the test.
//!
//! ```
//! use cpc_backoff::herd::{compare_jitters, HerdConfig};
//!
//! let reports = compare_jitters(&HerdConfig { clients: 100, ..HerdConfig::default() }, 7);
//! for report in &reports {
//!     println!("{report}");
//! }
//! assert!(reports.iter().all(|r| r.time_to_all_succeeded.is_some()));
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::jitter::to_ns;
use crate::{BackoffStrategy, Exponential, Jitter, RetryContext};

/// The simulated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct HerdConfig {
    /// Clients whose first call fails at `t = 0`. Default 1,000.
    pub clients: u32,
    /// Requests per second the remote accepts (a token bucket refilled
    /// continuously; it starts empty: the remote has just come back).
    /// Refused requests count as calls. Default 100.
    pub remote_rate_per_second: u32,
    /// Burst capacity of the remote's token bucket: how many requests
    /// arriving at the same instant it can absorb. Default 10, a server that
    /// serves 100 requests/s and can queue 100 ms of work; requests beyond
    /// that are refused (503), as an overloaded server does. (With a burst
    /// of a whole second, 100, a synchronised wave is served 100 at a time
    /// and no jitter costs mostly time rather than calls.)
    pub remote_burst: u32,
    /// Resolution of simulated time: retries are rounded up to a tick.
    /// Default 1 ms.
    pub tick: Duration,
    /// The backoff every client uses (its jitter is what
    /// [`compare_jitters`] varies). Default [`Exponential::default`].
    pub backoff: Exponential,
    /// Whether each client passes its previous delay to the strategy (as
    /// [`BackoffState`](crate::BackoffState) does). `false` simulates a
    /// caller that persists only the attempt count, as the sync worker does;
    /// only decorrelated jitter behaves differently. Default `true`.
    pub remember_previous: bool,
    /// Simulated time after which the run stops, whatever is left. Default
    /// three hours (enough for the default scenario to finish without
    /// jitter).
    pub time_limit: Duration,
}

impl Default for HerdConfig {
    fn default() -> Self {
        HerdConfig {
            clients: 1_000,
            remote_rate_per_second: 100,
            remote_burst: 10,
            tick: Duration::from_millis(1),
            backoff: Exponential::default(),
            remember_previous: true,
            time_limit: Duration::from_secs(3 * 3600),
        }
    }
}

/// The outcome of one simulated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HerdReport {
    /// The jitter the clients used.
    pub jitter: Jitter,
    /// The seed of the run.
    pub seed: u64,
    /// Clients simulated.
    pub clients: u32,
    /// Clients that succeeded before the time limit.
    pub succeeded: u32,
    /// Calls made by all clients, refused ones included (the work the remote
    /// had to do).
    pub total_calls: u64,
    /// Calls made by the unluckiest client.
    pub max_calls_per_client: u32,
    /// Simulated time until the last client succeeded; `None` if some had
    /// not succeeded by the time limit.
    pub time_to_all_succeeded: Option<Duration>,
}

impl fmt::Display for HerdReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jitter={:<12} calls={:>7} max_calls/client={:>3} ",
            self.jitter.name(),
            self.total_calls,
            self.max_calls_per_client
        )?;
        match self.time_to_all_succeeded {
            Some(t) => write!(
                f,
                "all {} succeeded after {:.1}s",
                self.clients,
                t.as_secs_f64()
            )?,
            None => write!(f, "only {}/{} succeeded", self.succeeded, self.clients)?,
        }
        write!(f, " (seed {})", self.seed)
    }
}

/// Runs the simulation with `config.backoff` as it is.
///
/// Each client keeps its previous delay, so decorrelated jitter runs the
/// exact AWS algorithm. Calls due in the same tick are served in client
/// order; a client whose call is refused asks the strategy for the next
/// delay (`attempt` = calls made so far) and calls again after it.
pub fn simulate(config: &HerdConfig, seed: u64) -> HerdReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let tick_ns = to_ns(config.tick).max(1);
    let limit_ticks = to_ns(config.time_limit) / tick_ns;
    // The remote's token bucket, in nano-tokens so refills stay exact.
    const TOKEN: u128 = 1_000_000_000;
    let refill_per_tick = u128::from(config.remote_rate_per_second) * u128::from(tick_ns);
    let capacity = u128::from(config.remote_burst.max(1)) * TOKEN;
    let mut tokens: u128 = 0;
    let mut bucket_tick: u64 = 0;

    let clients = config.clients as usize;
    let mut calls = vec![0u32; clients];
    let mut previous: Vec<Option<Duration>> = vec![None; clients];
    // Min-heap of (tick, client): calls due.
    let mut due: BinaryHeap<Reverse<(u64, u32)>> =
        (0..config.clients).map(|c| Reverse((0, c))).collect();
    let mut report = HerdReport {
        jitter: config.backoff.jitter(),
        seed,
        clients: config.clients,
        succeeded: 0,
        total_calls: 0,
        max_calls_per_client: 0,
        time_to_all_succeeded: None,
    };
    let mut last_success_tick = 0u64;

    while let Some(Reverse((tick, client))) = due.pop() {
        if tick > limit_ticks {
            break;
        }
        let index = client as usize;
        tokens = (tokens + refill_per_tick * u128::from(tick - bucket_tick)).min(capacity);
        bucket_tick = tick;
        calls[index] += 1;
        report.total_calls += 1;
        // At t = 0 the remote is down: every first call fails.
        if tick > 0 && tokens >= TOKEN {
            tokens -= TOKEN;
            report.succeeded += 1;
            last_success_tick = tick;
            continue;
        }
        let mut ctx = RetryContext::new(calls[index]);
        if config.remember_previous {
            ctx = ctx.with_previous(previous[index]);
        }
        // A strategy that gives up leaves the client failed for good.
        if let Some(delay) = config.backoff.next_delay(&ctx, &mut rng) {
            previous[index] = Some(delay);
            // Rounded up, and at least one tick: a retry is never in the
            // same instant as the failure it answers.
            let delay_ticks = to_ns(delay).div_ceil(tick_ns).max(1);
            due.push(Reverse((tick.saturating_add(delay_ticks), client)));
        }
    }
    report.max_calls_per_client = calls.iter().copied().max().unwrap_or(0);
    if report.succeeded == config.clients {
        report.time_to_all_succeeded = Some(Duration::from_nanos(
            last_success_tick.saturating_mul(tick_ns),
        ));
    }
    report
}

/// Runs [`simulate`] once per [`Jitter`] variant, same seed, in
/// [`Jitter::ALL`] order.
pub fn compare_jitters(config: &HerdConfig, seed: u64) -> Vec<HerdReport> {
    Jitter::ALL
        .iter()
        .map(|&jitter| {
            let config = HerdConfig {
                backoff: config.backoff.clone().with_jitter(jitter),
                ..config.clone()
            };
            simulate(&config, seed)
        })
        .collect()
}
