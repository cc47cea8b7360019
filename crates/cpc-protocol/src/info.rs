//! `GET /v1/info` and `GET /v1/health`, and the limits a server advertises.

use serde::{Deserialize, Serialize};

use crate::pull::PullLimits;

/// The protocol versions this crate speaks.
pub const PROTOCOLS: &[u32] = &[1];
/// The body of `GET /v1/health`: exactly these 12 bytes.
pub const HEALTH_BODY: &str = "cpc-sync ok\n";
/// Longest `client_id`, in ASCII characters.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Longest `store_id`, in ASCII characters.
pub const MAX_STORE_ID_LEN: usize = 64;
/// Longest collection, entity id or custom kind name, in UTF-8 bytes
/// (fixed by v1).
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest `wall_ms` of a timestamp (48 bits, as in an operation id).
pub const MAX_WALL_MS: u64 = (1 << 48) - 1;

/// The answer of `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "InfoWire", into = "InfoWire")]
pub struct Info {
    /// The protocol versions served (`[1]`).
    pub protocols: Vec<u32>,
    /// The store's identity.
    pub store_id: String,
    /// Product and version, informative (`cpc-server/0.1.0`).
    pub server: String,
    /// What the server accepts for a push.
    pub limits: Limits,
    /// What it accepts for a pull (in the same `limits` object on the
    /// wire; the defaults for members a server does not list).
    pub pull_limits: PullLimits,
}

/// `Info` as written: one `limits` object holding both kinds.
#[derive(Serialize, Deserialize)]
struct InfoWire {
    protocols: Vec<u32>,
    store_id: String,
    server: String,
    limits: AllLimits,
}

#[derive(Serialize, Deserialize)]
struct AllLimits {
    #[serde(flatten)]
    push: Limits,
    #[serde(flatten)]
    pull: PullLimits,
}

impl From<InfoWire> for Info {
    fn from(w: InfoWire) -> Info {
        Info {
            protocols: w.protocols,
            store_id: w.store_id,
            server: w.server,
            limits: w.limits.push,
            pull_limits: w.limits.pull,
        }
    }
}

impl From<Info> for InfoWire {
    fn from(i: Info) -> InfoWire {
        InfoWire {
            protocols: i.protocols,
            store_id: i.store_id,
            server: i.server,
            limits: AllLimits {
                push: i.limits,
                pull: i.pull_limits,
            },
        }
    }
}

/// A bound on the bytes of a compact push request of one operation,
/// everything but the payload's base64 counted: collection, entity id and
/// custom kind name of [`MAX_KEY_BYTES`] each, `client_id` and the `known`
/// store id at their longest, `low_water`, the largest integers, and the
/// JSON punctuation. A key byte takes up to 6 bytes escaped (a control
/// character as `\u00XX`), so the three keys alone may take 18 KiB; the
/// worst case measured is 19,249 bytes, and 20 KiB leaves room.
pub const OP_ENVELOPE_BYTES: u64 = 20 * 1024;

/// The limits a server enforces and advertises. A client respects them;
/// before it has read them it uses [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Operations per push (`413 too_large` above).
    pub max_batch_ops: u64,
    /// Request body bytes (`413 too_large` above, before parsing).
    pub max_body_bytes: u64,
    /// Decoded payload bytes of one operation (that operation is
    /// `rejected` with `payload_too_large` above).
    pub max_payload_bytes: u64,
    /// Collection, entity id and custom kind name, in UTF-8 bytes.
    pub max_key_bytes: u64,
    /// Push answer bytes.
    pub max_response_bytes: u64,
}

impl Limits {
    /// The least `max_body_bytes` that fits one operation of the largest
    /// payload (docs/protocol.md §3): the payload's base64, 4·⌈P/3⌉
    /// bytes, plus [`OP_ENVELOPE_BYTES`] for the rest of the request.
    /// Below it a client could hold an operation it can never send.
    /// Saturates rather than overflows for absurd payload limits.
    pub fn min_body_bytes(&self) -> u64 {
        self.max_payload_bytes
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(OP_ENVELOPE_BYTES)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_ops: 1000,
            max_body_bytes: 8 << 20,
            max_payload_bytes: 1 << 20,
            max_key_bytes: MAX_KEY_BYTES as u64,
            max_response_bytes: 8 << 20,
        }
    }
}
