//! `FieldMerge` is the join of a state-based CRDT (a map of last-writer-wins
//! registers): commutative, associative and idempotent, and two devices
//! resolving the same pair of versions end with the same record.

use cpc_conflict::{
    merge_fields, ConflictResolver, FieldCodec, FieldMap, FieldMerge, FieldValue,
    PostcardFieldCodec, RemoteRecord, Resolution,
};
use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationId, OperationKind};
use proptest::prelude::*;

/// Few field names and small timestamp ranges, so maps overlap and the same
/// field is often written at equal times (the tie-breaking path).
fn field_map() -> impl Strategy<Value = FieldMap> {
    let name = prop::sample::select(vec!["title", "body", "done", "tags", "due"]);
    let value = (
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..3)),
        0u64..4,
        0u32..2,
        1u64..3,
    )
        .prop_map(|(value, wall, logical, node)| FieldValue {
            value,
            timestamp: HlcTimestamp::new(wall, logical, NodeId(node)),
        });
    prop::collection::btree_map(name.prop_map(str::to_owned), value, 0..5)
}

fn op_with(fields: &FieldMap) -> Operation {
    Operation {
        id: OperationId::from_u128(1),
        entity: EntityKey::new("notes", "shared"),
        kind: OperationKind::Update,
        payload: PostcardFieldCodec.encode(fields).unwrap(),
        priority: Default::default(),
        timestamp: HlcTimestamp::new(10, 0, NodeId(1)),
        base_version: Some(1),
    }
}

fn remote_with(fields: &FieldMap) -> RemoteRecord {
    RemoteRecord {
        version: 2,
        timestamp: HlcTimestamp::new(10, 0, NodeId(2)),
        payload: Some(PostcardFieldCodec.encode(fields).unwrap()),
        node: NodeId(2),
    }
}

/// The record a device ends with after resolving `local` against `remote`.
fn outcome(local: &FieldMap, remote: &FieldMap) -> FieldMap {
    match FieldMerge::new().resolve(&op_with(local), &remote_with(remote)) {
        Resolution::KeepLocal => local.clone(),
        Resolution::KeepRemote => remote.clone(),
        Resolution::Merged(bytes) => PostcardFieldCodec.decode(&bytes).unwrap(),
        Resolution::Defer => panic!("field merge deferred decodable maps"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative(a in field_map(), b in field_map()) {
        prop_assert_eq!(merge_fields(&a, &b), merge_fields(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in field_map(), b in field_map(), c in field_map()) {
        prop_assert_eq!(
            merge_fields(&merge_fields(&a, &b), &c),
            merge_fields(&a, &merge_fields(&b, &c))
        );
    }

    #[test]
    fn merge_is_idempotent(a in field_map(), b in field_map()) {
        prop_assert_eq!(merge_fields(&a, &a), a.clone());
        // Absorbing: merging something already merged in changes nothing.
        let ab = merge_fields(&a, &b);
        prop_assert_eq!(merge_fields(&ab, &b), ab.clone());
    }

    #[test]
    fn every_field_keeps_its_latest_write(a in field_map(), b in field_map()) {
        let m = merge_fields(&a, &b);
        prop_assert_eq!(m.len(), a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>().len());
        for (name, v) in &m {
            for side in [&a, &b] {
                if let Some(w) = side.get(name) {
                    prop_assert!(v.timestamp >= w.timestamp);
                }
            }
        }
    }

    #[test]
    fn both_devices_end_with_the_merge(a in field_map(), b in field_map()) {
        let on_a = outcome(&a, &b);
        let on_b = outcome(&b, &a);
        prop_assert_eq!(&on_a, &merge_fields(&a, &b));
        prop_assert_eq!(on_a, on_b);
    }
}
