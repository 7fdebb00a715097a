//! The store: handles on the shared map, and the [`SessionStore`] impl.
//!
//! Why not `dashmap`, `scc` or `papaya`: `rotate` must move a record between two keys with
//! no reader ever seeing both or neither, and each shard's bound on its deadlines must change
//! under the same lock as the records it bounds, or a racing save and sweep can leave a record
//! that is never swept. Both need two shards locked at once and state beside each shard's
//! table, which those crates only expose through unsafe raw-table APIs. A fixed array of
//! `RwLock`ed shards ([`shard`](crate::shard)) is the same design they use, with those two
//! needs met in safe code.

use std::collections::hash_map::Entry as Slot;
use std::fmt;
use std::sync::Arc;

use session_core::{
    Bytes, CleanupHandle, Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait,
    check_data_len,
};

use crate::builder::MemoryStoreBuilder;
use crate::change::Change;
use crate::shard::Entry;
use crate::shared::Shared;

/// An in-memory [`SessionStore`]. Cloning gives another handle to the same sessions.
///
/// The background sweep stops when [`stop_cleanup`](Self::stop_cleanup) is called or the last
/// handle is dropped.
#[derive(Clone)]
pub struct MemoryStore {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cleanup: CleanupHandle,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_data_len", &self.shared.max_data_len)
            .field("limit", &self.shared.limit)
            .field("observer", &self.shared.observer)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub(crate) fn from_shared(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
            cleanup: CleanupHandle::default(),
        }
    }

    /// A store with default settings. Inside a Tokio runtime it sweeps every 60 s. Outside one
    /// it cannot, and says so with a warning in the log: expired sessions are then never
    /// returned but stay in memory until [`sweep`](Self::sweep) is called. Prefer the builder,
    /// whose `build` refuses a cleanup interval it cannot honour with [`Error::Config`].
    pub fn new() -> Self {
        let builder = MemoryStoreBuilder::default();
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!(
                "MemoryStore::new() outside a Tokio runtime: no background cleanup will run; expired sessions stay in memory until sweep() is called (build the store inside a runtime, or use MemoryStore::builder() to choose)"
            );
            return builder.build_without_cleanup();
        }
        match builder.clone().build() {
            Ok(store) => store,
            // Only a missing runtime fails `build`, and there is one; if that ever changes,
            // the store still works, without its sweep.
            Err(error) => {
                tracing::warn!(%error, "MemoryStore::new(): no background cleanup will run");
                builder.build_without_cleanup()
            }
        }
    }

    /// Starts configuring a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// Stops the background cleanup task and waits for it to end. Idempotent.
    pub async fn stop_cleanup(&self) {
        self.cleanup.stop().await;
    }

    /// Removes every record expired at `now`, returning how many. Reads the records of the
    /// shards that may hold an expired one, and passes the others at the cost of a read lock.
    pub fn sweep(&self, now: Timestamp) -> u64 {
        self.shared.sweep(now)
    }

    /// Records held, live or expired but not yet swept.
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.read().records.len())
            .sum()
    }

    /// Whether the store holds no record at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies `data` into its own exact allocation, so a record never pins a caller's larger
