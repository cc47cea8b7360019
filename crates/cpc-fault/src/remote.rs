//! `SimulatedRemote`: an in-memory remote with versions, idempotency,
//! conflict detection, refusals, rate limits, a complete apply log, and a
//! change feed to pull from (`remote/feed.rs`).

mod feed;

pub use feed::RestoreError;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, OpOutcome, Operation, OperationId, OperationKind,
    OperationPriority, PullPage, PullQuery, PushAnswer, PushOutcome, PushQuery, RemoteRecord,
    Transport, TransportError,
};
use serde::{Deserialize, Serialize};

use crate::duration::{humane, humane_opt};
use crate::schedule::Probability;
use cpc_core::SimClock;

/// How the remote behaves. Every switch is explicit; the default is a
/// well-behaved remote (dedupe on, conflicts detected everywhere, nothing
/// refused, no rate limit).
///
/// In a scenario file this is the `[remote]` table:
/// ```toml
/// [remote]
/// dedupe = true
/// conflicts = true
/// conflicts_by_collection = { drafts = false }
/// reject_collections = ["audit"]
/// admission = { rate = 200.0, burst = 200 }
/// op_rate = { rate = 5000.0, burst = 1000, retry_after = "1s" }
/// poison = { fraction = 0.01, key = "operation", salt = 0 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteOptions {
    /// Deduplicate by `OperationId`: a replay answers `AlreadyApplied` with
    /// the version of the first application. Off, a replay is applied again
    /// (and the checker reports a duplicate): this shows what goes wrong
    /// without idempotency.
    pub dedupe: bool,
    /// Answer `Conflict` when an operation's `base_version` is older than
    /// the record's current version (default for every collection).
    pub conflicts: bool,
    /// Per-collection overrides of `conflicts`.
    pub conflicts_by_collection: BTreeMap<String, bool>,
    /// Collections whose operations are refused (`Rejected`).
    pub reject_collections: BTreeSet<String>,
    /// Request admission (token bucket in simulated time): a request beyond
    /// the rate is answered `TransportError::RateLimited` as a whole.
    pub admission: Option<Admission>,
    /// Per-operation rate (token bucket in simulated time): once the bucket
    /// is empty, the rest of the batch is answered `RetryLater`.
    pub op_rate: Option<OpRate>,
    /// A deterministic rule marking some operations as poison: they are
    /// always `Rejected`.
    pub poison: Option<PoisonRule>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            dedupe: true,
            conflicts: true,
            conflicts_by_collection: BTreeMap::new(),
            reject_collections: BTreeSet::new(),
            admission: None,
            op_rate: None,
            poison: None,
        }
    }
}

impl RemoteOptions {
    /// Whether conflicts are detected in `collection`.
    pub fn conflicts_in(&self, collection: &str) -> bool {
        self.conflicts_by_collection
            .get(collection)
            .copied()
            .unwrap_or(self.conflicts)
    }
}

/// Request admission: a token bucket of `burst` tokens refilled at `rate`
/// per second of simulated time; one token per request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// Requests per second admitted in the long run.
    pub rate: f64,
    /// Bucket size: requests admitted at once after a quiet period.
    pub burst: u32,
    /// `Retry-After` sent with the refusal; default: the time until the
    /// next token.
    #[serde(default, with = "humane_opt", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
}

/// Per-operation rate: a token bucket of `burst` tokens refilled at `rate`
/// per second; one token per operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRate {
    /// Operations per second accepted in the long run.
    pub rate: f64,
    /// Bucket size.
    pub burst: u32,
    /// The `after` hint of the `RetryLater` answers.
    #[serde(with = "humane")]
    pub retry_after: Duration,
}

/// What a [`PoisonRule`] hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoisonKey {
    /// Each operation independently (by id): "1% of operations".
    #[default]
    Operation,
    /// Whole entities: every operation of a poisoned entity is refused.
    Entity,
}

