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

mod records;
mod report;

pub use self::records::*;
pub use self::report::*;

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
        convergence: None,
        coalesced_state: None,
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
        (_, Some(Abandoned::Coalesced), _) => |f| f.coalesced += 1,
        (_, Some(Abandoned::DroppedByApp), _) => |f| f.dropped += 1,
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
