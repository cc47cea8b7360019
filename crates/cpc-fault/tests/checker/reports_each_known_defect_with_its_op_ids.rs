use cpc_core::OperationPriority::{Background, Critical, High, Normal};
use cpc_fault::{
    check, check_with, Abandoned, CheckOptions, ExpectedBounds, InvariantReport, SubmitOutcome,
};

use crate::{id, log, ms, sub};

fn clean_counts(r: &InvariantReport) -> [u64; 5] {
    [
        r.lost.count,
        r.unexpected.count,
        r.duplicated.count,
        r.reordered.count,
        r.priority_inversions.count,
    ]
}

#[test]
fn a_clean_run_passes() {
    let s = vec![
        sub(1, "a", Normal, 0),
        sub(2, "b", Normal, 0),
        sub(3, "a", Normal, 10),
    ];
    let r = check(&log(&s, &[(1, 100), (2, 100), (3, 200)]), &s);
    assert!(r.passed, "{r}");
    assert_eq!(clean_counts(&r), [0; 5]);
    assert_eq!((r.applied, r.applies), (3, 3));
    assert_eq!(r.latency_max, Some(ms(190)));
}

#[test]
fn a_lost_operation_is_reported_with_its_id() {
    let s = vec![sub(1, "a", Normal, 0), sub(2, "b", Normal, 0)];
    let r = check(&log(&s, &[(1, 100)]), &s);
    assert!(!r.passed);
    assert_eq!(r.lost.count, 1);
    assert_eq!(r.lost.listed, vec![id(2)]);
    assert!(r.to_text().contains(&format!("lost 1: {}", id(2))), "{r}");
}

#[test]
fn abandoned_failed_and_unknown_operations_are_not_lost() {
    let mut s = vec![
        sub(1, "a", Normal, 0),
        sub(2, "b", Normal, 0),
        sub(3, "c", Normal, 0),
        sub(4, "d", Normal, 0),
    ];
    s[0].abandoned = Some(Abandoned::DeadLettered);
    s[1].outcome = SubmitOutcome::Failed;
    s[2].outcome = SubmitOutcome::Unknown;
    s[3].outcome = SubmitOutcome::Unknown;
    let r = check(&log(&s, &[(4, 50)]), &s);
    assert!(r.passed, "{r}");
    assert_eq!(r.abandoned, 1);
    assert_eq!(r.unknown_unapplied, 1);
    assert_eq!(r.recovered.listed, vec![id(4)]);
}

#[test]
fn an_unexpected_apply_is_reported() {
    let mut s = vec![sub(1, "a", Normal, 0), sub(2, "b", Normal, 0)];
    s[1].outcome = SubmitOutcome::Failed;
    let r = check(&log(&s, &[(1, 10), (2, 20), (99, 30)]), &s);
    assert!(!r.passed);
    assert_eq!(r.unexpected.count, 2);
    assert_eq!(r.unexpected.listed, vec![id(99), id(2)]);
}

#[test]
fn a_duplicate_is_reported_with_its_apply_count() {
    let s = vec![sub(1, "a", Normal, 0), sub(2, "b", Normal, 0)];
    let r = check(&log(&s, &[(1, 10), (2, 20), (1, 30), (1, 40)]), &s);
    assert!(!r.passed);
    assert_eq!(r.duplicated.count, 1);
    assert_eq!(r.duplicated.listed[0].op_id, id(1));
    assert_eq!(r.duplicated.listed[0].applies, 3);
    assert!(
        r.to_text().contains(&format!("duplicated 1: {} x3", id(1))),
        "{r}"
    );
}

#[test]
fn a_reorder_within_an_entity_is_reported_with_both_ids() {
    let s = vec![
        sub(1, "a", Normal, 0),
        sub(2, "a", Normal, 1),
        sub(3, "a", Normal, 2),
        sub(4, "b", Normal, 3),
    ];
    // Op 3 overtakes ops 1 and 2 of the same entity; op 4 (another entity)
    // may go anywhere.
    let r = check(&log(&s, &[(4, 5), (3, 10), (1, 20), (2, 30)]), &s);
    assert!(!r.passed);
    assert_eq!(r.reordered.count, 2);
    let pairs: Vec<_> = r
        .reordered
        .listed
        .iter()
        .map(|x| (x.op_id, x.applied_after))
        .collect();
    assert_eq!(pairs, vec![(id(1), id(3)), (id(2), id(3))]);
}

