//! What the checker is given: the submitted records, the bounds to
//! enforce and the options of a check.

use super::*;

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
    /// Coalesced before it was sent: merged into a queued operation of the
    /// same entity (which carries it), or cancelled out with one.
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