/// Marks a deterministic `fraction` of operations (or entities) as poison:
/// the remote always answers them `Rejected`. The choice is a hash of the
/// operation id (or entity key) and `salt`, so it is the same on every run
/// and every replay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoisonRule {
    /// Fraction of operations (or entities) refused.
    pub fraction: Probability,
    /// What is hashed.
    #[serde(default)]
    pub key: PoisonKey,
    /// Changes which ones are chosen.
    #[serde(default)]
    pub salt: u64,
}

impl PoisonRule {
    /// True if `op` is poison under this rule.
    pub fn matches(&self, op: &Operation) -> bool {
        let h = match self.key {
            PoisonKey::Operation => {
                let raw = op.id.as_u128();
                splitmix64((raw as u64) ^ ((raw >> 64) as u64).rotate_left(17) ^ self.salt)
            }
            PoisonKey::Entity => splitmix64(fnv1a(&op.entity.to_key_bytes()) ^ self.salt),
        };
        // The top 53 bits as a uniform number in [0, 1).
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        u < self.fraction.get()
    }
}

/// The splitmix64 mixer: the seeds a run derives from its one seed (kept
/// bit-for-bit, so that a seed replays the same run).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One entry of the apply log: an operation the remote applied (changed
/// state for). Replays answered `AlreadyApplied`, conflicts and refusals are
/// not applies and are only counted in [`RemoteStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRecord {
    /// Per-remote sequence number, from 1, in apply order.
    pub seq: u64,
    /// The request (push call) it arrived in, from 1.
    pub request: u64,
    /// Simulated time of the apply, since the start of the run.
    pub at: Duration,
    /// The operation.
    pub op_id: OperationId,
    /// The record it touched.
    pub entity: EntityKey,
    /// Its priority.
    pub priority: OperationPriority,
    /// The device (node of the operation's timestamp).
    pub node: NodeId,
    /// The record's version after the apply.
    pub version: u64,
}

impl fmt::Display for ApplyRecord {
    /// One stable line: `seq request at_us op_id entity priority node version`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} r{} {}us {} {} {} {} v{}",
            self.seq,
            self.request,
            self.at.as_micros(),
            self.op_id,
            self.entity,
            self.priority,
            self.node,
            self.version
        )
    }
}

/// Renders an apply log as stable text, one [`ApplyRecord`] per line.
pub fn apply_log_text(log: &[ApplyRecord]) -> String {
    let mut out = String::with_capacity(log.len() * 96);
    for r in log {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    out
}

/// Counters of everything the remote answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStats {
    /// Push calls received (admitted or not).
    pub requests: u64,
    /// Requests refused by admission (`RateLimited`).
    pub refused_requests: u64,
    /// Operations received in admitted requests.
    pub operations: u64,
    /// `Applied` answers.
    pub applied: u64,
    /// `AlreadyApplied` answers (replays caught by dedupe).
    pub already_applied: u64,
    /// `Conflict` answers.
    pub conflicts: u64,
    /// `Rejected` answers (rejected collections and poison).
    pub rejected: u64,
    /// `RetryLater` answers (op rate).
    pub retry_later: u64,
}

/// The remote's current state of one record.
#[derive(Clone, PartialEq, Eq)]
struct EntityState {
    /// The change-log row that wrote it (0: seeded outside the feed).
    seq: u64,
    version: u64,
    timestamp: HlcTimestamp,
    node: NodeId,
    payload: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Duration,
}

impl Bucket {
    fn full(burst: u32, now: Duration) -> Self {
        Bucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: u32, now: Duration) {
        let dt = now.saturating_sub(self.updated).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(f64::from(burst));
        self.updated = now;
    }

    /// Time until one token is available.
    fn wait_for_token(&self, rate: f64) -> Duration {
        if self.tokens >= 1.0 || rate <= 0.0 {
            return Duration::ZERO;
        }
        // Checked: a tiny rate must not panic; clamped to the longest run.
        Duration::try_from_secs_f64((1.0 - self.tokens) / rate)
            .unwrap_or(crate::schedule::MAX_DURATION)
            .min(crate::schedule::MAX_DURATION)
    }
}

