//! The client transport of the cpc-sync HTTP protocol v1
//! (`docs/protocol.md`): what carries a device's operations to a cpc
//! server.
//!
//! [`HttpTransport`] implements [`cpc_core::Transport`]: the sync worker
//! hands it batches, it sends `POST /v1/push` and answers one outcome per
//! operation, or the [`TransportError`](cpc_core::TransportError) the
//! protocol's status table (§9.2) gives. It follows the client rules of the
//! protocol: outcomes matched by id and checked before anything is
//! acknowledged (§6.5), answers read with a byte cap (§2.6), a `401`
//! refreshed once and retried once (§5.1), batches cut to the server's
//! advertised limits and halved on `413` (§3, §6.9), `Retry-After` hints
//! clamped to an hour (§2.5), plain HTTP only to loopback unless the
//! application opts in (§2.1). Tokens come from the application's
//! [`CredentialsProvider`] ([`StaticToken`] for a fixed one) and are never
//! printed ([`Token`]). [`HealthProbe`] is a `cpc_network` status source
//! that polls `GET /v1/health` and tells a server from a captive portal.
//!
//! [`Transport::pull`](cpc_core::Transport::pull) sends `POST /v1/pull`
//! (§7): pages checked before anything is applied, the query's `known`
//! (the highest server position the engine has seen; the transport keeps
//! no sync state) sent with every push and pull, and a `409
//! history_diverged` reported with the server's head (§8).
//!
//! # Several instances (failover)
//! `HttpConfig::failover_urls` lists more instances of the same store (a
//! PostgreSQL-backed `cpc-server` behind several addresses). Requests go
//! to one instance and stay there while it works; one that fails (no
//! connection, a timeout, `502`, `504`, a bare `503`) is left at once for the next
//! in order, within the same push or pull (a cpc server's own `503`, its
//! concurrency cap, is a rate limit and stays where it is). Each instance has a circuit
//! breaker: two failures in a row keep requests away from it for 30 s.
//! Resending to another instance is safe: operation ids are idempotency
//! keys across the instances of one store. [`HealthProbe`] is online while
//! any instance is healthy.
//!
//! It is not a server (see `cpc-server`) and not the wire format (see
//! `cpc-protocol`, whose types and checks it uses).
//!
//! Logs: ids, counts, sizes and statuses at DEBUG; never tokens, payloads
//! or entity keys.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use cpc_core::{
//!     EntityKey, HybridClock, NodeId, Operation, OperationKind, PushOutcome, PushQuery, Transport,
//! };
//! use cpc_http::{HttpConfig, HttpTransport, StaticToken};
//! use wiremock::matchers::{header, method, path};
//! use wiremock::{Mock, MockServer, ResponseTemplate};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = HybridClock::new(NodeId(0x7f3a));
//! let op = Operation::builder(EntityKey::new("notes", "n1"), OperationKind::Create)
//!     .payload(br#"{"title":"Groceries"}"#.to_vec())
//!     .build(&clock)?;
//!
//! // A stand-in server on loopback that applies the operation.
//! let server = MockServer::start().await;
//! let answer = format!(
//!     r#"{{"outcomes":[{{"op":"{}","applied":{{"version":1,"seq":4}}}}],
//!         "head":{{"store_id":"s1","seq":4,"fp":"0decb8dd7874c7f6"}}}}"#,
//!     op.id
//! );
//! Mock::given(method("POST"))
//!     .and(path("/v1/push"))
//!     .and(header("authorization", "Bearer tok-dev-7f3a"))
//!     .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
//!     .mount(&server)
//!     .await;
//!
//! // Plain http is fine here: the server is on loopback.
//! let config = HttpConfig::new(server.uri(), "dev-7f3a");
//! let transport = HttpTransport::new(config, Arc::new(StaticToken::new("tok-dev-7f3a")))?;
//! let answer = transport.push(&PushQuery::new(std::slice::from_ref(&op))).await?;
//! assert_eq!(answer.outcomes[0].op, op.id);
//! assert_eq!(answer.outcomes[0].outcome, PushOutcome::Applied { version: 1 });
//! // The head the server reported: the engine raises its `known` to it.
//! assert_eq!(answer.head.map(|h| h.seq), Some(4));
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//! None. TLS is rustls (no OpenSSL on any target).

mod body;
mod config;
mod credentials;
mod error;
mod failover;
mod info;
mod map;
mod probe;
mod pull;
mod status;
mod transport;

pub use config::{HttpConfig, MAX_RESPONSE_BYTES, MIN_RESPONSE_BYTES};
pub use credentials::{CredentialsProvider, StaticToken, Token, MAX_TOKEN_BYTES};
pub use error::{ConfigError, Error};
pub use probe::{HealthProbe, HealthProbeConfig};
pub use transport::HttpTransport;

/// The result type of building this crate's types.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod compile_checks {
    use super::*;
    // Compile-time proofs: the provider stays object safe, the transport is
    // a `Transport` object, and the public types can cross threads.
    fn _provider_is_object_safe(_: &dyn CredentialsProvider) {}
    fn _transport_is_a_transport(t: HttpTransport) -> Box<dyn cpc_core::Transport> {
        Box::new(t)
    }
    fn _probe_is_a_source<S: cpc_network::StatusSource>(_: S) {}
    fn _probe(p: HealthProbe) {
        _probe_is_a_source(p)
    }
    fn _assert_send_sync<T: Send + Sync>() {}
    fn _types_are_send_sync() {
        _assert_send_sync::<HttpTransport>();
        _assert_send_sync::<HealthProbe>();
        _assert_send_sync::<StaticToken>();
        _assert_send_sync::<Token>();
        _assert_send_sync::<HttpConfig>();
        _assert_send_sync::<Error>();
    }
}
