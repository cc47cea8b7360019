//! The public value types of the queue API: what their `Debug` output
//! shows (lengths, never payload bytes), which option values are refused
//! and the names and flags they report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, Operation, OperationId, OperationKind, RemoteRecord,
};
use cpc_storage::{
    Completion, Durability, MemoryStorage, OpState, Page, QuarantinedRecord, QueueOptions,
    QueueStorage, QueueStorageExt, RetainAcked, StorageError, REMOTE_BODY_WITHHELD,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const SECRET: &[u8] = b"SECRET-PAYLOAD";

/// Neither the bytes nor their `Debug` rendering as numbers appear.
fn assert_no_payload(text: &str) {
    assert!(!text.contains("SECRET"), "payload text leaked: {text}");
    let as_numbers = format!("{:?}", &SECRET[..4]);
    let inner = as_numbers.trim_start_matches('[').trim_end_matches(']');
    assert!(!text.contains(inner), "payload bytes leaked: {text}");
}

fn op(entity: &str, seed: u64) -> Operation {
    Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
        .payload(SECRET.to_vec())
        .build_at(
            HlcTimestamp::new(1_000, 0, NodeId(1)),
            &mut StdRng::seed_from_u64(seed),
        )
}

#[test]
fn completion_debug_names_each_variant_and_prints_lengths_not_payloads() {
    let id = OperationId::from_u128(0x1234);
    let remote = RemoteRecord {
        version: 7,
        timestamp: HlcTimestamp::new(2_000, 1, NodeId(9)),
        payload: Some(SECRET.to_vec()),
        node: NodeId(9),
    };
    let cases = [
        (Completion::Ack(id), "Ack(", vec![]),
        (
            Completion::AckAt { id, seq: 41 },
            "AckAt {",
            vec!["seq: 41"],
        ),
        (Completion::Release(id), "Release(", vec![]),
        (Completion::Drop(id), "Drop(", vec![]),
        (
            Completion::Retry {
                id,
                at: 5_000,
                error: "timeout".into(),
            },
            "Retry {",
            vec!["at: 5000", "error: \"timeout\""],
        ),
        (
            Completion::Postpone {
                id,
                at: 6_000,
                error: "offline".into(),
            },
            "Postpone {",
            vec!["at: 6000", "error: \"offline\""],
        ),
        (
            Completion::Dead {
                id,
                reason: "rejected".into(),
            },
            "Dead {",
            vec!["reason: \"rejected\""],
        ),
        (
            Completion::Defer {
                id,
                remote,
                reason: "conflict".into(),
            },
            "Defer {",
            vec![
                "version: 7",
                "payload_len: Some(14)",
                "reason: \"conflict\"",
            ],
        ),
        (
            Completion::Resend {
                id,
                base_version: Some(3),
                payload: Some(SECRET.to_vec()),
            },
            "Resend {",
            vec!["base_version: Some(3)", "payload_len: Some(14)"],
        ),
        (
            Completion::Resend {
                id,
                base_version: None,
                payload: None,
            },
            "Resend {",
            vec!["payload_len: None"],
        ),
    ];
    for (completion, head, fields) in cases {
        let text = format!("{completion:?}");
        assert!(text.starts_with(head), "{text}");
        assert!(text.contains(&format!("{id:?}")), "the id is shown: {text}");
        for field in fields {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        assert_no_payload(&text);
        assert_eq!(completion.id(), id);
    }
}

#[test]
fn a_quarantined_record_debug_shows_the_raw_length_not_the_bytes() {
    let record = QuarantinedRecord {
        n: 3,
        key: "op/1/x".into(),
        reason: "checksum".into(),
        raw: SECRET.to_vec(),
        at: 9,
    };
    let text = format!("{record:?}");
    for field in [
        "n: 3",
        "key: \"op/1/x\"",
        "reason: \"checksum\"",
        "raw_len: 14",
        "at: 9",
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    assert_no_payload(&text);
}

#[test]
fn each_option_out_of_range_is_refused_naming_its_field() {
    let base = QueueOptions::default;
    let day = Duration::from_secs(24 * 3600);
    let cases: Vec<(QueueOptions, &str)> = vec![
        (
            QueueOptions {
                durability: Durability::GroupCommit {
                    max_delay: Duration::from_secs(2),
                },
                ..base()
            },
            "durability",
        ),
        (
            QueueOptions {
                lease_timeout: Duration::ZERO,
                ..base()
            },
            "lease_timeout",
        ),
        (
            QueueOptions {
                aging_after: Some(day * 366),
                ..base()
            },
            "aging_after",
        ),
        (
            QueueOptions {
                max_payload: 0,
                ..base()
            },
            "max_payload",
        ),
        (
            QueueOptions {
                conflict_log_max_entries: 0,
                ..base()
            },
            "conflict_log_max_entries",
        ),
        (
            QueueOptions {
                conflict_log_max_age: Duration::ZERO,
                ..base()
            },
            "conflict_log_max_age",
        ),
        (
            QueueOptions {
                conflict_log_max_bytes: 0,
                ..base()
            },
            "conflict_log_max_bytes",
        ),
        (
            QueueOptions {
                retain_acked: Some(RetainAcked {
                    max_count: 0,
                    ..RetainAcked::default()
                }),
                ..base()
            },
            "retain_acked",
        ),
        (
            QueueOptions {
                retain_acked: Some(RetainAcked {
                    max_age: day * 366,
                    ..RetainAcked::default()
                }),
                ..base()
            },
            "retain_acked",
        ),
    ];
    for (options, want) in cases {
        match options.validate() {
            Err(StorageError::InvalidOption { field, .. }) => assert_eq!(field, want),
            r => panic!("{want}: expected InvalidOption, got {r:?}"),
        }
    }
    assert!(base().validate().is_ok());
    // The documented default retention: 100,000 operations, 24 hours.
    let retain = RetainAcked::default();
    assert_eq!((retain.max_count, retain.max_age), (100_000, day));
    assert!(QueueOptions {
        retain_acked: Some(retain),
        ..base()
    }
    .validate()
    .is_ok());
}

#[test]
fn op_state_names_are_the_short_lowercase_ones() {
    let names: Vec<&str> = [
        OpState::Ready,
        OpState::InFlight { lease_until: 1 },
        OpState::Waiting { until: 1 },
        OpState::Dead { reason: "x".into() },
        OpState::Deferred,
    ]
    .iter()
    .map(OpState::name)
    .collect();
    assert_eq!(
        names,
        vec!["ready", "in_flight", "waiting", "dead", "deferred"]
    );
}

#[test]
fn a_deferral_whose_remote_body_was_withheld_says_so() {
    let store = MemoryStorage::new(QueueOptions::default());
    let withheld = op("a", 5);
    let whole = op("b", 6);
    store.enqueue(withheld.clone(), 1).unwrap();
    store.enqueue(whole.clone(), 1).unwrap();
    assert_eq!(store.claim_ready(2, 8).unwrap().len(), 2);
    let remote = |payload| RemoteRecord {
        version: 2,
        timestamp: HlcTimestamp::new(1_500, 0, NodeId(2)),
        payload,
        node: NodeId(2),
    };
    store
        .complete(
            &[
                Completion::Defer {
                    id: withheld.id,
                    remote: remote(None),
                    reason: format!("{REMOTE_BODY_WITHHELD}: 3 MiB"),
                },
                Completion::Defer {
                    id: whole.id,
                    remote: remote(None),
                    reason: "conflict: deleted remotely".into(),
                },
            ],
            3,
        )
        .unwrap();
    let deferred = store.list_deferred(&Page::ALL).unwrap();
    let flag = |id| {
        deferred
            .iter()
            .find(|d| d.op.id == id)
            .unwrap()
            .remote_body_withheld()
    };
    assert!(flag(withheld.id));
    assert!(!flag(whole.id), "a remote delete is not a withheld body");
}

#[test]
fn a_default_memory_store_takes_the_default_options() {
    let store = MemoryStorage::default();
    assert_eq!(store.options(), &QueueOptions::default());
    assert_eq!(store.max_payload(), QueueOptions::default().max_payload);
    assert!(store.take_quarantine_notices().is_empty());
    let small = MemoryStorage::new(QueueOptions {
        max_payload: 8,
        ..QueueOptions::default()
    });
    assert_eq!(small.max_payload(), 8);
    // The limit it reports is the one it enforces.
    let mut big = op("c", 7);
    big.payload = vec![0; 9];
    assert!(matches!(
        small.enqueue(big, 1),
        Err(StorageError::PayloadTooLarge { .. })
    ));
}
