//! Benchmarks of cpc-sync (criterion, `harness = false`), each beside a
//! baseline measured in the same run; see `cargo xtask bench`.

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Payload size of every benchmark operation, in bytes (the issues' figures
/// are for 256 B operations).
pub const PAYLOAD: usize = 256;

/// The `n`th benchmark operation: a 256-byte payload, entity `n % entities`
/// of `collection`, the four priorities in turn, and an id and timestamp
/// that depend only on `n`, so every run stores the same bytes.
pub fn bench_op(collection: &str, n: u64, entities: u64) -> Operation {
    Operation::builder(
        EntityKey::new(collection, format!("e{}", n % entities.max(1))),
        OperationKind::Update,
    )
    .payload(vec![(n % 251) as u8; PAYLOAD])
    .priority(OperationPriority::from_rank((n % 4) as u8).unwrap_or_default())
    .build_at(
        HlcTimestamp::new(1_700_000_000_000 + n, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(n),
    )
}
