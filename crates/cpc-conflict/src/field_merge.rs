//! Field-by-field merging of map-shaped payloads: a state-based CRDT (a map
//! of last-writer-wins registers), so concurrent edits to different fields
//! are all kept.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use cpc_core::{HlcTimestamp, Operation, OperationKind, RemoteRecord, Resolution};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::resolver::{ConflictResolver, LastWriterWins};

/// One field of a mergeable record: its value, or a tombstone when the field
/// was removed, and the HLC timestamp of the write that set it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldValue {
    /// The field's encoded value; `None` is a tombstone (the field was
    /// removed; the tombstone is kept so an older write cannot bring it back).
    pub value: Option<Vec<u8>>,
    /// When the value was written, on the writer's hybrid logical clock.
    pub timestamp: HlcTimestamp,
}

impl FieldValue {
    /// A field set to `value` at `timestamp`.
    pub fn set(value: impl Into<Vec<u8>>, timestamp: HlcTimestamp) -> Self {
        FieldValue {
            value: Some(value.into()),
            timestamp,
        }
    }

    /// A field removed at `timestamp`.
    pub fn tombstone(timestamp: HlcTimestamp) -> Self {
        FieldValue {
            value: None,
            timestamp,
        }
    }

    /// True if the field was removed.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The last-writer-wins order of two writes of one field: by timestamp,
    /// then (for the impossible-with-a-correct-HLC case of equal timestamps)
    /// by value, a tombstone first. Total, so the merge is commutative.
    fn lww_cmp(&self, other: &FieldValue) -> std::cmp::Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.value.cmp(&other.value))
    }
}

// Values may hold user data: Debug shows their size only.
impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldValue")
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// A record as a map from field name to its last write.
pub type FieldMap = BTreeMap<String, FieldValue>;

/// Merges two field maps: every field of either, each field's later write
/// (by [`HlcTimestamp`]) kept.
///
/// This is the join of a state-based CRDT: commutative
/// (`merge(a, b) == merge(b, a)`), associative and idempotent
/// (`merge(a, a) == a`), so replicas that exchange states in any order, any
/// number of times, converge. An operation may carry the whole record or only
/// the fields it changed (a delta): merging a delta into a state is the same
/// join.
pub fn merge_fields(a: &FieldMap, b: &FieldMap) -> FieldMap {
    let mut out = a.clone();
    merge_into(&mut out, b);
    out
}

/// Merges `other` into `target` in place (see [`merge_fields`]).
pub fn merge_into(target: &mut FieldMap, other: &FieldMap) {
    for (name, theirs) in other {
        match target.get_mut(name) {
            Some(ours) => {
                if theirs.lww_cmp(ours).is_gt() {
                    ours.clone_from(theirs);
                }
            }
            None => {
                target.insert(name.clone(), theirs.clone());
            }
        }
    }
}

/// Turns payloads into [`FieldMap`]s and back, for [`FieldMerge`].
///
/// Implement it to merge payloads in your own format (JSON with a timestamp
/// per field, protobuf, ...). `encode` should be deterministic (the same map
/// gives the same bytes), so that devices that merge the same versions send
/// the same payload.
pub trait FieldCodec: Send + Sync + fmt::Debug {
    /// Why a payload could not be decoded or a map encoded. Its message is
    /// never logged (decoders often quote the input), only its type name.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decodes a payload into a field map.
    fn decode(&self, payload: &[u8]) -> std::result::Result<FieldMap, Self::Error>;

    /// Encodes a field map into a payload.
    fn encode(&self, fields: &FieldMap) -> std::result::Result<Vec<u8>, Self::Error>;
}

impl<C: FieldCodec + ?Sized> FieldCodec for Arc<C> {
    type Error = C::Error;
    fn decode(&self, payload: &[u8]) -> std::result::Result<FieldMap, Self::Error> {
        (**self).decode(payload)
    }
    fn encode(&self, fields: &FieldMap) -> std::result::Result<Vec<u8>, Self::Error> {
        (**self).encode(fields)
    }
}

/// The default codec: a payload is the postcard encoding of a
/// `BTreeMap<String, FieldValue>` (deterministic: the map is sorted).
///
/// Decoding refuses trailing bytes, so a payload in another format is
/// unlikely to be mistaken for a field map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostcardFieldCodec;

impl FieldCodec for PostcardFieldCodec {
    type Error = Error;

