//! The puller against a scripted remote: the cursor moves only after the
//! sink applied a page, own writes complete from the feed, the sink learns
//! what is still pending per entity, a refused page changes nothing, and
//! the cursor survives a restart (and a change of scope starts over).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cpc_core::{
    EntityKey, HlcTimestamp, HybridClock, NodeId, OpOutcome, Operation, OperationKind, PullCursor,
    PullPage, PullQuery, PulledChange, RemotePosition, RemoteSink, SinkError, SinkPage,
    SnapshotRange, TokioWallClock, Transport, TransportError,
};
use cpc_storage::{MemoryStorage, QueueOptions, QueueStorage, QueueStorageExt};
use cpc_worker::{PullConfig, PullError, Puller, StorageCalls};

const T0: u64 = 1_767_225_600_000;

/// Answers pulls from a script; records the queries.
#[derive(Debug, Default)]
struct Scripted {
    pages: Mutex<VecDeque<Result<PullPage, TransportError>>>,
    queries: Mutex<Vec<PullQuery>>,
    /// The next answer (taken in call order) arrives this much later: a
    /// slow long poll.
    delay_next: Mutex<Option<Duration>>,
}

#[async_trait]
impl Transport for Scripted {
    async fn push(
        &self,
        _query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        Err(TransportError::Offline)
    }
    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        self.queries.lock().unwrap().push(query.clone());
        let answer = self
            .pages
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Err(TransportError::Offline));
        let delay = self.delay_next.lock().unwrap().take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        answer
    }
}

/// Records every page; refuses while `refuse` is set.
#[derive(Debug, Default)]
struct Recording {
    pages: Mutex<Vec<SinkPage>>,
    refuse: Mutex<bool>,
}

#[async_trait]
impl RemoteSink for Recording {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        if *self.refuse.lock().unwrap() {
            return Err(SinkError("disk full".into()));
        }
        self.pages.lock().unwrap().push(page.clone());
        Ok(())
    }
}

fn position(seq: u64) -> RemotePosition {
    RemotePosition {
        store_id: "store-1".into(),
        seq,
        fp: seq * 7,
    }
}

fn change(seq: u64, id: &str, own: Option<cpc_core::OperationId>) -> PulledChange {
    PulledChange {
        seq,
        entity: EntityKey::new("notes", id),
        version: seq,
        payload: Some(format!("v{seq}").into_bytes()),
        timestamp: HlcTimestamp::new(T0 + seq, 0, NodeId(9)),
        own_op: own,
    }
}

fn changes_page(from: u64, changes: Vec<PulledChange>, has_more: bool) -> PullPage {
    let last = changes.last().map_or(from, |c| c.seq);
    PullPage {
        changes,
        cursor: PullCursor {
            position: position(last),
            after: None,
        },
        has_more,
        snapshot: None,
        head: position(last + u64::from(has_more)),
        bytes: 100,
    }
}

struct Rig {
    storage: Arc<dyn QueueStorage>,
    remote: Arc<Scripted>,
    sink: Arc<Recording>,
    hlc: Arc<HybridClock>,
    clock: TokioWallClock,
}

impl Rig {
    fn new(storage: Arc<dyn QueueStorage>) -> Rig {
        let clock = TokioWallClock::starting_at(T0);
        Rig {
            hlc: Arc::new(HybridClock::with_wall_clock(
                NodeId(1),
                Arc::new(clock.clone()),
            )),
            storage,
            remote: Arc::new(Scripted::default()),
            sink: Arc::new(Recording::default()),
            clock,
        }
    }

    fn puller(&self, config: PullConfig) -> Puller {
        Puller::new(
            Arc::clone(&self.storage),
            self.remote.clone(),
            self.sink.clone(),
            config,
        )
        .hlc(Arc::clone(&self.hlc))
        .clock(self.clock.clone())
        .storage_calls(StorageCalls::Inline)
    }

    fn script(&self, page: Result<PullPage, TransportError>) {
        self.remote.pages.lock().unwrap().push_back(page);
    }

    fn submit(&self, id: &str) -> cpc_core::OperationId {
        let op = Operation::builder(EntityKey::new("notes", id), OperationKind::Update)
            .payload(b"mine".to_vec())
            .build(&self.hlc)
            .unwrap();
        let op_id = op.id;
        self.storage.enqueue(op, self.clock.now_ms()).unwrap();
        op_id
    }
}

