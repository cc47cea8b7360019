//! The `Transport` trait: how batches of operations reach the remote, and
//! what the remote answers for each.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::hlc::{HlcTimestamp, NodeId};
use crate::id::OperationId;
use crate::operation::Operation;
use crate::pull::{PullPage, PullQuery, RemotePosition};

/// The remote's current version of a record, sent back with a conflict.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The remote's version number of the record.
    pub version: u64,
    /// When the remote version was written (HLC of the writer).
    pub timestamp: HlcTimestamp,
    /// The remote payload; `None` means the record is deleted remotely.
    pub payload: Option<Vec<u8>>,
    /// The node that wrote the remote version.
    pub node: NodeId,
}

impl fmt::Debug for RemoteRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRecord")
            .field("version", &self.version)
            .field("timestamp", &self.timestamp)
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .field("node", &self.node)
            .finish()
    }
}

/// What the remote answered for one operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Applied; the record is now at `version`.
    Applied {
        /// The record's new version.
        version: u64,
    },
    /// Already applied earlier (idempotent replay of the same operation id).
    AlreadyApplied {
        /// The version the first application produced.
        version: u64,
    },
    /// The remote changed since `base_version`; a resolver decides.
    Conflict {
        /// The remote's current record.
        remote: RemoteRecord,
    },
    /// Refused for good (validation, permissions): goes to the dead letters.
    Rejected {
        /// The remote's reason (must not contain payload data).
        reason: String,
    },
    /// Transient refusal for this operation only; retry later, not before
    /// `after` if given.
    RetryLater {
        /// Server hint, used as a floor for the backoff delay.
        after: Option<Duration>,
    },
}

impl PushOutcome {
    /// A short lowercase name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            PushOutcome::Applied { .. } => "applied",
            PushOutcome::AlreadyApplied { .. } => "already_applied",
            PushOutcome::Conflict { .. } => "conflict",
            PushOutcome::Rejected { .. } => "rejected",
            PushOutcome::RetryLater { .. } => "retry_later",
        }
    }
}

/// A failure of a whole push: nothing in the batch is known to be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransportError {
    /// No network: the request was not sent.
    #[error("offline")]
    Offline,
    /// No answer in time: the batch may or may not have been applied.
    #[error("timed out")]
    Timeout,
    /// Could not connect.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server failed (5xx).
    #[error("server error (status {status})")]
    Server {
        /// HTTP-like status code.
        status: u16,
    },
    /// The server asked us to slow down (429).
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited {
        /// Server hint, clamped by the backoff before use.
        retry_after: Option<Duration>,
    },
    /// Credentials must be refreshed. Never a reason to drop work.
    #[error("unauthorized: credentials must be refreshed")]
    Unauthorized,
    /// The remote does not speak this client's protocol version: the app
    /// must be upgraded. Like `Unauthorized`, never a reason to drop work:
    /// sending pauses until the application resumes it.
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// The answer was malformed (wrong length, unknown ids, bad encoding).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The remote's history does not hold the position this device has
    /// seen (`known`): it went back in time (a restore from a backup) or
    /// was replaced. Nothing was applied; `head` is where it stands now.
    #[error("the remote's history diverged (its head is seq {})", head.seq)]
    HistoryDiverged {
        /// The remote's head.
        head: RemotePosition,
    },
    /// The transport panicked while pushing. Produced by the engine, which
    /// contains the panic; a transport returns one of the other variants.
    /// The panic's message is not kept: it may quote a payload.
    #[error("transport panicked")]
    Panicked,
}

impl TransportError {
    /// A short lowercase name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            TransportError::Offline => "offline",
            TransportError::Timeout => "timeout",
            TransportError::Connect(_) => "connect",
            TransportError::Server { .. } => "server",
            TransportError::RateLimited { .. } => "rate_limited",
            TransportError::Unauthorized => "unauthorized",
            TransportError::Incompatible(_) => "incompatible",
            TransportError::Protocol(_) => "protocol",
            TransportError::HistoryDiverged { .. } => "history_diverged",
            TransportError::Panicked => "panicked",
        }
    }
}

