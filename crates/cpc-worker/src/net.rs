//! The worker's view of the network monitor.

use cpc_core::TransportError;
use cpc_network::{FailureKind, NetworkMonitor, NetworkStatus};
use tokio::sync::watch;
use tokio::time::Instant;

/// An optional [`NetworkMonitor`]: without one the network always counts as
/// sendable and reports go nowhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetworkGate {
    monitor: Option<NetworkMonitor>,
}

impl NetworkGate {
    pub(crate) fn new(monitor: Option<NetworkMonitor>) -> Self {
        NetworkGate { monitor }
    }

    /// The current status (`Unknown` without a monitor).
    pub(crate) fn status(&self) -> NetworkStatus {
        self.monitor
            .as_ref()
            .map_or(NetworkStatus::Unknown, NetworkMonitor::status)
    }

    pub(crate) fn subscribe(&self) -> Option<watch::Receiver<NetworkStatus>> {
        self.monitor.as_ref().map(NetworkMonitor::subscribe)
    }

    /// Whether the worker may push in `status`: everything but Offline
    /// (Unknown included: trying is how a monitor without sources learns).
    pub(crate) fn sendable(status: NetworkStatus) -> bool {
        status.allows_sending()
    }

    /// When sending should start after the last transition out of Offline
    /// (the monitor's jittered `resume_after`), if still ahead.
    pub(crate) fn resume_at(&self) -> Option<Instant> {
        self.monitor.as_ref().and_then(NetworkMonitor::resume_at)
    }

    /// A push reached the remote and got an answer.
    pub(crate) fn report_success(&self) {
        if let Some(m) = &self.monitor {
            m.report_success();
        }
    }

    /// A whole push failed: tell the monitor if the failure says something
    /// about reachability (credentials and rate limits do not; they prove
    /// the remote answered).
    pub(crate) fn report_error(&self, error: &TransportError) {
        let Some(m) = &self.monitor else {
            return;
        };
        // A panic happened on this device: it says nothing about the network.
        if matches!(error, TransportError::Panicked) {
            return;
        }
        match failure_kind(error) {
            Some(kind) => m.report_failure(kind),
            None => m.report_success(),
        }
    }
}

/// How a transport error reads as a reachability signal; `None` when the
/// remote evidently answered.
pub(crate) fn failure_kind(error: &TransportError) -> Option<FailureKind> {
    match error {
        TransportError::Offline | TransportError::Connect(_) => Some(FailureKind::Connect),
        TransportError::Timeout => Some(FailureKind::Timeout),
        // A 4xx is an answer: the remote is reachable (a wrong URL or a
        // proxy's refusal is a configuration matter, not an outage).
        TransportError::Server { status } if (400..500).contains(status) => None,
        TransportError::Server { .. } => Some(FailureKind::Server),
        TransportError::Protocol(_) => Some(FailureKind::InvalidAnswer),
        TransportError::RateLimited { .. }
        | TransportError::Unauthorized
        | TransportError::Incompatible(_)
        | TransportError::HistoryDiverged { .. } => None,
        _ => Some(FailureKind::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reachability_failures_count() {
        assert_eq!(
            failure_kind(&TransportError::Timeout),
            Some(FailureKind::Timeout)
        );
        assert_eq!(failure_kind(&TransportError::Unauthorized), None);
        assert_eq!(failure_kind(&TransportError::Server { status: 404 }), None);
        assert_eq!(
            failure_kind(&TransportError::Server { status: 502 }),
            Some(FailureKind::Server)
        );
        assert_eq!(
            failure_kind(&TransportError::Incompatible("v2 only".into())),
            None
        );
        assert_eq!(
            failure_kind(&TransportError::RateLimited { retry_after: None }),
            None
        );
        assert!(NetworkGate::sendable(NetworkStatus::Unknown));
        assert!(!NetworkGate::sendable(NetworkStatus::Offline));
    }
}
