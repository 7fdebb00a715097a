//! The owner index: which keys each owner holds, so "sign out everywhere" touches only that
//! owner's sessions. Sharded by a keyed hash of the owner (owners come from applications and
//! may be chosen by clients, unlike keys), each shard under its own mutex.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use session_core::{KeyBuildHasher, SessionKey};

const OWNER_SHARDS: usize = 16;

type OwnerMap = HashMap<Arc<str>, HashSet<SessionKey, KeyBuildHasher>>;

/// The owner index. Taken after a record shard's lock, never before, so the two cannot
/// deadlock.
pub(crate) struct Owners {
    shards: Box<[Mutex<OwnerMap>]>,
    hasher: RandomState,
}

impl Owners {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..OWNER_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, owner: &str) -> MutexGuard<'_, OwnerMap> {
        let h = self.hasher.hash_one(owner);
        self.shards[(h as usize) % OWNER_SHARDS].lock()
    }

    pub(crate) fn add(&self, owner: &Arc<str>, key: SessionKey) {
        self.shard(owner)
            .entry(Arc::clone(owner))
            .or_default()
            .insert(key);
    }

    pub(crate) fn remove(&self, owner: &str, key: &SessionKey) {
        let mut shard = self.shard(owner);
        if let Some(keys) = shard.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                shard.remove(owner);
            }
        }
    }

    /// The keys filed under `owner` now (some may have expired or moved on since).
    pub(crate) fn keys(&self, owner: &str) -> Vec<SessionKey> {
        self.shard(owner)
            .get(owner)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().clear();
        }
    }
}