#[test]
fn different_devices_may_interleave_on_one_entity() {
    let mut s = vec![sub(1, "a", Normal, 0), sub(2, "a", Normal, 1)];
    s[1].node = cpc_core::NodeId(2);
    let r = check(&log(&s, &[(2, 10), (1, 20)]), &s);
    assert_eq!(r.reordered.count, 0, "{r}");
}

#[test]
fn a_priority_inversion_is_reported_with_both_ids() {
    // Critical op 1 is ready at 0 and only sent at 10 s, while background
    // op 2 (another entity) was sent at 5 s.
    let s = vec![sub(1, "a", Critical, 0), sub(2, "b", Background, 0)];
    let r = check(&log(&s, &[(2, 5_000), (1, 10_000)]), &s);
    assert!(!r.passed);
    assert_eq!(r.priority_inversions.count, 1);
    let inv = &r.priority_inversions.listed[0];
    assert_eq!((inv.lower, inv.higher), (id(2), id(1)));
    assert_eq!(
        (inv.lower_priority, inv.higher_priority),
        (Background, Critical)
    );
    assert_eq!(inv.at, ms(5_000));
    assert!(r.bound_failures[0].contains("priority inversions"), "{r}");

    // Within the tolerance (one batch interval) it is not an inversion.
    let r = check(&log(&s, &[(2, 900), (1, 1_500)]), &s);
    assert_eq!(r.priority_inversions.count, 0, "{r}");
}

#[test]
fn an_operation_behind_its_entity_head_is_not_ready() {
    // High op 2 waits behind background op 1 of its own entity, which is
    // applied at 9 s; normal op 3 of another entity goes at 5 s: fine.
    let s = vec![
        sub(1, "a", Background, 0),
        sub(2, "a", High, 0),
        sub(3, "b", Normal, 0),
    ];
    let r = check(&log(&s, &[(3, 5_000), (1, 9_000), (2, 9_500)]), &s);
    assert_eq!(r.priority_inversions.count, 0, "{r}");
}

#[test]
fn a_backing_off_operation_is_no_inversion_when_attempts_are_known() {
    let mut s = vec![sub(1, "a", High, 0), sub(2, "b", Normal, 0)];
    let applies = log(&s, &[(2, 5_000), (1, 30_000)]);
    assert_eq!(check(&applies, &s).priority_inversions.count, 1);
    // Op 1 was tried at once (and failed); op 2 went while 1 backed off.
    s[0].first_attempt_at = Some(ms(0));
    s[1].first_attempt_at = Some(ms(5_000));
    assert_eq!(check(&applies, &s).priority_inversions.count, 0);
}

#[test]
fn aging_excuses_long_waiting_low_priority_work() {
    let s = vec![sub(1, "a", Background, 0), sub(2, "b", Normal, 60_000)];
    let applies = log(&s, &[(1, 70_000), (2, 80_000)]);
    assert_eq!(check(&applies, &s).priority_inversions.count, 1);
    let options = CheckOptions {
        bounds: ExpectedBounds {
            aging_after: Some(ms(30_000)),
            ..ExpectedBounds::default()
        },
        ..CheckOptions::default()
    };
    let r = check_with(&applies, &s, &options);
    assert_eq!(r.priority_inversions.count, 0, "{r}");
}

