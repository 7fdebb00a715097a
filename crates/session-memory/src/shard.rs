//! One shard of the map: its records and a lower bound on their deadlines, under one lock, so
//! a sweep that finds the bound in the future can pass the shard without reading a record.

use std::collections::HashMap;
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
    pub(crate) version: u64,
    pub(crate) owner: Option<Arc<str>>,
}

impl Entry {
    /// A new entry holding `record` as it is.
    pub(crate) fn new(record: Record) -> Self {
        Self {
            data: record.data,
            created_at: record.created_at,
            expires_at: record.expires_at,
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

    /// Whether the entry is live now, as `live(Timestamp::now())` says, mostly without the
    /// precise clock: for the hot calls that need no `now` besides ([`crate::clock`]).
    pub(crate) fn live_now(&self) -> bool {
        !crate::clock::has_passed(self.expires_at)
    }
}

/// The bound of a shard that holds no record.
const NEVER: Timestamp = Timestamp::from_unix_millis(i64::MAX);

/// One shard: its records and a lower bound on their deadlines, under one lock.
///
/// Why no expiry index (the first design kept a `BTreeSet<(Timestamp, SessionKey)>` per
/// shard): its insert was a tenth of a create's CPU, its entries about 90 bytes of every
/// session's memory, and all it bought was a sweep in O(expired) instead of O(records of the
/// shards with something due). A scan of 1M records is a few tens of milliseconds once a
/// cleanup interval, and the bound keeps a shard with nothing due from being read at all.
pub(crate) struct Shard {
    pub(crate) records: HashMap<SessionKey, Entry, KeyBuildHasher>,
    /// No record here expires before this: lowered by every insert and every deadline that
    /// moves earlier, raised only by a sweep, which sees every deadline.
    earliest: Timestamp,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            records: HashMap::default(),
            earliest: NEVER,
        }
    }
}

impl Shard {
    /// Expired records held (0 without reading one when nothing is due).
    pub(crate) fn expired_count(&self, now: Timestamp) -> usize {
        if !self.has_due(now) {
            return 0;
        }
        self.records.values().filter(|e| !e.live(now)).count()
    }

    /// Whether a record may have expired at `now` (a sweep may have work here).
    pub(crate) fn has_due(&self, now: Timestamp) -> bool {
        self.earliest <= now
    }

    /// Notes that a record here now expires at `at`: on every insert and deadline change.
    pub(crate) fn expires(&mut self, at: Timestamp) {
        self.earliest = self.earliest.min(at);
    }

    /// Inserts `entry` at `key`, keeping the bound.
    pub(crate) fn insert(&mut self, key: SessionKey, entry: Entry) {
        self.expires(entry.expires_at);
        self.records.insert(key, entry);
    }

    /// Removes every record expired at `now`, passing each to `removed`, and sets the bound
    /// to the earliest deadline left.
    pub(crate) fn sweep(&mut self, now: Timestamp, mut removed: impl FnMut(SessionKey, Entry)) {
        // Another sweep may have done it between the caller's look and its write lock.
        if !self.has_due(now) {
            return;
        }
        let mut earliest = NEVER;
        for (key, entry) in self.records.extract_if(|_, e| {
            if e.live(now) {
                earliest = earliest.min(e.expires_at);
                false
            } else {
                true
            }
        }) {
            removed(key, entry);
        }
        self.earliest = earliest;
    }

    /// Removes every record, resetting the bound.
    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.earliest = NEVER;
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