struct RemoteState {
    options: RemoteOptions,
    clock: SimClock,
    entities: BTreeMap<EntityKey, EntityState>,
    /// Operation → (version, change-log seq) of its first application.
    applied: HashMap<OperationId, (u64, u64)>,
    feed: feed::Feed,
    history_refusals: u64,
    restore_losses: u64,
    log: Vec<ApplyRecord>,
    seq: u64,
    stats: RemoteStats,
    admission: Option<Bucket>,
    op_bucket: Option<Bucket>,
}

/// An in-memory remote implementing [`Transport`].
///
/// Per record it keeps the current version (from 1, +1 per apply), the HLC
/// timestamp and node of the last writer, and the payload (`None` once
/// deleted). It applies a batch in order, one outcome per operation, and
/// logs every apply with its simulated time (see [`ApplyRecord`]).
///
/// Checks, per operation, in this order: dedupe (a known id answers
/// `AlreadyApplied` with its first version), rejected collection, poison,
/// op rate (`RetryLater` for the rest of the batch once exhausted), conflict
/// (`base_version` is `Some` and older than the current version), then
/// apply. Request admission is checked before any of it, for the whole call.
///
/// The handle is cheap to clone; clones share the state, so a test keeps one
/// to read the log while the engine owns another.
#[derive(Clone)]
pub struct SimulatedRemote {
    state: Arc<Mutex<RemoteState>>,
    /// The device this handle pulls for (see [`as_client`](Self::as_client)).
    client: Option<NodeId>,
}

impl fmt::Debug for SimulatedRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimulatedRemote")
            .field("entities", &s.entities.len())
            .field("applies", &s.log.len())
            .field("stats", &s.stats)
            .finish()
    }
}

impl Default for SimulatedRemote {
    fn default() -> Self {
        SimulatedRemote::new(RemoteOptions::default(), SimClock::start_now())
    }
}

