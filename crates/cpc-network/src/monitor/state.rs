//! The monitor's state machine: evidence per source, hysteresis, the
//! degraded window, and the status it decides.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OfflineCause {
    Link,
    Failures,
}

pub(super) struct Counters {
    pub(super) transitions: u64,
    pub(super) successes: u64,
    pub(super) failures: u64,
    pub(super) link_downs: u64,
    pub(super) observations: u64,
    pub(super) since: Instant,
    pub(super) time_in: [Duration; 4],
}

pub(super) struct State {
    pub(super) status: NetworkStatus,
    pub(super) cause: OfflineCause,
    pub(super) fail_streak: u32,
    pub(super) last_failure: FailureKind,
    pub(super) succ_streak: u32,
    /// Recent checks, oldest first: (when, succeeded).
    pub(super) window: VecDeque<(Instant, bool)>,
    /// Sources currently reporting the link down.
    pub(super) links_down: Vec<SourceName>,
    /// When the last link-down source reported the link up again.
    pub(super) link_up_since: Option<Instant>,
    pub(super) last_change: Option<Instant>,
    pub(super) last_observation: Instant,
    pub(super) resume_at: Option<Instant>,
    pub(super) rng: StdRng,
    pub(super) seq: u64,
    pub(super) pending: VecDeque<StatusChange>,
    pub(super) stats: Counters,
}

/// A transition the rules want, and whether it may ignore the dwell time.
pub(super) struct Wanted {
    pub(super) to: NetworkStatus,
    pub(super) reason: TransitionReason,
    pub(super) bypass_dwell: bool,
}

impl State {
    pub(super) fn new(now: Instant, rng: StdRng) -> Self {
        State {
            status: NetworkStatus::Unknown,
            cause: OfflineCause::Failures,
            fail_streak: 0,
            last_failure: FailureKind::Other,
            succ_streak: 0,
            window: VecDeque::new(),
            links_down: Vec::new(),
            link_up_since: None,
            last_change: None,
            last_observation: now,
            resume_at: None,
            rng,
            seq: 0,
            pending: VecDeque::new(),
            stats: Counters {
                transitions: 0,
                successes: 0,
                failures: 0,
                link_downs: 0,
                observations: 0,
                since: now,
                time_in: [Duration::ZERO; 4],
            },
        }
    }

    pub(super) fn record(&mut self, obs: Observation, now: Instant, cfg: &MonitorConfig) {
        self.stats.observations += 1;
        self.last_observation = now;
        match obs.signal {
            Signal::Success => {
                self.stats.successes += 1;
                self.succ_streak = self.succ_streak.saturating_add(1);
                self.fail_streak = 0;
                self.push_sample(now, true, cfg);
            }
            Signal::Failure(kind) => {
                self.stats.failures += 1;
                self.fail_streak = self.fail_streak.saturating_add(1);
                self.last_failure = kind;
                self.succ_streak = 0;
                self.push_sample(now, false, cfg);
            }
            Signal::LinkDown => {
                self.stats.link_downs += 1;
                if !self.links_down.contains(&obs.source) {
                    self.links_down.push(obs.source.clone());
                }
                self.link_up_since = None;
                self.succ_streak = 0;
            }
            Signal::LinkUp => {
                let was_down = !self.links_down.is_empty();
                self.links_down.retain(|s| *s != obs.source);
                if was_down && self.links_down.is_empty() {
                    // Evidence gathered before the link came back says
                    // nothing about the link we have now.
                    self.link_up_since = Some(now);
                    self.succ_streak = 0;
                    self.fail_streak = 0;
                }
            }
        }
        tracing::trace!(
            source = %obs.source,
            signal = obs.signal.as_str(),
            fail_streak = self.fail_streak,
            succ_streak = self.succ_streak,
            "network observation"
        );
    }

    pub(super) fn push_sample(&mut self, now: Instant, ok: bool, cfg: &MonitorConfig) {
        self.window.push_back((now, ok));
        while self.window.len() > MAX_WINDOW_SAMPLES {
            self.window.pop_front();
        }
        self.trim_window(now, cfg);
    }

