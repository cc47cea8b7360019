//! The invariant checker: what was submitted against what the remote
//! applied, with the semantics of Jepsen's total-queue checker plus
//! ordering, priority, drain time, retry amplification and latency.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::time::Duration;

use cpc_core::{EntityKey, NodeId, Operation, OperationId, OperationPriority};
use serde::{Deserialize, Serialize};

use crate::duration::{format as fmt_d, humane, humane_opt};
use crate::remote::ApplyRecord;

/// What `submit` told the application about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitOutcome {
    /// `submit` returned `Ok`: the engine promised to deliver it.
    Acknowledged,
    /// The outcome is unknown (the engine crashed during the call): it may
    /// or may not have been stored.
    Unknown,
    /// `submit` returned an error: nothing was stored.
    Failed,
}

/// Why the engine legitimately gave up on an acknowledged operation; such an
/// operation is not counted as lost when it was never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Abandoned {
    /// Refused for good by the remote and parked as a dead letter.
    DeadLettered,
    /// A conflict was resolved in favour of the remote version.
    ConflictKeptRemote,
    /// Merged into a later operation of the same entity before it was sent.
    Coalesced,
    /// Dropped by the application (dead-letter drop, drop-entity).
    DroppedByApp,
}

/// One operation as the application submitted it. The checker reads
/// submission order from the order of the slice it is given (per device and
/// entity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedRecord {
    /// The operation.
    pub op_id: OperationId,
    /// The record it touches.
    pub entity: EntityKey,
    /// Its priority.
    pub priority: OperationPriority,
    /// The device (node of its timestamp).
    pub node: NodeId,
    /// When `submit` was called, since the start of the run.
    #[serde(with = "humane")]
    pub submitted_at: Duration,
    /// When it became eligible to send (default: `submitted_at`; later if
    /// the application held it back). The checker further delays it until
    /// the previous operation of its entity was applied.
    #[serde(with = "humane")]
    pub ready_at: Duration,
    /// What `submit` answered.
    pub outcome: SubmitOutcome,
    /// When the transport first saw it (see
    /// [`FaultyTransport::first_attempt`](crate::FaultyTransport::first_attempt)).
    /// Without it the first apply stands in, and an operation backing off
    /// after a failed attempt looks "ready and passed over" to the
    /// priority-inversion check.
    #[serde(default, with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<Duration>,
    /// When the client learned it was delivered (an `Applied` or
    /// `AlreadyApplied` answer reached it). The next operation of its
    /// entity becomes ready only then; without it the first apply stands
    /// in, which is too early when acks are lost.
    #[serde(default, with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Duration>,
    /// Set when the engine legitimately gave up on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<Abandoned>,
    /// Where it still was in the device's queue when the run ended, if it
    /// was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_in_queue: Option<QueueEnd>,
    /// Its conflict was settled by a merge: what the remote applied is the
    /// merged value, not the operation as submitted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merged: bool,
}

/// Where an operation still in its device's queue at the end of a run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueEnd {
    /// Still to be sent (ready, in flight or waiting for a retry).
    Pending,
    /// Parked after a conflict, for the application to settle.
    Deferred,
    /// A dead letter.
    Dead,
}

/// What became of every submitted operation: each is counted in exactly
/// one field, so the fields add up to the submitted count (the checker
/// fails a run where they do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fates {
    /// Applied by the remote as submitted.
    pub applied: u64,
    /// Applied as the merge of a conflict.
    pub merged: u64,
    /// Not applied: a conflict was resolved in favour of the remote's
    /// version (the edit lost, and was logged).
    pub superseded: u64,
    /// A dead letter the remote refused for good.
    pub rejected: u64,
    /// A dead letter the remote never refused: the engine gave up on
    /// failures that said nothing about the operation. Fails the run.
    pub exhausted: u64,
    /// Parked after a conflict for the application to settle.
    pub deferred: u64,
    /// Dropped by the application, or merged into a later operation
    /// before it was sent.
    pub dropped: u64,
    /// Still queued when the run ended: not drained in time. Fails the run.
    pub pending: u64,
    /// `submit` failed: never accepted.
    pub submit_failed: u64,
    /// The engine crashed during `submit` and it was not stored.
    pub not_stored: u64,
    /// Acknowledged and found nowhere: neither applied nor in the queue nor
    /// given up for a reason. Fails the run.
    pub lost: u64,
}