/// One answer of a push: the outcome for the operation it names.
///
/// The remote names the operation in every outcome so that an answer is
/// matched to its batch by id, never by position: a proxy, a buggy server or
/// a transport that answers in another order cannot make the engine
/// acknowledge an operation the remote never applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpOutcome {
    /// The operation this outcome is for.
    pub op: OperationId,
    /// What the remote did with it.
    pub outcome: PushOutcome,
    /// Where the remote's change log holds it (`applied`,
    /// `already_applied`), when the remote says: the acked journal keeps
    /// it, so that after a restore of the remote the engine can tell which
    /// acknowledged operations are certainly lost (§8).
    #[serde(default)]
    pub seq: Option<u64>,
}

impl OpOutcome {
    /// The outcome `outcome` for operation `op` (no `seq`).
    pub fn new(op: OperationId, outcome: PushOutcome) -> Self {
        OpOutcome {
            op,
            outcome,
            seq: None,
        }
    }

    /// The same, applied at `seq` of the remote's change log.
    pub fn at_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }
}

/// What the engine asks a transport to push: the batch, and everything
/// the call needs with it. A transport keeps no sync state between calls;
/// what the protocol must carry is here (as [`PullQuery`] carries the pull
/// cursor), so a wrapper that forwards the query forwards all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushQuery<'a> {
    /// The operations, of distinct ids (the engine's batches hold at most
    /// one per entity).
    pub ops: &'a [Operation],
    /// The highest remote position this device has seen (protocol §8
    /// `known`): a remote restored to a point before it answers
    /// [`TransportError::HistoryDiverged`] and applies nothing.
    pub known: Option<&'a RemotePosition>,
}

impl<'a> PushQuery<'a> {
    /// A push of `ops` with no `known` position.
    pub fn new(ops: &'a [Operation]) -> Self {
        PushQuery { ops, known: None }
    }

    /// The same, sending `known`.
    pub fn known(mut self, known: Option<&'a RemotePosition>) -> Self {
        self.known = known;
        self
    }
}

/// What a push answers: one outcome per operation, and the remote's head
/// when it says where its history stands (the engine raises its `known`
/// position to it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushAnswer {
    /// One outcome per operation, each naming its operation, in any order.
    pub outcomes: Vec<OpOutcome>,
    /// The remote's head after the push, if it reports one.
    pub head: Option<RemotePosition>,
}

impl FromIterator<OpOutcome> for PushAnswer {
    /// Outcomes collected into an answer that reports no head.
    fn from_iter<I: IntoIterator<Item = OpOutcome>>(outcomes: I) -> Self {
        PushAnswer::from(outcomes.into_iter().collect::<Vec<_>>())
    }
}

impl From<Vec<OpOutcome>> for PushAnswer {
    /// The outcomes alone (a remote that reports no head).
    fn from(outcomes: Vec<OpOutcome>) -> Self {
        PushAnswer {
            outcomes,
            head: None,
        }
    }
}

/// Sends batches of operations to the remote.
///
/// # Contract
/// - `push` sends `query.ops` (operations of distinct ids; the engine's
///   batches hold at most one operation per entity) with `query.known`, and
///   answers one [`OpOutcome`] per operation, each naming the operation it
///   is for. The order of the answer does not matter: the engine matches
///   outcomes to operations by id with [`match_outcomes`].
/// - An answer that names an operation not in the batch, names one twice,
///   leaves one out, or has a different length is refused as a whole
///   ([`TransportError::Protocol`]): nothing of the batch is acknowledged and
///   every operation is sent again later (the remote dedupes by id).
/// - `Err` means nothing in the batch is known to be applied.
/// - A panic inside `push` is contained by the engine and treated as a
///   failure of the whole batch (`TransportError::Panicked`); do not rely on
///   it, return an error.
/// - A transport holds no sync state: the position the device has seen
///   travels in each [`PushQuery`] and [`PullQuery`], and comes back in
///   each [`PushAnswer`] and [`PullPage`]; the engine keeps it (and
///   persists it with the queue). A wrapper forwards the query and the
///   answer, and so forwards all of it.
///
/// `Debug` is a supertrait so that the engine and its builder can print
/// what they drive; print no credentials.
#[async_trait]
pub trait Transport: fmt::Debug + Send + Sync {
    /// Pushes `query.ops` and answers one outcome per operation, each
    /// naming its operation, in any order, and the remote's head if it
    /// reports one.
    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError>;

