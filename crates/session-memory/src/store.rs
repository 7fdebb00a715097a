//! The sharded in-memory store.
//!
//! Why not `dashmap`, `scc` or `papaya`: `rotate` must move a record between two keys with
//! no reader ever seeing both or neither, and the expiry index must change under the same lock
//! as the record it indexes, or a racing save and sweep can leave a record that is never swept.
//! Both need two shards locked at once and a second structure inside each shard, which those
//! crates only expose through unsafe raw-table APIs. A fixed array of `RwLock`ed shards is the
//! same design they use, with those two needs met in safe code.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use session_core::{
    Bytes, CleanupTask, Error, KeyBuildHasher, Record, Result, SessionKey, SessionStore, Timestamp,
    async_trait, check_data_len,
};

use crate::limit::Limit;

/// Default largest session payload: 1 MiB.
pub const DEFAULT_MAX_DATA_LEN: usize = 1 << 20;

const SHARDS: usize = 64;
const OWNER_SHARDS: usize = 16;
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

type KeyMap<V> = HashMap<SessionKey, V, KeyBuildHasher>;
type KeySet = HashSet<SessionKey, KeyBuildHasher>;
type OwnerMap = HashMap<Arc<str>, KeySet>;

struct Entry {
    data: Bytes,
    created_at: Timestamp,
    expires_at: Timestamp,
    /// Where the record sits in its shard's expiry index: never after `expires_at`. A
    /// deadline that moves later leaves the index alone (no B-tree work on the hot save and
    /// touch paths); the sweep re-files the entry when it comes due.
    indexed_at: Timestamp,
    version: u64,
    owner: Option<Arc<str>>,
}

impl Entry {
    fn record(&self, key: SessionKey) -> Record {
        Record {
            key,
            data: self.data.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            version: self.version,
            owner: self.owner.as_deref().map(str::to_owned),
        }
    }

    fn live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }

    /// Moves the deadline, touching the index only when it moves earlier than the entry's
    /// place there.
    fn set_deadline(
        &mut self,
        by_expiry: &mut BTreeSet<(Timestamp, SessionKey)>,
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

/// One shard: its records and the expiry index of exactly those records, under one lock.
#[derive(Default)]
struct Shard {
    records: KeyMap<Entry>,
    by_expiry: BTreeSet<(Timestamp, SessionKey)>,
}

impl Shard {
    /// Expired records, found through the index entries that are due (some of which belong
    /// to records whose deadline has since moved later).
    fn expired_count(&self, now: Timestamp) -> usize {
        self.by_expiry
            .range(..=(now, SessionKey::from_bytes([u8::MAX; 32])))
            .filter(|(_, key)| self.records.get(key).is_some_and(|e| !e.live(now)))
            .count()
    }
}

/// A change to the store, reported to a [`ChangeObserver`] while the record's shard is still
/// locked, so the observed order of changes to one key is the order they were applied in.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Change<'a> {
    /// A record was created or saved; this is its whole new state.
    Put {
        /// The record's key.
        key: &'a SessionKey,
        /// Its data.
        data: &'a Bytes,
        /// When it was created.
        created_at: Timestamp,
        /// Its new deadline.
        expires_at: Timestamp,
        /// Its new version.
        version: u64,
        /// Its owner.
        owner: Option<&'a str>,
    },
    /// A record got a new deadline and nothing else.
    Touch {
        /// The record's key.
        key: &'a SessionKey,
        /// The new deadline.
        expires_at: Timestamp,
        /// The touched record's version, unchanged by the touch.
        version: u64,
        /// The touched record's creation time, unchanged by the touch. With `version` it lets a
        /// journal replay apply the touch only to the record it was made on.
        created_at: Timestamp,
    },
    /// A record was removed (deleted, swept, or replaced after expiring).
    Delete {
        /// The removed key.
        key: &'a SessionKey,
    },
    /// A record moved from one key to another, unchanged. The moved record's whole state comes
    /// along, so a journal can replay the move without relying on what it holds for `old`.
    Move {
        /// Where it was.
        old: &'a SessionKey,
        /// Where it is now.
        new: &'a SessionKey,
        /// Its data.
        data: &'a Bytes,
        /// When it was created.
        created_at: Timestamp,
        /// Its deadline.
        expires_at: Timestamp,
        /// Its version.
        version: u64,
        /// Its owner.
        owner: Option<&'a str>,
    },
}

