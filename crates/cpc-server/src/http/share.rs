//! A token's share of a concurrency cap: one token (one leaked secret, one
//! misbehaving device fleet) may hold at most its share of the push or pull
//! slots, so the rest stay free for every other token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::tokens::TokenId;

/// The slots each token holds, of one cap. The map is bounded by the
/// tokens file: a key is a token that authenticated.
#[derive(Debug)]
pub(crate) struct Shares {
    per_token: usize,
    held: Mutex<HashMap<TokenId, Arc<Semaphore>>>,
}

/// A slot of the global cap and of a token's share, held while a request
/// is handled; both are given back when it drops.
#[derive(Debug)]
pub(crate) struct Slot {
    _global: OwnedSemaphorePermit,
    _share: OwnedSemaphorePermit,
}

impl Shares {
    /// At most `per_token` slots per token (at least 1).
    pub(crate) fn new(per_token: usize) -> Shares {
        Shares {
            per_token: per_token.max(1),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A slot of `global` and of `token`'s share; `None` when either is
    /// full.
    pub(crate) fn take(&self, global: &Arc<Semaphore>, token: TokenId) -> Option<Slot> {
        let global = Arc::clone(global).try_acquire_owned().ok()?;
        let share = {
            let mut held = self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                held.entry(token)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_token))),
            )
        };
        let share = share.try_acquire_owned().ok()?;
        Some(Slot {
            _global: global,
            _share: share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_at_most_its_share_and_leaves_the_rest_to_others() {
        let global = Arc::new(Semaphore::new(4));
        let shares = Shares::new(2);
        let (a, b) = (TokenId(0), TokenId(1));
        let a1 = shares.take(&global, a);
        let a2 = shares.take(&global, a);
        assert!(a1.is_some() && a2.is_some());
        // A third of a's is refused, and gives its global slot back.
        assert!(shares.take(&global, a).is_none());
        assert_eq!(global.available_permits(), 2);
        let b1 = shares.take(&global, b);
        let b2 = shares.take(&global, b);
        assert!(b1.is_some() && b2.is_some());
        // The global cap still holds.
        assert!(shares.take(&global, TokenId(2)).is_none());
        drop(a1);
        assert!(shares.take(&global, a).is_some());
    }
}