    /// Reads the next page of the remote's changes after `query.cursor`
    /// (a snapshot page when the remote answers with one), checked against
    /// the query before it is returned: changes in order and above the
    /// cursor, a cursor that advances when `has_more`, snapshot pages
    /// inside their range. A page that breaks these rules is a
    /// [`TransportError::Protocol`] error: the engine applies nothing of it
    /// and keeps its cursor. The engine checks each page again before it
    /// applies it: one whose cursor goes back, does not advance while
    /// `has_more`, or whose changes are out of order or range is refused
    /// (`PullFailed`, then a backoff), whatever the transport said.
    ///
    /// A transport that only pushes keeps this default, which answers
    /// [`TransportError::Incompatible`]: an engine given a
    /// [`RemoteSink`](crate::RemoteSink) then reports that it cannot pull.
    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        let _ = query;
        Err(TransportError::Incompatible(
            "this transport does not pull".into(),
        ))
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        (**self).push(query).await
    }
    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        (**self).pull(query).await
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Box<T> {
    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        (**self).push(query).await
    }
    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        (**self).pull(query).await
    }
}

/// Matches an answer to its batch by operation id: returns the outcomes in
/// the batch's order (outcome `i` for `batch[i]`).
///
/// Refuses the whole answer with [`TransportError::Protocol`] when its length
/// differs from the batch's, when it names an operation that is not in the
/// batch, names one twice, or leaves one out; and when the batch itself
/// holds an id twice (then no answer can be matched).
pub fn match_outcomes(
    batch: &[Operation],
    answer: Vec<OpOutcome>,
) -> Result<Vec<PushOutcome>, TransportError> {
    Ok(match_answer(batch, answer)?
        .into_iter()
        .map(|o| o.outcome)
        .collect())
}

/// [`match_outcomes`], keeping each outcome whole (with its `seq`).
pub fn match_answer(
    batch: &[Operation],
    answer: Vec<OpOutcome>,
) -> Result<Vec<OpOutcome>, TransportError> {
    if batch.len() != answer.len() {
        return Err(TransportError::Protocol(format!(
            "answer has {} outcomes for a batch of {}",
            answer.len(),
            batch.len()
        )));
    }
    let mut position = std::collections::HashMap::with_capacity(batch.len());
    for (i, op) in batch.iter().enumerate() {
        if position.insert(op.id, i).is_some() {
            return Err(TransportError::Protocol(format!(
                "batch holds operation {} twice",
                op.id
            )));
        }
    }
    let mut slots: Vec<Option<OpOutcome>> = vec![None; batch.len()];
    for outcome in answer {
        let op = outcome.op;
        let Some(&i) = position.get(&op) else {
            return Err(TransportError::Protocol(format!(
                "answer names operation {op}, which is not in the batch"
            )));
        };
        if slots[i].replace(outcome).is_some() {
            return Err(TransportError::Protocol(format!(
                "answer names operation {op} twice"
            )));
        }
    }
    // Equal lengths and no repeats mean every slot is filled; checked
    // anyway so a logic slip here can never ack an unanswered operation.
    slots
        .into_iter()
        .zip(batch)
        .map(|(slot, op)| {
            slot.ok_or_else(|| {
                TransportError::Protocol(format!("answer leaves out operation {}", op.id))
            })
        })
        .collect()
}

