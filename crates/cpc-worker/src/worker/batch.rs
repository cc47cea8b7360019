//! The batch pipeline: push one claimed batch, turn its outcomes into
//! completions (retries, dead letters, conflicts through the resolver) and
//! apply them in one storage write.

use super::*;

/// Orphans its batch when dropped before the batch was completed.
pub(super) struct BatchGuard<'a> {
    pub(super) inner: &'a Inner,
    pub(super) batch: u64,
}

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        self.inner.orphan(self.batch);
    }
}

/// How one operation's attempt failed, for [`Inner::retry_or_bury`].
pub(super) struct Failure {
    /// Server hint, a floor for the delay.
    pub(super) hint: Option<Duration>,
    /// What the retry costs from the budget.
    pub(super) cause: RetryCause,
    /// What went wrong (no payload data).
    pub(super) error: String,
    /// Whether the failure is the operation's own: it counts towards the
    /// dead letter. Otherwise it is postponed, never given up on.
    pub(super) counted: bool,
    /// Whole-batch failures in a row, pacing uncounted failures.
    pub(super) streak: u32,
}

/// What the worker keeps of a claim beside the operation.
pub(super) struct OpMeta {
    pub(super) attempt: u32,
    pub(super) priority: cpc_core::OperationPriority,
    pub(super) enqueued_at: EpochMillis,
}

/// The result of one pushed batch.
pub(super) struct BatchOutcome {
    pub(super) completions: Vec<Completion>,
    pub(super) conflicts: Vec<ConflictRecord>,
    pub(super) events: Vec<WorkerEvent>,
    /// Whether anyone listens: without a subscriber the per-operation
    /// events are not built at all (they would be dropped by `emit`).
    pub(super) observed: bool,
    /// Operations the remote answered for good (retry permits to refund).
    pub(super) delivered: Vec<OperationId>,
    /// How many of `delivered` were refunded already.
    pub(super) refunded: usize,
    pub(super) summary: ProcessingSummary,
    pub(super) pause: bool,
}

impl BatchOutcome {
    pub(super) fn event(&mut self, event: impl FnOnce() -> WorkerEvent) {
        if self.observed {
            self.events.push(event());
        }
    }
}

