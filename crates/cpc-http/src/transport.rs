//! [`HttpTransport`]: `cpc_core::Transport` over `POST /v1/push`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use cpc_core::{
    OpOutcome, Operation, PullPage, PullQuery, PushAnswer, PushQuery, Transport, TransportError,
};
use cpc_protocol::{check_push_answer, Limits, OpId, Position, PullLimits, PushResponse};
use reqwest::header::CONTENT_TYPE;
use reqwest::Client;
use tokio::time::Instant;

use crate::body::{read_json, read_optional, Expecting};
use crate::config::HttpConfig;
use crate::credentials::{CredentialsProvider, Token};
use crate::error::Error;
use crate::failover::{Answered, Endpoints};
use crate::info::{self, InfoCache};
use crate::map;
use crate::status::{self, Refusal, MAX_PROBLEM_BYTES};

/// The client transport of the cpc-sync HTTP protocol v1.
///
/// One pooled `reqwest` client (rustls, HTTP/1.1 or HTTP/2, no redirects
/// followed, no content coding). Each [`push`](Transport::push):
///
/// 1. reads the server's limits (`GET /v1/info`, cached for an hour) and
///    cuts the batch into requests of at most `max_batch_ops` operations and
///    `max_body_bytes` encoded bytes, sent one after the other;
/// 2. asks the [`CredentialsProvider`] for a token and sends `POST
///    /v1/push` with `Authorization: Bearer`;
/// 3. reads the answer up to `max_response_bytes` and maps it as the
///    protocol's §9.2 says: a 200 is checked (one outcome per operation,
///    matched by id) and mapped outcome by outcome; a `401` invalidates the
///    token and resends once with a fresh one; a `413` halves the request;
///    everything else is the [`TransportError`] of the table.
///
/// If any request of a batch fails, the whole push returns that error:
/// operations answered by earlier requests are sent again later and
/// answered `already_applied` (replays are safe: the id is the idempotency
/// key).
///
/// Every push and pull carries the `known` position of its query (the
/// engine keeps it; this transport holds no sync state), raised between the
/// requests of one batch by each answer's head; a push answers the highest
/// head it saw. A `409 history_diverged` is
/// [`TransportError::HistoryDiverged`] with the server's head.
/// `low_water` is sent as `null`.
///
/// [`pull`](Transport::pull) sends `POST /v1/pull` (see `pull.rs`).
pub struct HttpTransport {
    pub(crate) client: Client,
    client_id: String,
    base_url: String,
    /// The server's instances (`base_url`, then `failover_urls`).
    pub(crate) endpoints: Endpoints,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_pull_bytes: u64,
    pub(crate) credentials: Arc<dyn CredentialsProvider>,
    pub(crate) info: InfoCache,
}

/// What one push carries from request to request when its batch is cut:
/// the position sent, raised by each answer's head (so a later request
/// carries what an earlier one learned), and the highest head answered.
#[derive(Default)]
struct Sending {
    known: Option<Position>,
    head: Option<Position>,
}

impl Sending {
    fn answered(&mut self, head: Position) {
        raise(&mut self.known, head.clone());
        raise(&mut self.head, head);
    }
}

/// Raises `slot` to `head` (by `seq`, in one store); a head of another
/// store replaces it.
fn raise(slot: &mut Option<Position>, head: Position) {
    let keep = slot
        .as_ref()
        .is_some_and(|k| k.store_id == head.store_id && k.seq >= head.seq);
    if !keep {
        *slot = Some(head);
    }
}

/// What one authorized exchange ended with, when it did not fail.
enum Sent {
    /// A checked 200 answer, and the head it reported.
    Outcomes(Vec<OpOutcome>, Position),
    /// 401.
    Unauthorized,
    /// 413.
    TooLarge,
}

type Pushed<'a> = Pin<Box<dyn Future<Output = Result<Vec<OpOutcome>, TransportError>> + Send + 'a>>;