    pub(super) fn trim_window(&mut self, now: Instant, cfg: &MonitorConfig) {
        while self
            .window
            .front()
            .is_some_and(|(at, _)| *at + cfg.degraded_window <= now)
        {
            self.window.pop_front();
        }
    }

    /// (failures, samples) in the window, and whether that counts as degraded.
    pub(super) fn ratio(&self, cfg: &MonitorConfig) -> (u32, u32, bool) {
        let samples = u32::try_from(self.window.len()).unwrap_or(u32::MAX);
        let failures =
            u32::try_from(self.window.iter().filter(|(_, ok)| !ok).count()).unwrap_or(u32::MAX);
        let degraded = samples >= cfg.degraded_min_samples
            && failures < samples
            && f64::from(failures) >= cfg.degraded_ratio * f64::from(samples);
        (failures, samples, degraded)
    }

    pub(super) fn wanted(&mut self, now: Instant, cfg: &MonitorConfig) -> Option<Wanted> {
        if let Some(source) = self.links_down.first() {
            if self.status == NetworkStatus::Offline {
                self.cause = OfflineCause::Link;
                return None;
            }
            return Some(Wanted {
                to: NetworkStatus::Offline,
                reason: TransitionReason::LinkDown {
                    source: source.clone(),
                },
                bypass_dwell: true,
            });
        }
        self.trim_window(now, cfg);
        let (failures, samples, degraded) = self.ratio(cfg);
        let want = |to, reason| {
            Some(Wanted {
                to,
                reason,
                bypass_dwell: false,
            })
        };
        match self.status {
            NetworkStatus::Offline => {
                if self.cause == OfflineCause::Link {
                    if self.fail_streak >= cfg.offline_after {
                        // The link is back but nothing answers: from now on
                        // this is an Offline of the failure kind.
                        self.cause = OfflineCause::Failures;
                    } else {
                        // Leaving a link-loss Offline needs the link to have
                        // stayed up for the dwell time, so a flapping link
                        // keeps the monitor Offline instead of thrashing.
                        // (`link_up_since` is set whenever the last down
                        // source comes back; fall back defensively.)
                        let since = self.link_up_since.or(self.last_change).unwrap_or(now);
                        if now < since + cfg.min_dwell {
                            return None;
                        }
                        if self.succ_streak >= cfg.online_after {
                            let count = self.succ_streak;
                            return want(
                                NetworkStatus::Online,
                                TransitionReason::SuccessStreak { count },
                            );
                        }
                        return want(NetworkStatus::Unknown, TransitionReason::LinkRestored);
                    }
                }
                if self.succ_streak >= cfg.online_after {
                    // Not Degraded: the failures in the window are the
                    // outage's, and the window restarts on leaving Offline.
                    let count = self.succ_streak;
                    return want(
                        NetworkStatus::Online,
                        TransitionReason::SuccessStreak { count },
                    );
                }
                let ttl = cfg.evidence_ttl?;
                let silent_for = now.saturating_duration_since(self.last_observation);
                if silent_for >= ttl {
                    return want(
                        NetworkStatus::Unknown,
                        TransitionReason::EvidenceExpired { silent_for },
                    );
                }
                None
            }
            current => {
                if self.fail_streak >= cfg.offline_after {
                    return want(
                        NetworkStatus::Offline,
                        TransitionReason::FailureStreak {
                            count: self.fail_streak,
                            last: self.last_failure,
                        },
                    );
                }
                // Degraded means "answers, but often fails": decided when an
                // answer arrives. A run of failures is an outage in progress,
                // headed for Offline, not a degradation.
                if degraded && current != NetworkStatus::Degraded && self.succ_streak > 0 {
                    return want(
                        NetworkStatus::Degraded,
                        TransitionReason::FailureRatio { failures, samples },
                    );
                }
                if !degraded
                    && current != NetworkStatus::Online
                    && self.succ_streak >= cfg.online_after
                {
                    let reason = if current == NetworkStatus::Degraded {
                        TransitionReason::RatioRecovered { failures, samples }
                    } else {
                        TransitionReason::SuccessStreak {
                            count: self.succ_streak,
                        }
                    };
                    return want(NetworkStatus::Online, reason);
                }
                None
            }
        }
    }

