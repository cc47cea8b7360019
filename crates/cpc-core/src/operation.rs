//! The operation model: what an application recorded and wants synced.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hlc::{HlcTimestamp, HybridClock};
use crate::id::OperationId;

/// Default upper bound on a payload: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Upper bound on the length of a collection name or entity id.
pub const MAX_KEY_LEN: usize = 1024;

/// What an operation touches: a record `id` in a `collection`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityKey {
    /// The collection (table, type) of the record.
    pub collection: String,
    /// The record's id within its collection.
    pub id: String,
}

impl EntityKey {
    /// Builds a key.
    pub fn new(collection: impl Into<String>, id: impl Into<String>) -> Self {
        EntityKey {
            collection: collection.into(),
            id: id.into(),
        }
    }

    /// A byte form that sorts like the key and cannot be confused between
    /// different (collection, id) pairs: length-prefixed collection, then id.
    pub fn to_key_bytes(&self) -> Vec<u8> {
        let c = self.collection.as_bytes();
        let mut out = Vec::with_capacity(4 + c.len() + self.id.len());
        out.extend_from_slice(&u32::try_from(c.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(self.id.as_bytes());
        out
    }

    /// The key back from [`to_key_bytes`](Self::to_key_bytes); `None` if
    /// `bytes` is not such a form (too short, a length past the end, or
    /// text that is not UTF-8).
    pub fn from_key_bytes(bytes: &[u8]) -> Option<Self> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len > rest.len() {
            return None;
        }
        let (collection, id) = rest.split_at(len);
        Some(EntityKey {
            collection: std::str::from_utf8(collection).ok()?.to_owned(),
            id: std::str::from_utf8(id).ok()?.to_owned(),
        })
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

/// What kind of change an operation is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    /// The record is created.
    Create,
    /// The record is changed.
    Update,
    /// The record is deleted.
    Delete,
    /// An application-defined change.
    Custom(String),
}

/// Delivery priority across entities. `Critical > High > Normal > Background`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum OperationPriority {
    /// Sent when nothing more urgent is ready.
    Background = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Sent before normal work.
    High = 2,
    /// Sent first.
    Critical = 3,
}

impl OperationPriority {
    /// All priorities, highest first.
    pub const ALL: [OperationPriority; 4] = [
        OperationPriority::Critical,
        OperationPriority::High,
        OperationPriority::Normal,
        OperationPriority::Background,
    ];

    /// Numeric rank: 3 for Critical down to 0 for Background.
    pub const fn rank(self) -> u8 {
        self as u8
    }

    /// Inverse of [`rank`](Self::rank); `None` for values above 3.
    pub const fn from_rank(rank: u8) -> Option<Self> {
        match rank {
            0 => Some(OperationPriority::Background),
            1 => Some(OperationPriority::Normal),
            2 => Some(OperationPriority::High),
            3 => Some(OperationPriority::Critical),
            _ => None,
        }
    }

    /// One level up (aging); Critical stays Critical.
    pub const fn promoted(self) -> Self {
        match self {
            OperationPriority::Background => OperationPriority::Normal,
            OperationPriority::Normal => OperationPriority::High,
            OperationPriority::High | OperationPriority::Critical => OperationPriority::Critical,
        }
    }

    /// Lowercase name (`critical`, `high`, `normal`, `background`).
    pub const fn as_str(self) -> &'static str {
        match self {
            OperationPriority::Background => "background",
            OperationPriority::Normal => "normal",
            OperationPriority::High => "high",
            OperationPriority::Critical => "critical",
        }
    }
}

impl fmt::Display for OperationPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation: one change the application made, to be sent to the remote.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique id, creation-sortable; the idempotency key on the wire.
    pub id: OperationId,
    /// The record it touches.
    pub entity: EntityKey,
    /// What kind of change.
    pub kind: OperationKind,
    /// Application data, opaque to the engine. Never logged.
    pub payload: Vec<u8>,
    /// Delivery priority across entities.
    pub priority: OperationPriority,
    /// When it was made, on the device's hybrid logical clock.
    pub timestamp: HlcTimestamp,
    /// The remote version this change was made on, if known.
    pub base_version: Option<u64>,
}

