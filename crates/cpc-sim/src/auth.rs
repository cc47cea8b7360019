//! A credential on the simulated wire (the bearer token a real transport
//! would carry, so the canary test can prove it never reaches a log) and
//! the log of answers the engine received.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cpc_fault::SimClock;
use cpc_sync::core::{
    match_outcomes, Operation, OperationId, PushOutcome, Transport, TransportError,
};

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Sends `Authorization: Bearer <token>` with every push; the simulated
/// server side checks it against the token it issued and answers
/// `Unauthorized` on a mismatch.
///
/// It also keeps the [`AnswerLog`]: when the engine last received a final
/// answer for each operation, which is when the engine learnt the operation
/// left its queue (and its record's next operation became claimable).
pub struct BearerTransport<T> {
    inner: T,
    token: Secret,
    issued: Secret,
    answers: AnswerLog,
    clock: SimClock,
}

/// When the client last received a final per-operation answer (`Applied`,
/// `AlreadyApplied`, `Rejected`, `Conflict`) for each operation, in
/// simulated time. A lost answer is not an answer: the engine resends, and
/// the resend's answer is the one that counts.
#[derive(Debug, Clone, Default)]
pub struct AnswerLog {
    inner: Arc<Mutex<HashMap<OperationId, (Duration, FinalAnswer)>>>,
}

/// The kind of a final per-operation answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalAnswer {
    /// `Applied` or `AlreadyApplied`.
    Applied,
    /// `Rejected`: refused for good by the remote.
    Rejected,
    /// `Conflict`: the resolver decides.
    Conflict,
}

impl AnswerLog {
    fn record(&self, at: Duration, batch: &[Operation], outcomes: &[PushOutcome]) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (op, outcome) in batch.iter().zip(outcomes) {
            let kind = match outcome {
                PushOutcome::Applied { .. } | PushOutcome::AlreadyApplied { .. } => {
                    FinalAnswer::Applied
                }
                PushOutcome::Rejected { .. } => FinalAnswer::Rejected,
                PushOutcome::Conflict { .. } => FinalAnswer::Conflict,
                // Not final, and any outcome added later is not known final.
                _ => continue,
            };
            map.insert(op.id, (at, kind));
        }
    }

    /// `id` left the queue at `at` without a push answer: the engine
    /// completed it from a pull that showed it applied (its answer was
    /// lost). That is when its record's next operation became claimable.
    pub fn record_pulled(&self, at: Duration, id: OperationId) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_insert((at, FinalAnswer::Applied));
    }

    /// When and how `id` was last answered for good, if it was.
    pub fn get(&self, id: OperationId) -> Option<(Duration, FinalAnswer)> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }
}

impl<T> fmt::Debug for BearerTransport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTransport")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl<T> BearerTransport<T> {
    /// Wraps `inner`, sending `token`; the server accepts exactly `token`.
    /// Answers are logged on `clock`'s time line.
    pub fn new(inner: T, token: Secret, clock: SimClock) -> Self {
        BearerTransport {
            inner,
            issued: token.clone(),
            token,
            answers: AnswerLog::default(),
            clock,
        }
    }

    /// The log of final answers.
    pub fn answers(&self) -> AnswerLog {
        self.answers.clone()
    }

    /// The header a real client would send (kept out of every log).
    fn authorization(&self) -> String {
        format!("Bearer {}", self.token.expose())
    }

    /// The server's check, comparing in constant time.
    fn accepted(&self, header: &str) -> bool {
        let Some(presented) = header.strip_prefix("Bearer ") else {
            return false;
        };
        let (a, b) = (presented.as_bytes(), self.issued.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[async_trait]
impl<T: Transport> Transport for BearerTransport<T> {
    async fn push(
        &self,
        query: &cpc_sync::core::PushQuery<'_>,
    ) -> Result<cpc_sync::core::PushAnswer, TransportError> {
        let batch = query.ops;
        let header = self.authorization();
        if !self.accepted(&header) {
            tracing::debug!(ops = batch.len(), "credentials refused");
            return Err(TransportError::Unauthorized);
        }
        let answer = self.inner.push(query).await;
        if let Ok(answer) = &answer {
            // A malformed answer is refused whole by the engine: only one
            // that matches the batch by id is recorded.
            if let Ok(matched) = match_outcomes(batch, answer.outcomes.clone()) {
                self.answers.record(self.clock.elapsed(), batch, &matched);
            }
        }
        answer
    }

    async fn pull(
        &self,
        query: &cpc_sync::core::PullQuery,
    ) -> Result<cpc_sync::core::PullPage, TransportError> {
        if !self.accepted(&self.authorization()) {
            return Err(TransportError::Unauthorized);
        }
        self.inner.pull(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_token() {
        let secret = Secret::new("canary-123");
        assert!(!format!("{secret:?}").contains("canary"));
        assert!(!format!("{secret}").contains("canary"));
        let t = BearerTransport::new((), secret, SimClock::default());
        assert!(!format!("{t:?}").contains("canary"));
        assert!(t.accepted("Bearer canary-123"));
        assert!(!t.accepted("Bearer canary-124"));
        assert!(!t.accepted("canary-123"));
    }
}