impl SimulatedRemote {
    /// A remote with `options`, timing its log on `clock`.
    pub fn new(options: RemoteOptions, clock: SimClock) -> Self {
        let now = clock.elapsed();
        let admission = options.admission.map(|a| Bucket::full(a.burst, now));
        let op_bucket = options.op_rate.map(|r| Bucket::full(r.burst, now));
        SimulatedRemote {
            state: Arc::new(Mutex::new(RemoteState {
                options,
                clock,
                entities: BTreeMap::new(),
                applied: HashMap::new(),
                feed: feed::Feed::default(),
                history_refusals: 0,
                restore_losses: 0,
                log: Vec::new(),
                seq: 0,
                stats: RemoteStats::default(),
                admission,
                op_bucket,
            })),
            client: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, RemoteState> {
        // The state is only mutated by `apply_batch`, which cannot panic
        // half-way through an update, so a poisoned lock holds consistent
        // data and is safe to reuse.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current options.
    pub fn options(&self) -> RemoteOptions {
        self.lock().options.clone()
    }

    /// Changes the options mid-run (e.g. start rejecting a collection).
    /// Rate buckets are reset to full when their settings change.
    pub fn update_options(&self, change: impl FnOnce(&mut RemoteOptions)) {
        let mut s = self.lock();
        let before = (s.options.admission, s.options.op_rate);
        change(&mut s.options);
        let now = s.clock.elapsed();
        if before.0 != s.options.admission {
            s.admission = s.options.admission.map(|a| Bucket::full(a.burst, now));
        }
        if before.1 != s.options.op_rate {
            s.op_bucket = s.options.op_rate.map(|r| Bucket::full(r.burst, now));
        }
    }

    /// A copy of the apply log.
    pub fn apply_log(&self) -> Vec<ApplyRecord> {
        self.lock().log.clone()
    }

    /// Runs `f` on the apply log without copying it.
    pub fn with_apply_log<R>(&self, f: impl FnOnce(&[ApplyRecord]) -> R) -> R {
        f(&self.lock().log)
    }

    /// Number of applies so far.
    pub fn apply_count(&self) -> usize {
        self.lock().log.len()
    }

    /// The counters.
    pub fn stats(&self) -> RemoteStats {
        self.lock().stats.clone()
    }

    /// The remote's current record for `entity` (`payload: None` once
    /// deleted), or `None` if it was never written.
    pub fn record(&self, entity: &EntityKey) -> Option<RemoteRecord> {
        self.lock().entities.get(entity).map(|e| RemoteRecord {
            version: e.version,
            timestamp: e.timestamp,
            payload: e.payload.clone(),
            node: e.node,
        })
    }

    /// The version the first application of `id` produced, if applied.
    pub fn applied_version(&self, id: OperationId) -> Option<u64> {
        self.lock().applied.get(&id).map(|a| a.0)
    }

    /// Writes a record directly, as another client of the remote would
    /// (for conflict tests). Not logged as an apply.
    pub fn seed_record(&self, entity: EntityKey, record: RemoteRecord) {
        self.lock().entities.insert(
            entity,
            EntityState {
                seq: 0,
                version: record.version,
                timestamp: record.timestamp,
                node: record.node,
                payload: record.payload,
            },
        );
    }

    /// Applies a batch synchronously (what [`Transport::push`] does).
    pub fn apply_batch(&self, batch: &[Operation]) -> Result<Vec<PushOutcome>, TransportError> {
        Ok(self
            .apply_answer(batch)?
            .into_iter()
            .map(|o| o.outcome)
            .collect())
    }

    /// [`apply_batch`](Self::apply_batch) answered as [`Transport::push`]
    /// does: each outcome names its operation and, when applied, its seq.
    pub fn apply_answer(&self, batch: &[Operation]) -> Result<Vec<OpOutcome>, TransportError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let now = s.clock.elapsed();
        s.stats.requests += 1;
        let request = s.stats.requests;
        if let (Some(adm), Some(bucket)) = (s.options.admission, s.admission.as_mut()) {
            bucket.refill(adm.rate, adm.burst, now);
            if bucket.tokens < 1.0 {
                s.stats.refused_requests += 1;
                let retry_after = adm
                    .retry_after
                    .unwrap_or_else(|| bucket.wait_for_token(adm.rate));
                tracing::trace!(request, "simulated remote refused request (admission)");
                return Err(TransportError::RateLimited {
                    retry_after: Some(retry_after),
                });
            }
            bucket.tokens -= 1.0;
        }
        if let (Some(rate), Some(bucket)) = (s.options.op_rate, s.op_bucket.as_mut()) {
            bucket.refill(rate.rate, rate.burst, now);
        }
        s.stats.operations += batch.len() as u64;
        let mut out = Vec::with_capacity(batch.len());
        let mut throttled = false;
        for op in batch {
            let (outcome, seq) = s.apply_one(op, now, request, &mut throttled);
            let mut answer = OpOutcome::new(op.id, outcome);
            answer.seq = seq;
            out.push(answer);
        }
        tracing::trace!(
            request,
            ops = batch.len(),
            applies = s.log.len(),
            "simulated remote answered"
        );
        Ok(out)
    }
}

impl RemoteState {
    fn apply_one(
        &mut self,
        op: &Operation,
        now: Duration,
        request: u64,
        throttled: &mut bool,
    ) -> (PushOutcome, Option<u64>) {
        if self.options.dedupe {
            if let Some(&(version, seq)) = self.applied.get(&op.id) {
                self.stats.already_applied += 1;
                return (PushOutcome::AlreadyApplied { version }, Some(seq));
            }
        }
        if self
            .options
            .reject_collections
            .contains(&op.entity.collection)
        {
            self.stats.rejected += 1;
            return (
                PushOutcome::Rejected {
                    reason: format!("collection {} is not accepted", op.entity.collection),
                },
                None,
            );
        }
        if let Some(rule) = self.options.poison {
            if rule.matches(op) {
                self.stats.rejected += 1;
                return (
                    PushOutcome::Rejected {
                        reason: "operation refused by validation (poison)".to_owned(),
                    },
                    None,
                );
            }
        }
        if let (Some(rate), Some(bucket)) = (self.options.op_rate, self.op_bucket.as_mut()) {
            // Once the bucket runs dry the rest of the batch waits too, so a
            // batch is always applied as a prefix, like a real remote that
            // stops processing when it sheds load.
            if *throttled || bucket.tokens < 1.0 {
                *throttled = true;
                self.stats.retry_later += 1;
                return (
                    PushOutcome::RetryLater {
                        after: Some(rate.retry_after),
                    },
                    None,
                );
            }
            bucket.tokens -= 1.0;
        }
        let current = self.entities.get(&op.entity);
        // The server's rule (cpc_remote::rules): any base other than the
        // stored version conflicts, an absent entity being version 0.
        let current_version = current.map_or(0, |c| c.version);
        if cpc_remote::rules::conflicts(op.base_version, current_version)
            && self.options.conflicts_in(&op.entity.collection)
        {
            self.stats.conflicts += 1;
            let remote = match current {
                Some(cur) => RemoteRecord {
                    version: cur.version,
                    timestamp: cur.timestamp,
                    payload: cur.payload.clone(),
                    node: cur.node,
                },
                None => RemoteRecord {
                    version: 0,
                    timestamp: HlcTimestamp::new(0, 0, NodeId(0)),
                    payload: None,
                    node: NodeId(0),
                },
            };
            return (PushOutcome::Conflict { remote }, None);
        }
        let version = current.map_or(0, |c| c.version) + 1;
        let payload = match op.kind {
            OperationKind::Delete => None,
            _ => Some(op.payload.clone()),
        };
        let feed_seq = self.feed.append(
            &op.entity,
            version,
            payload.clone(),
            op.timestamp,
            op.id,
            now,
        );
        self.entities.insert(
            op.entity.clone(),
            EntityState {
                seq: feed_seq,
                version,
                timestamp: op.timestamp,
                node: op.timestamp.node,
                payload,
            },
        );
        // With dedupe off the first version is kept, so a later switch-on
        // answers replays with what the first application produced.
        self.applied.entry(op.id).or_insert((version, feed_seq));
        self.seq += 1;
        self.log.push(ApplyRecord {
            seq: self.seq,
            request,
            at: now,
            op_id: op.id,
            entity: op.entity.clone(),
            priority: op.priority,
            node: op.timestamp.node,
            version,
        });
        self.stats.applied += 1;
        (PushOutcome::Applied { version }, Some(feed_seq))
    }
}

#[async_trait]
impl Transport for SimulatedRemote {
    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        {
            let mut s = self.lock();
            // §8: a device that has seen a position this history does not
            // hold (the remote was restored to an earlier point) gets the
            // head and nothing applied, until it sends that head as its
            // `known` (once it has queued again what the restore lost).
            let diverged = query.known.is_some_and(|k| !s.feed.in_history(k));
            if diverged {
                s.history_refusals += 1;
                return Err(TransportError::HistoryDiverged {
                    head: s.feed.head(),
                });
            }
        }
        let outcomes = self.apply_answer(query.ops)?;
        let head = self.lock().feed.head();
        Ok(PushAnswer {
            outcomes,
            head: Some(head),
        })
    }

    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        self.pull_page(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::{HybridClock, ManualWallClock};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn op(clock: &HybridClock, rng: &mut StdRng, id: &str, kind: OperationKind) -> Operation {
        Operation::builder(EntityKey::new("notes", id), kind)
            .payload(b"x".to_vec())
            .build_at(clock.now().unwrap(), rng)
    }

    fn setup() -> (HybridClock, StdRng) {
        (
            HybridClock::with_wall_clock(NodeId(1), Arc::new(ManualWallClock::new(1_000))),
            StdRng::seed_from_u64(1),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn applies_in_order_and_versions_increase() {
        let (clock, mut rng) = setup();
        let remote = SimulatedRemote::default();
        let a = op(&clock, &mut rng, "1", OperationKind::Create);
        let b = op(&clock, &mut rng, "1", OperationKind::Update);
        let c = op(&clock, &mut rng, "1", OperationKind::Delete);
        tokio::time::advance(Duration::from_secs(3)).await;
        let out = remote
            .apply_batch(&[a.clone(), b.clone(), c.clone()])
            .unwrap();
        assert_eq!(
            out,
            vec![
                PushOutcome::Applied { version: 1 },
                PushOutcome::Applied { version: 2 },
                PushOutcome::Applied { version: 3 },
            ]
        );
        let rec = remote.record(&a.entity).unwrap();
        assert_eq!((rec.version, rec.payload), (3, None));
        let log = remote.apply_log();
        assert_eq!(
            log.iter().map(|r| r.op_id).collect::<Vec<_>>(),
            vec![a.id, b.id, c.id]
        );
        assert_eq!(log[2].seq, 3);
        assert_eq!(log[0].at, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn replay_answers_first_version_and_is_not_logged() {
        let (clock, mut rng) = setup();
        let remote = SimulatedRemote::default();
        let a = op(&clock, &mut rng, "1", OperationKind::Create);
        let b = op(&clock, &mut rng, "1", OperationKind::Update);
        remote.apply_batch(&[a.clone(), b]).unwrap();
        let out = remote.apply_batch(&[a]).unwrap();
        assert_eq!(out, vec![PushOutcome::AlreadyApplied { version: 1 }]);
        assert_eq!(remote.apply_count(), 2);
        assert_eq!(remote.stats().already_applied, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_dedupe_a_replay_is_applied_again() {
        let (clock, mut rng) = setup();
        let remote = SimulatedRemote::new(
            RemoteOptions {
                dedupe: false,
                ..RemoteOptions::default()
            },
            SimClock::start_now(),
        );
        let a = op(&clock, &mut rng, "1", OperationKind::Create);
        remote.apply_batch(std::slice::from_ref(&a)).unwrap();
        let out = remote.apply_batch(std::slice::from_ref(&a)).unwrap();
        assert_eq!(out, vec![PushOutcome::Applied { version: 2 }]);
        let log = remote.apply_log();
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|r| r.op_id == a.id));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_base_version_conflicts_unless_switched_off() {
        let (clock, mut rng) = setup();
        let remote = SimulatedRemote::default();
        remote
            .apply_batch(&[op(&clock, &mut rng, "1", OperationKind::Create)])
            .unwrap();
        remote
            .apply_batch(&[op(&clock, &mut rng, "1", OperationKind::Update)])
            .unwrap();
        let stale = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Update)
            .base_version(1)
            .build_at(clock.now().unwrap(), &mut rng);
        let out = remote.apply_batch(std::slice::from_ref(&stale)).unwrap();
        match &out[0] {
            PushOutcome::Conflict { remote } => assert_eq!(remote.version, 2),
            other => panic!("expected conflict, got {other:?}"),
        }
        let fresh = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Update)
            .base_version(2)
            .build_at(clock.now().unwrap(), &mut rng);
        assert_eq!(
            remote.apply_batch(&[fresh]).unwrap(),
            vec![PushOutcome::Applied { version: 3 }]
        );
        remote.update_options(|o| {
            o.conflicts_by_collection.insert("notes".into(), false);
        });
        assert_eq!(
            remote.apply_batch(&[stale]).unwrap(),
            vec![PushOutcome::Applied { version: 4 }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_collections_and_poison_are_refused() {
        let (clock, mut rng) = setup();
        let mut options = RemoteOptions::default();
        options.reject_collections.insert("audit".into());
        let remote = SimulatedRemote::new(options, SimClock::start_now());
        let audit = Operation::builder(EntityKey::new("audit", "1"), OperationKind::Create)
            .build_at(clock.now().unwrap(), &mut rng);
        assert!(matches!(
            remote.apply_batch(&[audit]).unwrap()[0],
            PushOutcome::Rejected { .. }
        ));

        let rule = PoisonRule {
            fraction: Probability::new(0.01).unwrap(),
            key: PoisonKey::Operation,
            salt: 3,
        };
        let ops: Vec<Operation> = (0..20_000)
            .map(|i| op(&clock, &mut rng, &i.to_string(), OperationKind::Create))
            .collect();
        let poisoned = ops.iter().filter(|o| rule.matches(o)).count();
        assert!((150..=250).contains(&poisoned), "poisoned {poisoned}");
        remote.update_options(|o| o.poison = Some(rule));
        let out = remote.apply_batch(&ops).unwrap();
        for (o, outcome) in ops.iter().zip(&out) {
            assert_eq!(
                rule.matches(o),
                matches!(outcome, PushOutcome::Rejected { .. })
            );
        }
        // Poison is a property of the operation: a replay is refused again.
        let first_poison = ops.iter().find(|o| rule.matches(o)).unwrap().clone();
        assert!(matches!(
            remote.apply_batch(&[first_poison]).unwrap()[0],
            PushOutcome::Rejected { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn admission_refuses_requests_beyond_rate_in_simulated_time() {
        let (clock, mut rng) = setup();
        let remote = SimulatedRemote::new(
            RemoteOptions {
                admission: Some(Admission {
                    rate: 200.0,
                    burst: 200,
                    retry_after: None,
                }),
                ..RemoteOptions::default()
            },
            SimClock::start_now(),
        );
        let one = op(&clock, &mut rng, "1", OperationKind::Create);
        let mut admitted = 0;
        let mut refused = 0;
        for _ in 0..1_000 {
            match remote.apply_batch(std::slice::from_ref(&one)) {
                Ok(_) => admitted += 1,
                Err(TransportError::RateLimited { retry_after }) => {
                    assert!(retry_after.unwrap() > Duration::ZERO);
                    refused += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!((admitted, refused), (200, 800));
        // One simulated second later, 200 more are admitted.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut again = 0;
        for _ in 0..1_000 {
            if remote.apply_batch(std::slice::from_ref(&one)).is_ok() {
                again += 1;
            }
        }
        assert_eq!(again, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn op_rate_answers_retry_later_for_the_rest_of_the_batch() {
        let (clock, mut rng) = setup();
        let remote = SimulatedRemote::new(
            RemoteOptions {
                op_rate: Some(OpRate {
                    rate: 10.0,
                    burst: 3,
                    retry_after: Duration::from_secs(2),
                }),
                ..RemoteOptions::default()
            },
            SimClock::start_now(),
        );
        let ops: Vec<Operation> = (0..5)
            .map(|i| op(&clock, &mut rng, &i.to_string(), OperationKind::Create))
            .collect();
        let out = remote.apply_batch(&ops).unwrap();
        assert_eq!(
            out.iter().map(PushOutcome::name).collect::<Vec<_>>(),
            vec![
                "applied",
                "applied",
                "applied",
                "retry_later",
                "retry_later"
            ]
        );
        assert_eq!(
            out[3],
            PushOutcome::RetryLater {
                after: Some(Duration::from_secs(2))
            }
        );
    }

    #[test]
    fn apply_record_text_is_stable() {
        let r = ApplyRecord {
            seq: 7,
            request: 3,
            at: Duration::from_millis(1500),
            op_id: OperationId::from_u128(1),
            entity: EntityKey::new("notes", "9"),
            priority: OperationPriority::High,
            node: NodeId(2),
            version: 4,
        };
        assert_eq!(
            r.to_string(),
            "7 r3 1500000us 00000000000000000000000001 notes/9 high 0000000000000002 v4"
        );
    }
}