/// How a conflict was settled.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// Keep the local change: resend it on top of the remote's version.
    KeepLocal,
    /// Keep the remote version: drop the local change (it is logged).
    KeepRemote,
    /// Replace the local payload with a merge and resend it.
    Merged(Vec<u8>),
    /// Park the operation until the application settles it.
    Defer,
}

/// Prints the merged payload's length, never its bytes.
impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolution::Merged(p) => f.debug_struct("Merged").field("len", &p.len()).finish(),
            other => f.write_str(match other {
                Resolution::KeepLocal => "KeepLocal",
                Resolution::KeepRemote => "KeepRemote",
                _ => "Defer",
            }),
        }
    }
}

impl Resolution {
    /// A short lowercase name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Resolution::KeepLocal => "keep_local",
            Resolution::KeepRemote => "keep_remote",
            Resolution::Merged(_) => "merged",
            Resolution::Defer => "defer",
        }
    }
}

/// One entry of the conflict log: both versions and the losing payload, so
/// no edit is silently overwritten.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The local operation involved.
    pub op_id: crate::OperationId,
    /// The entity it touched.
    pub entity: crate::EntityKey,
    /// Local operation's timestamp.
    pub local_timestamp: HlcTimestamp,
    /// Local payload at the time of the conflict.
    pub local_payload: Vec<u8>,
    /// The remote record at the time of the conflict.
    pub remote: RemoteRecord,
    /// What was decided.
    pub resolution: Resolution,
    /// The payload that lost (`None` when nothing was lost, e.g. a merge
    /// kept both or the loser was a delete).
    pub losing_payload: Option<Vec<u8>>,
    /// When it was resolved, ms since the epoch on the local wall clock.
    pub resolved_at_ms: u64,
}

