//! Who is on the other end of a connection, and how often its
//! authentication failed: a token bucket of failures per client address,
//! checked before a presented token is compared with the known ones, so a
//! guesser is answered `429` cheaply instead of a `401` per guess.
//!
//! The accept loop puts a [`PeerAddr`] into every request's extensions; a
//! request without one (a server embedded behind another accept loop) is
//! counted under one shared "unknown peer" address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::guard::RateLimit;

/// The address of the client of a request's connection, as the accept
/// loop saw it (behind a proxy: the proxy's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// At most this many addresses have a bucket of their own; beyond it (a
/// flood from many addresses) the newcomers share one bucket. About 64
/// bytes an entry: the table stays under half a megabyte whatever the
/// clients do.
pub(crate) const MAX_PEERS: usize = 4096;

/// What a bucket is kept under. IPv6 addresses by their /64: one host
/// usually has a whole /64 to itself, and a bucket per address would let it
/// take a fresh one for every guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    V4(u32),
    V6Net(u64),
    /// A request without a [`PeerAddr`].
    Unknown,
    /// Every address that found the table full.
    Overflow,
}

impl PeerKey {
    fn of(peer: Option<&PeerAddr>) -> PeerKey {
        match peer.map(|p| p.0.ip()) {
            None => PeerKey::Unknown,
            Some(IpAddr::V4(v4)) => PeerKey::V4(u32::from(v4)),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(u32::from(v4)),
                None => PeerKey::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills the bucket to `now`.
    fn refill(&mut self, now: Instant, limit: RateLimit) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.at = now;
    }
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<PeerKey, Bucket>,
    /// When the table was last swept of full buckets: at most once a
    /// second, so a flood of new addresses does not make every request
    /// walk the whole table.
    swept: Option<Instant>,
}

/// The failed authentications of every address seen lately, bounded by
/// [`MAX_PEERS`].
#[derive(Debug)]
pub(crate) struct AuthFailures {
    limit: RateLimit,
    capacity: usize,
    table: Mutex<Table>,
}

impl AuthFailures {
    /// A limiter allowing `limit` failures per address.
    pub(crate) fn new(limit: RateLimit) -> AuthFailures {
        AuthFailures::with_capacity(limit, MAX_PEERS)
    }

    fn with_capacity(limit: RateLimit, capacity: usize) -> AuthFailures {
        AuthFailures {
            limit,
            capacity,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// `Err(wait)` when `peer` has used up its failures: the request is
    /// refused before its token is looked at, whatever the token. The
    /// wait is jittered by ×[1.0, 1.5) like the token rate's.
    pub(crate) fn check(&self, peer: Option<&PeerAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut table = self.lock();
        let key = self.resolve(&mut table, PeerKey::of(peer), now);
        let Some(bucket) = table.buckets.get_mut(&key) else {
            return Ok(());
        };
        bucket.refill(now, self.limit);
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let missing = (1.0 - bucket.tokens) / self.limit.per_second.max(1e-3);
        let jitter = rand::thread_rng().gen_range(1.0..1.5);
        Err(Duration::from_secs_f64((missing * jitter).min(3600.0)))
    }

    /// Counts one failed authentication of `peer`.
    pub(crate) fn fail(&self, peer: Option<&PeerAddr>) {
        let now = Instant::now();
        let limit = self.limit;
        let mut table = self.lock();
        let key = self.resolve(&mut table, PeerKey::of(peer), now);
        let bucket = table.buckets.entry(key).or_insert(Bucket {
            tokens: limit.burst,
            at: now,
        });
        bucket.refill(now, limit);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key `key`'s failures are counted under: its own while it has a
    /// bucket or there is room for one, else the shared overflow bucket.
    fn resolve(&self, table: &mut Table, key: PeerKey, now: Instant) -> PeerKey {
        if table.buckets.contains_key(&key) || table.buckets.len() < self.capacity {
            return key;
        }
        let due = table
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if due {
            table.swept = Some(now);
            let limit = self.limit;
            // A bucket refilled to its burst is the same as no bucket.
            table.buckets.retain(|k, b| {
                *k == PeerKey::Overflow
                    || b.tokens
                        + now.saturating_duration_since(b.at).as_secs_f64() * limit.per_second
                        < limit.burst
            });
        }
        if table.buckets.len() < self.capacity {
            key
        } else {
            PeerKey::Overflow
        }
    }

    /// How many buckets are kept (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str) -> PeerAddr {
        match addr.parse() {
            Ok(a) => PeerAddr(a),
            Err(e) => panic!("{addr}: {e}"),
        }
    }

    const LIMIT: RateLimit = RateLimit {
        per_second: 1.0,
        burst: 2.0,
    };

    #[tokio::test(start_paused = true)]
    async fn an_address_that_fails_too_often_is_refused_until_its_bucket_refills() {
        let limiter = AuthFailures::new(LIMIT);
        let a = peer("192.0.2.1:1000");
        assert!(limiter.check(Some(&a)).is_ok());
        limiter.fail(Some(&a));
        assert!(limiter.check(Some(&a)).is_ok());
        limiter.fail(Some(&a));
        let wait = limiter.check(Some(&a)).err();
        assert!(
            wait.is_some_and(|w| w >= Duration::from_secs(1) && w < Duration::from_millis(1500)),
            "{wait:?}"
        );
        // Another port of the same host is the same client.
        assert!(limiter.check(Some(&peer("192.0.2.1:2000"))).is_err());
        // Another host, and requests without an address, are not.
        assert!(limiter.check(Some(&peer("192.0.2.2:1000"))).is_ok());
        assert!(limiter.check(None).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check(Some(&a)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_host_cannot_escape_by_changing_addresses_within_its_64() {
        let limiter = AuthFailures::new(LIMIT);
        limiter.fail(Some(&peer("[2001:db8:1:2::1]:1")));
        limiter.fail(Some(&peer("[2001:db8:1:2::ffff]:1")));
        assert!(limiter
            .check(Some(&peer("[2001:db8:1:2:abcd::9]:7")))
            .is_err());
        assert!(limiter.check(Some(&peer("[2001:db8:1:3::1]:1"))).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        limiter.fail(Some(&peer("198.51.100.7:1")));
        limiter.fail(Some(&peer("198.51.100.7:1")));
        assert!(limiter
            .check(Some(&peer("[::ffff:198.51.100.7]:5")))
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_newcomers_beyond_it_share_a_bucket() {
        let limiter = AuthFailures::with_capacity(LIMIT, 3);
        for host in 1..=3 {
            limiter.fail(Some(&peer(&format!("192.0.2.{host}:1"))));
        }
        assert_eq!(limiter.len(), 3);
        // Full, and nothing refilled yet: the next addresses share one
        // bucket, and together they are limited.
        limiter.fail(Some(&peer("203.0.113.1:1")));
        limiter.fail(Some(&peer("203.0.113.2:1")));
        assert_eq!(limiter.len(), 4);
        assert!(limiter.check(Some(&peer("203.0.113.3:1"))).is_err());
        for host in 4..=200 {
            limiter.fail(Some(&peer(&format!("203.0.113.{host}:1"))));
        }
        assert_eq!(limiter.len(), 4);
        // Once the first buckets refilled, a sweep makes room again.
        tokio::time::advance(Duration::from_secs(3)).await;
        limiter.fail(Some(&peer("198.51.100.1:1")));
        assert!(limiter.len() <= 2, "{}", limiter.len());
        assert!(limiter.check(Some(&peer("198.51.100.1:1"))).is_ok());
    }
}
