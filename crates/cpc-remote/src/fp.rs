//! The change log's running fingerprint (docs/protocol.md, Appendix A):
//! `fp(s) = first 8 bytes of SHA-256(fp(s-1) ‖ enc(change s))`.

use sha2::{Digest, Sha256};

/// What one change contributes to the fingerprint (Appendix A's `enc`).
#[derive(Debug, Clone, Copy)]
pub struct ChangeRef<'a> {
    /// The change's position in the log.
    pub seq: u64,
    /// The entity's collection.
    pub collection: &'a str,
    /// The entity's id.
    pub id: &'a str,
    /// The entity's version after the change.
    pub version: u64,
    /// Whether the change deletes the entity (its payload then counts as
    /// empty).
    pub deleted: bool,
    /// The operation's HLC wall time.
    pub wall_ms: u64,
    /// The operation's HLC logical counter.
    pub logical: u32,
    /// The operation's HLC node.
    pub node: u64,
    /// The client that sent the operation.
    pub origin_client: &'a str,
    /// The operation's id.
    pub origin_op: u128,
    /// The entity's payload after the change.
    pub payload: &'a [u8],
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s.as_bytes());
}

/// The fingerprint after `change`, given the one before it.
pub fn next(prev: u64, c: &ChangeRef<'_>) -> u64 {
    let mut h = Sha256::new();
    h.update(prev.to_be_bytes());
    h.update(c.seq.to_be_bytes());
    put_str(&mut h, c.collection);
    put_str(&mut h, c.id);
    h.update(c.version.to_be_bytes());
    h.update([u8::from(c.deleted)]);
    h.update(c.wall_ms.to_be_bytes());
    h.update(c.logical.to_be_bytes());
    h.update(c.node.to_be_bytes());
    put_str(&mut h, c.origin_client);
    h.update(c.origin_op.to_be_bytes());
    let payload: &[u8] = if c.deleted { &[] } else { c.payload };
    h.update((payload.len() as u32).to_be_bytes());
    h.update(payload);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The hash of an operation's content, to tell a replay from an id reused
/// for different content.
pub fn content_hash(collection: &str, id: &str, kind: &str, payload: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    put_str(&mut h, collection);
    put_str(&mut h, id);
    put_str(&mut h, kind);
    h.update((payload.len() as u64).to_be_bytes());
    h.update(payload);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(payload: &[u8]) -> ChangeRef<'_> {
        ChangeRef {
            seq: 1,
            collection: "notes",
            id: "n1",
            version: 1,
            deleted: false,
            wall_ms: 5,
            logical: 0,
            node: 1,
            origin_client: "dev-1",
            origin_op: 9,
            payload,
        }
    }

    #[test]
    fn the_fingerprint_follows_the_history_and_its_content() {
        let a = next(0, &change(b"x"));
        assert_eq!(a, next(0, &change(b"x")));
        assert_ne!(a, next(0, &change(b"y")));
        assert_ne!(a, next(1, &change(b"x")));
        // Length prefixes keep ("ab","c") apart from ("a","bc").
        assert_ne!(
            content_hash("ab", "c", "update", b""),
            content_hash("a", "bc", "update", b"")
        );
    }
}
