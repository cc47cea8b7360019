//! `POST /v1/pull` (protocol §7): the engine's query as a request, the
//! answer read within `max_bytes`, held to the client's page rules
//! (`check_pull_page`) before anything of it is handed on, and mapped to
//! the engine's page. Our own writes are recognised by `origin.client_id`.

use std::time::Duration;

use cpc_core::{
    EntityKey, OperationId, PullCursor, PullPage, PullQuery, PulledChange, ResetReason,
    SnapshotRange, TransportError,
};
use cpc_protocol::{check_pull_page, Cursor, Hex64, PullRequest, PullResponse};
use reqwest::header::CONTENT_TYPE;

use crate::body::{read_json, read_optional, Expecting};
use crate::failover::Answered;
use crate::map::{self, PROTOCOL};
use crate::status::{self, Refusal, MAX_PROBLEM_BYTES};
use crate::transport::HttpTransport;

/// A long poll's answer may take this long beyond `wait_ms` (§10.6).
const LONG_POLL_SLACK: Duration = Duration::from_secs(15);

impl HttpTransport {
    /// One pull page (see [`cpc_core::Transport::pull`]).
    pub(crate) async fn pull_page(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        let (limits, pull_limits) = self.server_limits().await?;
        let max_bytes = self
            .max_pull_bytes
            .min(self.max_response_bytes as u64)
            .clamp(pull_limits.min_pull_bytes, pull_limits.max_pull_bytes);
        let wait_ms = cpc_core::millis(query.wait).min(pull_limits.max_pull_wait_ms);
        let wire = PullRequest {
            protocol: PROTOCOL,
            client_id: self.client_id().to_owned(),
            known: query.known.as_ref().map(map::wire_position),
            cursor: query.cursor.as_ref().map(|c| Cursor {
                store_id: c.position.store_id.clone(),
                seq: c.position.seq,
                fp: Hex64(c.position.fp),
                after: c.after.as_ref().map(wire_key),
            }),
            limit: u64::from(query.limit.max(1)).min(pull_limits.max_pull_limit),
            max_bytes,
            wait_ms,
            collections: query.collections.clone(),
        };
        let body = serde_json::to_vec(&wire)
            .map_err(|e| TransportError::Protocol(format!("could not encode a pull: {e}")))?;
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let Answered {
                mut response,
                request_id,
            } = self
                .endpoints
                .send(|endpoint| {
                    Ok(self
                        .client
                        .post(endpoint.pull.clone())
                        .header(CONTENT_TYPE, "application/json")
                        .timeout(Duration::from_millis(wait_ms) + LONG_POLL_SLACK)
                        .body(body.clone())
                        .bearer_auth(token.secret()))
                })
                .await?;
            let code = response.status().as_u16();
            if code == 200 {
                return read_page(
                    self,
                    &wire,
                    &mut response,
                    limits.max_payload_bytes,
                    &request_id,
                )
                .await;
            }
            let problem = read_optional(&mut response, MAX_PROBLEM_BYTES).await;
            tracing::debug!(request_id, status = code, "pull refused");
            if let Some(diverged) = self.diverged(code, response.headers(), problem.as_deref()) {
                return Err(diverged);
            }
            match status::refusal(code, response.headers(), problem.as_deref()) {
                Refusal::Unauthorized if !retried => {
                    self.credentials.invalidate(&token);
                    retried = true;
                }
                Refusal::Unauthorized => {
                    self.credentials.invalidate(&token);
                    return Err(TransportError::Unauthorized);
                }
                Refusal::TooLarge => return Err(TransportError::Server { status: 413 }),
                Refusal::Incompatible => {
                    self.info.forget().await;
                    return Err(status::unsupported_version());
                }
                Refusal::Failed(error) => return Err(error),
            }
        }
    }
}

/// Reads, checks and maps a 200 answer.
async fn read_page(
    transport: &HttpTransport,
    wire: &PullRequest,
    response: &mut reqwest::Response,
    max_payload: u64,
    request_id: &str,
) -> Result<PullPage, TransportError> {
    let cap = usize::try_from(wire.max_bytes).unwrap_or(usize::MAX);
    let expecting = Expecting {
        kind: "pull",
        limit: "max_bytes",
        noun: "pull page",
    };
    let (answer, bytes): (PullResponse, usize) = read_json(response, cap, &expecting).await?;
    check_pull_page(wire, &answer, bytes as u64, max_payload)
        .map_err(|e| TransportError::Protocol(e.to_string()))?;
    tracing::debug!(
        request_id,
        changes = answer.changes.len(),
        bytes,
        cursor = answer.cursor.seq,
        has_more = answer.has_more,
        snapshot = answer.snapshot.is_some(),
        "pull answered"
    );
    Ok(page(transport.client_id(), answer, bytes as u64))
}

/// The engine's page for a checked answer.
fn page(client_id: &str, answer: PullResponse, bytes: u64) -> PullPage {
    let changes = answer
        .changes
        .into_iter()
        .map(|c| PulledChange {
            seq: c.seq,
            entity: EntityKey::new(c.entity.collection, c.entity.id),
            version: c.version,
            payload: if c.deleted {
                None
            } else {
                Some(c.payload.map(|p| p.0).unwrap_or_default())
            },
            timestamp: map::timestamp(c.timestamp),
            own_op: c
                .origin
                .filter(|o| o.client_id == client_id)
                .map(|o| OperationId::from_u128(o.op.0)),
        })
        .collect();
    let reset = answer.reset.map(|r| match r.reason {
        cpc_protocol::ResetReason::Initial => ResetReason::Initial,
        cpc_protocol::ResetReason::UnknownStore => ResetReason::UnknownStore,
        cpc_protocol::ResetReason::Compacted => ResetReason::Compacted,
        cpc_protocol::ResetReason::Diverged => ResetReason::Diverged,
    });
    PullPage {
        changes,
        cursor: PullCursor {
            position: map::position(answer.cursor.position()),
            after: answer.cursor.after.map(core_key),
        },
        has_more: answer.has_more,
        snapshot: answer.snapshot.map(|s| SnapshotRange {
            from: s.from.map(core_key),
            through: s.through.map(core_key),
            reset,
        }),
        head: map::position(answer.head),
        bytes,
    }
}

fn wire_key(k: &EntityKey) -> cpc_protocol::EntityKey {
    cpc_protocol::EntityKey {
        collection: k.collection.clone(),
        id: k.id.clone(),
    }
}

fn core_key(k: cpc_protocol::EntityKey) -> EntityKey {
    EntityKey::new(k.collection, k.id)
}
