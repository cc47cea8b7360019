//! Two-way sync in a run (`[pull]`): each device's sink, the remote's
//! preload, restore and compaction, and the convergence check after
//! quiescence (every device done pushing, then pulled through the
//! remote's final head).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cpc_fault::{Convergence, DeviceDiff, Listed, SimClock, SimulatedRemote};
use cpc_sync::core::{EntityKey, MemorySink, RemoteSink, SinkError, SinkPage};
use cpc_sync::worker::{PullConfig, WorkerEvent};
use cpc_sync::SyncEngine;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::{broadcast, watch};

use crate::auth::AnswerLog;
use crate::scenario::{PullPlan, SinkKind};

/// A device's sink: the reference sink, or the broken one of the
/// negative control; counts pages and snapshot starts.
#[derive(Debug)]
pub(crate) struct SimSink {
    kind: SinkKind,
    held: MemorySink,
    pages: AtomicU64,
    resets: AtomicU64,
}

impl SimSink {
    pub(crate) fn new(kind: SinkKind) -> SimSink {
        SimSink {
            kind,
            held: MemorySink::new(),
            pages: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    fn state(&self) -> BTreeMap<EntityKey, (u64, Vec<u8>)> {
        self.held
            .live()
            .into_iter()
            .map(|(k, h)| (k, (h.version, h.payload.unwrap_or_default())))
            .collect()
    }
}

#[async_trait]
impl RemoteSink for SimSink {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        let n = self.pages.fetch_add(1, Ordering::Relaxed) + 1;
        if page
            .replace
            .as_ref()
            .is_some_and(|(r, _)| r.reset.is_some())
        {
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
        match self.kind {
            SinkKind::Replace => self.held.apply(page).await,
            SinkKind::IgnoreSnapshots => {
                // The bug: a snapshot page applied as a change page keeps
                // what the remote no longer has, and older versions.
                let as_changes = SinkPage {
                    changes: page.changes.clone(),
                    replace: None,
                };
                self.held.apply(&as_changes).await
            }
            SinkKind::IgnoreDeletes => {
                let mut kept = page.clone();
                if kept.replace.is_none() {
                    kept.changes.retain(|c| c.change.payload.is_some());
                }
                self.held.apply(&kept).await
            }
            SinkKind::DropPages if n.is_multiple_of(10) => Ok(()),
            SinkKind::DropPages => self.held.apply(page).await,
        }
    }
}

/// The pull settings of a device.
pub(crate) fn pull_config(plan: &PullPlan, seed: u64) -> PullConfig {
    PullConfig {
        limit: plan.page,
        // The simulated remote answers at once: pull every second when
        // caught up, as the loop breaker says.
        long_poll: Duration::ZERO,
        idle_interval: Duration::from_secs(1),
        backoff_max: Duration::from_secs(30),
        seed: Some(seed),
        ..PullConfig::default()
    }
}

/// Fills the remote with the plan's initial records (collection `seed`),
/// deterministic from `seed`.
pub(crate) fn preload(remote: &SimulatedRemote, plan: &PullPlan, seed: u64) {
    if plan.initial_records == 0 {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let records = (0..plan.initial_records).map(|i| {
        let mut payload = vec![0u8; plan.record_bytes];
        rng.fill_bytes(&mut payload);
        (EntityKey::new("seed", format!("r{i:07}")), payload)
    });
    remote.preload(records);
}

/// The remote's scheduled faults: the restore at its instant, compaction
/// every period, until `until`.
pub(crate) async fn remote_faults(
    remote: SimulatedRemote,
    plan: PullPlan,
    clock: SimClock,
    until: Duration,
) {
    let mut restore = plan.restore;
    let mut next_compaction = plan.compaction.map(|c| c.every);
    loop {
        let next = [restore.map(|r| r.at), next_compaction]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next.filter(|at| *at <= until) else {
            return;
        };
        clock.sleep_until(at).await;
        if let Some(r) = restore.filter(|r| r.at == at) {
            let head = remote.head().seq;
            if let Err(e) = remote.restore(head.saturating_sub(r.lose)) {
                tracing::warn!(error = %e, "the scheduled restore was not possible");
            }
            restore = None;
        }
        if let (Some(c), Some(due)) = (plan.compaction, next_compaction) {
            if due == at {
                remote.compact(at.saturating_sub(c.retention));
                next_compaction = Some(at + c.every);
            }
        }
    }
}

/// Records the operations the engine completes from a pull (their push
/// answer was lost) in `answers`, as of when the event comes: readiness
/// of the next operation of their record counts from then.
pub(crate) fn watch_pull_completions(engine: &SyncEngine, answers: AnswerLog, clock: SimClock) {
    let mut events = engine.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(WorkerEvent::Applied {
                    id, replay: true, ..
                }) => answers.record_pulled(clock.elapsed(), id),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Devices done pushing, shared by the devices of a run.
#[derive(Debug)]
pub(crate) struct Quiescence {
    done: watch::Sender<u32>,
    devices: u32,
}

impl Quiescence {
    pub(crate) fn new(devices: u32) -> Quiescence {
        Quiescence {
            done: watch::channel(0).0,
            devices,
        }
    }

    /// This device is done pushing; waits for the others (until
    /// `deadline`), then until its engine pulled through the remote's
    /// head (until `deadline` again). Answers whether it got there.
    pub(crate) async fn settle(
        &self,
        engine: &SyncEngine,
        remote: &SimulatedRemote,
        clock: SimClock,
        allowance: Duration,
    ) -> bool {
        self.done.send_modify(|n| *n += 1);
        let mut done = self.done.subscribe();
        let deadline = clock.instant_at(clock.elapsed() + allowance);
        let all = done.wait_for(|n| *n >= self.devices);
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            return false;
        }
        let head = remote.head().seq;
        let through = tokio::time::timeout_at(
            clock.instant_at(clock.elapsed() + allowance),
            engine.pulled_through(head),
        );
        matches!(through.await, Ok(Ok(())))
    }
}

/// What one device ended with.
pub(crate) struct DeviceSink {
    pub sink: Arc<SimSink>,
    pub stalled: bool,
}

/// Compares every device's sink with the remote.
pub(crate) fn convergence(
    remote: &SimulatedRemote,
    devices: &[DeviceSink],
    restore_lost: u64,
    max_listed: usize,
) -> Convergence {
    let truth = remote.live_state();
    let mut c = Convergence {
        devices: devices.len() as u64,
        remote_records: truth.len() as u64,
        regressions: remote.history_refusals(),
        restore_lost,
        diverged: Listed::default(),
        ..Convergence::default()
    };
    for (i, d) in devices.iter().enumerate() {
        c.pages += d.sink.pages.load(Ordering::Relaxed);
        c.resets += d.sink.resets.load(Ordering::Relaxed);
        if d.stalled {
            c.stalled += 1;
        }
        let held = d.sink.state();
        let differ = truth
            .iter()
            .filter(|(k, v)| held.get(*k) != Some(*v))
            .count()
            + held.keys().filter(|k| !truth.contains_key(*k)).count();
        if differ == 0 {
            c.converged += 1;
        } else {
            c.diverged.count += 1;
            if c.diverged.listed.len() < max_listed {
                c.diverged.listed.push(DeviceDiff {
                    device: u32::try_from(i).unwrap_or(u32::MAX),
                    records: differ as u64,
                });
            }
        }
    }
    c
}