impl fmt::Debug for ConflictRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConflictRecord")
            .field("op_id", &self.op_id)
            .field("entity", &self.entity)
            .field("local_timestamp", &self.local_timestamp)
            .field("local_payload_len", &self.local_payload.len())
            .field("remote", &self.remote)
            .field("resolution", &self.resolution.name())
            .field(
                "losing_payload_len",
                &self.losing_payload.as_ref().map(Vec::len),
            )
            .field("resolved_at_ms", &self.resolved_at_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntityKey, HybridClock, ManualWallClock, OperationKind};
    use rand::SeedableRng;

    fn batch(n: usize) -> Vec<Operation> {
        let clock = HybridClock::with_wall_clock(
            NodeId(1),
            std::sync::Arc::new(ManualWallClock::new(1_000)),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        (0..n)
            .map(|i| {
                Operation::builder(
                    EntityKey::new("notes", i.to_string()),
                    OperationKind::Update,
                )
                .build_at(clock.now().expect("clock"), &mut rng)
            })
            .collect()
    }

    fn applied(op: &Operation, version: u64) -> OpOutcome {
        OpOutcome::new(op.id, PushOutcome::Applied { version })
    }

    #[test]
    fn an_answer_in_another_order_is_matched_by_id() {
        let b = batch(3);
        let answer = vec![applied(&b[2], 3), applied(&b[0], 1), applied(&b[1], 2)];
        let matched = match_outcomes(&b, answer).expect("matched");
        assert_eq!(
            matched,
            vec![
                PushOutcome::Applied { version: 1 },
                PushOutcome::Applied { version: 2 },
                PushOutcome::Applied { version: 3 },
            ]
        );
    }

    #[test]
    fn unknown_repeated_missing_ids_and_wrong_counts_are_protocol_errors() {
        let b = batch(3);
        let other = batch(4).pop().expect("op");
        let cases: Vec<(&str, Vec<OpOutcome>)> = vec![
            ("short", vec![applied(&b[0], 1), applied(&b[1], 1)]),
            (
                "long",
                vec![
                    applied(&b[0], 1),
                    applied(&b[1], 1),
                    applied(&b[2], 1),
                    applied(&b[2], 1),
                ],
            ),
            (
                "unknown",
                vec![applied(&b[0], 1), applied(&b[1], 1), applied(&other, 1)],
            ),
            (
                "repeated",
                vec![applied(&b[0], 1), applied(&b[0], 1), applied(&b[2], 1)],
            ),
            ("empty", Vec::new()),
        ];
        for (name, answer) in cases {
            match match_outcomes(&b, answer) {
                Err(TransportError::Protocol(_)) => {}
                other => panic!("{name}: expected a protocol error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_of_a_merge_shows_its_length_not_its_bytes() {
        let text = format!("{:?}", Resolution::Merged(b"secret-canary".to_vec()));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("13"), "{text}");
        assert_eq!(format!("{:?}", Resolution::KeepLocal), "KeepLocal");
    }

    #[test]
    fn every_outcome_and_error_has_its_own_stable_name() {
        let remote = RemoteRecord {
            version: 2,
            timestamp: HlcTimestamp::new(1, 0, NodeId(1)),
            payload: None,
            node: NodeId(1),
        };
        let outcomes = [
            (PushOutcome::Applied { version: 1 }, "applied"),
            (
                PushOutcome::AlreadyApplied { version: 1 },
                "already_applied",
            ),
            (PushOutcome::Conflict { remote }, "conflict"),
            (
                PushOutcome::Rejected {
                    reason: "no".into(),
                },
                "rejected",
            ),
            (PushOutcome::RetryLater { after: None }, "retry_later"),
        ];
        for (outcome, name) in &outcomes {
            assert_eq!(outcome.name(), *name);
        }
        let head = RemotePosition {
            store_id: "s".into(),
            seq: 9,
            fp: 1,
        };
        let errors = [
            (TransportError::Offline, "offline", "offline"),
            (TransportError::Timeout, "timeout", "timed out"),
            (
                TransportError::Connect("refused".into()),
                "connect",
                "connect failed: refused",
            ),
            (
                TransportError::Server { status: 503 },
                "server",
                "server error (status 503)",
            ),
            (
                TransportError::RateLimited {
                    retry_after: Some(Duration::from_secs(2)),
                },
                "rate_limited",
                "rate limited (retry after Some(2s))",
            ),
            (
                TransportError::Unauthorized,
                "unauthorized",
                "unauthorized: credentials must be refreshed",
            ),
            (
                TransportError::Incompatible("v9".into()),
                "incompatible",
                "incompatible: v9",
            ),
            (
                TransportError::Protocol("bad".into()),
                "protocol",
                "protocol error: bad",
            ),
            (
                TransportError::HistoryDiverged { head },
                "history_diverged",
                "the remote's history diverged (its head is seq 9)",
            ),
            (TransportError::Panicked, "panicked", "transport panicked"),
        ];
        let mut names = std::collections::BTreeSet::new();
        for (error, name, text) in &errors {
            assert_eq!(error.name(), *name);
            assert_eq!(error.to_string(), *text);
            assert!(names.insert(*name), "{name} used twice");
        }
        let resolutions = [
            (Resolution::KeepLocal, "keep_local", "KeepLocal"),
            (Resolution::KeepRemote, "keep_remote", "KeepRemote"),
            (Resolution::Merged(vec![1]), "merged", "Merged { len: 1 }"),
            (Resolution::Defer, "defer", "Defer"),
        ];
        for (resolution, name, debug) in &resolutions {
            assert_eq!(resolution.name(), *name);
            assert_eq!(format!("{resolution:?}"), *debug);
        }
    }

    #[test]
    fn an_outcome_at_a_seq_keeps_it_through_matching() {
        let b = batch(2);
        let answer = vec![applied(&b[1], 2).at_seq(41), applied(&b[0], 1)];
        let matched = match_answer(&b, answer).expect("matched");
        assert_eq!(matched[0].seq, None);
        assert_eq!(matched[1].seq, Some(41));
        assert_eq!(matched[1].op, b[1].id);
    }

    #[test]
    fn debug_of_records_shows_payload_lengths_not_bytes() {
        let remote = RemoteRecord {
            version: 3,
            timestamp: HlcTimestamp::new(5, 0, NodeId(2)),
            payload: Some(b"remote-canary".to_vec()),
            node: NodeId(2),
        };
        let text = format!("{remote:?}");
        assert!(!text.contains("remote-canary"), "{text}");
        assert!(text.contains("payload_len: Some(13)"), "{text}");
        let op = batch(1).remove(0);
        let record = ConflictRecord {
            op_id: op.id,
            entity: op.entity.clone(),
            local_timestamp: op.timestamp,
            local_payload: b"local-canary".to_vec(),
            remote,
            resolution: Resolution::Merged(b"merged-canary".to_vec()),
            losing_payload: Some(b"lost-canary".to_vec()),
            resolved_at_ms: 77,
        };
        let text = format!("{record:?}");
        assert!(!text.contains("canary"), "{text}");
        assert!(text.contains("local_payload_len: 12"), "{text}");
        assert!(text.contains("losing_payload_len: Some(11)"), "{text}");
        assert!(text.contains("resolution: \"merged\""), "{text}");
    }

    /// Answers every push with `Applied`, reporting the `known` it was
    /// sent as its head.
    #[derive(Debug, Default)]
    struct Echo;

    #[async_trait]
    impl Transport for Echo {
        async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
            Ok(PushAnswer {
                outcomes: query.ops.iter().map(|op| applied(op, 7)).collect(),
                head: query.known.cloned(),
            })
        }
    }

    /// Keeps every default of the trait.
    #[derive(Debug)]
    struct PushOnly;

    #[async_trait]
    impl Transport for PushOnly {
        async fn push(&self, _query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
            Err(TransportError::Offline)
        }
    }

    fn query() -> PullQuery {
        PullQuery {
            cursor: None,
            known: None,
            wait: Duration::ZERO,
            limit: 10,
            collections: None,
        }
    }

    fn position(seq: u64) -> RemotePosition {
        RemotePosition {
            store_id: "s".into(),
            seq,
            fp: 0,
        }
    }

    #[tokio::test]
    async fn a_push_only_transport_answers_pulls_incompatible() {
        let t = PushOnly;
        assert_eq!(
            t.pull(&query()).await,
            Err(TransportError::Incompatible(
                "this transport does not pull".into()
            ))
        );
        assert_eq!(
            t.push(&PushQuery::new(&batch(1))).await,
            Err(TransportError::Offline)
        );
    }

    #[tokio::test]
    async fn arc_and_box_forward_the_whole_query_and_answer() {
        let inner = std::sync::Arc::new(Echo);
        let b = batch(1);
        let shared: std::sync::Arc<Echo> = std::sync::Arc::clone(&inner);
        let boxed: Box<std::sync::Arc<Echo>> = Box::new(std::sync::Arc::clone(&inner));
        for (i, t) in [&shared as &dyn Transport, &boxed as &dyn Transport]
            .into_iter()
            .enumerate()
        {
            let known = position(i as u64 + 1);
            let answer = t
                .push(&PushQuery::new(&b).known(Some(&known)))
                .await
                .expect("echoed");
            assert_eq!(answer.outcomes, vec![applied(&b[0], 7)]);
            assert_eq!(answer.head, Some(known), "known went through the wrapper");
            assert!(matches!(
                t.pull(&query()).await,
                Err(TransportError::Incompatible(_))
            ));
        }
        assert_eq!(
            PushAnswer::from(vec![applied(&b[0], 7)]),
            PushAnswer {
                outcomes: vec![applied(&b[0], 7)],
                head: None
            }
        );
    }

    #[test]
    fn a_batch_holding_an_id_twice_cannot_be_matched() {
        let b = batch(1);
        let twice = vec![b[0].clone(), b[0].clone()];
        let answer = vec![applied(&b[0], 1), applied(&b[0], 2)];
        assert!(matches!(
            match_outcomes(&twice, answer),
            Err(TransportError::Protocol(_))
        ));
    }
}