/// buffer (a slice of a network read) in memory for its whole life.
fn own(data: &Bytes) -> Bytes {
    Bytes::copy_from_slice(data)
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &Record) -> Result<()> {
        check_data_len(self.shared.max_data_len, record.data.len())?;
        let shared = &*self.shared;
        // The slot is taken before the shard is locked: a full store sweeps, which locks
        // every shard.
        let reserved = shared.reserve()?;
        // Built before the lock, which is then held only for the table's probe and insert.
        let entry = Entry {
            data: own(&record.data),
            created_at: record.created_at,
            expires_at: record.expires_at,
            version: record.version,
            owner: record.owner.as_deref().map(Arc::from),
        };
        let key = &record.key;
        let mut shard = shared.write_shard(key);
        let shard = &mut *shard;
        match shard.records.entry(*key) {
            Slot::Occupied(slot) if slot.get().live_now() => {
                if reserved {
                    shared.removed();
                }
                return Err(Error::AlreadyExists);
            }
            Slot::Occupied(mut slot) => {
                // An expired record not yet swept goes, as a delete would take it.
                let stale = slot.insert(entry);
                shared.removed();
                shared.unindex(key, &stale);
                shared.observe(|| Change::Delete { key });
                shared.index(key, slot.get());
                shared.observe_put(key, slot.get());
            }
            Slot::Vacant(slot) => {
                let entry = slot.insert(entry);
                shared.index(key, entry);
                shared.observe_put(key, entry);
            }
        }
        shard.expires(record.expires_at);
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let shard = self.shared.read_shard(key);
        Ok(shard
            .records
            .get(key)
            .filter(|e| e.live_now())
            .map(|e| e.record(*key)))
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        check_data_len(self.shared.max_data_len, record.data.len())?;
        let shared = &*self.shared;
        let mut shard = shared.write_shard(&record.key);
        let shard = &mut *shard;
        let Some(entry) = shard.records.get_mut(&record.key) else {
            return Err(Error::NotFound);
        };
        if !entry.live_now() {
            return Err(Error::NotFound);
        }
        if entry.version != record.version {
            return Err(Error::Conflict);
        }
        entry.expires_at = record.expires_at;
        shared.set_owner(&record.key, entry, record.owner.as_deref());
        entry.data = own(&record.data);
        entry.version = record.version + 1;
        shared.observe_put(&record.key, entry);
        let version = entry.version;
        shard.expires(record.expires_at);
        Ok(version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.shared.delete(key, Timestamp::now()))
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        let now = Timestamp::now();
        Ok(keys.iter().filter(|k| self.shared.delete(k, now)).count() as u64)
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let shard = self.shared.read_shard(key);
        Ok(shard.records.get(key).is_some_and(Entry::live_now))
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        self.shared.rotate(old, new, Timestamp::now())
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let shared = &*self.shared;
        let mut shard = shared.write_shard(key);
        let shard = &mut *shard;
        let Some(entry) = shard.records.get_mut(key).filter(|e| e.live_now()) else {
            return Err(Error::NotFound);
        };
        entry.expires_at = expires_at;
        let (version, created_at) = (entry.version, entry.created_at);
        shard.expires(expires_at);
        shared.observe(|| Change::Touch {
            key,
            expires_at,
            version,
            created_at,
        });
        Ok(())
    }

    async fn count(&self) -> Result<u64> {
        let now = Timestamp::now();
        let live: usize = self
            .shared
            .shards
            .iter()
            .map(|s| {
                let s = s.read();
                s.records.len() - s.expired_count(now)
            })
            .sum();
        Ok(live as u64)
    }

    async fn count_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let expired: usize = self
            .shared
            .shards
            .iter()
            .map(|s| s.read().expired_count(now))
            .sum();
        Ok(expired as u64)
    }

    async fn delete_expired(&self) -> Result<u64> {
        Ok(self.shared.sweep(Timestamp::now()))
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        let now = Timestamp::now();
        let mut keys = Vec::new();
        for shard in self.shared.shards.iter() {
            let shard = shard.read();
            keys.extend(
                shard
                    .records
                    .iter()
                    .filter(|(_, e)| e.live(now))
                    .map(|(k, _)| *k),
            );
        }
        Ok(keys)
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let now = Timestamp::now();
        Ok(self
            .shared
            .owners
            .keys(owner)
            .iter()
            .filter_map(|key| {
                let shard = self.shared.read_shard(key);
                shard
                    .records
                    .get(key)
                    .filter(|e| e.live(now) && e.owner.as_deref() == Some(owner))
                    .map(|e| e.record(*key))
            })
            .collect())
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let now = Timestamp::now();
        let mut removed = 0;
        for key in self.shared.owners.keys(owner) {
            let mut shard = self.shared.write_shard(&key);
            let owned = shard
                .records
                .get(&key)
                .is_some_and(|e| e.owner.as_deref() == Some(owner));
            if owned
                && self
                    .shared
                    .remove_locked(&mut shard, &key)
                    .is_some_and(|e| e.live(now))
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn max_data_len(&self) -> Option<usize> {
        self.shared.max_data_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ChangeObserver;
    use crate::limit::Limit;
    use crate::shard::shard_of;
    use std::time::Duration;

    use session_core::SessionId;

    fn store() -> MemoryStore {
        MemoryStore::builder()
            .cleanup_interval(Duration::ZERO)
            .build()
            .expect("store")
    }

    fn record(expires_at: Timestamp) -> Record {
        Record::new(SessionId::generate().key(), &b"x"[..], expires_at)
    }

    /// The limit's count of held records stays equal to the records in the shards through
    /// every kind of change, so a freed slot is never lost or counted twice.
    #[tokio::test]
    async fn the_session_count_follows_every_change() {
        let s = MemoryStore::builder()
            .cleanup_interval(Duration::ZERO)
            .max_sessions(Some(1_000))
            .build()
            .expect("store");
        let held = |s: &MemoryStore| s.shared.limit.as_ref().map(Limit::held);
        let records = |s: &MemoryStore| {
            let n: usize = s
                .shared
                .shards
                .iter()
                .map(|sh| sh.read().records.len())
                .sum();
            Some(n as u64)
        };
        let now = Timestamp::now();
        let mut keys = Vec::new();
        for i in 0..60u32 {
            let expires = if i % 5 == 0 {
                now + Duration::from_millis(20)
            } else {
                now + Duration::from_secs(60)
            };
            let r = record(expires).with_owner(format!("o{}", i % 3));
            s.create(&r).await.expect("create");
            assert!(s.create(&r).await.is_err());
            keys.push(r.key);
        }
        assert_eq!(held(&s), records(&s));
        for (i, key) in keys.iter().enumerate() {
            match i % 4 {
                0 => {
                    s.delete(key).await.expect("delete");
                }
                1 => {
                    let _ = s.rotate(key, &SessionId::generate().key()).await;
                }
                2 => s.restore(record(now + Duration::from_secs(5))),
                _ => {
                    let _ = s.touch(key, now + Duration::from_secs(90)).await;
                }
            }
            assert_eq!(held(&s), records(&s), "after change {i}");
        }
        s.delete_by_owner("o1").await.expect("delete_by_owner");
        assert_eq!(held(&s), records(&s));
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Session 10 has expired unswept: a create over it replaces it, counted once.
        let mut over = record(Timestamp::now() + Duration::from_secs(60));
        over.key = keys[10];
        s.create(&over)
            .await
            .expect("create over an expired record");
        assert_eq!(held(&s), records(&s));
        s.sweep(Timestamp::now());
        assert_eq!(held(&s), records(&s));
    }

    /// Counts what the observer is told.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicU64);

    impl ChangeObserver for Counting {
        fn observe(&self, _: Change<'_>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The `restore_*` methods rebuild a store without telling the observer, and a record
    /// restored twice is updated in place with its owner index and deadline bound kept right.
    #[tokio::test]
    async fn restoring_updates_in_place_and_tells_no_one() {
        let seen = Arc::new(Counting::default());
        let s = MemoryStore::builder()
            .cleanup_interval(Duration::ZERO)
            .max_sessions(Some(10))
            .observer(Arc::clone(&seen) as _)
            .build()
            .expect("store");
        let now = Timestamp::now();
        let mut r = record(now + Duration::from_secs(100)).with_owner("ann");
        s.restore(r.clone());
        r.owner = Some("bob".into());
        r.expires_at = now + Duration::from_secs(10);
        r.version = 4;
        s.restore(r.clone());
        assert_eq!(s.len(), 1);
        assert_eq!(s.load(&r.key).await.expect("load"), Some(r.clone()));
        assert!(s.list_by_owner("ann").await.expect("list").is_empty());
        assert_eq!(s.list_by_owner("bob").await.expect("list"), vec![r.clone()]);
        // A touch made on another version is not applied; one on this version is.
        s.restore_touch(&r.key, now + Duration::from_secs(500), 3, r.created_at);
        assert_eq!(
            s.load(&r.key).await.expect("load").map(|x| x.expires_at),
            Some(r.expires_at)
        );
        s.restore_touch(&r.key, now + Duration::from_secs(5), 4, r.created_at);
        assert_eq!(
            s.restore_sweep(now + Duration::from_secs(6)),
            1,
            "the earlier deadline is indexed"
        );
        let other = record(now + Duration::from_secs(100));
        s.restore(other.clone());
        assert!(s.restore_remove(&other.key));
        assert!(!s.restore_remove(&other.key));
        s.restore(other);
        s.restore_clear();
        assert!(s.is_empty());
        assert_eq!(s.shared.limit.as_ref().map(Limit::held), Some(0));
        assert_eq!(
            seen.0.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "the observer heard of a rebuild"
        );
    }

    #[tokio::test]
    async fn a_later_deadline_keeps_the_record_through_a_sweep() {
        let s = store();
        let t0 = Timestamp::now() + Duration::from_secs(10);
        let mut r = record(t0);
        s.create(&r).await.expect("create");
        r.expires_at = t0 + Duration::from_secs(100);
        r.version = s.save(&r).await.expect("save");
        // Sweeping when the old deadline has passed keeps the record.
        assert_eq!(s.sweep(t0 + Duration::from_secs(1)), 0);
        assert_eq!(s.len(), 1);
        // Past the new deadline it goes.
        assert_eq!(s.sweep(r.expires_at), 1);
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn an_earlier_deadline_is_swept_on_time() {
        let s = store();
        let far = Timestamp::now() + Duration::from_secs(1000);
        let r = record(far);
        s.create(&r).await.expect("create");
        // The sweep finds nothing due and leaves the bound at the far deadline.
        assert_eq!(s.sweep(Timestamp::now()), 0);
        let near = Timestamp::now() + Duration::from_secs(5);
        s.touch(&r.key, near).await.expect("touch");
        assert_eq!(
            s.sweep(near),
            1,
            "a deadline moved earlier must be swept on time"
        );
        let mut saved = record(far);
        s.create(&saved).await.expect("create");
        assert_eq!(s.sweep(Timestamp::now()), 0);
        saved.expires_at = near;
        s.save(&saved).await.expect("save");
        let due: usize = s
            .shared
            .shards
            .iter()
            .map(|sh| sh.read().expired_count(near))
            .sum();
        assert_eq!(due, 1);
        assert_eq!(s.sweep(near), 1, "a save's earlier deadline too");
    }

    /// A rotated record keeps its deadline in the shard it moves to, whatever that shard's
    /// own records are, and a shard a sweep emptied takes new records' deadlines again.
    #[tokio::test]
    async fn the_bound_follows_rotations_and_emptied_shards() {
        let s = store();
        let now = Timestamp::now();
        let near = now + Duration::from_secs(5);
        for round in 0..50 {
            let r = record(near);
            s.create(&r).await.expect("create");
            // A target key in another shard, holding only far records so far.
            let new = loop {
                let k = SessionId::generate().key();
                if shard_of(&k) != shard_of(&r.key) {
                    break k;
                }
            };
            s.create(&Record::new(new, &b"y"[..], now + Duration::from_secs(900)))
                .await
                .expect("create");
            s.delete(&new).await.expect("delete");
            s.sweep(now);
            s.rotate(&r.key, &new).await.expect("rotate");
            assert_eq!(s.sweep(near), 1, "round {round}");
            assert!(s.is_empty());
        }
    }
}
