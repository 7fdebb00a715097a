//! Rebuilding a store from a snapshot or journal, and visiting it for one: the API
//! `session-hybrid` persists the store through. Nothing here tells the observer.

use session_core::{Record, SessionKey, Timestamp};

use crate::change::Change;
use crate::shard::Entry;
use crate::store::MemoryStore;

impl MemoryStore {
    /// Visits every live record, one shard at a time, as a borrowed [`Change::Put`] (no
    /// copy, no allocation), then calls `shard_done` once that shard's lock is released. A
    /// snapshot writer encodes records in `visit` and does its I/O in `shard_done`, so writers
    /// wait only for the encoding of their own shard.
    pub fn for_each_live_shard(
        &self,
        mut visit: impl FnMut(Change<'_>),
        mut shard_done: impl FnMut(),
    ) {
        let now = Timestamp::now();
        for shard in self.shared.shards.iter() {
            {
                let shard = shard.read();
                for (key, e) in shard.records.iter().filter(|(_, e)| e.live(now)) {
                    visit(Change::Put {
                        key,
                        data: &e.data,
                        created_at: e.created_at,
                        expires_at: e.expires_at,
                        version: e.version,
                        owner: e.owner.as_deref(),
                    });
                }
            }
            shard_done();
        }
    }

    /// Inserts or replaces `record` as it is, without checks and without telling the
    /// observer: for rebuilding a store from a snapshot or journal (as do the other
    /// `restore_*` methods). A replaced record is updated in place.
    pub fn restore(&self, record: Record) {
        let shared = &self.shared;
        let mut shard = shared.write_shard(&record.key);
        let shard = &mut *shard;
        if let Some(entry) = shard.records.get_mut(&record.key) {
            entry.expires_at = record.expires_at;
            shared.set_owner(&record.key, entry, record.owner.as_deref());
            entry.data = record.data;
            entry.created_at = record.created_at;
            entry.version = record.version;
            shard.expires(record.expires_at);
            return;
        }
        shared.added();
        let key = record.key;
        let entry = Entry::new(record);
        shared.index(&key, &entry);
        shard.insert(key, entry);
    }

    /// Removes `key` without telling the observer; returns whether it was there.
    pub fn restore_remove(&self, key: &SessionKey) -> bool {
        let shared = &self.shared;
        let mut shard = shared.write_shard(key);
        let shard = &mut *shard;
        match shard.records.remove(key) {
            Some(entry) => {
                shared.removed();
                shared.unindex(key, &entry);
                true
            }
            None => false,
        }
    }

    /// Gives `key` a new deadline if it holds exactly the record of `version` created at
    /// `created_at`, without telling the observer: a journaled touch replayed only onto the
    /// record it was made on.
    pub fn restore_touch(
        &self,
        key: &SessionKey,
        expires_at: Timestamp,
        version: u64,
        created_at: Timestamp,
    ) {
        let mut shard = self.shared.write_shard(key);
        let shard = &mut *shard;
        if let Some(entry) = shard.records.get_mut(key)
            && entry.version == version
            && entry.created_at == created_at
        {
            entry.expires_at = expires_at;
            shard.expires(expires_at);
        }
    }

    /// Removes every record without telling the observer (a rebuild that must start over).
    pub fn restore_clear(&self) {
        for shard in self.shared.shards.iter() {
            shard.write().clear();
        }
        self.shared.owners.clear();
        if let Some(limit) = &self.shared.limit {
            limit.reset();
        }
    }

    /// Removes every record expired at `now` without telling the observer, returning how
    /// many: the end of a rebuild, which restores records as they were, expired or not.
    pub fn restore_sweep(&self, now: Timestamp) -> u64 {
        self.shared.sweep_with(now, false)
    }
}