    fn decode(&self, payload: &[u8]) -> Result<FieldMap> {
        let refuse = |source| Error::DecodeFields {
            len: payload.len(),
            source,
        };
        let (map, rest) = postcard::take_from_bytes::<FieldMap>(payload).map_err(refuse)?;
        if !rest.is_empty() {
            return Err(refuse(postcard::Error::DeserializeBadEncoding));
        }
        Ok(map)
    }

    fn encode(&self, fields: &FieldMap) -> Result<Vec<u8>> {
        postcard::to_allocvec(fields).map_err(|source| Error::EncodeFields {
            fields: fields.len(),
            source,
        })
    }
}

/// Merges map-shaped payloads field by field, each field last-writer-wins on
/// its own HLC timestamp: concurrent edits to *different* fields are all
/// kept; concurrent edits to the *same* field keep the later one.
///
/// The answer is:
/// - `KeepRemote` when the merge equals the remote record (the remote already
///   holds every winning field: nothing to send),
/// - `KeepLocal` when the merge equals the local payload (resend it as is),
/// - otherwise `Merged(bytes)` with the encoded merge.
///
/// Whole-record deletes are not field edits: when the local operation is a
/// `Delete` or the remote record is deleted (`payload: None`), the decision
/// goes to the fallback resolver ([`LastWriterWins`] by default). So does a
/// conflict whose payloads the codec cannot decode (or whose merge it cannot
/// encode); that fact is logged with the operation id, the side and the
/// payload length, never the contents.
///
/// ```
/// use cpc_conflict::{merge_fields, FieldMap, FieldValue};
/// use cpc_core::{HlcTimestamp, NodeId};
///
/// let t = |ms| HlcTimestamp::new(ms, 0, NodeId(1));
/// let a = FieldMap::from([("title".into(), FieldValue::set(b"Groceries".to_vec(), t(10)))]);
/// let b = FieldMap::from([("done".into(), FieldValue::set(b"yes".to_vec(), t(20)))]);
/// let merged = merge_fields(&a, &b);
/// assert_eq!(merged.len(), 2); // no lost edit: both fields kept
/// assert_eq!(merged, merge_fields(&b, &a));
/// ```
pub struct FieldMerge<C = PostcardFieldCodec> {
    codec: C,
    fallback: Arc<dyn ConflictResolver>,
}

impl FieldMerge<PostcardFieldCodec> {
    /// Field merge with the postcard codec and [`LastWriterWins`] as fallback.
    pub fn new() -> Self {
        FieldMerge::with_codec(PostcardFieldCodec)
    }
}

impl Default for FieldMerge<PostcardFieldCodec> {
    fn default() -> Self {
        FieldMerge::new()
    }
}

impl<C: FieldCodec> FieldMerge<C> {
    /// Field merge through a custom codec, [`LastWriterWins`] as fallback.
    pub fn with_codec(codec: C) -> Self {
        FieldMerge {
            codec,
            fallback: Arc::new(LastWriterWins),
        }
    }

    /// Sets the resolver used for deletes and undecodable payloads.
    pub fn fallback(mut self, fallback: impl ConflictResolver + 'static) -> Self {
        self.fallback = Arc::new(fallback);
        self
    }