    pub(super) fn dwell_ends(&self, cfg: &MonitorConfig) -> Option<Instant> {
        self.last_change.map(|at| at + cfg.min_dwell)
    }

    /// Applies every transition the rules allow now (several only when the
    /// dwell time is zero; bounded either way).
    pub(super) fn settle(
        &mut self,
        now: Instant,
        cfg: &MonitorConfig,
        tx: &watch::Sender<NetworkStatus>,
    ) {
        for _ in 0..NetworkStatus::ALL.len() {
            let Some(wanted) = self.wanted(now, cfg) else {
                return;
            };
            if !wanted.bypass_dwell && self.dwell_ends(cfg).is_some_and(|end| now < end) {
                return;
            }
            self.transition(wanted, now, cfg, tx);
        }
    }

    pub(super) fn transition(
        &mut self,
        wanted: Wanted,
        now: Instant,
        cfg: &MonitorConfig,
        tx: &watch::Sender<NetworkStatus>,
    ) {
        let from = self.status;
        let to = wanted.to;
        self.stats.time_in[from.index()] += now.saturating_duration_since(self.stats.since);
        self.stats.since = now;
        self.stats.transitions += 1;
        self.status = to;
        self.last_change = Some(now);
        self.seq += 1;
        let mut resume_after = None;
        if to == NetworkStatus::Offline {
            self.cause = if self.links_down.is_empty() {
                OfflineCause::Failures
            } else {
                OfflineCause::Link
            };
            self.resume_at = None;
        } else if from == NetworkStatus::Offline {
            let delay = if cfg.resume_jitter_max.is_zero() {
                Duration::ZERO
            } else {
                self.rng.gen_range(Duration::ZERO..=cfg.resume_jitter_max)
            };
            self.resume_at = Some(now + delay);
            resume_after = Some(delay);
        }
        if from == NetworkStatus::Offline {
            // The failure ratio measures flakiness while reachable; the
            // outage's failures must not make the recovery look Degraded.
            self.window.clear();
        }
        if matches!(wanted.reason, TransitionReason::EvidenceExpired { .. }) {
            // Start afresh: the old failures must not count again.
            self.fail_streak = 0;
        }
        tracing::info!(
            from = from.as_str(),
            to = to.as_str(),
            reason = %wanted.reason,
            seq = self.seq,
            resume_after_ms = resume_after.map(cpc_core::millis),
            "network status changed"
        );
        tx.send_replace(to);
        self.pending.push_back(StatusChange {
            from,
            to,
            at: now,
            reason: wanted.reason,
            resume_after,
            seq: self.seq,
        });
    }

    /// The next instant at which time alone may change what the rules want.
    pub(super) fn next_deadline(&mut self, now: Instant, cfg: &MonitorConfig) -> Option<Instant> {
        let mut candidates: Vec<Instant> = Vec::with_capacity(4);
        if self.wanted(now, cfg).is_some() {
            candidates.extend(self.dwell_ends(cfg));
        }
        match self.status {
            NetworkStatus::Offline if self.links_down.is_empty() => {
                if self.cause == OfflineCause::Link {
                    if let Some(since) = self.link_up_since {
                        let end = since + cfg.min_dwell;
                        candidates.push(self.dwell_ends(cfg).map_or(end, |d| d.max(end)));
                    }
                } else if let Some(ttl) = cfg.evidence_ttl {
                    let end = self.last_observation + ttl;
                    candidates.push(self.dwell_ends(cfg).map_or(end, |d| d.max(end)));
                }
            }
            NetworkStatus::Degraded if self.succ_streak >= cfg.online_after => {
                // Old failures leaving the window may end the degradation.
                if let Some((at, _)) = self.window.front() {
                    candidates.push(*at + cfg.degraded_window);
                }
            }
            _ => {}
        }
        // A deadline not in the future would make the timer spin.
        candidates.into_iter().filter(|at| *at > now).min()
    }
}
