//! The version each session had when this process last loaded it, so the save that follows a
//! load in the same request can go straight to the store's conditional save instead of loading
//! again for the version their unversioned `save` does not carry.
//!
//! A hint is only a guess: a stale one makes the store answer `Conflict`, and the save then
//! falls back to loading the current version, so no content of this map can change what is
//! stored. It is bounded: each shard keeps two generations and drops the older one when the
//! younger fills, so sessions that are loaded and never saved cost nothing for long.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use session_core::{KeyBuildHasher, SessionKey};

const SHARDS: usize = 16;
/// Entries per shard and generation: hints live from a load to the save of the same request,
/// so this only has to cover the requests in flight.
const GENERATION: usize = 1024;

#[derive(Default)]
struct Shard {
    young: HashMap<SessionKey, u64, KeyBuildHasher>,
    old: HashMap<SessionKey, u64, KeyBuildHasher>,
}

/// Version hints by session key.
#[derive(Default)]
pub(crate) struct Hints {
    shards: [Mutex<Shard>; SHARDS],
}

impl Hints {
    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = usize::from(key.as_bytes()[0]) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `key` was loaded at `version`.
    pub(crate) fn put(&self, key: SessionKey, version: u64) {
        let mut shard = self.shard(&key);
        if shard.young.len() >= GENERATION {
            shard.old = std::mem::take(&mut shard.young);
        }
        shard.young.insert(key, version);
    }

    /// Takes the hint for `key`, if any.
    pub(crate) fn take(&self, key: &SessionKey) -> Option<u64> {
        let mut shard = self.shard(key);
        shard.young.remove(key).or_else(|| shard.old.remove(key))
    }

    /// Forgets `key`.
    pub(crate) fn forget(&self, key: &SessionKey) {
        self.take(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> SessionKey {
        SessionKey::derive(&i.to_le_bytes())
    }

    #[test]
    fn a_hint_is_taken_once() {
        let hints = Hints::default();
        hints.put(key(1), 7);
        assert_eq!(hints.take(&key(1)), Some(7));
        assert_eq!(hints.take(&key(1)), None);
        hints.put(key(2), 3);
        hints.forget(&key(2));
        assert_eq!(hints.take(&key(2)), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let hints = Hints::default();
        let n = u32::try_from(SHARDS * GENERATION * 8).unwrap_or(u32::MAX);
        for i in 0..n {
            hints.put(key(i), u64::from(i));
        }
        let held: usize = hints
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                s.young.len() + s.old.len()
            })
            .sum();
        assert!(held <= SHARDS * GENERATION * 2, "{held} hints held");
        assert_eq!(
            hints.take(&key(n - 1)),
            Some(u64::from(n - 1)),
            "recent hints survive"
        );
    }
}
