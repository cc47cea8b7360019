//! Each fault of `FaultyTransport` in isolation, against `SimulatedRemote`.

// Test helpers outside #[test] functions may unwrap too: a failure is a
// test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod each_fault_kind_in_isolation;
mod network_and_schedule;
mod outages_and_determinism;

use std::sync::Arc;

use cpc_core::{EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `n` operations on distinct records, deterministic.
pub fn ops(n: usize) -> Vec<Operation> {
    let clock = HybridClock::with_wall_clock(NodeId(1), Arc::new(ManualWallClock::new(1_000)));
    let mut rng = StdRng::seed_from_u64(42);
    (0..n)
        .map(|i| {
            Operation::builder(
                EntityKey::new("notes", i.to_string()),
                OperationKind::Create,
            )
            .payload(vec![b'x'; 16])
            .build_at(clock.now().unwrap(), &mut rng)
        })
        .collect()
}

/// A push with no `known` position, answering the outcomes alone: what
/// most of these tests look at.
#[allow(async_fn_in_trait)]
pub trait PushOps {
    /// Pushes `ops` and answers their outcomes.
    async fn push_ops(
        &self,
        ops: &[cpc_core::Operation],
    ) -> Result<Vec<cpc_core::OpOutcome>, cpc_core::TransportError>;
}

impl<T: cpc_core::Transport + ?Sized> PushOps for T {
    async fn push_ops(
        &self,
        ops: &[cpc_core::Operation],
    ) -> Result<Vec<cpc_core::OpOutcome>, cpc_core::TransportError> {
        self.push(&cpc_core::PushQuery::new(ops))
            .await
            .map(|a| a.outcomes)
    }
}