impl HttpTransport {
    /// A transport for `config`, authenticating with `credentials`.
    /// Checks the configuration ([`HttpConfig::validate`]) and builds the
    /// HTTP client; sends nothing.
    pub fn new(
        config: HttpConfig,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let client = Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect of a push is a misconfiguration or a captive
            // portal; following it could turn the POST into a GET elsewhere.
            // It is answered as the status it is (`Server { status: 3xx }`).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cpc-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        Ok(HttpTransport {
            endpoints: Endpoints::new(&config)?,
            max_pull_bytes: config.max_pull_bytes,
            client,
            client_id: config.client_id,
            base_url: config.base_url,
            max_response_bytes: config.max_response_bytes,
            credentials,
            info: InfoCache::default(),
        })
    }

    /// The `client_id` this transport pushes as.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The server's limits: from `GET /v1/info` (fetched on first use and
    /// kept for an hour), or the protocol's defaults when the server
    /// answered without a usable info object. Fails when the server cannot
    /// be reached, or says it does not serve protocol v1.
    pub async fn limits(&self) -> Result<Limits, TransportError> {
        Ok(self.server_limits().await?.0)
    }

    /// The server's push and pull limits (see [`limits`](Self::limits)).
    pub async fn server_limits(&self) -> Result<(Limits, PullLimits), TransportError> {
        self.info
            .limits(|| info::fetch(&self.endpoints, &self.client, self.max_response_bytes))
            .await
    }

    /// Sends `ops` in as many requests as the limits and the server's 413s
    /// ask for, one after the other; outcomes joined in request order.
    /// Boxed: it recurses (halves of halves), at most log2(len) deep.
    fn send_all<'a>(&'a self, ops: &'a [Operation], sending: &'a mut Sending) -> Pushed<'a> {
        Box::pin(async move {
            let limits = self.limits().await?;
            let max_ops = usize::try_from(limits.max_batch_ops).unwrap_or(usize::MAX);
            if ops.len() > max_ops {
                let mut outcomes = Vec::with_capacity(ops.len());
                for chunk in ops.chunks(max_ops) {
                    outcomes.extend(self.send_all(chunk, &mut *sending).await?);
                }
                return Ok(outcomes);
            }
            let body = serde_json::to_vec(&map::push_request(
                &self.client_id,
                ops,
                sending.known.clone(),
            ))
            .map_err(|e| TransportError::Protocol(format!("could not encode a push: {e}")))?;
            let too_big = u64::try_from(body.len()).map_or(true, |n| n > limits.max_body_bytes);
            if too_big && ops.len() > 1 {
                // Cut before sending; a single operation over the limit is
                // sent anyway, so that the server's 413 decides.
                return self.send_halves(ops, sending).await;
            }
            match self.send_authorized(ops, body).await? {
                Sent::Outcomes(outcomes, head) => {
                    sending.answered(head);
                    Ok(outcomes)
                }
                Sent::TooLarge if ops.len() > 1 => {
                    tracing::debug!(ops = ops.len(), "push too large (413); splitting it");
                    // §4: the limits may have changed; ask again.
                    self.info.forget().await;
                    self.send_halves(ops, sending).await
                }
                // The client's own poison-operation handling decides (§6.9).
                Sent::TooLarge => Err(TransportError::Server { status: 413 }),
                Sent::Unauthorized => Err(TransportError::Unauthorized),
            }
        })
    }

    async fn send_halves(
        &self,
        ops: &[Operation],
        sending: &mut Sending,
    ) -> Result<Vec<OpOutcome>, TransportError> {
        let (first, second) = ops.split_at(ops.len() / 2);
        let mut outcomes = self.send_all(first, &mut *sending).await?;
        outcomes.extend(self.send_all(second, &mut *sending).await?);
        Ok(outcomes)
    }

    /// One request with the token protocol of §5.1: on a 401, invalidate,
    /// ask once more, resend once; a second 401 is `Sent::Unauthorized`.
    async fn send_authorized(
        &self,
        ops: &[Operation],
        body: Vec<u8>,
    ) -> Result<Sent, TransportError> {
        let ids: Vec<OpId> = ops.iter().map(|op| map::op_id(op.id)).collect();
        let token = self.token().await?;
        let first = self.exchange(&body, &token, &ids).await?;
        if !matches!(first, Sent::Unauthorized) {
            return Ok(first);
        }
        self.credentials.invalidate(&token);
        let fresh = self.token().await?;
        let second = self.exchange(&body, &fresh, &ids).await?;
        if matches!(second, Sent::Unauthorized) {
            self.credentials.invalidate(&fresh);
            tracing::warn!("push refused twice (401): authentication required");
        }
        Ok(second)
    }

    /// The provider's token, if it is one that can be sent.
    pub(crate) async fn token(&self) -> Result<Token, TransportError> {
        match self.credentials.token().await {
            Some(token) if token.is_well_formed() => Ok(token),
            Some(_) => {
                tracing::warn!("the credentials provider gave a malformed bearer token; not sent");
                Err(TransportError::Unauthorized)
            }
            None => {
                tracing::debug!("no token from the credentials provider");
                Err(TransportError::Unauthorized)
            }
        }
    }

    /// Sends the push `body` with `token` (to another instance if the
    /// current one fails) and reads its answer.
    async fn exchange(
        &self,
        body: &[u8],
        token: &Token,
        ids: &[OpId],
    ) -> Result<Sent, TransportError> {
        let started = Instant::now();
        let Answered {
            mut response,
            request_id,
        } = self
            .endpoints
            .send(|endpoint| {
                Ok(self
                    .client
                    .post(endpoint.push.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec())
                    // The secret, not the `Token`: its Display is
                    // "[redacted]". The header is marked sensitive, so
                    // reqwest never prints it.
                    .bearer_auth(token.secret()))
            })
            .await?;
        let code = response.status().as_u16();
        if code != 200 {
            let body = read_optional(
                &mut response,
                MAX_PROBLEM_BYTES.min(self.max_response_bytes),
            )
            .await;
            tracing::debug!(
                request_id,
                ops = ids.len(),
                status = code,
                elapsed_ms = cpc_core::millis(started.elapsed()),
                "push refused"
            );
            if let Some(diverged) = self.diverged(code, response.headers(), body.as_deref()) {
                return Err(diverged);
            }
            return match status::refusal(code, response.headers(), body.as_deref()) {
                Refusal::Unauthorized => Ok(Sent::Unauthorized),
                Refusal::TooLarge => Ok(Sent::TooLarge),
                Refusal::Incompatible => {
                    tracing::warn!("the server does not serve protocol v1");
                    self.info.forget().await;
                    Err(status::unsupported_version())
                }
                Refusal::Failed(error) => Err(error),
            };
        }
        let expecting = Expecting {
            kind: "push",
            limit: "max_response_bytes",
            noun: "push answer",
        };
        let (answer, bytes): (PushResponse, usize) =
            read_json(&mut response, self.max_response_bytes, &expecting).await?;
        check_push_answer(ids, &answer).map_err(|e| TransportError::Protocol(e.to_string()))?;
        tracing::debug!(
            request_id,
            ops = ids.len(),
            bytes,
            head_seq = answer.head.seq,
            elapsed_ms = cpc_core::millis(started.elapsed()),
            "push answered"
        );
        Ok(Sent::Outcomes(
            answer.outcomes.into_iter().map(map::outcome).collect(),
            answer.head,
        ))
    }

    /// A `409 history_diverged` (§8) as its error, push or pull. `None`
    /// for any other answer.
    pub(crate) fn diverged(
        &self,
        code: u16,
        headers: &reqwest::header::HeaderMap,
        body: Option<&[u8]>,
    ) -> Option<TransportError> {
        let head = status::diverged_head(code, headers, body)?;
        tracing::warn!(
            head = head.seq,
            "the server's history diverged from what this device has seen (409)"
        );
        // The engine keeps sending its `known` until it has queued again
        // what the restore lost: until then every push is refused the same
        // way, so nothing lands on the restored history ahead of them.
        Some(TransportError::HistoryDiverged {
            head: map::position(head),
        })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn push(&self, query: &PushQuery<'_>) -> Result<PushAnswer, TransportError> {
        // The protocol refuses an empty `ops`; there is nothing to ask.
        if query.ops.is_empty() {
            return Ok(PushAnswer::default());
        }
        let mut sending = Sending {
            known: query.known.map(map::wire_position),
            head: None,
        };
        let outcomes = self.send_all(query.ops, &mut sending).await?;
        Ok(PushAnswer {
            outcomes,
            head: sending.head.map(map::position),
        })
    }

    async fn pull(&self, query: &PullQuery) -> Result<PullPage, TransportError> {
        self.pull_page(query).await
    }
}

impl fmt::Debug for HttpTransport {
    // No credentials: the provider is not printed at all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base_url", &self.base_url)
            .field("endpoints", &self.endpoints.len())
            .field("client_id", &self.client_id)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}
