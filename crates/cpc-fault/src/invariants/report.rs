//! What the checker answers: the report, the fates, the listed
//! violations, and the report's stable text form.

use super::*;

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
    /// Dropped by the application.
    pub dropped: u64,
    /// Coalesced before it was sent: merged into a queued operation of its
    /// record (which carries it), or cancelled out with one (a create
    /// then a delete).
    #[serde(default)]
    pub coalesced: u64,
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
            ("coalesced", self.coalesced),
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
        self.submit_failed + self.not_stored + self.dropped + self.coalesced
    }
}

impl std::ops::AddAssign for Fates {
    /// Adds every fate of `other` (a total over runs or devices).
    fn add_assign(&mut self, other: Fates) {
        self.applied += other.applied;
        self.merged += other.merged;
        self.superseded += other.superseded;
        self.rejected += other.rejected;
        self.exhausted += other.exhausted;
        self.deferred += other.deferred;
        self.dropped += other.dropped;
        self.coalesced += other.coalesced;
        self.pending += other.pending;
        self.submit_failed += other.submit_failed;
        self.not_stored += other.not_stored;
        self.lost += other.lost;
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
    pub(crate) fn push(&mut self, item: T, max: usize) {
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
    /// Two-way sync: whether every device's sink ended equal to the
    /// remote (runs with `[pull]` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence: Option<Convergence>,
    /// Devices that coalesce: whether the remote holds, for each of their
    /// records, what their last acknowledged edit made of it (runs with
    /// `[harness] coalesce` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesced_state: Option<CoalescedState>,
    /// True when every invariant holds and every bound is met.
    pub passed: bool,
}

/// The remote's state of the coalescing devices' records against their
/// last acknowledged edits: every coalesced edit must ride inside an
/// applied operation of its record, so the remote ends as if each edit
/// had been sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoalescedState {
    /// Records checked.
    pub records: u64,
    /// Records whose remote state differs (`collection/id`).
    pub wrong: Listed<String>,
}

impl CoalescedState {
    /// Counts one checked record, wrong or not.
    pub fn check(&mut self, entity: &EntityKey, right: bool) {
        self.records += 1;
        if !right {
            self.wrong.push(entity.to_string(), 20);
        }
    }
}

/// What the devices' sinks held after quiescence, against the remote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    /// Devices pulling.
    pub devices: u64,
    /// Live records at the remote at the end.
    pub remote_records: u64,
    /// Devices whose sink equals the remote's live state.
    pub converged: u64,
    /// Devices whose sink differs, with how many records differ. Must be
    /// empty.
    pub diverged: Listed<DeviceDiff>,
    /// Devices that had not pulled through the remote's head when the run
    /// ended (a pull loop that stalls). Must be 0.
    pub stalled: u64,
    /// Pages the sinks applied, all devices.
    pub pages: u64,
    /// Snapshots started (first pages), all devices.
    pub resets: u64,
    /// `RemoteRegressed` reports, all devices.
    pub regressions: u64,
    /// Changes the remote lost in a restore.
    pub restore_lost: u64,
}

/// One device whose sink differs from the remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDiff {
    /// The device.
    pub device: u32,
    /// Records held with another version or payload, missing, or extra.
    pub records: u64,
}

impl Convergence {
    /// Every device converged and none stalled.
    pub fn holds(&self) -> bool {
        self.diverged.count == 0 && self.stalled == 0 && self.converged == self.devices
    }
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

impl InvariantReport {
    /// Number of invariant violations (lost + unexpected + duplicated +
    /// reordered) plus bounds exceeded.
    pub fn failure_count(&self) -> u64 {
        self.lost.count
            + self.unexpected.count
            + self.duplicated.count
            + self.reordered.count
            + self.bound_failures.len() as u64
            + self
                .convergence
                .as_ref()
                .map_or(0, |c| c.diverged.count + c.stalled)
            + self.coalesced_state.as_ref().map_or(0, |c| c.wrong.count)
    }

    /// Adds the coalesced-state verdict: the run passes only if no record
    /// is wrong.
    pub fn with_coalesced_state(mut self, state: CoalescedState) -> InvariantReport {
        self.passed &= state.wrong.count == 0;
        self.coalesced_state = Some(state);
        self
    }

    /// Adds the convergence verdict: the run passes only if it holds.
    pub fn with_convergence(mut self, convergence: Convergence) -> InvariantReport {
        self.passed &= convergence.holds();
        self.convergence = Some(convergence);
        self
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
        if let Some(c) = &self.convergence {
            writeln!(
                out,
                "convergence devices {} converged {} stalled {} remote_records {} pages {} resets {} regressions {} restore_lost {}",
                c.devices,
                c.converged,
                c.stalled,
                c.remote_records,
                c.pages,
                c.resets,
                c.regressions,
                c.restore_lost
            )?;
            write_list(out, "diverged", &c.diverged, |d| {
                format!("device {} ({} records)", d.device, d.records)
            })?;
        }
        if let Some(c) = &self.coalesced_state {
            write!(out, "coalesced_state records {} ", c.records)?;
            write_list(out, "wrong", &c.wrong, String::clone)?;
        }
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
