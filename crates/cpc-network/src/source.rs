//! How sources feed a monitor: the [`StatusSource`] trait and the
//! [`ObservationSink`] it reports through.

use std::fmt;
use std::future::Future;
use std::sync::Weak;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::monitor::Inner;
use crate::observation::{Observation, Signal, SourceName};
use crate::status::NetworkStatus;

/// Something that watches the network and reports [`Signal`]s.
///
/// Implement it in any crate and hand the source to
/// [`NetworkMonitor::attach`](crate::NetworkMonitor::attach), which runs
/// [`run`](Self::run) on a task. A source that must be driven without a task
/// (a simulation stepping a paused clock by hand, say) reports through
/// [`NetworkMonitor::sink`](crate::NetworkMonitor::sink) or
/// [`NetworkMonitor::apply`](crate::NetworkMonitor::apply) instead.
///
/// ```
/// use cpc_network::{ObservationSink, Signal, SourceName, StatusSource};
///
/// /// Reports one success, then stays quiet.
/// struct Once;
///
/// impl StatusSource for Once {
///     fn name(&self) -> SourceName {
///         SourceName::new("once")
///     }
///
///     async fn run(self, sink: ObservationSink) {
///         sink.report(Signal::Success);
///     }
/// }
/// ```
pub trait StatusSource: Send + 'static {
    /// The name the source reports under (tracing, transition reasons, link
    /// tracking). Sources that report link state need distinct names.
    fn name(&self) -> SourceName;

    /// Watches and reports through `sink` until there is nothing more to
    /// watch or [`ObservationSink::report`] returns `false` (the monitor is
    /// gone). All waiting must go through tokio's clock.
    fn run(self, sink: ObservationSink) -> impl Future<Output = ()> + Send;
}

/// Where a source reports its observations: a handle on a monitor that does
/// not keep it alive. Reports are applied synchronously.
#[derive(Clone)]
pub struct ObservationSink {
    inner: Weak<Inner>,
    source: SourceName,
    status: watch::Receiver<NetworkStatus>,
}

impl fmt::Debug for ObservationSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservationSink")
            .field("source", &self.source)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl ObservationSink {
    pub(crate) fn new(
        inner: Weak<Inner>,
        source: SourceName,
        status: watch::Receiver<NetworkStatus>,
    ) -> Self {
        ObservationSink {
            inner,
            source,
            status,
        }
    }

    /// Whether both report to the same monitor under the same name.
    pub(crate) fn same_as(&self, other: &ObservationSink) -> bool {
        Weak::ptr_eq(&self.inner, &other.inner) && self.source == other.source
    }

    /// The name reports are made under.
    pub fn source(&self) -> &SourceName {
        &self.source
    }

    /// Reports `signal` and applies it to the monitor before returning.
    /// Returns `false` when the monitor no longer exists: the source should
    /// stop.
    pub fn report(&self, signal: Signal) -> bool {
        match self.inner.upgrade() {
            Some(inner) => {
                inner.apply(Some(Observation {
                    source: self.source.clone(),
                    signal,
                }));
                true
            }
            None => false,
        }
    }

    /// Withdraws a link-down this sink's source reported, if any.
    pub(crate) fn withdraw_link_down(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.withdraw_link_down(&self.source);
        }
    }

    /// The monitor's current status, or `None` when it no longer exists.
    pub fn status(&self) -> Option<NetworkStatus> {
        self.inner.upgrade().map(|inner| inner.status())
    }

    /// Whether the monitor no longer exists.
    pub fn is_closed(&self) -> bool {
        self.inner.strong_count() == 0
    }

    /// Resolves when the monitor no longer exists.
    pub async fn closed(&self) {
        let mut status = self.status.clone();
        // `changed` fails only once the monitor's sender is dropped.
        while status.changed().await.is_ok() {}
    }
}

/// A source running on a task, returned by
/// [`NetworkMonitor::attach`](crate::NetworkMonitor::attach). Dropping it
/// leaves the source running (it stops with the monitor).
#[derive(Debug)]
pub struct SourceHandle {
    name: SourceName,
    abort: AbortHandle,
}

impl SourceHandle {
    pub(crate) fn new(name: SourceName, abort: AbortHandle) -> Self {
        SourceHandle { name, abort }
    }

    /// The source's name.
    pub fn name(&self) -> &SourceName {
        &self.name
    }

    /// Stops the source's task.
    pub fn stop(&self) {
        self.abort.abort();
    }

    /// Whether the source's task has ended.
    pub fn is_finished(&self) -> bool {
        self.abort.is_finished()
    }
}