/// Sees every change to a [`MemoryStore`] in the order it was applied per key; the hook a
/// persistence layer (`session-hybrid`) uses to journal the store.
///
/// Called with a shard lock held: keep it short and never call back into the store.
pub trait ChangeObserver: fmt::Debug + Send + Sync + 'static {
    /// Reports one applied change.
    fn observe(&self, change: Change<'_>);
}

struct Shared {
    shards: Box<[ShardLock]>,
    owners: Box<[Mutex<OwnerMap>]>,
    owner_hasher: RandomState,
    max_data_len: Option<usize>,
    /// Counted only when a limit is set, so an unbounded store pays nothing for it.
    limit: Option<Limit>,
    /// The backend named in errors.
    name: &'static str,
    observer: Option<Arc<dyn ChangeObserver>>,
}

impl Shared {
    fn new(
        max_data_len: Option<usize>,
        max_sessions: Option<u64>,
        name: &'static str,
        observer: Option<Arc<dyn ChangeObserver>>,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| ShardLock::default()).collect(),
            owners: (0..OWNER_SHARDS).map(|_| Mutex::default()).collect(),
            owner_hasher: RandomState::new(),
            max_data_len,
            limit: max_sessions.map(Limit::new),
            name,
            observer,
        }
    }
}

/// An in-memory [`SessionStore`]. Cloning gives another handle to the same sessions.
///
/// The background sweep stops when [`stop_cleanup`](Self::stop_cleanup) is called or the last
/// handle is dropped.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    cleanup: Arc<Mutex<Option<CleanupTask>>>,
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

/// Configures a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    cleanup_interval: Duration,
    max_data_len: Option<usize>,
    max_sessions: Option<u64>,
    name: &'static str,
    observer: Option<Arc<dyn ChangeObserver>>,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        Self {
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            max_sessions: None,
            name: "memory",
            observer: None,
        }
    }
}

impl MemoryStoreBuilder {
    /// How often the background task sweeps expired sessions (default 60 s). Zero disables
    /// the task; expired sessions are still never returned, only kept until a sweep.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// The largest payload accepted, in bytes (default [`DEFAULT_MAX_DATA_LEN`]); `None` for
    /// no limit.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// The most sessions the store holds (default `None`: no limit). Past it, `create` fails
    /// with [`Error::Unavailable`] whose source is a [`StoreFull`](crate::StoreFull); every
    /// other call goes on working, and the sessions already stored are untouched. Sessions
    /// that have expired but were not swept yet do not count: a `create` that finds the store
    /// full sweeps first. Each session costs its data plus a fixed overhead in memory (see
    /// the README to size the limit).
    pub fn max_sessions(mut self, limit: Option<u64>) -> Self {
        self.max_sessions = limit;
        self
    }

    /// The backend named in this store's errors (default `"memory"`); a store built on this
    /// one (such as `session-hybrid`) gives its own.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Reports every change to `observer` (see [`ChangeObserver`]).
    pub fn observer(mut self, observer: Arc<dyn ChangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds the store and starts its cleanup task.
    ///
    /// # Errors
    /// [`Error::Config`] when the cleanup interval is not zero and there is no Tokio runtime.
    pub fn build(self) -> Result<MemoryStore> {
        let interval = self.cleanup_interval;
        let store = self.build_without_cleanup();
        let cleanup = CleanupTask::spawn(
            "memory",
            interval,
            Arc::downgrade(&store.shared),
            |shared: Arc<Shared>| async move { Ok(shared.sweep(Timestamp::now())) },
        )?;
        *lock(&store.cleanup) = cleanup;
        Ok(store)
    }

    /// The store without its background sweep, which cannot fail.
    fn build_without_cleanup(self) -> MemoryStore {
        let shared = Arc::new(Shared::new(
            self.max_data_len,
            self.max_sessions,
            self.name,
            self.observer,
        ));
        MemoryStore {
            shared,
            cleanup: Arc::new(Mutex::new(None)),
        }
    }
}

impl MemoryStore {
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
        let task = lock(&self.cleanup).take();
        if let Some(task) = task {
            task.stop().await;
        }
    }