fn memory() -> Arc<dyn QueueStorage> {
    Arc::new(MemoryStorage::new(QueueOptions::default()))
}

#[tokio::test(start_paused = true)]
async fn the_cursor_moves_only_after_the_sink_applied_the_page() {
    let rig = Rig::new(memory());
    let puller = rig.puller(PullConfig::default());
    let page = changes_page(0, vec![change(1, "a", None), change(2, "b", None)], true);
    rig.script(Ok(page.clone()));
    *rig.sink.refuse.lock().unwrap() = true;
    assert!(puller.pull_page(Duration::ZERO).await.is_err());
    assert_eq!(puller.cursor().await.unwrap(), None, "refused: no cursor");
    *rig.sink.refuse.lock().unwrap() = false;
    rig.script(Ok(page));
    let applied = puller.pull_page(Duration::ZERO).await.unwrap();
    assert_eq!((applied.changes, applied.has_more), (2, true));
    assert_eq!(
        puller.cursor().await.unwrap().unwrap().position,
        position(2)
    );
    // The next query starts from it, and carries the head as `known`.
    rig.script(Ok(changes_page(2, vec![change(3, "c", None)], false)));
    puller.pull_page(Duration::ZERO).await.unwrap();
    let queries = rig.remote.queries.lock().unwrap().clone();
    assert_eq!(queries[0].cursor, None);
    assert_eq!(
        queries[1].cursor, None,
        "the refused page is asked for again"
    );
    assert_eq!(queries[2].cursor.as_ref().unwrap().position, position(2));
    assert_eq!(queries[2].known, Some(position(3)));
    // The clock followed the pulled timestamps.
    assert!(rig.hlc.last().wall_ms >= T0 + 3);
}

