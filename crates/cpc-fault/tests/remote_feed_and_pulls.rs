//! The simulated remote's feed (restores, compaction, preloads, snapshot
//! and change pages) and pulls through `FaultyTransport`, on tokio's
//! paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind, PullCursor,
    PullQuery, PushOutcome, RemotePosition, RemoteRecord, SimClock, Transport, TransportError,
};
use cpc_fault::{
    Admission, FaultPlan, FaultyTransport, Latency, PoisonKey, PoisonRule, Probability,
    RemoteOptions, RestoreError, Schedule, SimulatedRemote,
};
use tokio::time::Instant;

fn hlc(node: u64) -> HybridClock {
    HybridClock::with_wall_clock(NodeId(node), Arc::new(ManualWallClock::new(1_000)))
}

fn edit(clock: &HybridClock, collection: &str, id: &str) -> Operation {
    Operation::builder(EntityKey::new(collection, id), OperationKind::Update)
        .payload(id.as_bytes().to_vec())
        .build(clock)
        .unwrap()
}

fn edits(n: usize) -> Vec<Operation> {
    let clock = hlc(1);
    (0..n)
        .map(|i| edit(&clock, "notes", &i.to_string()))
        .collect()
}

fn query(cursor: Option<PullCursor>, limit: u32) -> PullQuery {
    PullQuery {
        cursor,
        known: None,
        wait: Duration::ZERO,
        limit,
        collections: None,
    }
}

