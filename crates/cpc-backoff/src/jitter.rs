//! [`Jitter`]: how a computed delay is randomised.

use std::fmt;
use std::time::Duration;

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// How the deterministic delay `c` of an attempt is randomised: the three
/// variants of the AWS Architecture Blog article "Exponential Backoff And
/// Jitter" (2015), plus none.
///
/// | variant        | delay drawn from                        | use it when                                   |
/// |----------------|-----------------------------------------|-----------------------------------------------|
/// | `None`         | exactly `c`                             | one client, or tests; never for a fleet       |
/// | `Full`         | `[0, c]`                                | many clients retry at once (the default)      |
/// | `Equal`        | `[c/2, c]`                              | you need a minimum wait, e.g. a rate limit    |
/// | `Decorrelated` | `[base, min(max_delay, 3 × previous)]`  | long outages; delays keep spreading late      |
///
/// `c` is the un-jittered delay of the strategy for that attempt, already
/// capped at `max_delay`; every interval is inclusive. The crate docs give
/// the thundering-herd figures behind the advice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// No randomness: every client that failed together retries together.
    None,
    /// Uniform in `[0, c]`: the widest spread (AWS's recommendation).
    #[default]
    Full,
    /// `c/2` plus uniform in `[0, c/2]`: never less than half the delay.
    Equal,
    /// Uniform in `[base, min(max_delay, 3 × previous)]`, where `previous` is
    /// the delay chosen before (exponential strategy only).
    Decorrelated,
}

impl Jitter {
    /// Every variant, in declaration order (for reports and tests).
    pub const ALL: [Jitter; 4] = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ];

    /// The lowercase name used in configuration files.
    pub const fn name(self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
        }
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Applies `None`, `Full` or `Equal` jitter to a ceiling in nanoseconds.
/// `Decorrelated` is handled by the exponential strategy (it needs more
/// inputs); here it falls back to the ceiling.
#[inline]
pub(crate) fn jitter_ns(jitter: Jitter, ceiling: u64, rng: &mut dyn RngCore) -> u64 {
    match jitter {
        Jitter::None | Jitter::Decorrelated => ceiling,
        Jitter::Full => rng.gen_range(0..=ceiling),
        Jitter::Equal => {
            let half = ceiling / 2;
            // `ceiling - half >= ceiling / 2`, and the sum is at most `ceiling`.
            (ceiling - half) + rng.gen_range(0..=half)
        }
    }
}

/// A duration as whole nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn to_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
