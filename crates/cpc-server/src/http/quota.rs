//! Each token's quota of work per window: operations and payload bytes
//! pushed, a token bucket each, so one token cannot fill the disk while
//! staying inside the request rate (outside testing added 81 MiB in about
//! ten seconds with five 1 MiB versions of one record per push). Checked
//! once a push is parsed (its size is known) and before the store sees it;
//! over quota is `429 quota_exceeded` with the wait until the bucket holds
//! the push again. A push larger than a whole bucket is refused for good
//! (`413`) rather than told to wait for ever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::tokens::TokenId;

/// Each token's allowance per window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Operations a token may push per window (default 200,000).
    pub ops: u64,
    /// Payload bytes a token may push per window (default 1 GiB).
    pub bytes: u64,
    /// The window (default one hour): the buckets refill evenly over it.
    pub window: Duration,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            ops: 200_000,
            bytes: 1 << 30,
            window: Duration::from_secs(3600),
        }
    }
}

/// What a refused push is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverQuota {
    /// Wait this long: the bucket then holds the push.
    Wait(Duration),
    /// The push is larger than a whole bucket: it never fits.
    Never,
}

struct Buckets {
    ops: f64,
    bytes: f64,
    at: Instant,
}

/// The buckets of every token seen (bounded by the tokens file).
#[derive(Default)]
pub(crate) struct Quotas {
    buckets: Mutex<HashMap<TokenId, Buckets>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Quotas")
    }
}

impl Quotas {
    /// Takes `ops` operations and `bytes` payload bytes from `token`'s
    /// buckets, or nothing and says how long to wait.
    pub(crate) fn take(
        &self,
        token: TokenId,
        quota: Quota,
        ops: u64,
        bytes: u64,
    ) -> Result<(), OverQuota> {
        if ops > quota.ops || bytes > quota.bytes {
            return Err(OverQuota::Never);
        }
        let now = Instant::now();
        let mut all = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = all.entry(token).or_insert(Buckets {
            ops: quota.ops as f64,
            bytes: quota.bytes as f64,
            at: now,
        });
        let window = quota.window.as_secs_f64().max(1e-3);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.ops = (b.ops + elapsed * quota.ops as f64 / window).min(quota.ops as f64);
        b.bytes = (b.bytes + elapsed * quota.bytes as f64 / window).min(quota.bytes as f64);
        b.at = now;
        let (need_ops, need_bytes) = (ops as f64, bytes as f64);
        if b.ops >= need_ops && b.bytes >= need_bytes {
            b.ops -= need_ops;
            b.bytes -= need_bytes;
            return Ok(());
        }
        // The refill time of whichever bucket lacks more.
        let lack = |have: f64, need: f64, per_window: u64| {
            ((need - have).max(0.0) / per_window.max(1) as f64) * window
        };
        let wait = lack(b.ops, need_ops, quota.ops).max(lack(b.bytes, need_bytes, quota.bytes));
        Err(OverQuota::Wait(Duration::from_secs_f64(
            wait.min(quota.window.as_secs_f64()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        Quota {
            ops: 10,
            bytes: 1000,
            window: Duration::from_secs(100),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_runs_out_of_ops_or_bytes_then_refills_over_the_window() {
        let q = Quotas::default();
        let t = TokenId(0);
        assert!(q.take(t, quota(), 5, 100).is_ok());
        assert!(q.take(t, quota(), 5, 100).is_ok());
        // Out of operations: one refills in a tenth of the window.
        assert_eq!(
            q.take(t, quota(), 1, 1),
            Err(OverQuota::Wait(Duration::from_secs(10)))
        );
        // Another token has its own buckets.
        assert!(q.take(TokenId(1), quota(), 10, 1000).is_ok());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(q.take(t, quota(), 1, 1).is_ok());
        // Out of bytes: 800 left; 900 asked waits for 100 (a tenth).
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(q.take(t, quota(), 1, 800).is_ok());
        assert!(
            matches!(q.take(t, quota(), 1, 300), Err(OverQuota::Wait(w)) if w > Duration::ZERO)
        );
    }

    #[test]
    fn a_push_larger_than_a_whole_bucket_never_fits() {
        let q = Quotas::default();
        assert_eq!(q.take(TokenId(0), quota(), 11, 1), Err(OverQuota::Never));
        assert_eq!(q.take(TokenId(0), quota(), 1, 1001), Err(OverQuota::Never));
    }
}