    /// Sets the fallback resolver from a shared handle.
    pub fn fallback_arc(mut self, fallback: Arc<dyn ConflictResolver>) -> Self {
        self.fallback = fallback;
        self
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Merges two encoded payloads and encodes the result (for an
    /// application settling a deferred conflict by hand).
    pub fn merge_payloads(&self, a: &[u8], b: &[u8]) -> std::result::Result<Vec<u8>, C::Error> {
        let a = self.codec.decode(a)?;
        let b = self.codec.decode(b)?;
        self.codec.encode(&merge_fields(&a, &b))
    }

    fn fall_back(
        &self,
        local: &Operation,
        remote: &RemoteRecord,
        reason: &'static str,
        side: &'static str,
        payload_len: usize,
    ) -> Resolution {
        // Entity keys may be personal: DEBUG only.
        tracing::debug!(op_id = %local.id, entity = %local.entity, "field merge fell back");
        tracing::warn!(
            op_id = %local.id,
            side,
            payload_len,
            error_type = std::any::type_name::<C::Error>(),
            fallback = self.fallback.name(),
            "field merge: {reason}; falling back"
        );
        self.fallback.resolve(local, remote)
    }
}

impl<C: FieldCodec> ConflictResolver for FieldMerge<C> {
    fn resolve(&self, local: &Operation, remote: &RemoteRecord) -> Resolution {
        let remote_payload = match (&local.kind, &remote.payload) {
            (OperationKind::Delete, _) | (_, None) => {
                tracing::debug!(
                    op_id = %local.id,
                    local_delete = local.kind == OperationKind::Delete,
                    remote_deleted = remote.payload.is_none(),
                    fallback = self.fallback.name(),
                    "field merge: whole-record delete, deciding with the fallback"
                );
                return self.fallback.resolve(local, remote);
            }
            (_, Some(payload)) => payload,
        };
        let ours = match self.codec.decode(&local.payload) {
            Ok(map) => map,
            Err(_) => {
                return self.fall_back(
                    local,
                    remote,
                    "payload is not a field map",
                    "local",
                    local.payload.len(),
                )
            }
        };
        let theirs = match self.codec.decode(remote_payload) {
            Ok(map) => map,
            Err(_) => {
                return self.fall_back(
                    local,
                    remote,
                    "payload is not a field map",
                    "remote",
                    remote_payload.len(),
                )
            }
        };
        let merged = merge_fields(&ours, &theirs);
        if merged == theirs {
            return Resolution::KeepRemote;
        }
        if merged == ours {
            return Resolution::KeepLocal;
        }
        match self.codec.encode(&merged) {
            Ok(bytes) => Resolution::Merged(bytes),
            Err(_) => self.fall_back(
                local,
                remote,
                "merge could not be encoded",
                "merged",
                merged.len(),
            ),
        }
    }

    fn name(&self) -> &str {
        "field_merge"
    }
}

impl<C: fmt::Debug> fmt::Debug for FieldMerge<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldMerge")
            .field("codec", &self.codec)
            .field("fallback", &self.fallback)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::{EntityKey, NodeId, OperationId};

    use crate::resolver::{DeferAll, RemoteWins};

    fn t(ms: u64, node: u64) -> HlcTimestamp {
        HlcTimestamp::new(ms, 0, NodeId(node))
    }

    fn map(fields: &[(&str, Option<&[u8]>, HlcTimestamp)]) -> FieldMap {
        fields
            .iter()
            .map(|(k, v, ts)| {
                (
                    (*k).to_owned(),
                    FieldValue {
                        value: v.map(<[u8]>::to_vec),
                        timestamp: *ts,
                    },
                )
            })
            .collect()
    }

    fn local(kind: OperationKind, payload: Vec<u8>, ts: HlcTimestamp) -> Operation {
        Operation {
            id: OperationId::from_u128(7),
            entity: EntityKey::new("notes", "1"),
            kind,
            payload,
            priority: Default::default(),
            timestamp: ts,
            base_version: Some(3),
        }
    }

    fn remote(payload: Option<Vec<u8>>, ts: HlcTimestamp) -> RemoteRecord {
        RemoteRecord {
            version: 4,
            timestamp: ts,
            payload,
            node: ts.node,
        }
    }

    fn enc(m: &FieldMap) -> Vec<u8> {
        PostcardFieldCodec.encode(m).unwrap()
    }

    #[test]
    fn concurrent_edits_to_different_fields_are_both_kept() {
        let base = map(&[
            ("title", Some(b"Milk"), t(1, 1)),
            ("done", Some(b"no"), t(1, 1)),
        ]);
        let mut ours = base.clone();
        ours.insert(
            "title".into(),
            FieldValue::set(b"Oat milk".to_vec(), t(5, 1)),
        );
        let mut theirs = base;
        theirs.insert("done".into(), FieldValue::set(b"yes".to_vec(), t(4, 2)));

        let r = FieldMerge::new().resolve(
            &local(OperationKind::Update, enc(&ours), t(5, 1)),
            &remote(Some(enc(&theirs)), t(4, 2)),
        );
        let Resolution::Merged(bytes) = r else {
            panic!("expected a merge, got {r:?}")
        };
        let merged = PostcardFieldCodec.decode(&bytes).unwrap();
        assert_eq!(merged["title"].value.as_deref(), Some(&b"Oat milk"[..]));
        assert_eq!(merged["done"].value.as_deref(), Some(&b"yes"[..]));
    }

    #[test]
    fn same_field_keeps_the_later_write_and_tombstones_win_when_later() {
        let ours = map(&[("title", Some(b"A"), t(5, 1))]);
        let theirs = map(&[("title", None, t(6, 2))]);
        let merged = merge_fields(&ours, &theirs);
        assert!(merged["title"].is_tombstone());
        let older_tombstone = map(&[("title", None, t(4, 2))]);
        assert_eq!(merge_fields(&ours, &older_tombstone), ours);
    }

    #[test]
    fn answers_keep_remote_or_keep_local_when_one_side_holds_the_merge() {
        let fm = FieldMerge::new();
        let newer = map(&[("a", Some(b"2"), t(9, 2)), ("b", Some(b"x"), t(1, 2))]);
        let older_delta = map(&[("a", Some(b"1"), t(5, 1))]);
        assert_eq!(
            fm.resolve(
                &local(OperationKind::Update, enc(&older_delta), t(5, 1)),
                &remote(Some(enc(&newer)), t(9, 2))
            ),
            Resolution::KeepRemote
        );
        let newer_full = map(&[("a", Some(b"3"), t(12, 1)), ("b", Some(b"x"), t(1, 2))]);
        assert_eq!(
            fm.resolve(
                &local(OperationKind::Update, enc(&newer_full), t(12, 1)),
                &remote(Some(enc(&newer)), t(9, 2))
            ),
            Resolution::KeepLocal
        );
    }

    #[test]
    fn undecodable_payload_falls_back_to_the_configured_resolver() {
        let good = enc(&map(&[("a", Some(b"1"), t(1, 1))]));
        let junk = b"{\"not\":\"postcard\"}".to_vec();
        let lww = FieldMerge::new();
        // Default fallback is LWW: the later local op wins.
        assert_eq!(
            lww.resolve(
                &local(OperationKind::Update, junk.clone(), t(9, 1)),
                &remote(Some(good.clone()), t(2, 2))
            ),
            Resolution::KeepLocal
        );
        let deferring = FieldMerge::new().fallback(DeferAll);
        assert_eq!(
            deferring.resolve(
                &local(OperationKind::Update, good.clone(), t(9, 1)),
                &remote(Some(junk.clone()), t(2, 2))
            ),
            Resolution::Defer
        );
        assert_eq!(
            deferring.resolve(
                &local(OperationKind::Update, junk, t(9, 1)),
                &remote(Some(good), t(2, 2))
            ),
            Resolution::Defer
        );
    }

    #[test]
    fn whole_record_deletes_go_to_the_fallback() {
        let good = enc(&map(&[("a", Some(b"1"), t(1, 1))]));
        let fm = FieldMerge::new().fallback(RemoteWins);
        assert_eq!(
            fm.resolve(
                &local(OperationKind::Delete, Vec::new(), t(9, 1)),
                &remote(Some(good.clone()), t(2, 2))
            ),
            Resolution::KeepRemote
        );
        let lww = FieldMerge::new();
        assert_eq!(
            lww.resolve(
                &local(OperationKind::Update, good, t(9, 1)),
                &remote(None, t(2, 2))
            ),
            Resolution::KeepLocal
        );
    }

    #[test]
    fn postcard_codec_round_trips_and_refuses_trailing_bytes() {
        let m = map(&[("a", Some(b"1"), t(1, 1)), ("z", None, t(2, 3))]);
        let bytes = enc(&m);
        assert_eq!(PostcardFieldCodec.decode(&bytes).unwrap(), m);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            PostcardFieldCodec.decode(&longer),
            Err(Error::DecodeFields { len, .. }) if len == bytes.len() + 1
        ));
        assert!(PostcardFieldCodec
            .decode(&bytes[..bytes.len() - 1])
            .is_err());
    }

    #[test]
    fn merge_payloads_merges_encoded_maps() {
        let a = map(&[("a", Some(b"1"), t(1, 1))]);
        let b = map(&[("b", Some(b"2"), t(1, 2))]);
        let out = FieldMerge::new()
            .merge_payloads(&enc(&a), &enc(&b))
            .unwrap();
        assert_eq!(
            PostcardFieldCodec.decode(&out).unwrap(),
            merge_fields(&a, &b)
        );
    }

    #[test]
    fn debug_never_shows_values() {
        let v = FieldValue::set(b"secret-value".to_vec(), t(1, 1));
        let s = format!("{v:?}");
        assert!(!s.contains("secret") && !s.contains("115"), "{s}");
        assert!(format!("{:?}", FieldMerge::new()).contains("LastWriterWins"));
    }
}