/// A cursor at the start of the remote's change feed (seq 0).
fn from_start(remote: &SimulatedRemote) -> PullCursor {
    PullCursor {
        position: RemotePosition {
            seq: 0,
            fp: 0,
            ..remote.head()
        },
        after: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_restore_above_the_head_is_refused_and_changes_nothing() {
    let remote = SimulatedRemote::default();
    remote.apply_batch(&edits(3)).unwrap();
    let err = remote.restore(5).unwrap_err();
    assert_eq!(err, RestoreError::AboveHead { to: 5, head: 3 });
    assert_eq!(err.to_string(), "cannot restore to seq 5: the head is 3");
    assert_eq!(remote.head().seq, 3);
    assert_eq!(remote.restore_losses(), 0);
    assert_eq!(remote.apply_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_restore_after_compaction_is_refused_as_compacted() {
    let remote = SimulatedRemote::default();
    remote.apply_batch(&edits(3)).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    remote.apply_batch(&edits(5)[3..]).unwrap();
    // The three applied at 0 s lose their payloads; the two at 10 s keep them.
    assert_eq!(remote.compact(Duration::from_secs(5)), 3);
    let err = remote.restore(4).unwrap_err();
    assert_eq!(err, RestoreError::Compacted { to: 4, horizon: 3 });
    assert_eq!(
        err.to_string(),
        "cannot restore to seq 4: rows up to 3 are compacted"
    );
    assert_eq!(remote.head().seq, 5);
    assert_eq!(remote.live_state().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_restore_forgets_the_lost_operations_so_a_resend_applies_again() {
    let remote = SimulatedRemote::default();
    let ops = edits(3);
    remote.apply_batch(&ops).unwrap();
    assert_eq!(remote.applied_version(ops[2].id), Some(1));
    assert_eq!(remote.restore(1), Ok(2));
    assert_eq!((remote.restore_losses(), remote.head().seq), (2, 1));
    assert_eq!(remote.applied_version(ops[2].id), None);
    assert_eq!(remote.with_apply_log(|log| log.len()), 1);
    let again = remote.apply_batch(&ops[2..]).unwrap();
    assert_eq!(again, vec![PushOutcome::Applied { version: 1 }]);
}

#[tokio::test(start_paused = true)]
async fn a_device_that_saw_a_lost_position_is_refused_until_it_sends_the_head() {
    let remote = SimulatedRemote::default();
    let device = FaultyTransport::new(remote.as_client(NodeId(1)), FaultPlan::none(), 3);
    let ops = edits(3);
    let answer = device
        .push(&cpc_core::PushQuery::new(&ops[..2]))
        .await
        .unwrap();
    let seen = answer.head.expect("the simulated remote reports its head");
    assert_eq!(seen, remote.head());
    assert_eq!(remote.restore(1), Ok(1));
    // The known position travels with the query, through the wrapper.
    match device
        .push(&cpc_core::PushQuery::new(&ops[2..]).known(Some(&seen)))
        .await
    {
        Err(TransportError::HistoryDiverged { head }) => assert_eq!(head.seq, 1),
        other => panic!("expected HistoryDiverged, got {other:?}"),
    }
    assert_eq!(remote.history_refusals(), 1);
    assert_eq!(remote.apply_count(), 1);
    // Sending the head (the engine does once it has re-queued what the
    // restore lost) lets it push again.
    let head = remote.head();
    device
        .push(&cpc_core::PushQuery::new(&ops[2..]).known(Some(&head)))
        .await
        .unwrap();
    assert_eq!(remote.apply_count(), 2);

    // A lost position is refused even when the head has its seq again:
    // same seq, not the same history. An empty push asks only that.
    assert_eq!(remote.head().seq, seen.seq);
    let other = FaultyTransport::new(remote.as_client(NodeId(2)), FaultPlan::none(), 4);
    assert!(matches!(
        other
            .push(&cpc_core::PushQuery::new(&[]).known(Some(&seen)))
            .await,
        Err(TransportError::HistoryDiverged { .. })
    ));
    assert_eq!(remote.history_refusals(), 2);
}

#[tokio::test(start_paused = true)]
async fn preloaded_records_are_in_the_feed_but_not_in_the_apply_log() {
    let remote = SimulatedRemote::default();
    let a = EntityKey::new("seed", "a");
    let b = EntityKey::new("seed", "b");
    remote.preload([(a.clone(), b"1".to_vec()), (b.clone(), b"2".to_vec())]);
    remote.preload([(a.clone(), b"3".to_vec())]);
    assert_eq!(remote.head().seq, 3);
    assert_eq!(remote.apply_count(), 0);
    let live = remote.live_state();
    assert_eq!(live.get(&a), Some(&(2, b"3".to_vec())));
    assert_eq!(live.get(&b), Some(&(1, b"2".to_vec())));
}

#[tokio::test(start_paused = true)]
async fn snapshot_pages_resume_after_their_last_key_until_the_whole_state_is_read() {
    let remote = SimulatedRemote::default();
    remote.preload((0..5).map(|i| (EntityKey::new("notes", format!("n{i}")), vec![b'x'; 8])));
    remote.preload((0..2).map(|i| (EntityKey::new("tasks", format!("t{i}")), vec![b'y'; 8])));
    let mut keys = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = remote.pull_page(&query(cursor, 2)).unwrap();
        pages += 1;
        assert!(page.changes.len() <= 2);
        keys.extend(page.changes.iter().map(|c| c.entity.to_string()));
        cursor = Some(page.cursor.clone());
        if !page.has_more {
            break;
        }
        assert!(pages < 10, "the snapshot never ends");
    }
    assert_eq!(pages, 4);
    assert_eq!(
        keys,
        ["notes/n0", "notes/n1", "notes/n2", "notes/n3", "notes/n4", "tasks/t0", "tasks/t1"]
    );
}

#[tokio::test(start_paused = true)]
async fn change_pages_skip_other_collections_and_stop_at_the_limit() {
    let remote = SimulatedRemote::default();
    let clock = hlc(1);
    let ops: Vec<Operation> = ["notes", "tasks", "notes", "tasks", "tasks"]
        .iter()
        .enumerate()
        .map(|(i, c)| edit(&clock, c, &i.to_string()))
        .collect();
    remote.apply_batch(&ops).unwrap();
    let mut q = query(Some(from_start(&remote)), 2);
    q.collections = Some(vec!["tasks".to_owned()]);
    let page = remote.pull_page(&q).unwrap();
    let seqs: Vec<u64> = page.changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![2, 4]);
    assert_eq!(page.cursor.position.seq, 4);
    assert!(page.has_more);
    q.cursor = Some(page.cursor);
    let rest = remote.pull_page(&q).unwrap();
    assert_eq!(rest.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [5]);
    assert!(!rest.has_more);
}

#[tokio::test(start_paused = true)]
async fn pulls_meet_outages_degraded_links_and_the_timeout() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    remote.apply_batch(&edits(2)).unwrap();
    let schedule = Schedule::builder()
        .offline(Duration::ZERO, Duration::from_secs(10))
        .degraded(
            Duration::from_secs(10),
            Duration::from_secs(20),
            Probability::ALWAYS,
        )
        .build()
        .unwrap();
    let plan = FaultPlan {
        latency: Latency::Fixed {
            delay: Duration::from_secs(1),
        },
        timeout: Duration::from_secs(5),
        ..FaultPlan::none()
    };
    let t = FaultyTransport::new(remote.clone(), plan, 9)
        .with_schedule(schedule)
        .with_clock(clock);

    let start = Instant::now();
    assert_eq!(t.pull(&query(None, 10)).await, Err(TransportError::Offline));
    assert_eq!(start.elapsed(), Duration::ZERO);

    tokio::time::advance(Duration::from_secs(10)).await;
    let start = Instant::now();
    assert_eq!(t.pull(&query(None, 10)).await, Err(TransportError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    tokio::time::advance(Duration::from_secs(5)).await;
    let start = Instant::now();
    let page = t.pull(&query(None, 10)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(page.changes.len(), 2);
    // Pulls are not push calls.
    assert_eq!(t.counters().calls, 0);

    // An answer slower than the timeout is a timeout, at the timeout.
    let slow = FaultyTransport::new(
        remote.clone(),
        FaultPlan {
            latency: Latency::Fixed {
                delay: Duration::from_secs(6),
            },
            timeout: Duration::from_secs(5),
            ..FaultPlan::none()
        },
        9,
    );
    let start = Instant::now();
    assert_eq!(
        slow.pull(&query(None, 10)).await,
        Err(TransportError::Timeout)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn first_attempts_are_tracked_unless_turned_off() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    let ops = edits(2);
    let plan = FaultPlan {
        timeout: Duration::from_secs(3),
        ..FaultPlan::none()
    };
    let tracked = FaultyTransport::new(remote.clone(), plan.clone(), 1).with_clock(clock);
    tokio::time::advance(Duration::from_secs(2)).await;
    tracked
        .push(&cpc_core::PushQuery::new(&ops[..1]))
        .await
        .map(|a| a.outcomes)
        .unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    tracked
        .push(&cpc_core::PushQuery::new(&ops[..1]))
        .await
        .map(|a| a.outcomes)
        .unwrap();
    assert_eq!(
        tracked.first_attempt(ops[0].id),
        Some(Duration::from_secs(2))
    );
    assert_eq!(tracked.first_attempt(ops[1].id), None);
    assert_eq!(tracked.plan().timeout, Duration::from_secs(3));
    assert!(tracked.schedule().is_always_online());
    assert_eq!(tracked.clock().elapsed(), clock.elapsed());
    assert_eq!(tracked.inner().apply_count(), 1);
    let debug = format!("{tracked:?}");
    assert!(
        debug.starts_with("FaultyTransport") && debug.contains("calls: 2"),
        "{debug}"
    );

    let untracked = FaultyTransport::new(remote, plan, 1).track_first_attempts(false);
    untracked
        .push(&cpc_core::PushQuery::new(&ops[1..]))
        .await
        .map(|a| a.outcomes)
        .unwrap();
    assert_eq!(untracked.first_attempt(ops[1].id), None);
    assert!(untracked.first_attempts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_edit_based_on_an_older_version_than_a_seeded_record_conflicts() {
    let remote = SimulatedRemote::default();
    let clock = hlc(2);
    let key = EntityKey::new("notes", "shared");
    let theirs = RemoteRecord {
        version: 4,
        timestamp: clock.now().unwrap(),
        payload: Some(b"theirs".to_vec()),
        node: NodeId(9),
    };
    remote.seed_record(key.clone(), theirs.clone());
    let mine = Operation::builder(key.clone(), OperationKind::Update)
        .payload(b"mine".to_vec())
        .base_version(3)
        .build(&clock)
        .unwrap();
    assert_eq!(
        remote.apply_batch(std::slice::from_ref(&mine)).unwrap(),
        vec![PushOutcome::Conflict { remote: theirs }]
    );
    // Seeding is not an apply.
    assert_eq!(remote.apply_count(), 0);
    assert_eq!(remote.record(&key).unwrap().version, 4);
}

#[tokio::test(start_paused = true)]
async fn admission_set_mid_run_refuses_requests_beyond_its_burst() {
    let clock = SimClock::start_now();
    let remote = SimulatedRemote::new(RemoteOptions::default(), clock);
    assert_eq!(remote.options(), RemoteOptions::default());
    remote.update_options(|o| {
        o.admission = Some(Admission {
            rate: 1.0,
            burst: 1,
            retry_after: None,
        });
    });
    assert!(remote.options().admission.is_some());
    remote.apply_batch(&edits(1)).unwrap();
    // The bucket is empty: the wait for one token is the hint.
    assert_eq!(
        remote.apply_batch(&edits(2)[1..]),
        Err(TransportError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        })
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(remote.apply_batch(&edits(2)[1..]).is_ok());
    assert_eq!(remote.stats().refused_requests, 1);
}

#[test]
fn an_entity_poison_rule_refuses_every_operation_of_the_entity_or_none() {
    let rule = PoisonRule {
        fraction: Probability::new(0.5).unwrap(),
        key: PoisonKey::Entity,
        salt: 7,
    };
    let clock = hlc(1);
    let mut poisoned = 0;
    for id in 0..40 {
        let verdicts: Vec<bool> = (0..3)
            .map(|_| rule.matches(&edit(&clock, "notes", &id.to_string())))
            .collect();
        assert!(
            verdicts.iter().all(|v| *v == verdicts[0]),
            "entity {id}: {verdicts:?}"
        );
        poisoned += usize::from(verdicts[0]);
    }
    assert!(
        (8..=32).contains(&poisoned),
        "half of 40 entities: {poisoned}"
    );
}
