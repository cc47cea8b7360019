//! The worker loop: waits for network, work, the store's next wakeup or
//! shutdown; re-spreads retries on reconnect; runs batches.

use super::*;

impl Inner {
    /// On the Offline → Online transition: waiting retries are moved to
    /// `now + resume_after + U(0, reconnect_spread)` so they do not all fire
    /// at once. Returns the instant before which nothing is claimed, and the
    /// task re-spreading the rest of a queue longer than one page.
    pub(super) async fn respread(self: &Arc<Self>) -> Result<(Instant, Option<JoinHandle<()>>)> {
        let now = self.clock.now_ms();
        let salt: u32 = self.rng().gen();
        let hold_until = self.network.resume_at().unwrap_or_else(Instant::now);
        let base = self.clock.at(hold_until).max(now);
        let spread = millis(self.config.reconnect_spread);
        // Page by page, each a short set-based update that reads no
        // payloads: a large offline queue costs neither memory nor a long
        // write lock at the moment the network returns. The first page is
        // done before anything is claimed (a queue that fits in it is
        // re-spread whole first); the rest goes on beside the claims, so
        // the first push does not wait for a million rows.
        let page = move |after: Option<u64>| {
            move |s: &dyn QueueStorage| {
                let page = Page {
                    after,
                    limit: Some(RESPREAD_PAGE),
                };
                s.respread_waiting(base, spread, salt, &page)
            }
        };
        let first = self.call("respread", page(None)).await?;
        let hold_ms = base - now;
        let Some(mut next) = first.next else {
            tracing::info!(target: "cpc_worker", rescheduled = first.moved, hold_ms, "network back: retries re-spread");
            return Ok((hold_until, None));
        };
        let me = Arc::clone(self);
        let rest = tokio::spawn(async move {
            let mut moved = first.moved;
            loop {
                // Let claims and completions take the store between pages.
                tokio::task::yield_now().await;
                match me.call("respread", page(Some(next))).await {
                    Ok(r) => {
                        moved += r.moved;
                        match r.next {
                            Some(n) => next = n,
                            None => break,
                        }
                    }
                    Err(e) => return me.storage_failed(&e),
                }
            }
            tracing::info!(target: "cpc_worker", rescheduled = moved, hold_ms, "network back: retries re-spread");
        });
        Ok((hold_until, Some(rest)))
    }
}

impl Inner {
    /// The highest remote position the puller persisted, if any.
    pub(super) async fn stored_known(&self) -> Option<cpc_core::RemotePosition> {
        let raw = self
            .call("sync_state", |s| {
                s.sync_state(cpc_storage::sync_state::PULL_KEY, None)
            })
            .await
            .ok()
            .flatten()?;
        cpc_storage::sync_state::PullState::decode(&raw)?.known
    }

    /// Puts the acked journal's retained operations back in the queue
    /// (nothing is in flight: the loop waited), clears the durable report
    /// and tells the application.
    pub(super) async fn handle_regression(&self, regression: &Regression) -> Result<()> {
        let head_seq = regression.head.seq;
        let mut requeued = 0;
        let mut unrecoverable = 0;
        loop {
            let now = self.clock.now_ms();
            let page = self
                .call("requeue_acked", move |s| {
                    s.requeue_acked(head_seq, now, REQUEUE_PAGE)
                })
                .await?;
            requeued += page.requeued;
            unrecoverable += page.unrecoverable;
            if !page.more {
                break;
            }
            tokio::task::yield_now().await;
        }
        let handled = HandledRegression {
            regression: regression.clone(),
            requeued,
            unrecoverable,
            at: self.clock.now_ms(),
        };
        self.call("sync_state", move |s| {
            let history = s
                .sync_state(cpc_storage::sync_state::REGRESSION_HISTORY_KEY, None)?
                .map(|raw| HandledRegression::decode_history(&raw))
                .unwrap_or_default();
            if let Some(bytes) = handled.append_to(history) {
                s.sync_state(cpc_storage::sync_state::REGRESSION_HISTORY_KEY, Some(bytes))?;
            }
            s.sync_state(
                cpc_storage::sync_state::PENDING_REGRESSION_KEY,
                Some(Vec::new()),
            )
        })
        .await?;
        tracing::warn!(target: "cpc_worker", head = head_seq, requeued, unrecoverable, "the remote went back in time: retained operations re-queued");
        // Only now may pushes land on the restored history.
        self.regressions.known().adopt(&regression.head);
        self.regressions.done(regression);
        self.emit(WorkerEvent::RemoteRegressed {
            known: regression.known.clone(),
            head: regression.head.clone(),
            requeued,
            unrecoverable,
        });
        self.wake.notify_one();
        Ok(())
    }
}