impl Fates {
    /// The fields that are not zero, `name count` each (`applied 0` when
    /// all are).
    pub fn describe(&self) -> String {
        let fields = [
            ("applied", self.applied),
            ("merged", self.merged),
            ("superseded", self.superseded),
            ("rejected", self.rejected),
            ("exhausted", self.exhausted),
            ("deferred", self.deferred),
            ("dropped", self.dropped),
            ("pending", self.pending),
            ("submit_failed", self.submit_failed),
            ("not_stored", self.not_stored),
            ("lost", self.lost),
        ];
        let shown: Vec<String> = fields
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if shown.is_empty() {
            "applied 0".to_owned()
        } else {
            shown.join(" ")
        }
    }

    /// Every field added up: the number of operations counted.
    pub fn total(&self) -> u64 {
        self.applied
            + self.merged
            + self.superseded
            + self.dead()
            + self.pending
            + self.unsent()
            + self.lost
    }

    /// Parked dead or deferred: rejected + exhausted + deferred.
    pub fn dead(&self) -> u64 {
        self.rejected + self.exhausted + self.deferred
    }

    /// Never reached the remote for a reason the application knows:
    /// submit failed, not stored at a crash, dropped or coalesced.
    pub fn unsent(&self) -> u64 {
        self.submit_failed + self.not_stored + self.dropped
    }
}

/// Conflicts a device's engine resolved, by resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConflictCounts {
    /// Resolved for the local version (resent).
    pub keep_local: u64,
    /// Resolved for the remote's version (the local edit lost).
    pub keep_remote: u64,
    /// Merged.
    pub merged: u64,
    /// Parked for the application.
    pub deferred: u64,
}

/// One device's share of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device (its node id less one: `Scenario::node`).
    pub device: u64,
    /// What became of its operations.
    pub fates: Fates,
    /// The conflicts its engine resolved.
    pub conflicts: ConflictCounts,
}

/// Latency of one priority's operations, submit to first apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityLatency {
    /// The priority.
    pub priority: OperationPriority,
    /// Operations of it applied.
    pub applied: u64,
    /// Median.
    #[serde(rename = "p50_ms", with = "millis_opt")]
    pub p50: Option<Duration>,
    /// 99th percentile.
    #[serde(rename = "p99_ms", with = "millis_opt")]
    pub p99: Option<Duration>,
}

impl SubmittedRecord {
    /// A record of `op` submitted at `submitted_at` with `outcome`.
    pub fn new(op: &Operation, submitted_at: Duration, outcome: SubmitOutcome) -> Self {
        SubmittedRecord {
            op_id: op.id,
            entity: op.entity.clone(),
            priority: op.priority,
            node: op.timestamp.node,
            submitted_at,
            ready_at: submitted_at,
            outcome,
            first_attempt_at: None,
            acked_at: None,
            abandoned: None,
            left_in_queue: None,
            merged: false,
        }
    }
}

/// The bounds a run must stay within, beyond the invariants that must
/// always hold (nothing lost, unexpected, duplicated or reordered).
///
/// In a scenario file this is the `[expect]` table:
/// ```toml
/// [expect]
/// max_drain_after_heal = "2m"
/// max_retry_amplification = 3.0
/// max_p99_latency = "15m"
/// max_priority_inversions = 0
/// inversion_tolerance = "1s"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpectedBounds {
    /// Longest time from the last outage's end to the last apply.
    #[serde(with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub max_drain_after_heal: Option<Duration>,
    /// Largest transport calls per submitted operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retry_amplification: Option<f64>,
    /// Largest 99th percentile submit→applied latency.
    #[serde(with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub max_p99_latency: Option<Duration>,
    /// Most priority inversions tolerated (default 0).
    pub max_priority_inversions: u64,
    /// How long a higher-priority operation may be ready and unsent while
    /// lower-priority work goes out before it counts as an inversion: one
    /// batch interval of the engine (default 1s).
    #[serde(with = "humane")]
    pub inversion_tolerance: Duration,
    /// The engine's aging period, if aging is on: an operation waiting this
    /// long since its submission is promoted one level (once), so passing
    /// over it is no inversion.
    #[serde(with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub aging_after: Option<Duration>,
}

impl Default for ExpectedBounds {
    fn default() -> Self {
        ExpectedBounds {
            max_drain_after_heal: None,
            max_retry_amplification: None,
            max_p99_latency: None,
            max_priority_inversions: 0,
            inversion_tolerance: Duration::from_secs(1),
            aging_after: None,
        }
    }
}

