//! Cheap, deterministic, uniformly spread keys for session number `i`.
//!
//! Real keys are SHA-256 outputs; hashing on every operation would measure SHA-256, not the
//! store, so keys come from the splitmix64 finalizer, a bijection on `u64`: distinct numbers
//! give distinct keys, and every byte is uniform as a hash output's would be.

use session_core::SessionKey;

/// The splitmix64 finalizer.
pub(crate) const fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Our stores' key for session `i`.
pub(crate) fn session_key(i: u64) -> SessionKey {
    let mut bytes = [0u8; 32];
    for (lane, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(i.wrapping_mul(4).wrapping_add(lane as u64)).to_le_bytes());
    }
    SessionKey::from_bytes(bytes)
}

/// tower-sessions' id (an `i128`) for session `i`.
pub(crate) fn peer_id(i: u64) -> i128 {
    let hi = u128::from(mix(i.wrapping_mul(2)));
    let lo = u128::from(mix(i.wrapping_mul(2).wrapping_add(1)));
    ((hi << 64) | lo) as i128
}

/// A small, fast generator for picking keys, one per task.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(mix(seed))
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        ((u128::from(mix(self.0)) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn keys_are_distinct_and_spread() {
        let keys: HashSet<_> = (0..100_000).map(session_key).collect();
        assert_eq!(keys.len(), 100_000);
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
