//! The remote's rules of the cpc-sync protocol (docs/protocol.md), written
//! once and without I/O, so that every store of the reference server and
//! the simulations judge a push alike:
//!
//! - [`rules`]: what happens to one operation (a replay, an id reused for
//!   other content, a payload over the limit, an entity blocked earlier in
//!   the batch, a conflict, or the change to write with its version, `seq`
//!   and fingerprint), and whether a client's `known` position is in the
//!   history (§8);
//! - [`fp`]: the change log's running fingerprint and the content hash
//!   (Appendix A);
//! - [`apply_batch`] over a [`PushStore`]: a whole push in the store's
//!   transaction, the driver `cpc-server`'s embedded store runs;
//! - [`MemoryRemote`]: a store in memory running that driver, the model
//!   the durable stores are checked against;
//! - [`Faults`]: the rules broken on purpose (feature `test-faults`), to
//!   prove that checkers notice.
//!
//! It depends on the wire types (`cpc-protocol`) only: the server never
//! depends on a client crate.
//!
//! ```
//! use cpc_protocol::{EntityKey, Hex64, Kind, Limits, OpId, Outcome, Payload, Timestamp, WireOp};
//! use cpc_remote::MemoryRemote;
//!
//! let mut remote = MemoryRemote::new("store-1", Limits::default());
//! let op = WireOp {
//!     id: OpId(1),
//!     entity: EntityKey { collection: "notes".into(), id: "n1".into() },
//!     kind: Kind::Create,
//!     payload: Payload(b"hi".to_vec()),
//!     base_version: Some(0),
//!     timestamp: Timestamp { wall_ms: 5, logical: 0, node: Hex64(7) },
//! };
//! let (outcomes, head) = remote.push("dev-1", std::slice::from_ref(&op), None).unwrap();
//! assert!(matches!(outcomes[0].outcome, Outcome::Applied(ref a) if a.version == 1 && a.seq == 1));
//! // A resend is a replay; a stale base version is a conflict.
//! let (again, _) = remote.push("dev-1", std::slice::from_ref(&op), None).unwrap();
//! assert!(matches!(again[0].outcome, Outcome::AlreadyApplied(_)));
//! let stale = WireOp { id: OpId(2), ..op };
//! let (conflict, _) = remote.push("dev-1", &[stale], Some(&head)).unwrap();
//! assert!(matches!(conflict[0].outcome, Outcome::Conflict { .. }));
//! ```

mod faults;
pub mod fp;
mod memory;
mod push;
pub mod rules;

pub use faults::Faults;
pub use memory::{Diverged, MemoryRemote};
pub use push::{apply_batch, PushStore};
