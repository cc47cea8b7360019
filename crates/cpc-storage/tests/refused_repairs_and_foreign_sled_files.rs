//! Two refusals that leave the queue as it was: a repair whose fixed
//! operation names another entity (`RepairMismatch`, every backend), and a
//! sled store whose sled files were written with other storage parameters
//! (`Sled`, raised while sled opens them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind};
use cpc_storage::{
    MemoryStorage, QueueOptions, QueueStorage, QueueStorageExt, SqliteStorage, StorageError,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const NOW: u64 = 1_000_000;

fn op(entity: &str) -> Operation {
    Operation::builder(EntityKey::new("notes", entity), OperationKind::Update)
        .payload(b"draft".to_vec())
        .build_at(
            HlcTimestamp::new(NOW, 0, NodeId(4)),
            &mut StdRng::seed_from_u64(17),
        )
}

fn a_repair_for_another_entity_is_refused_and_the_dead_letter_stays(store: &dyn QueueStorage) {
    let original = op("n1");
    store.enqueue(original.clone(), NOW).unwrap();
    store.claim_ready(NOW, 1).unwrap();
    store
        .dead_letter(original.id, "rejected: bad", NOW)
        .unwrap();

    let elsewhere = Operation {
        entity: EntityKey::new("notes", "n2"),
        ..original.clone()
    };
    let err = store.repair(elsewhere, NOW + 1).unwrap_err();
    match &err {
        StorageError::RepairMismatch { id, reason } => {
            assert_eq!(*id, original.id);
            assert_eq!(*reason, "the fixed operation belongs to another entity");
        }
        other => panic!("expected a repair mismatch, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "repair of operation {} refused: the fixed operation belongs to another entity",
            original.id
        )
    );
    let stats = store.stats().unwrap();
    assert_eq!((stats.dead, stats.ready), (1, 0), "nothing changed");

    // The same entity is repaired: ready again, with the fixed payload.
    let fixed = Operation {
        payload: b"fixed".to_vec(),
        ..original.clone()
    };
    assert!(store.repair(fixed, NOW + 2).unwrap());
    let claimed = store.claim_ready(NOW + 3, 1).unwrap();
    assert_eq!(claimed[0].op.payload, b"fixed");
}

#[test]
fn a_repair_for_another_entity_is_refused_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open_at(dir.path().join("q"), QueueOptions::default(), NOW).unwrap();
    a_repair_for_another_entity_is_refused_and_the_dead_letter_stays(&store);
}

#[test]
fn a_repair_for_another_entity_is_refused_memory() {
    let store = MemoryStorage::new(QueueOptions::default());
    a_repair_for_another_entity_is_refused_and_the_dead_letter_stays(&store);
}

#[cfg(feature = "sled")]
#[test]
fn a_repair_for_another_entity_is_refused_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        cpc_storage::SledStorage::open_at(dir.path().join("q"), QueueOptions::default(), NOW)
            .unwrap();
    a_repair_for_another_entity_is_refused_and_the_dead_letter_stays(&store);
}

#[cfg(feature = "sled")]
#[test]
fn sled_files_of_another_sled_version_are_a_sled_error_and_left_as_they_were() {
    use cpc_storage::SledStorage;

    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("q");
    let kept = op("n1");
    {
        let store = SledStorage::open_at(&queue, QueueOptions::default(), NOW).unwrap();
        store.enqueue(kept.clone(), NOW).unwrap();
    }
    // sled records its storage parameters in `conf` (text, then a CRC32):
    // claim the files were written by sled's pagecache 0.33.
    let conf = queue.join("sled").join("conf");
    let original = std::fs::read(&conf).unwrap();
    let text = String::from_utf8_lossy(&original[..original.len() - 4]).into_owned();
    assert!(text.contains("version: 0.34\n"), "{text:?}");
    let older = text.replace("version: 0.34\n", "version: 0.33\n");
    let mut bytes = older.into_bytes();
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&conf, &bytes).unwrap();

    let err = SledStorage::open_at(&queue, QueueOptions::default(), NOW).unwrap_err();
    match &err {
        StorageError::Sled { context, source } => {
            assert_eq!(*context, "open");
            let cause = source.to_string();
            assert!(cause.contains("pagecache version 0.33"), "{cause}");
        }
        other => panic!("expected a sled error, got {other:?}"),
    }
    assert_eq!(err.to_string(), "sled error during open");
    assert_eq!(std::fs::read(&conf).unwrap(), bytes, "left as it was");

    // With its own parameters back, the queue opens with its operation.
    std::fs::write(&conf, &original).unwrap();
    let store = SledStorage::open_at(&queue, QueueOptions::default(), NOW).unwrap();
    assert_eq!(store.get(kept.id).unwrap().map(|s| s.op.id), Some(kept.id));
}