// Payloads may hold user data: Debug shows their size only.
impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("id", &self.id)
            .field("entity", &self.entity)
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .field("priority", &self.priority)
            .field("timestamp", &self.timestamp)
            .field("base_version", &self.base_version)
            .finish()
    }
}

impl Operation {
    /// Starts a builder for an operation on `entity`.
    pub fn builder(entity: EntityKey, kind: OperationKind) -> OperationBuilder {
        OperationBuilder {
            entity,
            kind,
            payload: Vec::new(),
            priority: OperationPriority::Normal,
            base_version: None,
        }
    }

    /// Checks the limits the engine enforces before storing anything.
    pub fn validate(&self, max_payload: usize) -> Result<()> {
        if self.payload.len() > max_payload {
            return Err(Error::PayloadTooLarge {
                size: self.payload.len(),
                max: max_payload,
            });
        }
        if self.entity.collection.is_empty() {
            return Err(Error::InvalidOperation("empty collection name"));
        }
        if self.entity.collection.len() > MAX_KEY_LEN || self.entity.id.len() > MAX_KEY_LEN {
            return Err(Error::InvalidOperation(
                "collection or entity id longer than 1024 bytes",
            ));
        }
        if let OperationKind::Custom(name) = &self.kind {
            if name.len() > MAX_KEY_LEN {
                return Err(Error::InvalidOperation(
                    "custom kind name longer than 1024 bytes",
                ));
            }
        }
        Ok(())
    }
}

/// Builds an [`Operation`]; the id and timestamp come from a [`HybridClock`].
#[derive(Debug, Clone)]
pub struct OperationBuilder {
    entity: EntityKey,
    kind: OperationKind,
    payload: Vec<u8>,
    priority: OperationPriority,
    base_version: Option<u64>,
}

