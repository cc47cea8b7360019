//! The report's text and JSON forms carry every section a run can add,
//! and the verdicts added after the check (convergence, coalesced state)
//! fail the run and count as failures.

use cpc_core::OperationPriority::{Background, Critical, Normal};
use cpc_core::{EntityKey, OperationPriority};
use cpc_fault::{
    check, check_with, CheckOptions, CoalescedState, Convergence, DeviceDiff, Fates,
    InvariantReport, Listed,
};

use crate::{id, log, sub};

/// Op 1 applied after op 2 of its own record (a reorder), background op 4
/// sent at 5 s while critical op 3 waited (an inversion).
fn reorder_and_inversion() -> InvariantReport {
    let s = vec![
        sub(1, "a", Normal, 0),
        sub(2, "a", Normal, 1),
        sub(3, "b", Critical, 0),
        sub(4, "c", Background, 0),
    ];
    check(&log(&s, &[(2, 100), (1, 200), (4, 5_000), (3, 10_000)]), &s)
}

#[test]
fn reorders_and_inversions_are_written_with_both_ids_and_their_times() {
    let r = reorder_and_inversion();
    let text = r.to_text();
    assert!(
        text.contains(&format!(
            "reordered 1: {} after {} (notes/a)\n",
            id(1),
            id(2)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "priority_inversions 1: {} {} sent at 5s while {} {} ready since 0s\n",
            Background,
            id(4),
            Critical,
            id(3)
        )),
        "{text}"
    );
    assert_eq!(format!("{r}"), text);
    // The JSON form reads back equal, inversion times included.
    let back: InvariantReport = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["priority_inversions"]["listed"][0]["at_ms"], 5_000);
    assert_eq!(
        r.failure_count(),
        r.reordered.count + r.bound_failures.len() as u64
    );
}

#[test]
fn a_diverged_device_fails_the_run_and_is_listed() {
    let s = vec![sub(1, "a", Normal, 0)];
    let clean = check(&log(&s, &[(1, 10)]), &s);
    assert!(clean.passed && clean.failure_count() == 0, "{clean}");

    let diverged = Listed {
        count: 1,
        listed: vec![DeviceDiff {
            device: 1,
            records: 3,
        }],
    };
    let convergence = Convergence {
        devices: 2,
        remote_records: 10,
        converged: 1,
        diverged,
        stalled: 1,
        pages: 7,
        resets: 2,
        regressions: 1,
        restore_lost: 4,
    };
    assert!(!convergence.holds());
    let r = clean.clone().with_convergence(convergence);
    assert!(!r.passed);
    assert_eq!(r.failure_count(), 2, "one diverged, one stalled");
    let text = r.to_text();
    assert!(
        text.contains(
            "convergence devices 2 converged 1 stalled 1 remote_records 10 pages 7 resets 2 \
             regressions 1 restore_lost 4\ndiverged 1: device 1 (3 records)\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("verdict FAIL\n"));

    // Converged everywhere: it holds and the run still passes.
    let held = Convergence {
        devices: 2,
        converged: 2,
        ..Convergence::default()
    };
    assert!(held.holds());
    assert!(clean.with_convergence(held).passed);
}

#[test]
fn a_wrong_coalesced_record_fails_the_run_and_is_named() {
    let s = vec![sub(1, "a", Normal, 0)];
    let clean = check(&log(&s, &[(1, 10)]), &s);
    let mut state = CoalescedState::default();
    state.check(&EntityKey::new("notes", "a"), true);
    state.check(&EntityKey::new("notes", "b"), false);
    assert_eq!((state.records, state.wrong.count), (2, 1));
    let r = clean.clone().with_coalesced_state(state);
    assert!(!r.passed);
    assert_eq!(r.failure_count(), 1);
    assert!(
        r.to_text()
            .contains("coalesced_state records 2 wrong 1: notes/b\n"),
        "{r}"
    );
    let mut right = CoalescedState::default();
    right.check(&EntityKey::new("notes", "a"), true);
    assert!(clean.with_coalesced_state(right).passed);
}

#[test]
fn fates_add_up_field_by_field_and_describe_only_what_is_not_zero() {
    assert_eq!(Fates::default().describe(), "applied 0");
    let one = Fates {
        applied: 2,
        lost: 1,
        ..Fates::default()
    };
    let other = Fates {
        applied: 1,
        merged: 1,
        superseded: 1,
        rejected: 1,
        exhausted: 1,
        deferred: 1,
        dropped: 1,
        coalesced: 1,
        pending: 1,
        submit_failed: 1,
        not_stored: 1,
        lost: 1,
    };
    let mut sum = one;
    sum += other;
    assert_eq!(sum.applied, 3);
    assert_eq!(sum.lost, 2);
    assert_eq!(sum.total(), one.total() + other.total());
    assert_eq!(
        sum.describe(),
        "applied 3 merged 1 superseded 1 rejected 1 exhausted 1 deferred 1 dropped 1 \
         coalesced 1 pending 1 submit_failed 1 not_stored 1 lost 2"
    );
}

#[test]
fn max_listed_caps_every_list_but_not_its_count() {
    let s: Vec<_> = (1..=5)
        .map(|n| sub(n, &n.to_string(), OperationPriority::Normal, 0))
        .collect();
    let options = CheckOptions {
        max_listed: 2,
        ..CheckOptions::default()
    };
    let r = check_with(&[], &s, &options);
    assert_eq!(r.lost.count, 5);
    assert_eq!(r.lost.listed, vec![id(1), id(2)]);
    assert!(
        r.to_text()
            .contains(&format!("lost 5: {}, {}, and 3 more\n", id(1), id(2))),
        "{r}"
    );
}
