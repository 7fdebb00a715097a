//! One shard of the map: its records and the expiry index of exactly those records, under one
//! lock, so a record and its index entry never disagree however a save and a sweep race.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use session_core::{Bytes, KeyBuildHasher, Record, SessionKey, Timestamp};

/// Shards of the map. A fixed power of two, picked by one byte of the (uniform) key.
pub(crate) const SHARDS: usize = 64;

/// The shard `key` lives in.
pub(crate) fn shard_of(key: &SessionKey) -> usize {
    usize::from(key.as_bytes()[31]) % SHARDS
}

/// One stored record.
pub(crate) struct Entry {
    pub(crate) data: Bytes,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    /// Where the record sits in its shard's expiry index: never after `expires_at`. A
    /// deadline that moves later leaves the index alone (no B-tree work on the hot save and
    /// touch paths); the sweep re-files the entry when it comes due.
    pub(crate) indexed_at: Timestamp,
    pub(crate) version: u64,
    pub(crate) owner: Option<Arc<str>>,
}

impl Entry {
    /// A new entry holding `record` as it is, filed in the index at its deadline.
    pub(crate) fn new(record: Record) -> Self {
        Self {
            data: record.data,
            created_at: record.created_at,
            expires_at: record.expires_at,
            indexed_at: record.expires_at,
            version: record.version,
            owner: record.owner.map(Arc::from),
        }
    }

    pub(crate) fn record(&self, key: SessionKey) -> Record {
        Record {
            key,
            data: self.data.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            version: self.version,
            owner: self.owner.as_deref().map(str::to_owned),
        }
    }

    pub(crate) fn live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }

    /// Moves the deadline, touching the index only when it moves earlier than the entry's
    /// place there.
    pub(crate) fn set_deadline(
        &mut self,
        by_expiry: &mut ExpiryIndex,
        key: &SessionKey,
        at: Timestamp,
    ) {
        if at < self.indexed_at {
            by_expiry.remove(&(self.indexed_at, *key));
            by_expiry.insert((at, *key));
            self.indexed_at = at;
        }
        self.expires_at = at;
    }
}

/// A shard's records by deadline (their `indexed_at`), for sweeps in O(expired).
pub(crate) type ExpiryIndex = BTreeSet<(Timestamp, SessionKey)>;

/// One shard: its records and the expiry index of exactly those records, under one lock.
#[derive(Default)]
pub(crate) struct Shard {
    pub(crate) records: HashMap<SessionKey, Entry, KeyBuildHasher>,
    pub(crate) by_expiry: ExpiryIndex,
}

impl Shard {
    /// Expired records, found through the index entries that are due (some of which belong
    /// to records whose deadline has since moved later).
    pub(crate) fn expired_count(&self, now: Timestamp) -> usize {
        self.by_expiry
            .range(..=(now, SessionKey::from_bytes([u8::MAX; 32])))
            .filter(|(_, key)| self.records.get(key).is_some_and(|e| !e.live(now)))
            .count()
    }

    /// Whether an index entry is due at `now` (a sweep has work here).
    pub(crate) fn has_due(&self, now: Timestamp) -> bool {
        self.by_expiry.first().is_some_and(|first| first.0 <= now)
    }

    /// The live record at `key`, if any.
    pub(crate) fn live(&self, key: &SessionKey, now: Timestamp) -> Option<&Entry> {
        self.records.get(key).filter(|e| e.live(now))
    }
}

/// A shard's lock on a cache-line pair of its own. Unpadded, neighbouring shards share a line,
/// and taking one's read lock (an atomic write) evicts the other from the other core's cache:
/// that false sharing cost loads about a sixth of their time.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct ShardLock(RwLock<Shard>);

impl ShardLock {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Shard> {
        self.0.read()
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Shard> {
        self.0.write()
    }
}