    /// Removes every record expired at `now`, returning how many. Costs O(expired records).
    pub fn sweep(&self, now: Timestamp) -> u64 {
        self.shared.sweep(now)
    }

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
                let shard = read(shard);
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
    /// `restore_*` methods). A replaced record is updated in place, so replaying a long
    /// history of saves costs no index work when deadlines only move later.
    pub fn restore(&self, record: Record) {
        let shared = &self.shared;
        let mut shard = shared.write_shard(&record.key);
        let shard = &mut *shard;
        if let Some(entry) = shard.records.get_mut(&record.key) {
            entry.set_deadline(&mut shard.by_expiry, &record.key, record.expires_at);
            if entry.owner.as_deref() != record.owner.as_deref() {
                if let Some(old) = &entry.owner {
                    shared.owner_remove(old, &record.key);
                }
                entry.owner = record.owner.map(Arc::from);
                if let Some(new) = &entry.owner {
                    shared.owner_add(new, record.key);
                }
            }
            entry.data = record.data;
            entry.created_at = record.created_at;
            entry.version = record.version;
            return;
        }
        shared.added();
        let entry = Entry {
            data: record.data,
            created_at: record.created_at,
            expires_at: record.expires_at,
            indexed_at: record.expires_at,
            version: record.version,
            owner: record.owner.map(Arc::from),
        };
        shared.index(shard, &record.key, &entry);
        shard.records.insert(record.key, entry);
    }

    /// Removes `key` without telling the observer; returns whether it was there.
    pub fn restore_remove(&self, key: &SessionKey) -> bool {
        let shared = &self.shared;
        let mut shard = shared.write_shard(key);
        let shard = &mut *shard;
        match shard.records.remove(key) {
            Some(entry) => {
                shared.removed();
                shared.unindex(shard, key, &entry);
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
            entry.set_deadline(&mut shard.by_expiry, key, expires_at);
        }
    }

    /// Removes every record without telling the observer (a rebuild that must start over).
    pub fn restore_clear(&self) {
        for shard in self.shared.shards.iter() {
            let mut shard = write(shard);
            shard.records.clear();
            shard.by_expiry.clear();
        }
        for owners in self.shared.owners.iter() {
            lock(owners).clear();
        }
        if let Some(limit) = &self.shared.limit {
            limit.reset();
        }
    }

    /// Removes every record expired at `now` without telling the observer, returning how
    /// many: the end of a rebuild, which restores records as they were, expired or not.
    pub fn restore_sweep(&self, now: Timestamp) -> u64 {
        self.shared.sweep_with(now, false)
    }

    /// Records held, live or expired but not yet swept.
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| read(s).records.len())
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A shard's lock on a cache-line pair of its own. Unpadded, neighbouring shards share a line,
/// and taking one's read lock (an atomic write) evicts the other from the other core's cache:
/// that false sharing cost loads about a sixth of their time.
#[derive(Default)]
#[repr(align(128))]
struct ShardLock(RwLock<Shard>);

fn read(l: &ShardLock) -> RwLockReadGuard<'_, Shard> {
    let l = &l.0;
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(l: &ShardLock) -> RwLockWriteGuard<'_, Shard> {
    let l = &l.0;
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn shard_of(key: &SessionKey) -> usize {
    usize::from(key.as_bytes()[31]) % SHARDS
}

/// Copies `data` into its own exact allocation, so a record never pins a caller's larger
/// buffer (a slice of a network read) in memory for its whole life.
fn own(data: &Bytes) -> Bytes {
    Bytes::copy_from_slice(data)
}

impl Shared {
    fn read_shard(&self, key: &SessionKey) -> RwLockReadGuard<'_, Shard> {
        read(&self.shards[shard_of(key)])
    }

