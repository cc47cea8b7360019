//! Thundering-herd figure for the bench report: 1,000 clients fail at t = 0
//! against a remote that admits 100 requests/s; total calls and time until
//! all succeed, per jitter kind (the AWS architecture blog's experiment).
//! Simulated time, so the figures are exact for the seed, not timings.

use cpc_backoff::herd::{compare_jitters, HerdConfig};

/// Fixed so the report is comparable run to run.
const SEED: u64 = 0x5EED_2015;

fn main() {
    let config = HerdConfig::default();
    println!(
        "clients {}, remote {} req/s (burst {}), seed {SEED}",
        config.clients, config.remote_rate_per_second, config.remote_burst
    );
    for report in compare_jitters(&config, SEED) {
        println!("{report}");
    }
    let attempt_only = HerdConfig {
        remember_previous: false,
        ..HerdConfig::default()
    };
    for report in compare_jitters(&attempt_only, SEED)
        .into_iter()
        .filter(|r| r.jitter.name() == "decorrelated")
    {
        println!("{report} [attempt count only, as the worker persists]");
    }
}
