//! Coalescing: two queued edits of one record become one (or none) before
//! either is sent.
//!
//! A store that coalesces offers the newest queued operation of an entity
//! (only if it is ready and was never claimed, so the remote cannot have
//! seen it) and a newly submitted one to a [`Coalescer`]. What the
//! coalescer decides is applied in the same atomic write as the submit.

use std::fmt;
use std::sync::Arc;

use crate::operation::{Operation, OperationKind};

/// What a [`Coalescer`] decided for an earlier queued operation and a later
/// one of the same entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coalesced {
    /// Both stay queued, in order.
    Keep,
    /// One operation replaces both. The store keeps only its `kind` and
    /// `payload`; the rest is fixed by [`combine`]: the earlier operation's
    /// id, entity, place in the entity's order and `base_version` (the
    /// remote saw neither), the later one's timestamp, and the higher of
    /// the two priorities.
    Replace(Operation),
    /// Both vanish: neither is sent (a record created and deleted while
    /// offline never reaches the remote).
    Cancel,
}

/// Decides whether two queued operations of one entity can be sent as one.
///
/// `earlier` is the newest queued operation of the entity, never sent;
/// `later` is the one being submitted. Called inside the store's write, so
/// it must be quick and must not block; a panic counts as
/// [`Coalesced::Keep`]. Object safe: engines hold it as
/// `Arc<dyn Coalescer>`.
pub trait Coalescer: Send + Sync + fmt::Debug {
    /// What to do with `earlier` and `later`.
    fn coalesce(&self, earlier: &Operation, later: &Operation) -> Coalesced;

    /// Whether `later` may coalesce at all (default: yes). A store asks
    /// first, and skips the look at the entity's newest operation (a read
    /// of its body) for an operation this answers `false` for.
    fn wants(&self, later: &Operation) -> bool {
        let _ = later;
        true
    }
}

/// A user-supplied payload merge for [`StandardCoalescer`]: `(earlier,
/// later)` payloads to the merged one, or `None` to keep both operations.
pub type PayloadMerge = dyn Fn(&[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync;

/// The typed rules:
///
/// | earlier | later | result |
/// |---|---|---|
/// | Update | Update | Update, merged payload |
/// | Create | Update | Create, merged payload |
/// | Create | Delete | Cancel (the remote never knew the record) |
/// | Update | Delete | Delete |
/// | Delete | Create | Keep |
/// | anything else, or a `Custom` kind | | Keep |
///
/// The merge is the later payload (payloads that hold the whole record)
/// unless one is given with [`with_merge`](Self::with_merge) (payloads that
/// hold a change, for instance).
#[derive(Clone, Default)]
pub struct StandardCoalescer {
    merge: Option<Arc<PayloadMerge>>,
}

impl fmt::Debug for StandardCoalescer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardCoalescer")
            .field("custom_merge", &self.merge.is_some())
            .finish()
    }
}

impl StandardCoalescer {
    /// The rules with the later payload winning.
    pub fn new() -> Self {
        StandardCoalescer::default()
    }

    /// The rules with `merge` combining the payloads of Update+Update and
    /// Create+Update (`None` from it keeps both operations).
    pub fn with_merge(
        merge: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        StandardCoalescer {
            merge: Some(Arc::new(merge)),
        }
    }

    fn merged(&self, earlier: &[u8], later: &[u8]) -> Option<Vec<u8>> {
        match &self.merge {
            Some(merge) => merge(earlier, later),
            None => Some(later.to_vec()),
        }
    }
}

impl Coalescer for StandardCoalescer {
    fn coalesce(&self, earlier: &Operation, later: &Operation) -> Coalesced {
        use OperationKind::{Create, Delete, Update};
        let with = |kind: OperationKind, payload: Vec<u8>| {
            Coalesced::Replace(Operation {
                kind,
                payload,
                ..later.clone()
            })
        };
        match (&earlier.kind, &later.kind) {
            (Update, Update) | (Create, Update) => {
                match self.merged(&earlier.payload, &later.payload) {
                    Some(payload) => with(earlier.kind.clone(), payload),
                    None => Coalesced::Keep,
                }
            }
            (Create, Delete) => Coalesced::Cancel,
            (Update, Delete) => with(Delete, later.payload.clone()),
            _ => Coalesced::Keep,
        }
    }
}

