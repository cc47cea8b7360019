//! The vocabulary of the monitor: statuses, failure kinds and transitions.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::observation::SourceName;

/// What the monitor believes about the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum NetworkStatus {
    /// No evidence either way yet (start-up, or a link came back and nothing
    /// has been reached since). Sending is allowed: trying is how the worker
    /// learns, and a monitor that waits for proof nobody gathers would strand
    /// the user's work.
    #[default]
    Unknown,
    /// The remote side is reachable.
    Online,
    /// Reachable, but a high share of recent checks failed.
    Degraded,
    /// Not reachable: a definite link loss, or `offline_after` consecutive
    /// failures.
    Offline,
}

impl NetworkStatus {
    /// Whether a sync worker should attempt to send in this status (every
    /// status but [`NetworkStatus::Offline`]).
    pub fn allows_sending(self) -> bool {
        !matches!(self, NetworkStatus::Offline)
    }

    /// A stable lowercase name, used in tracing fields.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkStatus::Unknown => "unknown",
            NetworkStatus::Online => "online",
            NetworkStatus::Degraded => "degraded",
            NetworkStatus::Offline => "offline",
        }
    }

    /// All statuses, in declaration order.
    pub const ALL: [NetworkStatus; 4] = [
        NetworkStatus::Unknown,
        NetworkStatus::Online,
        NetworkStatus::Degraded,
        NetworkStatus::Offline,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            NetworkStatus::Unknown => 0,
            NetworkStatus::Online => 1,
            NetworkStatus::Degraded => 2,
            NetworkStatus::Offline => 3,
        }
    }
}

impl fmt::Display for NetworkStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a check failed, as far as reachability is concerned.
///
/// The worker maps its transport errors to these when it calls
/// [`NetworkMonitor::report_failure`](crate::NetworkMonitor::report_failure);
/// report only failures that say something about the network (a rejected
/// operation or a conflict says nothing about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Name resolution failed or returned no address.
    Dns,
    /// The TCP connection was refused or the host was unreachable.
    Connect,
    /// No (complete) answer within the timeout.
    Timeout,
    /// An answer arrived but failed validation: wrong status, missing body
    /// token (a captive portal's login page), or not HTTP at all.
    InvalidAnswer,
    /// The connection broke during the exchange.
    Io,
    /// The remote answered that it is unavailable (5xx, overloaded).
    Server,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// A stable lowercase name, used in tracing fields.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::InvalidAnswer => "invalid_answer",
            FailureKind::Io => "io",
            FailureKind::Server => "server",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why the monitor changed status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// A source reported a definite link loss (goes Offline at once,
    /// ignoring the minimum dwell time).
    LinkDown {
        /// The source that reported it.
        source: SourceName,
    },
    /// Every link source reports the link up again and it stayed up for the
    /// minimum dwell time; reachability is not proven yet.
    LinkRestored,
    /// `count` consecutive failures reached `offline_after`.
    FailureStreak {
        /// Consecutive failures seen.
        count: u32,
        /// Kind of the last failure.
        last: FailureKind,
    },
    /// `count` consecutive successes reached `online_after`.
    SuccessStreak {
        /// Consecutive successes seen.
        count: u32,
    },
    /// The failure ratio over the window reached the degraded threshold.
    FailureRatio {
        /// Failures in the window.
        failures: u32,
        /// Checks in the window.
        samples: u32,
    },
    /// The failure ratio fell under the threshold and the latest checks
    /// succeeded.
    RatioRecovered {
        /// Failures in the window.
        failures: u32,
        /// Checks in the window.
        samples: u32,
    },
    /// Offline was based on failures only, and no observation arrived for the
    /// evidence lifetime: the monitor no longer knows, so the worker may try.
    EvidenceExpired {
        /// How long the monitor went without an observation.
        silent_for: Duration,
    },
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::LinkDown { source } => write!(f, "link down reported by {source}"),
            TransitionReason::LinkRestored => f.write_str("link restored and stable"),
            TransitionReason::FailureStreak { count, last } => {
                write!(f, "{count} consecutive failures (last: {last})")
            }
            TransitionReason::SuccessStreak { count } => {
                write!(f, "{count} consecutive successes")
            }
            TransitionReason::FailureRatio { failures, samples } => {
                write!(f, "{failures} of {samples} recent checks failed")
            }
            TransitionReason::RatioRecovered { failures, samples } => {
                write!(f, "failure ratio recovered ({failures} of {samples})")
            }
            TransitionReason::EvidenceExpired { silent_for } => {
                write!(
                    f,
                    "no observation for {silent_for:?}; offline evidence expired"
                )
            }
        }
    }
}

/// One status transition, as delivered to observers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusChange {
    /// Status before the change.
    pub from: NetworkStatus,
    /// Status after the change.
    pub to: NetworkStatus,
    /// When it happened (tokio's clock).
    pub at: Instant,
    /// Why it happened.
    pub reason: TransitionReason,
    /// On a transition out of [`NetworkStatus::Offline`]: a jittered delay a
    /// sender should wait before starting, so that many devices that see the
    /// network come back at the same instant do not all send at once. `None`
    /// on other transitions.
    pub resume_after: Option<Duration>,
    /// Sequence number of the change (1 for the first), so an observer can
    /// check it missed nothing.
    pub seq: u64,
}
