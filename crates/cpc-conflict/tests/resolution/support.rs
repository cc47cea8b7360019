//! Builders shared by the suite.

use cpc_conflict::RemoteRecord;
use cpc_core::{EntityKey, HlcTimestamp, Operation, OperationId, OperationKind};

/// One version of a record as every device sees it: who wrote it, when, and
/// what it holds (`None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub timestamp: HlcTimestamp,
    pub content: Option<Vec<u8>>,
    pub version: u64,
}

impl Version {
    /// The version as the local operation of the device that wrote it.
    pub fn as_local(&self) -> Operation {
        let (kind, payload) = match &self.content {
            Some(p) => (OperationKind::Update, p.clone()),
            None => (OperationKind::Delete, Vec::new()),
        };
        Operation {
            id: OperationId::from_u128(
                u128::from(self.timestamp.wall_ms) << 64
                    | u128::from(self.timestamp.logical) << 32
                    | u128::from(self.timestamp.node.0 as u32),
            ),
            entity: EntityKey::new("notes", "shared"),
            kind,
            payload,
            priority: Default::default(),
            timestamp: self.timestamp,
            base_version: Some(1),
        }
    }

    /// The version as the remote reports it to another device.
    pub fn as_remote(&self) -> RemoteRecord {
        RemoteRecord {
            version: self.version,
            timestamp: self.timestamp,
            payload: self.content.clone(),
            node: self.timestamp.node,
        }
    }
}
