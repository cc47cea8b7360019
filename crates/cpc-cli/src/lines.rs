//! The JSON-lines form of an operation that `export` writes and `import`
//! reads: one object per line, every field named, the payload in standard
//! base64. Unknown fields are refused, so a typo is an error, not a loss.

use base64::Engine as _;
use cpc_core::{
    EntityKey, HlcTimestamp, NodeId, Operation, OperationId, OperationKind, OperationPriority,
};
use serde::{Deserialize, Serialize};

/// One exported operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The operation id (26 characters of Crockford base32).
    pub id: String,
    /// Its entity's collection.
    pub collection: String,
    /// Its entity's id.
    pub record: String,
    /// `create`, `update`, `delete` or `custom:NAME`.
    pub kind: String,
    /// `critical`, `high`, `normal` or `background`.
    pub priority: String,
    /// The payload, standard base64.
    pub payload: String,
    /// The remote version it was based on.
    pub base_version: Option<u64>,
    /// Its hybrid logical clock timestamp: wall ms.
    pub wall_ms: u64,
    /// … logical counter.
    pub logical: u32,
    /// … node.
    pub node: u64,
}

/// The priority's name.
pub fn priority_name(p: OperationPriority) -> &'static str {
    match p {
        OperationPriority::Critical => "critical",
        OperationPriority::High => "high",
        OperationPriority::Normal => "normal",
        OperationPriority::Background => "background",
    }
}

/// The kind's name (`custom:NAME` for a custom kind).
pub fn kind_name(k: &OperationKind) -> String {
    match k {
        OperationKind::Create => "create".into(),
        OperationKind::Update => "update".into(),
        OperationKind::Delete => "delete".into(),
        OperationKind::Custom(name) => format!("custom:{name}"),
    }
}

impl Line {
    /// The line of `op`.
    pub fn of(op: &Operation) -> Line {
        Line {
            id: op.id.to_string(),
            collection: op.entity.collection.clone(),
            record: op.entity.id.clone(),
            kind: kind_name(&op.kind),
            priority: priority_name(op.priority).into(),
            payload: base64::engine::general_purpose::STANDARD.encode(&op.payload),
            base_version: op.base_version,
            wall_ms: op.timestamp.wall_ms,
            logical: op.timestamp.logical,
            node: op.timestamp.node.0,
        }
    }

    /// The operation, checked against `max_payload`; the error says what
    /// is wrong (never the payload).
    pub fn operation(&self, max_payload: usize) -> Result<Operation, String> {
        let id: OperationId = self.id.parse().map_err(|e| format!("id: {e}"))?;
        let kind = match self.kind.as_str() {
            "create" => OperationKind::Create,
            "update" => OperationKind::Update,
            "delete" => OperationKind::Delete,
            other => match other.strip_prefix("custom:") {
                Some(name) => OperationKind::Custom(name.to_owned()),
                None => return Err(format!("kind: unknown kind {other:?}")),
            },
        };
        let priority = match self.priority.as_str() {
            "critical" => OperationPriority::Critical,
            "high" => OperationPriority::High,
            "normal" => OperationPriority::Normal,
            "background" => OperationPriority::Background,
            other => return Err(format!("priority: unknown priority {other:?}")),
        };
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|e| format!("payload: not standard base64 ({e})"))?;
        let op = Operation {
            id,
            entity: EntityKey::new(self.collection.clone(), self.record.clone()),
            kind,
            payload,
            priority,
            timestamp: HlcTimestamp::new(self.wall_ms, self.logical, NodeId(self.node)),
            base_version: self.base_version,
        };
        op.validate(max_payload).map_err(|e| e.to_string())?;
        Ok(op)
    }
}