impl Inner {
    /// Pushes one claimed batch and applies the outcomes in one storage write.
    pub(super) async fn process_batch(
        self: &Arc<Self>,
        batch: u64,
        claimed: Vec<Claimed>,
    ) -> Result<ProcessingSummary> {
        // Every path out of here unregisters the batch; should one not (a
        // panic in our own code, an abort), the guard orphans it.
        let _guard = BatchGuard { inner: self, batch };
        let started = Instant::now();
        let mut meta = Vec::with_capacity(claimed.len());
        let mut ops = Vec::with_capacity(claimed.len());
        for c in claimed {
            meta.push(OpMeta {
                attempt: c.attempt,
                priority: c.effective_priority,
                enqueued_at: c.enqueued_at,
            });
            ops.push(c.op);
        }

        let permit = match self.retry.admit_push() {
            Ok(permit) => permit,
            Err(retry_after) => {
                // The breaker opened between the claim and now: give the
                // claims back uncounted.
                tracing::debug!(target: "cpc_worker", batch, retry_after_ms = millis(retry_after), "breaker refused the push; claims released");
                return self.release_batch(batch, &ops).await;
            }
        };
        if self.regressions.is_closed() {
            // The remote went back in time: nothing goes out until the
            // retained operations are back in the queue, ahead of these.
            // (Dropped unsettled, the permit is abandoned, not a success.)
            drop(permit);
            return self.release_batch(batch, &ops).await;
        }
        let known = self.regressions.known();
        let sent_known = known.get();
        let query = PushQuery::new(&ops).known(sent_known.as_ref());
        let push = CatchUnwind::new(self.transport.push(&query));
        let pushed = match tokio::time::timeout(self.config.push_timeout, push).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(message)) => {
                tracing::error!(target: "cpc_worker", batch, size = ops.len(), "transport panicked; the batch failed");
                tracing::debug!(target: "cpc_worker", batch, message = %message, "transport panic message");
                Err(TransportError::Panicked)
            }
            Ok(Ok(answer)) => answer.and_then(|answer| {
                if let Some(head) = &answer.head {
                    known.raise(head);
                }
                match_answer(&ops, answer.outcomes)
            }),
        };
        // Text from the remote (or the transport) is logged and stored:
        // bounded first.
        let pushed = pushed.map_err(bounded_error);
        if let Err(TransportError::HistoryDiverged { head }) = &pushed {
            // With the position the puller persisted: the puller, seeing
            // the same restore, reports the same regression, handled once.
            let known = self.stored_known().await;
            self.regressions.report(Regression {
                known,
                head: head.clone(),
            });
        }
        // A refusal to talk (credentials, version) says nothing about the
        // remote's health: the breaker does not count it.
        // Nor does a history that went back in time: the remote answered,
        // it is the device that must catch up.
        let remote_failed = matches!(&pushed, Err(e) if !matches!(e, TransportError::Unauthorized | TransportError::Incompatible(_) | TransportError::HistoryDiverged { .. }));
        settle_breaker(permit, remote_failed);

        let now = self.clock.now_ms();
        let mut outcome = self.plan(&ops, &meta, pushed, now);
        outcome.summary.elapsed = started.elapsed();

        let completions = std::mem::take(&mut outcome.completions);
        let conflicts = std::mem::take(&mut outcome.conflicts);
        // Conflict entries are written before the completions: a crash in
        // between then logs a conflict twice (the op is resent and conflicts
        // again) instead of dropping a losing payload unrecorded.
        let written = self
            .call("complete", move |s| {
                let mut pruned = 0;
                for entry in &conflicts {
                    pruned += s.log_conflict(entry)?;
                }
                s.complete(&completions, now)?;
                Ok(pruned)
            })
            .await;
        self.report_quarantines();
        // Whether or not the write succeeded the batch is no longer ours: on
        // failure its leases expire and the store hands the ops out again.
        self.unregister(batch);
        self.progress.send_modify(|p| *p += 1);
        let pruned = written?;
        if pruned > 0 {
            tracing::info!(target: "cpc_worker", pruned, "conflict log full: oldest entries dropped");
            self.emit(WorkerEvent::ConflictLogPruned { dropped: pruned });
        }

        if outcome.pause {
            self.paused.store(true, Ordering::SeqCst);
        }
        for event in outcome.events {
            self.emit(event);
        }
        let s = &outcome.summary;
        tracing::info!(
            target: "cpc_worker",
            batch,
            attempted = s.attempted,
            applied = s.applied,
            already_applied = s.already_applied,
            retried = s.retried,
            conflicts = s.conflicts.total(),
            dead_lettered = s.dead_lettered,
            released = s.released,
            critical = s.by_priority[3],
            high = s.by_priority[2],
            normal = s.by_priority[1],
            background = s.by_priority[0],
            batch_error = s.batch_error.as_ref().map(TransportError::name),
            elapsed_us = u64::try_from(s.elapsed.as_micros()).unwrap_or(u64::MAX),
            "batch processed"
        );
        Ok(outcome.summary)
    }

    /// Gives a claimed batch back without sending it or counting the attempt.
    pub(super) async fn release_batch(
        &self,
        batch: u64,
        ops: &[Operation],
    ) -> Result<ProcessingSummary> {
        let completions: Vec<Completion> =
            ops.iter().map(|op| Completion::Release(op.id)).collect();
        let now = self.clock.now_ms();
        let written = self
            .call("release", move |s| s.complete(&completions, now))
            .await;
        self.unregister(batch);
        self.progress.send_modify(|p| *p += 1);
        written?;
        Ok(ProcessingSummary {
            released: ops.len(),
            ..ProcessingSummary::default()
        })
    }

    /// Applies the verdicts of a push result ([`judge`]) through the retry
    /// policy, the resolver and the worker's state: completions, conflict
    /// log entries, events and the summary.
    pub(super) fn plan(
        &self,
        ops: &[Operation],
        meta: &[OpMeta],
        pushed: std::result::Result<Vec<cpc_core::OpOutcome>, TransportError>,
        now: EpochMillis,
    ) -> BatchOutcome {
        let observed = self.events.receiver_count() > 0;
        let mut out = BatchOutcome {
            completions: Vec::with_capacity(ops.len()),
            conflicts: Vec::new(),
            events: if observed {
                Vec::with_capacity(ops.len())
            } else {
                Vec::new()
            },
            observed,
            delivered: Vec::with_capacity(ops.len()),
            refunded: 0,
            summary: ProcessingSummary {
                attempted: ops.len(),
                ..ProcessingSummary::default()
            },
            pause: false,
        };
        for m in meta {
            out.summary.by_priority[usize::from(m.priority.rank())] += 1;
        }
        match judge(ops, pushed) {
            BatchVerdict::Answered(verdicts) => {
                self.network.report_success();
                self.failure_streak.store(0, Ordering::SeqCst);
                {
                    let mut suspects = self.suspects();
                    suspects.answered();
                    suspects.cleared(ops.iter().map(|op| op.id));
                }
                for ((op, m), verdict) in ops.iter().zip(meta).zip(verdicts) {
                    let noted = self.feed_acks.take(op.id);
                    if let (Some(ack), false) =
                        (noted, matches!(verdict, Verdict::Delivered { .. }))
                    {
                        // The feed showed it applied: whatever this answer
                        // says, it is (a remote dedupes by id).
                        self.streaks().ended(op.id);
                        self.laters().ended(op.id);
                        self.settled_by_feed(&mut out, op, ack);
                        continue;
                    }
                    if !matches!(verdict, Verdict::Conflict { .. }) {
                        self.streaks().ended(op.id);
                    }
                    if !matches!(verdict, Verdict::RetryLater { .. }) {
                        self.laters().ended(op.id);
                    }
                    match verdict {
                        Verdict::Delivered {
                            version,
                            replay,
                            seq,
                        } => {
                            if replay {
                                out.summary.already_applied += 1;
                            } else {
                                out.summary.applied += 1;
                            }
                            out.delivered.push(op.id);
                            out.completions.push(match seq {
                                Some(seq) => Completion::AckAt { id: op.id, seq },
                                None => Completion::Ack(op.id),
                            });
                            out.event(|| WorkerEvent::Applied {
                                id: op.id,
                                entity: op.entity.clone(),
                                version,
                                replay,
                            });
                        }
                        Verdict::RetryLater { after } => {
                            // Refunds of the operations before this one come
                            // first, as if each were refunded on its own.
                            self.refund(&mut out);
                            // Never counted: paced by its own answers in a
                            // row, the remote's hint a floor.
                            let in_a_row = self.laters().again(op.id);
                            self.retry_or_bury(
                                &mut out,
                                op,
                                m,
                                Failure {
                                    hint: after,
                                    cause: RetryCause::Error,
                                    error: "retry later".into(),
                                    counted: false,
                                    streak: in_a_row,
                                },
                                now,
                            );
                        }
                        Verdict::Rejected { reason } => self.bury(&mut out, op, reason),
                        Verdict::Conflict { remote } => {
                            out.delivered.push(op.id);
                            self.resolve(&mut out, op, m, remote, now);
                        }
                    }
                }
                self.refund(&mut out);
            }
            BatchVerdict::Paused(error) => {
                self.network.report_error(&error);
                // Credentials and versions are application matters: give
                // every claim back uncounted and wait for `resume`.
                tracing::warn!(target: "cpc_worker", size = ops.len(), error = error.name(), "the remote refused to talk: sending paused until resume()");
                for op in ops {
                    match self.feed_acks.take(op.id) {
                        Some(ack) => self.settled_by_feed(&mut out, op, ack),
                        None => {
                            out.summary.released += 1;
                            out.completions.push(Completion::Release(op.id));
                        }
                    }
                }
                out.event(|| WorkerEvent::BatchFailed {
                    size: ops.len(),
                    error: error.clone(),
                });
                out.event(|| match error {
                    TransportError::Incompatible(_) => WorkerEvent::UpgradeRequired,
                    _ => WorkerEvent::AuthRequired,
                });
                out.summary.batch_error = Some(error);
                out.pause = true;
            }
            BatchVerdict::Failed {
                error,
                hint,
                cause,
                suspect,
                may_count,
            } => {
                self.network.report_error(&error);
                let streak = self
                    .failure_streak
                    .fetch_add(1, Ordering::SeqCst)
                    .saturating_add(1);
                // A larger batch failing so is split on its next tries; an
                // operation failing alone is blamed only if the remote is
                // meanwhile accepting others (see `split`).
                let counted = match ops {
                    [op] if may_count => self.suspects().lone_failure(op.id),
                    _ => {
                        let ids: Vec<OperationId> = ops.iter().map(|op| op.id).collect();
                        self.suspects().failed(&ids, suspect);
                        false
                    }
                };
                tracing::warn!(target: "cpc_worker", size = ops.len(), error = error.name(), counted, "batch failed");
                let text = error.to_string();
                for (op, m) in ops.iter().zip(meta) {
                    if let Some(ack) = self.feed_acks.take(op.id) {
                        // Its answer is lost, but the feed showed it
                        // applied: acknowledged, not pushed again.
                        self.settled_by_feed(&mut out, op, ack);
                        continue;
                    }
                    let failure = Failure {
                        hint,
                        cause,
                        error: text.clone(),
                        counted,
                        streak,
                    };
                    self.retry_or_bury(&mut out, op, m, failure, now);
                }
                out.event(|| WorkerEvent::BatchFailed {
                    size: ops.len(),
                    error: error.clone(),
                });
                out.summary.batch_error = Some(error);
            }
        }
        out
    }

    /// `op`, in this batch, was seen applied in the pull feed (see
    /// `feed_acks`): acknowledged at the feed's position, reported once as a
    /// replay.
    pub(super) fn settled_by_feed(&self, out: &mut BatchOutcome, op: &Operation, ack: FeedAck) {
        out.summary.already_applied += 1;
        out.delivered.push(op.id);
        out.completions.push(Completion::AckAt {
            id: op.id,
            seq: ack.seq,
        });
        out.event(|| WorkerEvent::Applied {
            id: op.id,
            entity: op.entity.clone(),
            version: ack.version,
            replay: true,
        });
    }

    /// Refunds the retry permits of the operations delivered since the last
    /// refund (one lock for all of them).
    pub(super) fn refund(&self, out: &mut BatchOutcome) {
        self.retry.on_delivered_all(&out.delivered[out.refunded..]);
        out.refunded = out.delivered.len();
    }

    /// Schedules a retry through the backoff and the retry budget, or parks
    /// the op in the dead letters when the strategy gives up.
    pub(super) fn retry_or_bury(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        meta: &OpMeta,
        failure: Failure,
        now: EpochMillis,
    ) {
        let Failure {
            hint,
            cause,
            error,
            counted,
            streak,
        } = failure;
        let attempt = meta.attempt;
        let elapsed = Duration::from_millis(now.saturating_sub(meta.enqueued_at));
        let at = {
            let mut rng = self.rng();
            self.retry.retry_at(
                &FailedAttempt {
                    id: op.id,
                    // An uncounted failure is paced by the failures in a
                    // row of the whole link, not by the operation's own.
                    attempt: if counted { attempt } else { streak.max(1) },
                    hint,
                    cause,
                    elapsed,
                    may_give_up: counted,
                },
                now,
                &mut *rng,
            )
        };
        match at {
            Some(at) => {
                out.summary.retried += 1;
                out.event(|| WorkerEvent::RetryScheduled {
                    id: op.id,
                    at,
                    attempt,
                    error: error.clone(),
                });
                out.completions.push(if counted {
                    Completion::Retry {
                        id: op.id,
                        at,
                        error,
                    }
                } else {
                    Completion::Postpone {
                        id: op.id,
                        at,
                        error,
                    }
                });
            }
            None => {
                self.suspects().cleared([op.id]);
                self.bury(
                    out,
                    op,
                    format!("gave up after {attempt} attempts: {error}"),
                );
            }
        }
    }

    /// Settles a conflict through the resolver. A keep-local or merged
    /// result is resent after a backoff (the retry policy's, paid from the
    /// budget), so two devices that both keep their own edit do not loop at
    /// full speed; at `max_conflicts` conflicts in a row the operation is
    /// deferred for the application instead. A resolver that panics defers
    /// the operation too.
    pub(super) fn resolve(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        meta: &OpMeta,
        remote: cpc_core::RemoteRecord,
        now: EpochMillis,
    ) {
        if let Some(hlc) = &self.hlc {
            // Later local edits must order after what the remote holds. A
            // timestamp beyond the drift limit is not merged (it would drag
            // every later edit into the future), but said: this device's
            // clock, or the remote writer's, is off.
            if let Err(cpc_core::Error::ClockDrift {
                ahead, max_drift, ..
            }) = hlc.observe(remote.timestamp)
            {
                let ahead_ms = millis(ahead);
                tracing::warn!(target: "cpc_worker", op_id = %op.id, ahead_ms, max_drift_ms = millis(max_drift), "remote timestamp too far ahead of this clock; not merged");
                out.event(|| WorkerEvent::ClockSkew {
                    id: op.id,
                    ahead_ms,
                    max_drift_ms: millis(max_drift),
                });
            }
        }
        let decided = catch(|| resolve_and_record(&*self.resolver, op, &remote, now));
        let (resolution, mut record) = match decided {
            Ok(decided) => decided,
            Err(message) => {
                tracing::error!(target: "cpc_worker", op_id = %op.id, "conflict resolver panicked; the operation is deferred");
                tracing::debug!(target: "cpc_worker", op_id = %op.id, message = %message, "resolver panic message");
                self.defer(out, op, remote, "the conflict resolver panicked".into());
                return;
            }
        };
        if let Resolution::Merged(merged) = &resolution {
            let max = self.storage.max_payload();
            if merged.len() > max {
                // That op only: the rest of the batch is acknowledged. Its
                // own payload is kept, so nothing is lost; not logged, as
                // the entry could not be stored.
                let reason = format!(
                    "merged payload too large: {} bytes, max_payload {max}",
                    merged.len()
                );
                self.bury(out, op, reason);
                return;
            }
        }
        let resend = matches!(resolution, Resolution::KeepLocal | Resolution::Merged(_));
        let in_a_row = if resend {
            self.streaks().again(op.id)
        } else {
            self.streaks().ended(op.id);
            0
        };
        if resend && in_a_row >= self.config.max_conflicts {
            self.streaks().ended(op.id);
            // The log keeps the conflict as what happened to it: deferred,
            // nothing lost yet.
            record.resolution = Resolution::Defer;
            record.losing_payload = None;
            out.conflicts.push(self.storable(record));
            let reason = format!(
                "{in_a_row} conflicts in a row (max_conflicts {}): deferred for the application",
                self.config.max_conflicts
            );
            self.defer(out, op, remote, reason);
            return;
        }
        out.conflicts.push(self.storable(record));
        out.event(|| WorkerEvent::ConflictResolved {
            id: op.id,
            entity: op.entity.clone(),
            resolution: resolution.name(),
            remote_version: remote.version,
        });
        let payload = match resolution {
            Resolution::KeepLocal => {
                out.summary.conflicts.keep_local += 1;
                None
            }
            Resolution::Merged(payload) => {
                out.summary.conflicts.merged += 1;
                Some(payload)
            }
            Resolution::KeepRemote => {
                out.summary.conflicts.keep_remote += 1;
                out.completions.push(Completion::Drop(op.id));
                return;
            }
            Resolution::Defer => {
                let reason = format!("conflict with remote version {}", remote.version);
                self.defer_counted(out, op, remote, reason);
                return;
            }
        };
        out.completions.push(Completion::Resend {
            id: op.id,
            base_version: Some(remote.version),
            payload,
        });
        let at = {
            let mut rng = self.rng();
            self.retry.retry_at(
                &FailedAttempt {
                    id: op.id,
                    attempt: in_a_row,
                    hint: None,
                    cause: RetryCause::Error,
                    elapsed: Duration::from_millis(now.saturating_sub(meta.enqueued_at)),
                    may_give_up: false,
                },
                now,
                &mut *rng,
            )
        };
        if let Some(at) = at.filter(|at| *at > now) {
            out.completions.push(Completion::Retry {
                id: op.id,
                at,
                error: format!(
                    "conflict with remote version {}; resent after a backoff",
                    remote.version
                ),
            });
        }
    }

    /// A conflict log entry the store can keep: a remote record over the
    /// payload limit (resolved in memory all the same) is logged without
    /// its body, as is a losing payload that is that body. The remote's
    /// version of it is on the remote; nothing of this device's is dropped.
    pub(super) fn storable(&self, mut record: ConflictRecord) -> ConflictRecord {
        let max = self.storage.max_payload();
        let len = record.remote.payload.as_ref().map_or(0, Vec::len);
        if len > max {
            tracing::warn!(target: "cpc_worker", op_id = %record.op_id, len, max, "a conflict's remote record is over the payload limit: logged without its body");
            record.remote.payload = None;
            if record
                .losing_payload
                .as_ref()
                .is_some_and(|p| p.len() > max)
            {
                record.losing_payload = None;
            }
        }
        record
    }

    /// Parks `op` in the dead letters for `reason`, with the event.
    pub(super) fn bury(&self, out: &mut BatchOutcome, op: &Operation, reason: String) {
        self.retry.forget(op.id);
        out.summary.dead_lettered += 1;
        out.event(|| WorkerEvent::DeadLettered {
            id: op.id,
            entity: op.entity.clone(),
            reason: reason.clone(),
        });
        out.completions.push(Completion::Dead { id: op.id, reason });
    }

    /// Parks `op` as a deferred conflict, with the event.
    pub(super) fn defer(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        remote: cpc_core::RemoteRecord,
        reason: String,
    ) {
        out.event(|| WorkerEvent::ConflictResolved {
            id: op.id,
            entity: op.entity.clone(),
            resolution: Resolution::Defer.name(),
            remote_version: remote.version,
        });
        self.defer_counted(out, op, remote, reason);
    }

    pub(super) fn defer_counted(
        &self,
        out: &mut BatchOutcome,
        op: &Operation,
        mut remote: cpc_core::RemoteRecord,
        mut reason: String,
    ) {
        let max = self.storage.max_payload();
        if let Some(len) = remote.payload.as_ref().map(Vec::len).filter(|l| *l > max) {
            // Too large to park whole: parked without its body, and said so
            // (a `None` payload would otherwise read as a remote delete).
            remote.payload = None;
            reason = format!(
                "{REMOTE_BODY_WITHHELD}: the remote record is {len} bytes, over max_payload {max}; {reason}"
            );
        }
        out.summary.conflicts.deferred += 1;
        out.event(|| WorkerEvent::Deferred {
            id: op.id,
            entity: op.entity.clone(),
        });
        out.completions.push(Completion::Defer {
            id: op.id,
            remote,
            reason,
        });
    }

    /// After a batch: emits the summary, and `Drained` when the queue is empty.
    pub(super) async fn after_batch(&self, summary: &ProcessingSummary) {
        self.emit(WorkerEvent::BatchCompleted {
            summary: summary.clone(),
        });
        // Counting pending work costs a query; only a batch that was not
        // full can have emptied the queue.
        if summary.attempted < self.config.batch_size && self.in_flight.load(Ordering::SeqCst) == 0
        {
            match self.sendable().await {
                Ok(0) if self.in_flight.load(Ordering::SeqCst) == 0 => {
                    self.emit(WorkerEvent::Drained)
                }
                Ok(_) => {}
                Err(e) => self.storage_failed(&e),
            }
        }
    }
}
