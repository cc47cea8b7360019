use cpc_storage::QueueStorageExt as _;
use std::path::Path;
use std::sync::Arc;

use cpc_conflict::{
    conflict_record, resolve_and_record, ConflictResolver, DeferAll, FieldCodec, FieldMap,
    FieldMerge, FieldValue, LastWriterWins, PostcardFieldCodec, RemoteRecord, Resolution,
};
use cpc_core::{
    EntityKey, HlcTimestamp, HybridClock, ManualWallClock, NodeId, Operation, OperationKind,
};
use cpc_storage::{
    Completion, ConflictFilter, DeferredConflict, QueueOptions, QueueStorage, SledStorage,
    SqliteStorage,
};

const NOW: u64 = 1_800_000_000_000;
const PHONE: NodeId = NodeId(1);
const LAPTOP: NodeId = NodeId(2);

fn fields(entries: &[(&str, &[u8], HlcTimestamp)]) -> Vec<u8> {
    let map: FieldMap = entries
        .iter()
        .map(|(k, v, ts)| ((*k).to_owned(), FieldValue::set(v.to_vec(), *ts)))
        .collect();
    PostcardFieldCodec.encode(&map).unwrap()
}

/// The whole story against one backend; `open` reopens the same directory.
fn deferred_and_logged_conflicts_survive<S: QueueStorage>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let clock = HybridClock::with_wall_clock(PHONE, Arc::new(ManualWallClock::new(NOW)));
    let laptop_edit = HlcTimestamp::new(NOW + 5_000, 0, LAPTOP);

    // The phone renamed todo 7 (field map payload) and edited todo 8; both
    // made on version 1, both conflict with newer laptop versions.
    let t_title = clock.now().unwrap();
    let renamed = Operation::builder(EntityKey::new("todos", "7"), OperationKind::Update)
        .payload(fields(&[("title", b"Oat milk", t_title)]))
        .base_version(1)
        .build(&clock)
        .unwrap();
    let stale = Operation::builder(EntityKey::new("todos", "8"), OperationKind::Update)
        .payload(b"phone's stale note".to_vec())
        .base_version(1)
        .build(&clock)
        .unwrap();
    let remote_7 = RemoteRecord {
        version: 2,
        timestamp: laptop_edit,
        payload: Some(fields(&[
            ("title", b"Milk", HlcTimestamp::new(NOW - 60_000, 0, LAPTOP)),
            ("done", b"yes", laptop_edit),
        ])),
        node: LAPTOP,
    };
    let remote_8 = RemoteRecord {
        version: 4,
        timestamp: laptop_edit,
        payload: Some(b"laptop's note".to_vec()),
        node: LAPTOP,
    };

    let (deferred_entry, lost_entry) = {
        let store = open(dir.path());
        store
            .enqueue_batch(vec![renamed.clone(), stale.clone()], NOW)
            .unwrap();
        assert_eq!(store.claim_ready(NOW, 10).unwrap().len(), 2);

        let (r7, e7) = resolve_and_record(&DeferAll, &renamed, &remote_7, NOW + 10);
        let (r8, e8) = resolve_and_record(&LastWriterWins, &stale, &remote_8, NOW + 20);
        assert_eq!((&r7, &r8), (&Resolution::Defer, &Resolution::KeepRemote));
        store.log_conflict(&e7).unwrap();
        store.log_conflict(&e8).unwrap();
        store
            .complete(
                &[
                    Completion::Defer {
                        id: renamed.id,
                        remote: remote_7.clone(),
                        reason: "deferred".into(),
                    },
                    Completion::Drop(stale.id),
                ],
                NOW + 20,
            )
            .unwrap();
        (e7, e8)
    }; // the store is dropped here: a restart

    let store = open(dir.path());
    let deferred = store.list_deferred(&cpc_storage::Page::ALL).unwrap();
    assert_eq!(
        deferred,
        vec![DeferredConflict {
            op: renamed.clone(),
            seq: deferred.first().map_or(0, |d| d.seq),
            remote: remote_7.clone(),
            reason: Some("deferred".into()),
        }]
    );
    let log = store.conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(log, vec![lost_entry.clone(), deferred_entry]);
    // The edit LWW dropped is recoverable from the log.
    assert_eq!(
        log[0].losing_payload.as_deref(),
        Some(&b"phone's stale note"[..])
    );
    assert_eq!(store.pending().unwrap(), 0);

    // After the restart the app settles the deferred conflict with a field
    // merge: the phone's title and the laptop's "done" are both kept.
    let parked = &store.list_deferred(&cpc_storage::Page::ALL).unwrap()[0];
    let decision = FieldMerge::new().resolve(&parked.op, &parked.remote);
    let Resolution::Merged(merged) = &decision else {
        panic!("expected a merge, got {decision:?}")
    };
    let merged_map = PostcardFieldCodec.decode(merged).unwrap();
    assert_eq!(merged_map["title"].value.as_deref(), Some(&b"Oat milk"[..]));
    assert_eq!(merged_map["done"].value.as_deref(), Some(&b"yes"[..]));
    store
        .log_conflict(&conflict_record(
            &parked.op,
            &parked.remote,
            &decision,
            NOW + 30,
        ))
        .unwrap();
    assert!(store
        .settle(renamed.id, decision.clone(), NOW + 30)
        .unwrap());
    assert!(store
        .list_deferred(&cpc_storage::Page::ALL)
        .unwrap()
        .is_empty());
    let resent = store.claim_ready(NOW + 30, 10).unwrap();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].op.id, renamed.id);
    assert_eq!(resent[0].op.payload, *merged);
    assert_eq!(resent[0].op.base_version, Some(remote_7.version));
    drop(store);

    // And the settlement's log entry is durable too.
    let store = open(dir.path());
    let log = store.conflict_log(&ConflictFilter::default()).unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].resolution, decision);
    assert_eq!(log[1], lost_entry);
}

#[test]
fn with_sled_storage() {
    deferred_and_logged_conflicts_survive(|dir| {
        SledStorage::open(dir, QueueOptions::default()).unwrap()
    });
}

#[test]
fn with_sqlite_storage() {
    deferred_and_logged_conflicts_survive(|dir| {
        SqliteStorage::open(dir, QueueOptions::default()).unwrap()
    });
}