/// The operation a [`Coalesced::Replace`] stores: `replacement`'s kind and
/// payload, `earlier`'s id, entity and `base_version`, `later`'s
/// timestamp, the higher of the two priorities. Stores apply it whatever
/// the coalescer put in the other fields, so these rules hold for every
/// coalescer.
pub fn combine(earlier: &Operation, later: &Operation, replacement: Operation) -> Operation {
    Operation {
        id: earlier.id,
        entity: earlier.entity.clone(),
        kind: replacement.kind,
        payload: replacement.payload,
        priority: earlier.priority.max(later.priority),
        timestamp: later.timestamp,
        base_version: earlier.base_version,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{EntityKey, HlcTimestamp, NodeId, OperationId, OperationPriority};

    fn op(n: u64, kind: OperationKind, payload: &str) -> Operation {
        Operation {
            id: OperationId::from_u128(u128::from(n)),
            entity: EntityKey::new("notes", "1"),
            kind,
            payload: payload.as_bytes().to_vec(),
            priority: OperationPriority::Normal,
            timestamp: HlcTimestamp::new(n, 0, NodeId(1)),
            base_version: Some(n),
        }
    }

    fn replaced(c: Coalesced) -> (OperationKind, String) {
        match c {
            Coalesced::Replace(op) => (op.kind, String::from_utf8(op.payload).unwrap()),
            other => panic!("expected a replacement, got {other:?}"),
        }
    }

    #[test]
    fn the_typed_rules() {
        use OperationKind::*;
        let s = StandardCoalescer::new();
        let c =
            |a: OperationKind, b: OperationKind| s.coalesce(&op(1, a, "early"), &op(2, b, "late"));
        assert_eq!(replaced(c(Update, Update)), (Update, "late".into()));
        assert_eq!(replaced(c(Create, Update)), (Create, "late".into()));
        assert_eq!(c(Create, Delete), Coalesced::Cancel);
        assert_eq!(replaced(c(Update, Delete)), (Delete, "late".into()));
        for (a, b) in [
            (Delete, Create),
            (Delete, Update),
            (Delete, Delete),
            (Update, Create),
            (Create, Create),
            (Custom("x".into()), Update),
            (Update, Custom("x".into())),
            (Custom("x".into()), Custom("x".into())),
        ] {
            assert_eq!(c(a.clone(), b.clone()), Coalesced::Keep, "{a:?} + {b:?}");
        }
    }

    #[test]
    fn a_user_merge_combines_payloads_and_may_refuse() {
        let s =
            StandardCoalescer::with_merge(|a, b| (b != b"refuse").then(|| [a, b"+", b].concat()));
        let u = |n, p| op(n, OperationKind::Update, p);
        assert_eq!(
            replaced(s.coalesce(&u(1, "a"), &u(2, "b"))),
            (OperationKind::Update, "a+b".into())
        );
        assert_eq!(s.coalesce(&u(1, "a"), &u(2, "refuse")), Coalesced::Keep);
    }

    /// Keeps the trait's default `wants`.
    #[derive(Debug)]
    struct KeepAll;

    impl Coalescer for KeepAll {
        fn coalesce(&self, _earlier: &Operation, _later: &Operation) -> Coalesced {
            Coalesced::Keep
        }
    }

    #[test]
    fn a_coalescer_is_offered_every_operation_unless_it_declines() {
        for kind in [
            OperationKind::Create,
            OperationKind::Delete,
            OperationKind::Custom("x".into()),
        ] {
            assert!(KeepAll.wants(&op(1, kind, "p")));
        }
        assert_eq!(
            format!("{:?}", StandardCoalescer::new()),
            "StandardCoalescer { custom_merge: false }"
        );
        assert_eq!(
            format!(
                "{:?}",
                StandardCoalescer::with_merge(|_, b| Some(b.to_vec()))
            ),
            "StandardCoalescer { custom_merge: true }"
        );
    }

    #[test]
    fn combine_keeps_the_earlier_place_and_base_and_the_later_time() {
        let mut early = op(1, OperationKind::Update, "a");
        early.priority = OperationPriority::Background;
        let mut late = op(2, OperationKind::Update, "b");
        late.priority = OperationPriority::High;
        let mut odd = op(9, OperationKind::Update, "merged");
        odd.entity = EntityKey::new("elsewhere", "9");
        let out = combine(&early, &late, odd);
        assert_eq!(out.id, early.id);
        assert_eq!(out.entity, early.entity);
        assert_eq!(out.base_version, Some(1));
        assert_eq!(out.timestamp, late.timestamp);
        assert_eq!(out.priority, OperationPriority::High);
        assert_eq!(out.payload, b"merged");
    }
}