#[test]
fn bounds_drain_amplification_and_latency_are_enforced() {
    let s: Vec<_> = (1..=4).map(|n| sub(n, &n.to_string(), Normal, 0)).collect();
    let applies = log(&s, &[(1, 1_000), (2, 2_000), (3, 3_000), (4, 200_000)]);
    let options = CheckOptions {
        seed: 99,
        scenario: "hand-made".into(),
        last_outage_end: Some(ms(100_000)),
        transport_calls: Some(20),
        ops_sent: Some(8),
        bounds: ExpectedBounds {
            max_drain_after_heal: Some(ms(60_000)),
            max_retry_amplification: Some(2.0),
            max_p99_latency: Some(ms(100_000)),
            ..ExpectedBounds::default()
        },
        max_listed: 0,
        conflicts: Default::default(),
    };
    let r = check_with(&applies, &s, &options);
    assert_eq!(r.drain_after_heal, Some(ms(100_000)));
    assert_eq!(r.retry_amplification, Some(5.0));
    assert_eq!(r.send_amplification, Some(2.0));
    assert_eq!(r.latency_p50, Some(ms(2_000)));
    assert_eq!(r.latency_p99, Some(ms(200_000)));
    assert_eq!(r.bound_failures.len(), 3, "{r}");
    assert!(!r.passed);
    // Seed first, then the name; the verdict last.
    let text = r.to_text();
    assert!(text.starts_with("seed 99\nscenario hand-made\n"), "{text}");
    assert!(text.ends_with("verdict FAIL\n"));
}

#[test]
fn text_and_json_forms_are_stable_and_complete() {
    let s = vec![sub(1, "a", Normal, 0), sub(2, "b", Normal, 0)];
    let applies = log(&s, &[(1, 10), (1, 20)]);
    let a = check(&applies, &s);
    let b = check(&applies, &s);
    assert_eq!(a.to_text(), b.to_text());
    assert_eq!(a.to_json(), b.to_json());
    let back: InvariantReport = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(back, a);
    let json: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(json["lost"]["count"], 1);
    assert_eq!(json["duplicated"]["count"], 1);
    assert!(json["latency_p50_ms"].is_u64());
}

#[test]
fn long_violation_lists_are_capped_but_counted() {
    let s: Vec<_> = (1..=100)
        .map(|n| sub(n, &n.to_string(), Normal, 0))
        .collect();
    let r = check(&[], &s);
    assert_eq!(r.lost.count, 100);
    assert_eq!(r.lost.listed.len(), 20);
    assert!(r.to_text().contains("and 80 more"));
}

#[test]
fn a_successor_is_ready_only_once_its_predecessor_was_acknowledged() {
    // Op 1 was applied at 1 s but its ack was lost: the client learned of
    // it only at 20 s. High op 2 of the same entity was not claimable
    // before, so normal op 3 going at 10 s is no inversion.
    let mut s = vec![
        sub(1, "a", Normal, 0),
        sub(2, "a", High, 0),
        sub(3, "b", Normal, 0),
    ];
    let applies = log(&s, &[(1, 1_000), (3, 10_000), (2, 21_000)]);
    s[1].priority = High;
    s[2].priority = cpc_core::OperationPriority::Normal;
    // Without the ack time the checker assumes op 2 was ready at 1 s...
    let mut lower = s.clone();
    lower[2].priority = Background;
    assert_eq!(check(&applies, &lower).priority_inversions.count, 1);
    // ...with it, op 2 was ready only at 20 s.
    lower[0].acked_at = Some(ms(20_000));
    assert_eq!(check(&applies, &lower).priority_inversions.count, 0);
}

/// With dedupe off a resend of an older operation is applied again after
/// a newer one of its record: that apply is a reorder too, not only first
/// applies out of order.
#[test]
fn a_stale_resend_applied_after_a_newer_operation_is_a_reorder() {
    let s = vec![sub(1, "a", Normal, 0), sub(2, "a", Normal, 10)];
    let r = check(&log(&s, &[(1, 100), (2, 200), (1, 300)]), &s);
    assert_eq!(r.duplicated.count, 1, "{r}");
    assert_eq!(r.reordered.count, 1, "{r}");
    assert_eq!(r.reordered.listed[0].op_id, id(1));
    assert_eq!(r.reordered.listed[0].applied_after, id(2));
    assert!(!r.passed);
    // Applied twice in order (a duplicate, not a reorder).
    let r = check(&log(&s, &[(1, 100), (1, 150), (2, 200)]), &s);
    assert_eq!((r.duplicated.count, r.reordered.count), (1, 0), "{r}");
}

