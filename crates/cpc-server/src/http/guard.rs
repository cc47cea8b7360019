//! What keeps a flood cheap: a token bucket per token (checked before the
//! body is read) and a cap on concurrent pushes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::tokens::TokenId;

/// Requests per second and burst of one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 20.0,
            burst: 40.0,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every token seen (bounded by the tokens file).
#[derive(Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<TokenId, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiter")
    }
}

impl RateLimiter {
    /// Takes one request from `token`'s bucket; `Err(wait)` when empty, the
    /// wait jittered by ×[1.0, 1.5) so a refused herd does not return in
    /// step.
    pub(crate) fn take(&self, token: TokenId, limit: RateLimit) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets.entry(token).or_insert(Bucket {
            tokens: limit.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limit.per_second).min(limit.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let missing = (1.0 - b.tokens) / limit.per_second.max(1e-3);
        let jitter = rand::thread_rng().gen_range(1.0..1.5);
        Err(Duration::from_secs_f64((missing * jitter).min(3600.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_empties_then_refills_at_its_rate() {
        let limiter = RateLimiter::default();
        let limit = RateLimit {
            per_second: 2.0,
            burst: 3.0,
        };
        let t = TokenId(0);
        for _ in 0..3 {
            assert!(limiter.take(t, limit).is_ok());
        }
        let wait = limiter.take(t, limit).err();
        assert!(
            wait.is_some_and(|w| w >= Duration::from_millis(500) && w < Duration::from_millis(750)),
            "{wait:?}"
        );
        // Another token has its own bucket.
        assert!(limiter.take(TokenId(1), limit).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.take(t, limit).is_ok());
        assert!(limiter.take(t, limit).is_err());
    }
}