    fn write_shard(&self, key: &SessionKey) -> RwLockWriteGuard<'_, Shard> {
        write(&self.shards[shard_of(key)])
    }

    fn owner_shard(&self, owner: &str) -> MutexGuard<'_, OwnerMap> {
        let h = self.owner_hasher.hash_one(owner);
        lock(&self.owners[(h as usize) % OWNER_SHARDS])
    }

    fn owner_add(&self, owner: &Arc<str>, key: SessionKey) {
        self.owner_shard(owner)
            .entry(Arc::clone(owner))
            .or_default()
            .insert(key);
    }

    fn owner_remove(&self, owner: &str, key: &SessionKey) {
        let mut shard = self.owner_shard(owner);
        if let Some(keys) = shard.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                shard.remove(owner);
            }
        }
    }

    /// Adds `entry` to the indexes. Called with the key's shard write-locked.
    fn index(&self, shard: &mut Shard, key: &SessionKey, entry: &Entry) {
        shard.by_expiry.insert((entry.indexed_at, *key));
        if let Some(owner) = &entry.owner {
            self.owner_add(owner, *key);
        }
    }

    /// Removes `entry` from the indexes. Called with the key's shard write-locked.
    fn unindex(&self, shard: &mut Shard, key: &SessionKey, entry: &Entry) {
        shard.by_expiry.remove(&(entry.indexed_at, *key));
        if let Some(owner) = &entry.owner {
            self.owner_remove(owner, key);
        }
    }

    /// Counts a record added without a reservation.
    fn added(&self) {
        if let Some(limit) = &self.limit {
            limit.added();
        }
    }

    /// Counts a record removed from a shard.
    fn removed(&self) {
        if let Some(limit) = &self.limit {
            limit.removed();
        }
    }

    /// Takes a slot for a new record under the limit, sweeping expired records first when
    /// there is none; `Ok(false)` when there is no limit.
    fn reserve(&self, now: Timestamp) -> Result<bool> {
        let Some(limit) = &self.limit else {
            return Ok(false);
        };
        if limit.try_reserve() {
            return Ok(true);
        }
        self.sweep(now);
        if limit.try_reserve() {
            Ok(true)
        } else {
            Err(limit.error(self.name))
        }
    }

    fn observe<'a>(&self, change: impl FnOnce() -> Change<'a>) {
        if let Some(observer) = &self.observer {
            observer.observe(change());
        }
    }

    fn observe_put(&self, key: &SessionKey, e: &Entry) {
        self.observe(|| Change::Put {
            key,
            data: &e.data,
            created_at: e.created_at,
            expires_at: e.expires_at,
            version: e.version,
            owner: e.owner.as_deref(),
        });
    }

    fn remove_locked(&self, shard: &mut Shard, key: &SessionKey) -> Option<Entry> {
        let entry = shard.records.remove(key)?;
        self.removed();
        self.unindex(shard, key, &entry);
        self.observe(|| Change::Delete { key });
        Some(entry)
    }

    fn sweep(&self, now: Timestamp) -> u64 {
        self.sweep_with(now, true)
    }

    /// Removes expired records, telling the observer of each when `observed`.
    fn sweep_with(&self, now: Timestamp, observed: bool) -> u64 {
        let mut removed = 0u64;
        let split = (
            now + Duration::from_millis(1),
            SessionKey::from_bytes([0; 32]),
        );
        let due = |shard: &Shard| shard.by_expiry.first().is_some_and(|first| first.0 <= now);
        for shard in self.shards.iter() {
            // A shard with nothing due is passed under a read lock, so a sweep (also the one a
            // full store runs on `create`) does not stall readers of idle shards.
            if !due(&read(shard)) {
                continue;
            }
            let mut shard = write(shard);
            let shard = &mut *shard;
            if !due(shard) {
                continue;
            }
            let live = shard.by_expiry.split_off(&split);
            let expired = std::mem::replace(&mut shard.by_expiry, live);
            for (_, key) in expired {
                match shard.records.get_mut(&key) {
                    // Its deadline moved later after it was filed: file it again there.
                    Some(entry) if entry.live(now) => {
                        entry.indexed_at = entry.expires_at;
                        shard.by_expiry.insert((entry.expires_at, key));
                    }
                    Some(_) => {
                        self.removed();
                        if let Some(owner) = shard.records.remove(&key).and_then(|e| e.owner) {
                            self.owner_remove(&owner, &key);
                        }
                        if observed {
                            self.observe(|| Change::Delete { key: &key });
                        }
                        removed += 1;
                    }
                    None => {}
                }
            }
        }
        removed
    }

    fn delete(&self, key: &SessionKey, now: Timestamp) -> bool {
        let mut shard = self.write_shard(key);
        self.remove_locked(&mut shard, key)
            .is_some_and(|e| e.live(now))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &Record) -> Result<()> {
        check_data_len(self.shared.max_data_len, record.data.len())?;
        let now = Timestamp::now();
        let shared = &*self.shared;
        // The slot is taken before the shard is locked: a full store sweeps, which locks
        // every shard.
        let reserved = shared.reserve(now)?;
        let mut shard = shared.write_shard(&record.key);
        let shard = &mut *shard;
        if let Some(old) = shard.records.get(&record.key) {
            if old.live(now) {
                if reserved {
                    shared.removed();
                }
                return Err(Error::AlreadyExists);
            }
            shared.remove_locked(shard, &record.key);
        }
        let entry = Entry {
            data: own(&record.data),
            created_at: record.created_at,
            expires_at: record.expires_at,
            indexed_at: record.expires_at,
            version: record.version,
            owner: record.owner.as_deref().map(Arc::from),
        };
        shared.index(shard, &record.key, &entry);
        shared.observe_put(&record.key, &entry);
        shard.records.insert(record.key, entry);
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        let shard = self.shared.read_shard(key);
        Ok(shard
            .records
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.record(*key)))
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        check_data_len(self.shared.max_data_len, record.data.len())?;
        let now = Timestamp::now();
        let shared = &*self.shared;
        let mut shard = shared.write_shard(&record.key);
        let shard = &mut *shard;
        let Some(entry) = shard.records.get_mut(&record.key) else {
            return Err(Error::NotFound);
        };
        if !entry.live(now) {
            return Err(Error::NotFound);
        }
        if entry.version != record.version {
            return Err(Error::Conflict);
        }
        entry.set_deadline(&mut shard.by_expiry, &record.key, record.expires_at);
        if entry.owner.as_deref() != record.owner.as_deref() {
            if let Some(old) = &entry.owner {
                shared.owner_remove(old, &record.key);
            }
            entry.owner = record.owner.as_deref().map(Arc::from);
            if let Some(new) = &entry.owner {
                shared.owner_add(new, record.key);
            }
        }
        entry.data = own(&record.data);
        entry.version = record.version + 1;
        shared.observe_put(&record.key, entry);
        Ok(entry.version)
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.shared.delete(key, Timestamp::now()))
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        let now = Timestamp::now();
        Ok(keys.iter().filter(|k| self.shared.delete(k, now)).count() as u64)
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now();
        let shard = self.shared.read_shard(key);
        Ok(shard.records.get(key).is_some_and(|e| e.live(now)))
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let now = Timestamp::now();
        let shared = &*self.shared;
        let (a, b) = (shard_of(old), shard_of(new));
        // Lock both shards, lower index first, so the move is atomic and cannot deadlock.
        let mut first = write(&shared.shards[a.min(b)]);
        let mut second = (a != b).then(|| write(&shared.shards[a.max(b)]));
        let (from, to): (&mut Shard, &mut Shard) = match second.as_deref_mut() {
            None => {
                let only = &mut *first;
                return move_within(shared, only, old, new, now);
            }
            Some(other) if a < b => (&mut *first, other),
            Some(other) => (other, &mut *first),
        };
        let entry = take_movable(shared, from, to, old, new, now)?;
        shared.unindex(from, old, &entry);
        shared.index(to, new, &entry);
        shared.observe(|| Change::Move {
            old,
            new,
            data: &entry.data,
            created_at: entry.created_at,
            expires_at: entry.expires_at,
            version: entry.version,
            owner: entry.owner.as_deref(),
        });
        to.records.insert(*new, entry);
        Ok(())
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let now = Timestamp::now();
        let shared = &*self.shared;
        let mut shard = shared.write_shard(key);
        let shard = &mut *shard;
        let Some(entry) = shard.records.get_mut(key).filter(|e| e.live(now)) else {
            return Err(Error::NotFound);
        };
        entry.set_deadline(&mut shard.by_expiry, key, expires_at);
        let (version, created_at) = (entry.version, entry.created_at);
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
                let s = read(s);
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
            .map(|s| read(s).expired_count(now))
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
            let shard = read(shard);
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
        let keys: Vec<SessionKey> = match self.shared.owner_shard(owner).get(owner) {
            Some(keys) => keys.iter().copied().collect(),
            None => return Ok(Vec::new()),
        };
        Ok(keys
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
        let keys: Vec<SessionKey> = match self.shared.owner_shard(owner).get(owner) {
            Some(keys) => keys.iter().copied().collect(),
            None => return Ok(0),
        };
        let mut removed = 0;
        for key in keys {
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

/// Takes the live record at `old` out of `from` for a move to `new` in `to`, after dropping an
/// expired record at `new`; fails, changing nothing, when `old` is not live or `new` is.
fn take_movable(
    shared: &Shared,
    from: &mut Shard,
    to: &mut Shard,
    old: &SessionKey,
    new: &SessionKey,
    now: Timestamp,
) -> Result<Entry> {
    if !from.records.get(old).is_some_and(|e| e.live(now)) {
        return Err(Error::NotFound);
    }
    if to.records.get(new).is_some_and(|e| e.live(now)) {
        return Err(Error::AlreadyExists);
    }
    if let Some(stale) = to.records.remove(new) {
        shared.removed();
        shared.unindex(to, new, &stale);
    }
    // Present: it was found live above, under the same lock.
    from.records.remove(old).ok_or(Error::NotFound)
}

/// [`SessionStore::rotate`] when both keys live in one shard.
fn move_within(
    shared: &Shared,
    shard: &mut Shard,
    old: &SessionKey,
    new: &SessionKey,
    now: Timestamp,
) -> Result<()> {
    if !shard.records.get(old).is_some_and(|e| e.live(now)) {
        return Err(Error::NotFound);
    }
    // Also refuses `old == new`: a live key is a taken target.
    if shard.records.get(new).is_some_and(|e| e.live(now)) {
        return Err(Error::AlreadyExists);
    }
    if let Some(stale) = shard.records.remove(new) {
        shared.removed();
        shared.unindex(shard, new, &stale);
    }
    // Present: it was found live above, under the same lock.
    let entry = shard.records.remove(old).ok_or(Error::NotFound)?;
    shared.unindex(shard, old, &entry);
    shared.index(shard, new, &entry);
    shared.observe(|| Change::Move {
        old,
        new,
        data: &entry.data,
        created_at: entry.created_at,
        expires_at: entry.expires_at,
        version: entry.version,
        owner: entry.owner.as_deref(),
    });
    shard.records.insert(*new, entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Limit;
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
                .map(|sh| read(sh).records.len())
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
    /// restored twice is updated in place with its owner and expiry indexes kept right.
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
    async fn a_later_deadline_is_refiled_by_the_sweep_not_removed() {
        let s = store();
        let t0 = Timestamp::now() + Duration::from_secs(10);
        let mut r = record(t0);
        s.create(&r).await.expect("create");
        r.expires_at = t0 + Duration::from_secs(100);
        r.version = s.save(&r).await.expect("save");
        // Sweeping when the old deadline has passed keeps the record and files it again.
        assert_eq!(s.sweep(t0 + Duration::from_secs(1)), 0);
        assert_eq!(
            s.shared.read_shard(&r.key).by_expiry.len(),
            1,
            "one index entry per record"
        );
        assert!(
            s.shared
                .read_shard(&r.key)
                .by_expiry
                .contains(&(r.expires_at, r.key))
        );
        // Past the new deadline it goes.
        assert_eq!(s.sweep(r.expires_at), 1);
        assert!(s.shared.read_shard(&r.key).by_expiry.is_empty());
    }

    #[tokio::test]
    async fn an_earlier_deadline_moves_the_index_entry() {
        let s = store();
        let far = Timestamp::now() + Duration::from_secs(1000);
        let r = record(far);
        s.create(&r).await.expect("create");
        let near = Timestamp::now() + Duration::from_secs(5);
        s.touch(&r.key, near).await.expect("touch");
        assert_eq!(
            s.sweep(near),
            1,
            "a deadline moved earlier must be swept on time"
        );
    }

    #[tokio::test]
    async fn delete_and_rotate_leave_no_index_entry_behind() {
        let s = store();
        let mut r = record(Timestamp::now() + Duration::from_secs(10));
        s.create(&r).await.expect("create");
        r.expires_at = r.expires_at + Duration::from_secs(50);
        s.save(&r).await.expect("save");
        let new = SessionId::generate().key();
        s.rotate(&r.key, &new).await.expect("rotate");
        let entries: usize = s
            .shared
            .shards
            .iter()
            .map(|sh| read(sh).by_expiry.len())
            .sum();
        assert_eq!(entries, 1);
        s.delete(&new).await.expect("delete");
        let entries: usize = s
            .shared
            .shards
            .iter()
            .map(|sh| read(sh).by_expiry.len())
            .sum();
        assert_eq!(entries, 0);
    }
}