/// Every operation has one fate, the fates add up to what was submitted,
/// and the run fails on the fates that mean the engine fell short.
#[test]
fn every_operation_has_one_fate_and_the_fates_add_up() {
    use cpc_fault::QueueEnd;
    let mut s: Vec<_> = (1..=10)
        .map(|n| sub(n, &n.to_string(), Normal, 0))
        .collect();
    s[1].merged = true;
    s[2].abandoned = Some(Abandoned::ConflictKeptRemote);
    s[3].abandoned = Some(Abandoned::DeadLettered);
    s[4].left_in_queue = Some(QueueEnd::Deferred);
    s[5].outcome = SubmitOutcome::Failed;
    s[6].outcome = SubmitOutcome::Unknown;
    s[7].node = cpc_core::NodeId(2);
    s[7].abandoned = Some(Abandoned::ConflictKeptRemote);
    // 9 and 10 are lost; then pending and exhausted below.
    let r = check(&log(&s, &[(1, 10), (2, 20)]), &s);
    let f = r.fates;
    assert_eq!(
        (f.applied, f.merged, f.superseded, f.rejected, f.deferred),
        (1, 1, 2, 1, 1),
        "{r}"
    );
    assert_eq!((f.submit_failed, f.not_stored, f.lost), (1, 1, 2), "{r}");
    assert_eq!(f.total(), r.submitted);
    assert_eq!(r.lost.count, 2);
    // Per device: device 1 (node 2) lost one edit to the remote.
    assert_eq!(r.by_device.len(), 2);
    assert_eq!(r.by_device[1].device, 1);
    assert_eq!(r.by_device[1].fates.superseded, 1);
    assert!(r.to_text().contains("device 1: superseded 1"), "{r}");

    s[8].left_in_queue = Some(QueueEnd::Pending);
    s[9].left_in_queue = Some(QueueEnd::Dead);
    let r = check(&log(&s, &[(1, 10), (2, 20)]), &s);
    assert_eq!(
        (r.fates.pending, r.fates.exhausted, r.fates.lost),
        (1, 1, 0)
    );
    assert_eq!(r.lost.count, 0);
    assert!(!r.passed, "pending and exhausted fail the run: {r}");
    assert_eq!(r.bound_failures.len(), 2, "{r}");
}

/// Drain counts from the heal until what waited at the heal was applied:
/// a run that finished before the heal drains in 0, and operations
/// submitted after it do not stretch the figure.
#[test]
fn drain_counts_only_what_waited_at_the_heal() {
    let s = vec![
        sub(1, "a", Normal, 0),
        sub(2, "b", Normal, 0),
        sub(3, "c", Normal, 50_000),
    ];
    let options = CheckOptions {
        last_outage_end: Some(ms(10_000)),
        ..CheckOptions::default()
    };
    let r = check_with(
        &log(&s, &[(1, 5_000), (2, 12_000), (3, 90_000)]),
        &s,
        &options,
    );
    assert_eq!(r.drain_after_heal, Some(ms(2_000)), "{r}");
    let r = check_with(
        &log(&s, &[(1, 5_000), (2, 6_000), (3, 90_000)]),
        &s,
        &options,
    );
    assert_eq!(r.drain_after_heal, Some(ms(0)), "{r}");
}

/// Latency is reported per priority, highest first.
#[test]
fn latency_is_reported_per_priority() {
    let s = vec![
        sub(1, "a", Critical, 0),
        sub(2, "b", Background, 0),
        sub(3, "c", Background, 0),
    ];
    let r = check(&log(&s, &[(1, 10), (2, 500), (3, 900)]), &s);
    let by: Vec<_> = r
        .latency_by_priority
        .iter()
        .map(|l| (l.priority, l.applied, l.p99))
        .collect();
    assert_eq!(
        by,
        vec![(Critical, 1, Some(ms(10))), (Background, 2, Some(ms(900)))]
    );
    assert!(
        r.to_text()
            .contains("latency critical (1 applied) p50 10ms"),
        "{r}"
    );
}
