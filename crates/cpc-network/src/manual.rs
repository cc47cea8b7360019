//! [`ManualSource`]: the application forwards the platform's own signal.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::monitor::lock;
use crate::observation::{Signal, SourceName};
use crate::source::{ObservationSink, StatusSource};

/// A source the application drives by hand, typically from the operating
/// system's connectivity callbacks (mobile platforms deliver these).
///
/// "Offline" is a definite link loss: the monitor goes Offline at once.
/// "Online" lifts that: once the link stayed up for the minimum dwell time
/// the monitor leaves Offline for Unknown, and the next successes (probe or
/// worker) make it Online. The platform's "online" is not taken as proof of
/// reachability, since a captive portal looks online to the OS.
///
/// Clones share state. Connect it with
/// [`NetworkMonitor::attach`](crate::NetworkMonitor::attach) or, without a
/// task, with [`connect`](Self::connect).
#[derive(Clone)]
pub struct ManualSource {
    name: SourceName,
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    online: Option<bool>,
    sinks: Vec<ObservationSink>,
}

impl fmt::Debug for ManualSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = lock(&self.shared);
        f.debug_struct("ManualSource")
            .field("name", &self.name)
            .field("online", &shared.online)
            .field("sinks", &shared.sinks.len())
            .finish()
    }
}

impl Default for ManualSource {
    fn default() -> Self {
        ManualSource::new()
    }
}

impl ManualSource {
    /// A source named `"manual"` with no signal yet.
    pub fn new() -> Self {
        ManualSource::named("manual")
    }

    /// A source with its own name (two manual sources need two names).
    pub fn named(name: impl Into<SourceName>) -> Self {
        ManualSource {
            name: name.into(),
            shared: Arc::new(Mutex::new(Shared {
                online: None,
                sinks: Vec::new(),
            })),
        }
    }

    /// Feeds the monitors behind `sink` from now on, and reports the last
    /// signal given, if any, at once.
    pub fn connect(&self, sink: ObservationSink) {
        let last = {
            let mut shared = lock(&self.shared);
            shared.sinks.retain(|s| !s.is_closed());
            shared.sinks.push(sink.clone());
            shared.online
        };
        if let Some(online) = last {
            sink.report(signal(online));
        }
    }

    /// The platform says the network is available.
    pub fn set_online(&self) {
        self.set(true);
    }

    /// The platform says there is no network.
    pub fn set_offline(&self) {
        self.set(false);
    }

    /// Forwards the platform's signal: `true` for available.
    pub fn set(&self, online: bool) {
        let sinks = {
            let mut shared = lock(&self.shared);
            shared.online = Some(online);
            shared.sinks.retain(|s| !s.is_closed());
            shared.sinks.clone()
        };
        // Reported outside our lock: an observer may call back into us.
        for sink in sinks {
            sink.report(signal(online));
        }
    }

    /// The last signal given, if any.
    pub fn last(&self) -> Option<bool> {
        lock(&self.shared).online
    }
}

fn signal(online: bool) -> Signal {
    if online {
        Signal::LinkUp
    } else {
        Signal::LinkDown
    }
}

impl StatusSource for ManualSource {
    fn name(&self) -> SourceName {
        self.name.clone()
    }

    async fn run(self, sink: ObservationSink) {
        // Disconnects when the task ends or is stopped, so a stopped source
        // stops reporting.
        struct Disconnect(ManualSource, ObservationSink);
        impl Drop for Disconnect {
            fn drop(&mut self) {
                lock(&self.0.shared).sinks.retain(|s| !s.same_as(&self.1));
            }
        }
        self.connect(sink.clone());
        let _disconnect = Disconnect(self, sink.clone());
        sink.closed().await;
    }
}