/// What the checker needs besides the two logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckOptions {
    /// Scenario name, printed in the report.
    pub scenario: String,
    /// Seed of the run, printed first in the report.
    pub seed: u64,
    /// When the last scheduled outage ended (see
    /// [`Schedule::last_outage_end`](crate::Schedule::last_outage_end)).
    pub last_outage_end: Option<Duration>,
    /// Transport calls made (see [`FaultCounters::calls`](crate::FaultCounters)).
    pub transport_calls: Option<u64>,
    /// Operations handed to the transport, counting resends.
    pub ops_sent: Option<u64>,
    /// Bounds to enforce.
    pub bounds: ExpectedBounds,
    /// How many op ids each violation lists (the counts are always
    /// complete); 0 means the default of 20.
    pub max_listed: usize,
    /// Conflicts each device's engine resolved, by node id (from its
    /// conflict log), for the per-device summary.
    pub conflicts: std::collections::BTreeMap<NodeId, ConflictCounts>,
}

/// A count with the first few op ids involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed<T> {
    /// How many in total.
    pub count: u64,
    /// The first ones, in a deterministic order.
    pub listed: Vec<T>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            count: 0,
            listed: Vec::new(),
        }
    }
}

impl<T> Listed<T> {
    fn push(&mut self, item: T, max: usize) {
        self.count += 1;
        if self.listed.len() < max {
            self.listed.push(item);
        }
    }
}

/// An operation applied more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    /// The operation.
    pub op_id: OperationId,
    /// How many times it was applied.
    pub applies: u64,
}

/// An operation applied after a later-submitted one of the same entity and
/// device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reorder {
    /// The record.
    pub entity: EntityKey,
    /// The operation applied too late.
    pub op_id: OperationId,
    /// The later-submitted operation applied before it.
    pub applied_after: OperationId,
}

/// A lower-priority operation sent while a higher-priority one of another
/// entity on the same device had been ready for longer than the tolerance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inversion {
    /// The operation sent too early.
    pub lower: OperationId,
    /// Its priority.
    pub lower_priority: OperationPriority,
    /// The operation passed over.
    pub higher: OperationId,
    /// Its priority.
    pub higher_priority: OperationPriority,
    /// When the lower one was sent.
    #[serde(rename = "at_ms", with = "millis")]
    pub at: Duration,
    /// Since when the higher one had been ready.
    #[serde(rename = "higher_ready_since_ms", with = "millis")]
    pub higher_ready_since: Duration,
}

