//! What sources tell the monitor.

use std::fmt;
use std::sync::Arc;

use crate::status::FailureKind;

/// The name of a source, used in tracing events, transition reasons and to
/// track which sources currently report the link down.
///
/// Two sources that report link state must have different names: a link is
/// up only when every source that said "down" has since said "up".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceName(Arc<str>);

impl SourceName {
    /// A name for a source.
    pub fn new(name: impl AsRef<str>) -> Self {
        SourceName(Arc::from(name.as_ref()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name used by [`NetworkMonitor::report_success`] and
    /// [`NetworkMonitor::report_failure`](crate::NetworkMonitor::report_failure).
    ///
    /// [`NetworkMonitor::report_success`]: crate::NetworkMonitor::report_success
    pub fn passive() -> Self {
        SourceName::new(PASSIVE)
    }
}

pub(crate) const PASSIVE: &str = "passive";

impl fmt::Debug for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SourceName {
    fn from(name: &str) -> Self {
        SourceName::new(name)
    }
}

impl From<String> for SourceName {
    fn from(name: String) -> Self {
        SourceName(Arc::from(name))
    }
}

/// One piece of evidence about the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// A check reached the remote side (probe answered and validated, push
    /// answered). Counts toward `online_after`.
    Success,
    /// A check failed. Counts toward `offline_after` and the failure ratio.
    Failure(FailureKind),
    /// The source sees no usable link (no interface up, no default route,
    /// the OS says "no network"). A definite loss: the monitor goes Offline
    /// at once, ignoring the minimum dwell time, and stays Offline while any
    /// source reports the link down.
    LinkDown,
    /// The source sees a usable link again. Not proof of reachability: once
    /// every source reports the link up and it stays up for the minimum dwell
    /// time, the monitor leaves Offline for Unknown (or for Online if enough
    /// successes arrived meanwhile).
    LinkUp,
}

impl Signal {
    /// A stable lowercase name, used in tracing fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Success => "success",
            Signal::Failure(_) => "failure",
            Signal::LinkDown => "link_down",
            Signal::LinkUp => "link_up",
        }
    }
}

/// A [`Signal`] from a named source: the unit the monitor consumes through
/// [`NetworkMonitor::apply`](crate::NetworkMonitor::apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Who saw it.
    pub source: SourceName,
    /// What was seen.
    pub signal: Signal,
}

impl Observation {
    /// An observation of `signal` by `source`.
    pub fn new(source: impl Into<SourceName>, signal: Signal) -> Self {
        Observation {
            source: source.into(),
            signal,
        }
    }

    /// A successful check by `source`.
    pub fn success(source: impl Into<SourceName>) -> Self {
        Observation::new(source, Signal::Success)
    }

    /// A failed check by `source`.
    pub fn failure(source: impl Into<SourceName>, kind: FailureKind) -> Self {
        Observation::new(source, Signal::Failure(kind))
    }

    /// A definite link loss seen by `source`.
    pub fn link_down(source: impl Into<SourceName>) -> Self {
        Observation::new(source, Signal::LinkDown)
    }

    /// A link seen up again by `source`.
    pub fn link_up(source: impl Into<SourceName>) -> Self {
        Observation::new(source, Signal::LinkUp)
    }
}