/// Journal entries one requeue transaction puts back (whole operations:
/// bounded, so large payloads are not all held at once).
pub(super) const REQUEUE_PAGE: usize = 64;

/// Live operations one re-spread transaction looks at: a few milliseconds
/// of SQLite work, so claims get through between the pages of a large
/// queue.
pub(super) const RESPREAD_PAGE: usize = 4096;

/// The worker loop.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut net = inner.network.subscribe();
    let mut status = inner.network.status();
    let mut batches: JoinSet<(u64, Result<ProcessingSummary>)> = JoinSet::new();
    // No claim before this instant (storage trouble, reconnect hold).
    let mut hold_until: Option<Instant> = None;
    // The re-spread of a long queue's later pages, after a reconnect.
    let mut respreading: Option<JoinHandle<()>> = None;
    let mut reported_open = false;
    tracing::info!(target: "cpc_worker", network = ?status, "worker started");

    // The remote position seen before a restart goes with the first push,
    // so a remote restored meanwhile is caught before anything is applied
    // on it.
    if let Some(known) = inner.stored_known().await {
        inner.regressions.known().raise(&known);
    }
    // A regression reported before a crash or stop is handled now.
    match inner
        .call("sync_state", |s| {
            s.sync_state(cpc_storage::sync_state::PENDING_REGRESSION_KEY, None)
        })
        .await
    {
        Ok(raw) => {
            if let Some(regression) = raw.as_deref().and_then(Regression::decode) {
                inner.regressions.report(regression);
            }
        }
        Err(e) => inner.storage_failed(&e),
    }
    match inner.call("stats", |s| s.stats()).await {
        Ok(stats) if stats.quarantined > 0 => inner.emit(WorkerEvent::Quarantined {
            count: stats.quarantined,
        }),
        Ok(_) => {}
        Err(e) => inner.storage_failed(&e),
    }

    let stop_reason = loop {
        if *shutdown.borrow_and_update() {
            break "shutdown".to_string();
        }
        if !inner.orphan_list().is_empty() {
            if let Err(e) = inner.release_orphans().await {
                inner.storage_failed(&e);
            }
        }
        // Network transitions.
        if let Some(rx) = net.as_mut() {
            let now_status = *rx.borrow_and_update();
            if now_status != status {
                tracing::info!(target: "cpc_worker", from = ?status, to = ?now_status, "network changed");
                inner.emit(WorkerEvent::NetworkChanged {
                    from: status,
                    to: now_status,
                });
                let was_offline = status == NetworkStatus::Offline;
                status = now_status;
                if was_offline && NetworkGate::sendable(status) {
                    if let Some(old) = respreading.take() {
                        old.abort();
                    }
                    match inner.respread().await {
                        Ok((until, rest)) => {
                            hold_until = Some(until);
                            respreading = rest;
                        }
                        Err(e) => inner.storage_failed(&e),
                    }
                }
            }
        }

        let now_instant = Instant::now();
        if hold_until.is_some_and(|h| h <= now_instant) {
            hold_until = None;
        }
        // A remote that went back in time: once the batches in flight are
        // done, put the retained operations back before anything is sent.
        if batches.is_empty() && hold_until.is_none() {
            if let Some(regression) = inner.regressions.pending() {
                if let Err(e) = inner.handle_regression(&regression).await {
                    inner.storage_failed(&e);
                    if e.is_poisoned() {
                        break error_chain(&e);
                    }
                    hold_until = Some(after(Instant::now(), inner.config.storage_retry));
                }
                continue;
            }
        }
        let network_ok = !inner.config.respect_network || NetworkGate::sendable(status);
        let paused = inner.paused.load(Ordering::SeqCst) || inner.regressions.is_closed();
        let may_send = network_ok && !paused && hold_until.is_none();
        let breaker = inner.retry.may_claim(batches.len());
        match breaker {
            Err(Some(until)) if may_send && !reported_open => {
                inner.emit(WorkerEvent::CircuitOpen {
                    until: inner.clock.at(until),
                });
                reported_open = true;
            }
            Ok(()) => reported_open = false,
            _ => {}
        }
        let room = batches.len() < inner.config.max_in_flight;

        // Claim while there is room for another batch.
        let mut wake_at: Option<Instant> = hold_until;
        if may_send && breaker.is_ok() && room {
            match inner.claim().await {
                Ok(claimed) if !claimed.is_empty() => {
                    let batch = inner.register(&claimed);
                    let task_inner = Arc::clone(&inner);
                    batches.spawn(async move {
                        let result = Inner::process_batch(&task_inner, batch, claimed).await;
                        if let Ok(summary) = &result {
                            task_inner.after_batch(summary).await;
                        }
                        (batch, result)
                    });
                    // Room for more: claim again at once (only heads of
                    // other entities can come out, so order is kept).
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    inner.storage_failed(&e);
                    if e.is_poisoned() {
                        break error_chain(&e);
                    }
                    hold_until = Some(after(now_instant, inner.config.storage_retry));
                    wake_at = hold_until;
                }
            }
        }

        // Work out when to wake if nothing else happens. With every batch
        // slot taken (or a half-open probe in flight) the next event is a
        // batch finishing, so the store need not be asked.
        if may_send && room {
            match breaker {
                Err(Some(until)) => wake_at = earliest(wake_at, Some(until)),
                Err(None) => {}
                Ok(()) => match inner.call("next_wakeup", |s| s.next_wakeup()).await {
                    Ok(Some(ms)) => {
                        let mut at = inner.clock.instant_at(ms);
                        let now = Instant::now();
                        if at <= now {
                            // Due, yet the claim just made found nothing:
                            // do not spin on it.
                            at = after(now, inner.config.min_wakeup_interval);
                        }
                        wake_at = earliest(wake_at, Some(at));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        inner.storage_failed(&e);
                        if e.is_poisoned() {
                            break error_chain(&e);
                        }
                        wake_at = earliest(
                            wake_at,
                            Some(after(Instant::now(), inner.config.storage_retry)),
                        );
                    }
                },
            }
        }

        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let net_changed = async {
            match net.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            Some(joined) = batches.join_next(), if !batches.is_empty() => {
                handle_joined(&inner, joined);
            }
            _ = net_changed => {}
            _ = inner.wake.notified() => {}
            _ = inner.regressions.reported() => {}
            _ = sleep => {}
        }
    };

    if let Some(rest) = respreading.take() {
        rest.abort();
        // Joined, so the task (and the store it holds) is gone once the
        // loop is: a queue closed and reopened finds its lock free.
        let _ = rest.await;
    }
    // Shutdown: give in-flight batches a bounded time to finish.
    let deadline = after(Instant::now(), inner.config.shutdown_timeout);
    while !batches.is_empty() {
        match tokio::time::timeout_at(deadline, batches.join_next()).await {
            Ok(Some(joined)) => handle_joined(&inner, joined),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(target: "cpc_worker", batches = batches.len(), "shutdown timeout: abandoning in-flight batches");
                batches.abort_all();
                while batches.join_next().await.is_some() {}
                break;
            }
        }
    }
    // Leases of abandoned batches are returned by `shutdown` (or, after a
    // poisoned store, expire and are recovered at the next open).
    tracing::info!(target: "cpc_worker", reason = %stop_reason, "worker stopped");
    inner.emit(WorkerEvent::Stopped {
        reason: stop_reason,
    });
}

pub(super) fn handle_joined(
    inner: &Inner,
    joined: std::result::Result<(u64, Result<ProcessingSummary>), tokio::task::JoinError>,
) {
    match joined {
        Ok((_, Ok(_))) => {}
        Ok((batch, Err(e))) => {
            tracing::error!(target: "cpc_worker", batch, error = %e, "batch could not be completed; its leases will expire");
            inner.storage_failed(&e);
        }
        Err(e) => {
            tracing::error!(target: "cpc_worker", error = %e, "batch task failed");
        }
    }
}