#[tokio::test(start_paused = true)]
async fn a_page_the_transport_refuses_changes_nothing() {
    let rig = Rig::new(memory());
    let puller = rig.puller(PullConfig::default());
    rig.script(Ok(changes_page(0, vec![change(1, "a", None)], false)));
    puller.pull_page(Duration::ZERO).await.unwrap();
    rig.script(Err(TransportError::Protocol(
        "has_more with a cursor that did not advance".into(),
    )));
    assert!(puller.pull_page(Duration::ZERO).await.is_err());
    assert_eq!(
        puller.cursor().await.unwrap().unwrap().position,
        position(1)
    );
    assert_eq!(rig.sink.pages.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn own_writes_complete_from_the_feed_and_pending_ones_are_named() {
    let rig = Rig::new(memory());
    let puller = rig.puller(PullConfig::default());
    let lost_ack = rig.submit("a");
    let still_pending = rig.submit("b");
    let page = changes_page(
        0,
        vec![change(1, "a", Some(lost_ack)), change(2, "b", None)],
        false,
    );
    rig.script(Ok(page));
    let applied = puller.pull_page(Duration::ZERO).await.unwrap();
    assert_eq!(applied.acked, 1);
    assert!(
        rig.storage.get(lost_ack).unwrap().is_none(),
        "completed, not re-pushed"
    );
    assert!(rig.storage.get(still_pending).unwrap().is_some());
    let pages = rig.sink.pages.lock().unwrap();
    assert_eq!(
        pages[0].changes[0].pending,
        Vec::new(),
        "a's op was completed first"
    );
    assert_eq!(pages[0].changes[1].pending, vec![still_pending]);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_page_carries_its_range_and_the_scope() {
    let rig = Rig::new(memory());
    let scope = Some(vec!["notes".to_owned()]);
    let puller = rig.puller(PullConfig {
        collections: scope.clone(),
        ..PullConfig::default()
    });
    let range = SnapshotRange {
        from: None,
        through: Some(EntityKey::new("notes", "b")),
        reset: Some(cpc_core::ResetReason::Initial),
    };
    rig.script(Ok(PullPage {
        changes: vec![change(4, "a", None), change(2, "b", None)],
        cursor: PullCursor {
            position: position(5),
            after: Some(EntityKey::new("notes", "b")),
        },
        has_more: true,
        snapshot: Some(range.clone()),
        head: position(5),
        bytes: 10,
    }));
    puller.pull_page(Duration::ZERO).await.unwrap();
    assert_eq!(
        rig.sink.pages.lock().unwrap()[0].replace,
        Some((range, scope))
    );
}

#[tokio::test(start_paused = true)]
async fn the_cursor_survives_a_restart_and_a_new_scope_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn QueueStorage> {
        Arc::new(
            cpc_storage::SqliteStorage::open_at(
                dir.path().join("queue"),
                QueueOptions::default(),
                T0,
            )
            .unwrap(),
        )
    };
    {
        let rig = Rig::new(open());
        let puller = rig.puller(PullConfig::default());
        rig.script(Ok(changes_page(0, vec![change(1, "a", None)], false)));
        puller.pull_page(Duration::ZERO).await.unwrap();
    }
    let rig = Rig::new(open());
    let puller = rig.puller(PullConfig::default());
    assert_eq!(
        puller.cursor().await.unwrap().unwrap().position,
        position(1)
    );
    assert_eq!(puller.known().await.unwrap(), Some(position(1)));
    let scoped = rig.puller(PullConfig {
        collections: Some(vec!["tasks".into()]),
        ..PullConfig::default()
    });
    assert_eq!(
        scoped.cursor().await.unwrap(),
        None,
        "another scope: a new feed"
    );
    assert_eq!(
        scoped.known().await.unwrap(),
        Some(position(1)),
        "known is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_page_answered_to_a_stale_cursor_is_not_applied_after_a_newer_one() {
    // The loop's long poll is out with cursor none; `pull_once` beside it
    // applies a page and moves the cursor; then the long poll's answer
    // arrives. Applied, it would hand the sink an older page after a newer
    // one (a snapshot page would even put back older versions).
    let rig = Rig::new(memory());
    let puller = Arc::new(rig.puller(PullConfig::default()));
    rig.script(Ok(changes_page(0, vec![change(1, "a", None)], true)));
    *rig.remote.delay_next.lock().unwrap() = Some(Duration::from_secs(10));
    rig.script(Ok(changes_page(
        0,
        vec![change(1, "a", None), change(2, "a", None)],
        false,
    )));
    rig.script(Ok(changes_page(2, vec![change(3, "a", None)], false)));
    let slow = tokio::spawn({
        let puller = Arc::clone(&puller);
        async move { puller.pull_page(Duration::from_secs(20)).await }
    });
    tokio::task::yield_now().await;
    let fast = puller.pull_page(Duration::ZERO).await.unwrap();
    assert_eq!(fast.cursor.position, position(2));
    // The slow answer (to cursor none) is dropped and asked again from 2.
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.cursor.position, position(3));
    let seqs: Vec<Vec<u64>> = rig
        .sink
        .pages
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.changes.iter().map(|c| c.change.seq).collect())
        .collect();
    assert_eq!(
        seqs,
        vec![vec![1, 2], vec![3]],
        "in feed order, the stale page never"
    );
    let queries = rig.remote.queries.lock().unwrap().clone();
    assert_eq!(queries[2].cursor.as_ref().unwrap().position, position(2));
}

/// Holds every page until the transport has been asked for the next one:
/// only a puller that asks ahead gets through.
#[derive(Debug)]
struct WaitsForTheNextQuery {
    remote: Arc<Scripted>,
    pages: Mutex<Vec<SinkPage>>,
}

#[async_trait]
impl RemoteSink for WaitsForTheNextQuery {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        let asked_before = self.pages.lock().unwrap().len() + 1;
        for _ in 0..100 {
            if self.remote.queries.lock().unwrap().len() > asked_before {
                self.pages.lock().unwrap().push(page.clone());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(SinkError(
            "the next page was not asked while this one was applied".into(),
        ))
    }
}

async fn sync_three_pages(prefetch: bool) -> (Result<(), PullError>, Vec<u64>) {
    let rig = Rig::new(memory());
    let sink = Arc::new(WaitsForTheNextQuery {
        remote: Arc::clone(&rig.remote),
        pages: Mutex::new(Vec::new()),
    });
    let puller = Puller::new(
        Arc::clone(&rig.storage),
        rig.remote.clone(),
        sink.clone(),
        PullConfig {
            prefetch,
            ..PullConfig::default()
        },
    )
    .storage_calls(StorageCalls::Inline);
    rig.script(Ok(changes_page(0, vec![change(1, "a", None)], true)));
    rig.script(Ok(changes_page(1, vec![change(2, "b", None)], true)));
    rig.script(Ok(changes_page(2, vec![change(3, "c", None)], true)));
    rig.script(Ok(changes_page(3, vec![], false)));
    let mut result = Ok(());
    for _ in 0..3 {
        if let Err(e) = puller.pull_page(Duration::ZERO).await {
            result = Err(e);
            break;
        }
    }
    let seqs = sink
        .pages
        .lock()
        .unwrap()
        .iter()
        .flat_map(|p| p.changes.iter().map(|c| c.change.seq))
        .collect();
    (result, seqs)
}

#[tokio::test(start_paused = true)]
async fn while_the_remote_has_more_the_next_page_is_asked_as_this_one_is_applied() {
    // Asking ahead: each page is applied while the next is on its way, in
    // order, each once.
    let (result, seqs) = sync_three_pages(true).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seqs, vec![1, 2, 3]);
    // Without it the sink waits in vain: the check can fail.
    let (result, seqs) = sync_three_pages(false).await;
    assert!(result.is_err());
    assert!(seqs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_page_that_never_advances_is_refused_reported_and_backed_off() {
    // A transport that breaks its contract: "more to come" from 5, for
    // ever, with a cursor that stays at 5. Trusted, the loop asked 2,000
    // times in no time and handed the sink every copy.
    let rig = Rig::new(memory());
    let puller = Arc::new(rig.puller(PullConfig {
        seed: Some(1),
        ..PullConfig::default()
    }));
    rig.script(Ok(changes_page(
        0,
        (1..=5).map(|s| change(s, "a", None)).collect(),
        false,
    )));
    puller.pull_page(Duration::ZERO).await.unwrap();
    for _ in 0..2_000 {
        rig.script(Ok(changes_page(5, vec![], true)));
    }
    let mut events = puller.subscribe();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::clone(&puller).run(stopped));
    tokio::time::sleep(Duration::from_secs(600)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let asked = rig.remote.queries.lock().unwrap().len() - 1;
    assert!(
        (2..60).contains(&asked),
        "backed off, not spinning: {asked} pulls in 10 minutes"
    );
    assert_eq!(rig.sink.pages.lock().unwrap().len(), 1, "never applied");
    assert_eq!(
        puller.cursor().await.unwrap().unwrap().position,
        position(5)
    );
    let mut failures = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let cpc_worker::WorkerEvent::PullFailed { error, .. } = event {
            failures.push(error);
        }
    }
    assert_eq!(failures.len(), asked, "each refusal reported");
    assert!(failures[0].contains("did not advance"), "{}", failures[0]);
}

#[tokio::test(start_paused = true)]
async fn a_cursor_that_goes_back_or_a_page_served_twice_is_refused_and_the_cursor_kept() {
    let rig = Rig::new(memory());
    let puller = rig.puller(PullConfig::default());
    let to_five = changes_page(0, (1..=5).map(|s| change(s, "a", None)).collect(), false);
    rig.script(Ok(to_five.clone()));
    puller.pull_page(Duration::ZERO).await.unwrap();
    // 5 → 3: refused, 5 kept (before, 3 was persisted and pulled from).
    rig.script(Ok(changes_page(2, vec![change(3, "b", None)], false)));
    let refused = puller.pull_page(Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(refused, PullError::Refused(ref r) if r.contains("went back from 5 to 3")),
        "{refused}"
    );
    assert_eq!(
        puller.cursor().await.unwrap().unwrap().position,
        position(5)
    );
    // The same page again: its changes are not above the cursor.
    rig.script(Ok(to_five));
    assert!(matches!(
        puller.pull_page(Duration::ZERO).await,
        Err(PullError::Refused(_))
    ));
    // An honest page goes on from 5.
    rig.script(Ok(changes_page(5, vec![change(6, "a", None)], false)));
    puller.pull_page(Duration::ZERO).await.unwrap();
    assert_eq!(
        puller.cursor().await.unwrap().unwrap().position,
        position(6)
    );
    let applied: Vec<u64> = rig
        .sink
        .pages
        .lock()
        .unwrap()
        .iter()
        .flat_map(|p| p.changes.iter().map(|c| c.change.seq))
        .collect();
    assert_eq!(applied, vec![1, 2, 3, 4, 5, 6], "each change once");
    let queries = rig.remote.queries.lock().unwrap().clone();
    assert!(queries[1..]
        .iter()
        .all(|q| q.cursor.as_ref().unwrap().position.seq >= 5));
}

/// Pushes take 5 s and answer `applied` (or fail, when `lose` is set);
/// pulls come from a script.
#[derive(Debug, Default)]
struct SlowPush {
    pulls: Scripted,
    lose: bool,
    pushes: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Transport for SlowPush {
    async fn push(
        &self,
        query: &cpc_core::PushQuery<'_>,
    ) -> Result<cpc_core::PushAnswer, TransportError> {
        let batch = query.ops;
        self.pushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        if self.lose {
            return Err(TransportError::Timeout);
        }
        Ok(batch
            .iter()
            .map(|o| OpOutcome::new(o.id, cpc_core::PushOutcome::Applied { version: 1 }))
            .collect())
    }
    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        self.pulls.pull(query).await
    }
}

/// An own operation shows up in the feed while its push is out (the
/// server wakes long polls before the push's answer is back): reported
/// once, by its batch; and if that answer is lost, acknowledged from the
/// feed's note without a re-push. Before, both sides reported it
/// (`examples/http_sync` counted 318 applied of 300).
async fn seen_in_the_feed_while_in_flight(lose: bool) -> (Vec<cpc_worker::WorkerEvent>, usize) {
    let rig = Rig::new(memory());
    let remote = Arc::new(SlowPush {
        lose,
        ..SlowPush::default()
    });
    let worker = cpc_worker::SyncWorker::builder(Arc::clone(&rig.storage), remote.clone())
        .clock(rig.clock.clone())
        .config(cpc_worker::WorkerConfig {
            storage_calls: StorageCalls::Inline,
            seed: Some(1),
            ..cpc_worker::WorkerConfig::default()
        })
        .build()
        .unwrap();
    let puller = Puller::new(
        Arc::clone(&rig.storage),
        remote.clone(),
        rig.sink.clone(),
        PullConfig::default(),
    )
    .storage_calls(StorageCalls::Inline)
    .events(worker.event_sender())
    .feed_acks(worker.feed_acks());
    let mut events = worker.subscribe();
    let id = rig.submit("a");
    let batch = tokio::spawn({
        let worker = worker.clone();
        async move { worker.process_once().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    remote
        .pulls
        .pages
        .lock()
        .unwrap()
        .push_back(Ok(changes_page(0, vec![change(1, "a", Some(id))], false)));
    let applied = puller.pull_page(Duration::ZERO).await.unwrap();
    assert_eq!(applied.acked, 0, "left to its batch");
    assert_eq!(
        rig.sink.pages.lock().unwrap()[0].changes[0].pending,
        Vec::new(),
        "not pending on its own change"
    );
    batch.await.unwrap().unwrap();
    // Later batches find nothing to send again.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(worker.process_once().await.unwrap().is_empty());
    assert!(rig.storage.get(id).unwrap().is_none());
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if matches!(e, cpc_worker::WorkerEvent::Applied { .. }) {
            seen.push(e);
        }
    }
    (
        seen,
        remote.pushes.load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[tokio::test(start_paused = true)]
async fn an_own_operation_seen_in_the_feed_while_its_push_is_out_is_reported_once() {
    let (applied, pushes) = seen_in_the_feed_while_in_flight(false).await;
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(matches!(
        applied[0],
        cpc_worker::WorkerEvent::Applied { replay: false, .. }
    ));
    assert_eq!(pushes, 1);
}

#[tokio::test(start_paused = true)]
async fn an_own_operation_whose_answer_is_lost_is_acknowledged_from_the_feed_not_pushed_again() {
    let (applied, pushes) = seen_in_the_feed_while_in_flight(true).await;
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(matches!(
        applied[0],
        cpc_worker::WorkerEvent::Applied {
            replay: true,
            version: 1,
            ..
        }
    ));
    assert_eq!(pushes, 1, "not pushed again");
}
