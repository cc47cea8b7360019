//! Deliberately broken modes (feature `test-faults`, never in a real
//! deployment): each fault breaks one MUST of docs/protocol.md, so that a
//! conformance suite can prove it notices (`cpc-conformance`'s tests).
//! Each fault is a few lines marked `#[cfg(feature = "test-faults")]`
//! where the rule it breaks is kept: in this crate's rules, or in
//! `cpc-server` (its HTTP layer, its writer and its page reads).

/// The protocol rules a server breaks on purpose. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// A `conflict` is recorded in the idempotency table as if it were
    /// final (with the entity's version and last seq), so resending the
    /// same op id answers `already_applied` instead of being judged again
    /// (breaks §6.4: conflicts are never recorded). In `push.rs`.
    pub record_conflicts: bool,
    /// The same for `retry_later` (breaks §6.4). In `push.rs`.
    pub record_retry_later: bool,
    /// Answers go without `Cache-Control: no-store` (breaks §2.1). In
    /// cpc-server's `http.rs`.
    pub no_cache_header: bool,
    /// Each change takes `seq` + 2 instead of + 1: the change log has gaps
    /// (breaks §2.3 and §6.6). In `rules.rs`.
    pub skip_seq: bool,
    /// A push's `known` position is not checked against the history
    /// (breaks §8). In cpc-server's `store/writer.rs`.
    pub ignore_known: bool,
    /// A change page leaves out its first change while its cursor passes
    /// it: a client never sees that change (breaks §7.3, gapless pages).
    /// In cpc-server's `store/read.rs`.
    pub pull_skip_change: bool,
    /// Resends are applied again instead of answered `already_applied`:
    /// no idempotency by op id (breaks §6.3). In `rules.rs` and the stores'
    /// writes; the
    /// negative control of `cargo xtask e2e`.
    pub no_dedupe: bool,
}
