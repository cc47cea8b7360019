//! Network status for cpc-sync: tells the sync worker when sending makes sense.
//!
//! A [`NetworkMonitor`] merges observations from several sources into one
//! [`NetworkStatus`] (`Unknown`, `Online`, `Degraded`, `Offline`), with
//! hysteresis so that a flapping link does not make the worker thrash, and
//! without ever sticking at Offline when nothing proves it:
//!
//! - [`ManualSource`]: the application forwards the platform's own signal.
//! - [`ProbeSource`]: a periodic, jittered TCP connect or HTTP/1.1 health
//!   check with a timeout and a *validated* answer (expected status and body
//!   token), so a captive portal's `200` login page counts as a failure.
//! - `LinuxLinkSource` (feature `linux-link`, Linux): whether a non-loopback
//!   interface is up and a default route exists; "no link" is a definite
//!   Offline.
//! - passive reports from the worker ([`NetworkMonitor::report_success`],
//!   [`NetworkMonitor::report_failure`]).
//! - any [`StatusSource`] from another crate (`cpc-fault` drives one from a
//!   simulated outage schedule), or [`NetworkMonitor::apply`] directly.
//!
//! Readers get the status with [`NetworkMonitor::status`], a
//! [`tokio::sync::watch`] receiver from [`NetworkMonitor::subscribe`], or
//! [`NetworkObserver`]s (called outside internal locks, in registration
//! order, a panicking one caught and logged). Every transition is a
//! [`StatusChange`] with its [`TransitionReason`], logged with `tracing`;
//! leaving Offline publishes a jittered `resume_after` delay so that devices
//! that see the network return together do not all send at once.
//! [`NetworkMonitor::stats`] counts transitions and time in each status.
//!
//! All time goes through tokio's clock: the monitor runs on a paused clock in
//! tests. It is not a connectivity library for the application's own
//! requests, and it never logs payloads (probe answers are validated, not
//! logged).
//!
//! # Hysteresis
//! With the defaults of [`MonitorConfig`]: Offline after 3 consecutive
//! failures, Online after 2 consecutive successes, no more than one
//! transition per 2 s (`min_dwell`) except that a definite link loss goes
//! Offline at once, and Degraded while at least half of the checks of the last
//! 30 s failed (but not all of them).
//!
//! # Example
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use cpc_network::{FailureKind, MonitorConfig, NetworkMonitor, NetworkStatus, StatusChange};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let monitor = NetworkMonitor::new(MonitorConfig { seed: Some(7), ..MonitorConfig::default() })?;
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = Arc::clone(&seen);
//! let _handle = monitor.add_observer(Arc::new(move |change: &StatusChange| {
//!     log.lock().unwrap().push(change.to);
//! }));
//!
//! monitor.report_success();
//! monitor.report_success();
//! assert_eq!(monitor.status(), NetworkStatus::Online);
//!
//! // Three failures, but the status may change only once per `min_dwell`:
//! // the monitor applies the change itself when the dwell time ends.
//! let mut rx = monitor.subscribe();
//! let start = tokio::time::Instant::now();
//! for _ in 0..3 {
//!     monitor.report_failure(FailureKind::Timeout);
//! }
//! assert_eq!(monitor.status(), NetworkStatus::Online);
//! rx.changed().await?; // instant on a paused clock
//! assert_eq!(*rx.borrow(), NetworkStatus::Offline);
//! assert_eq!(start.elapsed(), Duration::from_secs(2));
//! assert_eq!(*seen.lock().unwrap(), [NetworkStatus::Online, NetworkStatus::Offline]);
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//! - `linux-link` (default): the [`link`] module, with `LinuxLinkSource` and
//!   its pure parsers of `/sys/class/net/*/operstate` and
//!   `/proc/net/{route,ipv6_route}`. The source exists on Linux only;
//!   elsewhere only the parsers compile.

mod error;
#[cfg(feature = "linux-link")]
pub mod link;
mod manual;
mod monitor;
mod observation;
mod probe;
mod source;
mod status;

pub use error::{ConfigError, Error, Result};
#[cfg(all(feature = "linux-link", target_os = "linux"))]
pub use link::{LinkSourceConfig, LinuxLinkSource};
pub use manual::ManualSource;
pub use monitor::{
    MonitorConfig, MonitorStats, NetworkMonitor, NetworkObserver, ObserverHandle,
    MAX_WINDOW_SAMPLES,
};
pub use observation::{Observation, Signal, SourceName};
pub use probe::{
    check_probe_timing, next_wait, validate_answer, HttpCheck, ProbeCheck, ProbeConfig,
    ProbeSource, Verdict, MAX_RESPONSE_LIMIT,
};
pub use source::{ObservationSink, SourceHandle, StatusSource};
pub use status::{FailureKind, NetworkStatus, StatusChange, TransitionReason};

#[cfg(test)]
mod compile_checks {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_handles_cross_threads_and_observers_are_trait_objects() {
        // Compile-time proofs: the public types can cross threads...
        assert_send_sync::<NetworkMonitor>();
        assert_send_sync::<ObserverHandle>();
        assert_send_sync::<ObservationSink>();
        assert_send_sync::<SourceHandle>();
        assert_send_sync::<ManualSource>();
        assert_send_sync::<ProbeSource>();
        assert_send_sync::<StatusChange>();
        assert_send_sync::<Error>();
        // ...and observers stay object safe: a boxed one is called for a
        // transition caused from another thread.
        let monitor = NetworkMonitor::new(MonitorConfig {
            seed: Some(1),
            ..MonitorConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let observer: Arc<dyn NetworkObserver> = Arc::new(move |c: &StatusChange| {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(c.to);
        });
        let _handle = monitor.add_observer(observer);
        let sink = monitor.sink("elsewhere");
        let reporter = std::thread::spawn(move || {
            sink.report(Signal::Success) && sink.report(Signal::Success)
        });
        assert!(reporter.join().unwrap_or(false), "the monitor was alive");
        assert_eq!(monitor.status(), NetworkStatus::Online);
        assert_eq!(
            *seen.lock().unwrap_or_else(|e| e.into_inner()),
            [NetworkStatus::Online]
        );
    }
}
