//! `GET /metrics` in Prometheus text format: requests by route and status,
//! operations by outcome, push latency, store size. Written by hand: a few
//! counters do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the push latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The outcome names, in the order of [`Metrics::outcomes`].
pub(crate) const OUTCOMES: [&str; 5] = [
    "applied",
    "already_applied",
    "conflict",
    "rejected",
    "retry_later",
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    outcomes: [AtomicU64; 5],
    latency_buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub(crate) fn request(&self, route: &'static str, status: u16) {
        let mut map = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((route, status)).or_default() += 1;
    }

    /// Counts one operation's outcome (index into [`OUTCOMES`]).
    pub(crate) fn outcome(&self, index: usize) {
        if let Some(c) = self.outcomes.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how long a push took from its body read to its durable answer.
    pub(crate) fn push_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The text exposition; `store_bytes` is the store's size on disk.
    pub(crate) fn render(&self, store_bytes: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cpc_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE cpc_requests_total counter");
        let map = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((route, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "cpc_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        drop(map);
        let _ = writeln!(out, "# HELP cpc_ops_total Pushed operations, by outcome.");
        let _ = writeln!(out, "# TYPE cpc_ops_total counter");
        for (name, c) in OUTCOMES.iter().zip(&self.outcomes) {
            let _ = writeln!(
                out,
                "cpc_ops_total{{outcome=\"{name}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cpc_push_seconds Push latency, body read to durable answer."
        );
        let _ = writeln!(out, "# TYPE cpc_push_seconds histogram");
        for (bound, c) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "cpc_push_seconds_bucket{{le=\"{bound}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "cpc_push_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "cpc_push_seconds_sum {sum}");
        let _ = writeln!(out, "cpc_push_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP cpc_store_bytes Size of the store: its files on disk, or its PostgreSQL tables and indexes."
        );
        let _ = writeln!(out, "# TYPE cpc_store_bytes gauge");
        let _ = writeln!(out, "cpc_store_bytes {store_bytes}");
        out
    }
}