impl OperationBuilder {
    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }
    /// Sets the priority (default `Normal`).
    pub fn priority(mut self, priority: OperationPriority) -> Self {
        self.priority = priority;
        self
    }
    /// Sets the remote version the change was made on.
    pub fn base_version(mut self, version: u64) -> Self {
        self.base_version = Some(version);
        self
    }
    /// Stamps the operation with a fresh timestamp and id from `clock`.
    pub fn build(self, clock: &HybridClock) -> Result<Operation> {
        let ts = clock.now()?;
        Ok(self.build_at(ts, &mut rand::thread_rng()))
    }
    /// Builds with an explicit timestamp and random source (deterministic
    /// simulations use a seeded RNG here).
    pub fn build_at(self, timestamp: HlcTimestamp, rng: &mut dyn RngCore) -> Operation {
        Operation {
            id: OperationId::new(&timestamp, rng),
            entity: self.entity,
            kind: self.kind,
            payload: self.payload,
            priority: self.priority,
            timestamp,
            base_version: self.base_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;
    use crate::time::ManualWallClock;
    use std::sync::Arc;

    #[test]
    fn key_bytes_round_trip_and_refuse_what_is_not_a_key() {
        for key in [
            EntityKey::new("notes", "1"),
            EntityKey::new("", ""),
            EntityKey::new("a/b", "ü\u{0}x"),
        ] {
            assert_eq!(EntityKey::from_key_bytes(&key.to_key_bytes()), Some(key));
        }
        assert_eq!(EntityKey::from_key_bytes(&[0, 0, 0]), None);
        assert_eq!(EntityKey::from_key_bytes(&[0, 0, 0, 9, b'a']), None);
        assert_eq!(EntityKey::from_key_bytes(&[0, 0, 0, 1, 0xff]), None);
        assert_eq!(EntityKey::from_key_bytes(&[0, 0, 0, 0, 0xc3]), None);
    }

    #[test]
    fn priorities_order_critical_first() {
        assert!(OperationPriority::Critical > OperationPriority::High);
        assert!(OperationPriority::High > OperationPriority::Normal);
        assert!(OperationPriority::Normal > OperationPriority::Background);
        for p in OperationPriority::ALL {
            assert_eq!(OperationPriority::from_rank(p.rank()), Some(p));
        }
        assert_eq!(OperationPriority::from_rank(4), None);
        assert_eq!(
            OperationPriority::Background.promoted(),
            OperationPriority::Normal
        );
        assert_eq!(
            OperationPriority::Critical.promoted(),
            OperationPriority::Critical
        );
    }

    #[test]
    fn priorities_and_keys_display_their_names() {
        let names: Vec<String> = OperationPriority::ALL
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["critical", "high", "normal", "background"]);
        assert_eq!(
            OperationPriority::Normal.promoted(),
            OperationPriority::High
        );
        assert_eq!(
            OperationPriority::High.promoted(),
            OperationPriority::Critical
        );
        assert_eq!(EntityKey::new("notes", "42").to_string(), "notes/42");
    }

    #[test]
    fn builder_ids_increase_with_clock() {
        let clock = HybridClock::with_wall_clock(NodeId(1), Arc::new(ManualWallClock::new(5)));
        let a = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Create)
            .build(&clock)
            .unwrap();
        let b = Operation::builder(EntityKey::new("notes", "1"), OperationKind::Update)
            .build(&clock)
            .unwrap();
        assert!(b.id > a.id);
        assert!(b.timestamp > a.timestamp);
    }

    #[test]
    fn validate_refuses_oversized_and_empty() {
        let clock = HybridClock::new(NodeId(1));
        let op = Operation::builder(EntityKey::new("n", "1"), OperationKind::Create)
            .payload(vec![0; 11])
            .build(&clock)
            .unwrap();
        assert_eq!(
            op.validate(10),
            Err(Error::PayloadTooLarge { size: 11, max: 10 })
        );
        assert!(op.validate(11).is_ok());
        let op = Operation::builder(EntityKey::new("", "1"), OperationKind::Create)
            .build(&clock)
            .unwrap();
        assert!(op.validate(10).is_err());
    }

    #[test]
    fn validate_refuses_keys_and_kind_names_above_the_limit() {
        let clock = HybridClock::new(NodeId(1));
        let long = "x".repeat(MAX_KEY_LEN + 1);
        let at_limit = "x".repeat(MAX_KEY_LEN);
        let build = |entity: EntityKey, kind: OperationKind| {
            Operation::builder(entity, kind).build(&clock).unwrap()
        };
        let keys = Err(Error::InvalidOperation(
            "collection or entity id longer than 1024 bytes",
        ));
        let op = build(EntityKey::new(long.clone(), "1"), OperationKind::Update);
        assert_eq!(op.validate(10), keys);
        let op = build(EntityKey::new("n", long.clone()), OperationKind::Update);
        assert_eq!(op.validate(10), keys);
        let op = build(
            EntityKey::new("n", "1"),
            OperationKind::Custom(long.clone()),
        );
        assert_eq!(
            op.validate(10),
            Err(Error::InvalidOperation(
                "custom kind name longer than 1024 bytes"
            ))
        );
        let op = build(
            EntityKey::new(at_limit.clone(), at_limit.clone()),
            OperationKind::Custom(at_limit),
        );
        assert_eq!(op.validate(10), Ok(()));
    }

    #[test]
    fn debug_does_not_show_payload() {
        let clock = HybridClock::new(NodeId(1));
        let op = Operation::builder(EntityKey::new("n", "1"), OperationKind::Create)
            .payload(b"secret-canary".to_vec())
            .build(&clock)
            .unwrap();
        assert!(!format!("{op:?}").contains("secret-canary"));
    }

    #[test]
    fn entity_key_bytes_are_unambiguous() {
        assert_ne!(
            EntityKey::new("ab", "c").to_key_bytes(),
            EntityKey::new("a", "bc").to_key_bytes()
        );
    }
}
