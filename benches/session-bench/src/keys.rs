//! Cheap, deterministic, uniformly spread keys for session number `i`.
//!
//! Real keys are SHA-256 outputs; hashing on every operation would measure SHA-256, not the
//! store, so keys come from `fastrand`'s generator seeded with `i` (wyrand, four steps per
//! key): the same `i` always gives the same key, every byte is uniform as a hash output's
//! would be, and the test below checks that the numbers a run uses give distinct keys.

use session_core::SessionKey;

/// Keeps the peers' ids apart from our keys' seeds (any odd constant does).
const PEER: u64 = 0x9e37_79b9_7f4a_7c15;

/// Our stores' key for session `i`.
pub(crate) fn session_key(i: u64) -> SessionKey {
    let mut bytes = [0u8; 32];
    fastrand::Rng::with_seed(i).fill(&mut bytes);
    SessionKey::from_bytes(bytes)
}

/// tower-sessions' id (an `i128`) for session `i`.
pub(crate) fn peer_id(i: u64) -> i128 {
    fastrand::Rng::with_seed(i ^ PEER).i128(..)
}

/// A small, fast generator for picking keys, one per task.
#[derive(Debug, Clone)]
pub(crate) struct Rng(fastrand::Rng);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn keys_are_distinct_and_spread() {
        let keys: HashSet<_> = (0..1_000_000).map(session_key).collect();
        assert_eq!(keys.len(), 1_000_000);
        let ids: HashSet<_> = (0..100_000).map(peer_id).collect();
        assert_eq!(ids.len(), 100_000);
        // MemoryStore shards by the last key byte: every one of 64 shards gets a fair share.
        let mut shards = [0u32; 64];
        for i in 0..64_000 {
            shards[usize::from(session_key(i).as_bytes()[31]) % 64] += 1;
        }
        assert!(
            shards.iter().all(|&n| (800..1200).contains(&n)),
            "{shards:?}"
        );
    }

    #[test]
    fn rng_stays_in_range() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