/// The verdict of one run. [`InvariantReport::to_text`] is stable (same
/// input, same bytes) and prints the seed first; the serde form is the JSON
/// one, durations in milliseconds (`*_ms` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantReport {
    /// Seed of the run.
    pub seed: u64,
    /// Scenario name.
    pub scenario: String,
    /// Operations submitted (all outcomes).
    pub submitted: u64,
    /// Of which `submit` returned `Ok`.
    pub acknowledged: u64,
    /// Of which the outcome is unknown.
    pub unknown: u64,
    /// Of which `submit` failed.
    pub failed: u64,
    /// Distinct submitted operations applied at least once.
    pub applied: u64,
    /// Entries in the apply log.
    pub applies: u64,
    /// Acknowledged, never applied, legitimately given up (dead letters,
    /// conflicts kept remote, coalesced).
    pub abandoned: u64,
    /// What became of every operation; the fields add up to `submitted`.
    pub fates: Fates,
    /// Per device: fates and conflicts, in device order.
    pub by_device: Vec<DeviceSummary>,
    /// Acknowledged and found nowhere (not applied, not in the queue, not
    /// given up for a reason). Must be 0.
    pub lost: Listed<OperationId>,
    /// Applied but never submitted, or applied although `submit` failed.
    /// Must be 0.
    pub unexpected: Listed<OperationId>,
    /// Applied more than once. Must be 0 (with dedupe on).
    pub duplicated: Listed<Duplicate>,
    /// Applied out of submission order within a device and entity: any
    /// apply of an operation (a stale resend too) after the first apply of
    /// a later one. Must be 0.
    pub reordered: Listed<Reorder>,
    /// Priority inversions; at most the bound (default 0).
    pub priority_inversions: Listed<Inversion>,
    /// Outcome unknown yet applied: allowed, counted.
    pub recovered: Listed<OperationId>,
    /// Outcome unknown and never applied: allowed, counted.
    pub unknown_unapplied: u64,
    /// Transport calls made, if known.
    pub transport_calls: Option<u64>,
    /// Operations handed to the transport (with resends), if known.
    pub ops_sent: Option<u64>,
    /// Transport calls per submitted operation (not counting failed submits).
    pub retry_amplification: Option<f64>,
    /// Operations sent per submitted operation: 1.0 means nothing resent.
    pub send_amplification: Option<f64>,
    /// Median submit→first-apply latency, simulated time.
    #[serde(rename = "latency_p50_ms", with = "millis_opt")]
    pub latency_p50: Option<Duration>,
    /// 99th percentile submit→first-apply latency.
    #[serde(rename = "latency_p99_ms", with = "millis_opt")]
    pub latency_p99: Option<Duration>,
    /// Largest submit→first-apply latency.
    #[serde(rename = "latency_max_ms", with = "millis_opt")]
    pub latency_max: Option<Duration>,
    /// Latency by priority, highest first (priorities with no operation
    /// left out).
    pub latency_by_priority: Vec<PriorityLatency>,
    /// When the last first-apply happened.
    #[serde(rename = "drained_at_ms", with = "millis_opt")]
    pub drained_at: Option<Duration>,
    /// When the last outage ended.
    #[serde(rename = "last_outage_end_ms", with = "millis_opt")]
    pub last_outage_end: Option<Duration>,
    /// From the last outage's end until every operation still unapplied
    /// at that moment was applied (the last first-apply among them; 0 if
    /// nothing was waiting at the heal). Operations submitted after the
    /// heal do not count.
    #[serde(rename = "drain_after_heal_ms", with = "millis_opt")]
    pub drain_after_heal: Option<Duration>,
    /// Bounds exceeded, one sentence each.
    pub bound_failures: Vec<String>,
    /// True when every invariant holds and every bound is met.
    pub passed: bool,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(cpc_core::millis(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod millis_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&cpc_core::millis(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Checks `apply_log` against `submitted` with default options (no seed, no
/// outage, no bounds beyond zero priority inversions).
pub fn check(apply_log: &[ApplyRecord], submitted: &[SubmittedRecord]) -> InvariantReport {
    check_with(apply_log, submitted, &CheckOptions::default())
}

#[derive(Debug, Clone, Copy, Default)]
struct ApplyInfo {
    count: u64,
    /// Position of the first apply in the log, and its time.
    first: Option<(usize, Duration)>,
    /// Position of the last apply (a resend applied again).
    last: usize,
}

/// Checks `apply_log` (in apply order) against `submitted` (in submission
/// order per device and entity).
///
/// - **lost**: acknowledged, not abandoned, never applied;
/// - **unexpected**: applied but never submitted, or submitted with a failed
///   `submit`;
/// - **recovered**: outcome unknown, applied (allowed);
/// - **duplicated**: applied more than once;
/// - **reordered**: within one device and entity, first applies out of
///   submission order;
/// - **priority inversions**: on one device, a lower-priority operation sent
///   (first attempt, else first apply) while a higher-priority operation of
///   another entity had been ready for longer than
///   [`ExpectedBounds::inversion_tolerance`] and not yet sent. "Ready" starts
///   at `ready_at`, and not before the previous operation of its entity was
///   acknowledged (`acked_at`, else its first apply); with aging, the lower operation's priority is raised one level
///   once it has waited `aging_after` since it was submitted (the storage's
///   rule: one promotion, counted from submission).
pub fn check_with(
    apply_log: &[ApplyRecord],
    submitted: &[SubmittedRecord],
    options: &CheckOptions,
) -> InvariantReport {
    let max_listed = if options.max_listed == 0 {
        20
    } else {
        options.max_listed
    };
    let mut index: HashMap<OperationId, usize> = HashMap::with_capacity(submitted.len());
    for (i, rec) in submitted.iter().enumerate() {
        index.entry(rec.op_id).or_insert(i);
    }

    let mut unexpected = Listed::default();
    let mut info = vec![ApplyInfo::default(); submitted.len()];
    for (pos, rec) in apply_log.iter().enumerate() {
        match index.get(&rec.op_id) {
            Some(&i) => {
                let slot = &mut info[i];
                slot.count += 1;
                if slot.first.is_none() {
                    slot.first = Some((pos, rec.at));
                }
                slot.last = pos;
            }
            None => unexpected.push(rec.op_id, max_listed),
        }
    }

    let mut report = InvariantReport {
        seed: options.seed,
        scenario: options.scenario.clone(),
        submitted: submitted.len() as u64,
        acknowledged: 0,
        unknown: 0,
        failed: 0,
        applied: 0,
        applies: apply_log.len() as u64,
        abandoned: 0,
        fates: Fates::default(),
        by_device: Vec::new(),
        lost: Listed::default(),
        unexpected,
        duplicated: Listed::default(),
        reordered: Listed::default(),
        priority_inversions: Listed::default(),
        recovered: Listed::default(),
        unknown_unapplied: 0,
        transport_calls: options.transport_calls,
        ops_sent: options.ops_sent,
        retry_amplification: None,
        send_amplification: None,
        latency_p50: None,
        latency_p99: None,
        latency_max: None,
        latency_by_priority: Vec::new(),
        drained_at: None,
        last_outage_end: options.last_outage_end,
        drain_after_heal: None,
        bound_failures: Vec::new(),
        passed: false,
    };

    let mut latencies: Vec<Duration> = Vec::new();
    let mut by_priority: [Vec<Duration>; 4] = Default::default();
    let mut devices: std::collections::BTreeMap<NodeId, Fates> = Default::default();
    let heal = options.last_outage_end;
    let mut drained_after_heal: Option<Duration> = None;
    for (rec, inf) in submitted.iter().zip(&info) {
        match rec.outcome {
            SubmitOutcome::Acknowledged => report.acknowledged += 1,
            SubmitOutcome::Unknown => report.unknown += 1,
            SubmitOutcome::Failed => report.failed += 1,
        }
        let fate = fate_of(rec, inf);
        fate(&mut report.fates);
        fate(devices.entry(rec.node).or_default());
        match inf.first {
            None => match (rec.outcome, rec.abandoned) {
                (SubmitOutcome::Failed, _) => {}
                (_, Some(_)) => report.abandoned += 1,
                (SubmitOutcome::Acknowledged, None) => {
                    if rec.left_in_queue.is_none() {
                        report.lost.push(rec.op_id, max_listed);
                    }
                }
                (SubmitOutcome::Unknown, None) => report.unknown_unapplied += 1,
            },
            Some((_, at)) => {
                if let Some(heal) = heal {
                    // Waiting at the heal: submitted before it, applied after.
                    if rec.submitted_at <= heal && at > heal {
                        drained_after_heal = drained_after_heal.max(Some(at));
                    }
                }
                by_priority[usize::from(rec.priority.rank())]
                    .push(at.saturating_sub(rec.submitted_at));
                report.applied += 1;
                match rec.outcome {
                    SubmitOutcome::Failed => report.unexpected.push(rec.op_id, max_listed),
                    SubmitOutcome::Unknown => report.recovered.push(rec.op_id, max_listed),
                    SubmitOutcome::Acknowledged => {}
                }
                if inf.count > 1 {
                    report.duplicated.push(
                        Duplicate {
                            op_id: rec.op_id,
                            applies: inf.count,
                        },
                        max_listed,
                    );
                }
                latencies.push(at.saturating_sub(rec.submitted_at));
                report.drained_at = Some(report.drained_at.map_or(at, |d: Duration| d.max(at)));
            }
        }
    }

    let groups = entity_groups(submitted);
    check_order(submitted, &info, &groups, max_listed, &mut report);
    check_priorities(submitted, &info, &groups, options, max_listed, &mut report);

    latencies.sort_unstable();
    report.latency_p50 = percentile(&latencies, 0.50);
    report.latency_p99 = percentile(&latencies, 0.99);
    report.latency_max = latencies.last().copied();
    for (rank, mut lat) in by_priority.into_iter().enumerate().rev() {
        if lat.is_empty() {
            continue;
        }
        lat.sort_unstable();
        report.latency_by_priority.push(PriorityLatency {
            priority: OperationPriority::from_rank(rank as u8).unwrap_or_default(),
            applied: lat.len() as u64,
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
        });
    }
    report.by_device = devices
        .into_iter()
        .map(|(node, fates)| DeviceSummary {
            device: node.0.saturating_sub(1),
            fates,
            conflicts: options.conflicts.get(&node).copied().unwrap_or_default(),
        })
        .collect();

    let denominator = report.submitted - report.failed;
    if denominator > 0 {
        report.retry_amplification = options
            .transport_calls
            .map(|c| c as f64 / denominator as f64);
        report.send_amplification = options.ops_sent.map(|c| c as f64 / denominator as f64);
    }
    if let Some(heal) = heal {
        report.drain_after_heal = Some(drained_after_heal.map_or(Duration::ZERO, |d| d - heal));
    }

    let bounds = &options.bounds;
    if let (Some(max), Some(got)) = (bounds.max_drain_after_heal, report.drain_after_heal) {
        if got > max {
            report.bound_failures.push(format!(
                "drain after heal {} exceeds {}",
                fmt_d(got),
                fmt_d(max)
            ));
        }
    }
    if let (Some(max), Some(got)) = (bounds.max_retry_amplification, report.retry_amplification) {
        if got > max {
            report
                .bound_failures
                .push(format!("retry amplification {got:.3} exceeds {max:.3}"));
        }
    }
    if let (Some(max), Some(got)) = (bounds.max_p99_latency, report.latency_p99) {
        if got > max {
            report.bound_failures.push(format!(
                "p99 latency {} exceeds {}",
                fmt_d(got),
                fmt_d(max)
            ));
        }
    }
    if report.priority_inversions.count > bounds.max_priority_inversions {
        report.bound_failures.push(format!(
            "{} priority inversions exceed {}",
            report.priority_inversions.count, bounds.max_priority_inversions
        ));
    }
    let fates = report.fates;
    if fates.total() != report.submitted {
        report.bound_failures.push(format!(
            "the fates add up to {} of {} submitted operations",
            fates.total(),
            report.submitted
        ));
    }
    if fates.pending > 0 {
        report.bound_failures.push(format!(
            "{} operations still queued when the run ended (not drained in time)",
            fates.pending
        ));
    }
    if fates.exhausted > 0 {
        report.bound_failures.push(format!(
            "{} dead letters the remote never refused (given up on failures that said \
             nothing about the operation)",
            fates.exhausted
        ));
    }
    report.passed = report.lost.count == 0
        && report.unexpected.count == 0
        && report.duplicated.count == 0
        && report.reordered.count == 0
        && report.bound_failures.is_empty();
    report
}

/// The one fate of an operation, as the counter it increments: applied
/// first (as submitted or merged), then the reasons it legitimately was
/// not, then where it was left, and lost when it is nowhere.
fn fate_of(rec: &SubmittedRecord, inf: &ApplyInfo) -> fn(&mut Fates) {
    if inf.first.is_some() {
        return if rec.merged {
            |f| f.merged += 1
        } else {
            |f| f.applied += 1
        };
    }
    match (rec.outcome, rec.abandoned, rec.left_in_queue) {
        (SubmitOutcome::Failed, _, _) => |f| f.submit_failed += 1,
        (_, Some(Abandoned::ConflictKeptRemote), _) => |f| f.superseded += 1,
        (_, Some(Abandoned::DeadLettered), _) => |f| f.rejected += 1,
        (_, Some(Abandoned::Coalesced | Abandoned::DroppedByApp), _) => |f| f.dropped += 1,
        (_, None, Some(QueueEnd::Dead)) => |f| f.exhausted += 1,
        (_, None, Some(QueueEnd::Deferred)) => |f| f.deferred += 1,
        (_, None, Some(QueueEnd::Pending)) => |f| f.pending += 1,
        (SubmitOutcome::Unknown, None, None) => |f| f.not_stored += 1,
        (SubmitOutcome::Acknowledged, None, None) => |f| f.lost += 1,
    }
}

/// Submitted indices grouped by (device, entity), in submission order.
fn entity_groups(submitted: &[SubmittedRecord]) -> Vec<Vec<usize>> {
    let mut by_key: HashMap<(NodeId, &EntityKey), usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, rec) in submitted.iter().enumerate() {
        let g = *by_key.entry((rec.node, &rec.entity)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

fn check_order(
    submitted: &[SubmittedRecord],
    info: &[ApplyInfo],
    groups: &[Vec<usize>],
    max_listed: usize,
    report: &mut InvariantReport,
) {
    let mut found: Vec<(usize, Reorder)> = Vec::new();
    for group in groups {
        // An operation is reordered when any of its applies (its last is
        // enough: a stale resend applied again counts) comes after the
        // first apply of an operation submitted after it. Walk the group
        // from its last member back, keeping the earliest first apply of
        // the members after the current one.
        let mut earliest_later: Option<(usize, usize)> = None; // (position, rank)
        for (rank, &i) in group.iter().enumerate().rev() {
            let inf = &info[i];
            if let Some((first_pos, _)) = inf.first {
                if let Some((later_pos, later_rank)) = earliest_later {
                    if later_pos < inf.last {
                        let rec = &submitted[i];
                        found.push((
                            inf.last,
                            Reorder {
                                entity: rec.entity.clone(),
                                op_id: rec.op_id,
                                applied_after: submitted[group[later_rank]].op_id,
                            },
                        ));
                    }
                }
                if earliest_later.is_none_or(|(pos, _)| first_pos < pos) {
                    earliest_later = Some((first_pos, rank));
                }
            }
        }
    }
    // List in apply order, whatever the grouping's iteration order.
    found.sort_by_key(|(pos, _)| *pos);
    for (_, r) in found {
        report.reordered.push(r, max_listed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    // At equal times: an operation sent in the same instant as the lower one
    // is no inversion, so leaving comes first; becoming overdue exactly at
    // the tolerance is not "longer than", so entering comes last.
    Leave,
    Check,
    Enter,
}

fn check_priorities(
    submitted: &[SubmittedRecord],
    info: &[ApplyInfo],
    groups: &[Vec<usize>],
    options: &CheckOptions,
    max_listed: usize,
    report: &mut InvariantReport,
) {
    let tolerance = options.bounds.inversion_tolerance;
    // Effective readiness: not before `ready_at`, and not before the
    // previous live operation of the entity was acknowledged to the client
    // (else applied): only the head of an entity is claimable. A
    // predecessor never applied keeps it unready.
    let mut ready: Vec<Option<Duration>> = submitted.iter().map(|r| Some(r.ready_at)).collect();
    for group in groups {
        let mut prev: Option<usize> = None;
        for &i in group {
            let rec = &submitted[i];
            if rec.outcome == SubmitOutcome::Failed || rec.abandoned == Some(Abandoned::Coalesced) {
                ready[i] = None;
                continue;
            }
            if let Some(p) = prev {
                let done = submitted[p].acked_at.or(info[p].first.map(|(_, at)| at));
                ready[i] = match done {
                    Some(at) => ready[i].map(|r| r.max(at)),
                    None => None,
                };
            }
            prev = Some(i);
        }
    }
    let attempt: Vec<Option<Duration>> = submitted
        .iter()
        .zip(info)
        .map(|(r, inf)| r.first_attempt_at.or(inf.first.map(|(_, at)| at)))
        .collect();

    let mut events: Vec<(NodeId, Duration, EventKind, usize)> = Vec::new();
    for i in 0..submitted.len() {
        let node = submitted[i].node;
        if let Some(a) = attempt[i] {
            events.push((node, a, EventKind::Check, i));
        }
        if let Some(r) = ready[i] {
            let overdue = r.saturating_add(tolerance);
            if attempt[i].is_none_or(|a| a > overdue) {
                events.push((node, overdue, EventKind::Enter, i));
                if let Some(a) = attempt[i] {
                    events.push((node, a, EventKind::Leave, i));
                }
            }
        }
    }
    events.sort_unstable_by_key(|&(node, at, kind, i)| (node, at, kind, i));

    // Per priority rank, the overdue operations of the current device,
    // oldest-ready first.
    let mut overdue: [BTreeSet<(Duration, usize)>; 4] = Default::default();
    let mut current_node: Option<NodeId> = None;
    let mut found: Vec<Inversion> = Vec::new();
    for &(node, at, kind, i) in &events {
        if current_node != Some(node) {
            overdue.iter_mut().for_each(BTreeSet::clear);
            current_node = Some(node);
        }
        let rec = &submitted[i];
        let rank = usize::from(rec.priority.rank());
        let since = ready[i].unwrap_or(rec.ready_at);
        match kind {
            EventKind::Enter => {
                overdue[rank].insert((since, i));
            }
            EventKind::Leave => {
                overdue[rank].remove(&(since, i));
            }
            EventKind::Check => {
                let mut effective = rank;
                if let Some(aging) = options.bounds.aging_after.filter(|a| !a.is_zero()) {
                    // The engine's rule (cpc-storage): waiting counts from
                    // when the operation was queued, not from when it became
                    // its record's head, and promotes exactly one level.
                    if at.saturating_sub(rec.submitted_at) >= aging {
                        effective = (rank + 1).min(3);
                    }
                }
                'ranks: for higher_rank in (effective + 1..4).rev() {
                    for &(h_since, h) in &overdue[higher_rank] {
                        let higher = &submitted[h];
                        if higher.entity != rec.entity {
                            found.push(Inversion {
                                lower: rec.op_id,
                                lower_priority: rec.priority,
                                higher: higher.op_id,
                                higher_priority: higher.priority,
                                at,
                                higher_ready_since: h_since,
                            });
                            break 'ranks;
                        }
                    }
                }
            }
        }
    }
    found.sort_by_key(|inv| (inv.at, inv.lower));
    for inv in found {
        report.priority_inversions.push(inv, max_listed);
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl InvariantReport {
    /// Number of invariant violations (lost + unexpected + duplicated +
    /// reordered) plus bounds exceeded.
    pub fn failure_count(&self) -> u64 {
        self.lost.count
            + self.unexpected.count
            + self.duplicated.count
            + self.reordered.count
            + self.bound_failures.len() as u64
    }

    /// The JSON form (pretty-printed, keys in a fixed order).
    pub fn to_json(&self) -> String {
        // Serializing plain data to a string cannot fail; fall back to the
        // text form rather than panic if it ever did.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| self.to_text())
    }

    /// The stable text form, seed first.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> fmt::Result {
        let opt = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), fmt_d);
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
        writeln!(out, "seed {}", self.seed)?;
        writeln!(
            out,
            "scenario {}",
            if self.scenario.is_empty() {
                "-"
            } else {
                &self.scenario
            }
        )?;
        writeln!(
            out,
            "submitted {} acknowledged {} unknown {} failed {}",
            self.submitted, self.acknowledged, self.unknown, self.failed
        )?;
        writeln!(
            out,
            "applied {} applies {} abandoned {}",
            self.applied, self.applies, self.abandoned
        )?;
        writeln!(
            out,
            "fates {} (of {} submitted)",
            self.fates.describe(),
            self.submitted
        )?;
        for d in &self.by_device {
            let c = d.conflicts;
            writeln!(
                out,
                "device {}: {}; conflicts keep_local {} keep_remote {} merged {} deferred {}",
                d.device,
                d.fates.describe(),
                c.keep_local,
                c.keep_remote,
                c.merged,
                c.deferred
            )?;
        }
        write_ids(out, "lost", &self.lost)?;
        write_ids(out, "unexpected", &self.unexpected)?;
        write_list(out, "duplicated", &self.duplicated, |d| {
            format!("{} x{}", d.op_id, d.applies)
        })?;
        write_list(out, "reordered", &self.reordered, |r| {
            format!("{} after {} ({})", r.op_id, r.applied_after, r.entity)
        })?;
        write_list(out, "priority_inversions", &self.priority_inversions, |i| {
            format!(
                "{} {} sent at {} while {} {} ready since {}",
                i.lower_priority,
                i.lower,
                fmt_d(i.at),
                i.higher_priority,
                i.higher,
                fmt_d(i.higher_ready_since)
            )
        })?;
        write_ids(out, "recovered", &self.recovered)?;
        writeln!(out, "unknown_unapplied {}", self.unknown_unapplied)?;
        writeln!(
            out,
            "transport_calls {} ops_sent {} retry_amplification {} send_amplification {}",
            self.transport_calls
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            self.ops_sent
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            ratio(self.retry_amplification),
            ratio(self.send_amplification)
        )?;
        writeln!(
            out,
            "latency p50 {} p99 {} max {}",
            opt(self.latency_p50),
            opt(self.latency_p99),
            opt(self.latency_max)
        )?;
        for l in &self.latency_by_priority {
            writeln!(
                out,
                "latency {} ({} applied) p50 {} p99 {}",
                l.priority,
                l.applied,
                opt(l.p50),
                opt(l.p99)
            )?;
        }
        writeln!(
            out,
            "drained_at {} last_outage_end {} drain_after_heal {}",
            opt(self.drained_at),
            opt(self.last_outage_end),
            opt(self.drain_after_heal)
        )?;
        for failure in &self.bound_failures {
            writeln!(out, "bound exceeded: {failure}")?;
        }
        writeln!(out, "verdict {}", if self.passed { "PASS" } else { "FAIL" })
    }
}

fn write_ids(out: &mut String, name: &str, list: &Listed<OperationId>) -> fmt::Result {
    write_list(out, name, list, |id| id.to_string())
}

fn write_list<T>(
    out: &mut String,
    name: &str,
    list: &Listed<T>,
    item: impl Fn(&T) -> String,
) -> fmt::Result {
    write!(out, "{name} {}", list.count)?;
    if !list.listed.is_empty() {
        out.push(':');
        for (i, x) in list.listed.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ", " });
            out.push_str(&item(x));
        }
        let more = list.count - list.listed.len() as u64;
        if more > 0 {
            write!(out, ", and {more} more")?;
        }
    }
    out.push('\n');
    Ok(())
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}
