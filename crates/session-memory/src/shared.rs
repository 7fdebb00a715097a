//! The state every handle of a store shares: the shards, the owner index, the limit and the
//! observer, and the operations that keep the owner index and the count in step with the
//! records (filing, removal, the sweep, moving a record between keys).

use std::sync::Arc;

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};
use session_core::{Error, Result, SessionKey, Timestamp};

use crate::change::{Change, ChangeObserver};
use crate::limit::Limit;
use crate::owners::Owners;
use crate::shard::{Entry, SHARDS, Shard, ShardLock, shard_of};

pub(crate) struct Shared {
    pub(crate) shards: Box<[ShardLock]>,
    pub(crate) owners: Owners,
    pub(crate) max_data_len: Option<usize>,
    /// Counted only when a limit is set, so an unbounded store pays nothing for it.
    pub(crate) limit: Option<Limit>,
    /// The backend named in errors.
    pub(crate) name: &'static str,
    pub(crate) observer: Option<Arc<dyn ChangeObserver>>,
}

impl Shared {
    pub(crate) fn new(
        max_data_len: Option<usize>,
        max_sessions: Option<u64>,
        name: &'static str,
        observer: Option<Arc<dyn ChangeObserver>>,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| ShardLock::default()).collect(),
            owners: Owners::new(),
            max_data_len,
            limit: max_sessions.map(Limit::new),
            name,
            observer,
        }
    }

    pub(crate) fn read_shard(&self, key: &SessionKey) -> RwLockReadGuard<'_, Shard> {
        self.shards[shard_of(key)].read()
    }

    pub(crate) fn write_shard(&self, key: &SessionKey) -> RwLockWriteGuard<'_, Shard> {
        self.shards[shard_of(key)].write()
    }

    /// Adds `entry` to the owner index. Called with the key's shard write-locked.
    pub(crate) fn index(&self, key: &SessionKey, entry: &Entry) {
        if let Some(owner) = &entry.owner {
            self.owners.add(owner, *key);
        }
    }

    /// Removes `entry` from the owner index. Called with the key's shard write-locked.
    pub(crate) fn unindex(&self, key: &SessionKey, entry: &Entry) {
        if let Some(owner) = &entry.owner {
            self.owners.remove(owner, key);
        }
    }

    /// Gives `entry` the owner `owner`, moving it in the owner index.
    pub(crate) fn set_owner(&self, key: &SessionKey, entry: &mut Entry, owner: Option<&str>) {
        if entry.owner.as_deref() == owner {
            return;
        }
        if let Some(old) = &entry.owner {
            self.owners.remove(old, key);
        }
        entry.owner = owner.map(Arc::from);
        if let Some(new) = &entry.owner {
            self.owners.add(new, *key);
        }
    }

    /// Counts a record added without a reservation.
    pub(crate) fn added(&self) {
        if let Some(limit) = &self.limit {
            limit.added();
        }
    }

    /// Counts a record removed from a shard.
    pub(crate) fn removed(&self) {
        if let Some(limit) = &self.limit {
            limit.removed();
        }
    }

    /// Takes a slot for a new record under the limit, sweeping expired records first when
    /// there is none; `Ok(false)` when there is no limit.
    pub(crate) fn reserve(&self) -> Result<bool> {
        let Some(limit) = &self.limit else {
            return Ok(false);
        };
        if limit.try_reserve() {
            return Ok(true);
        }
        self.sweep(Timestamp::now());
        if limit.try_reserve() {
            Ok(true)
        } else {
            Err(limit.error(self.name))
        }
    }

    pub(crate) fn observe<'a>(&self, change: impl FnOnce() -> Change<'a>) {
        if let Some(observer) = &self.observer {
            observer.observe(change());
        }
    }

    pub(crate) fn observe_put(&self, key: &SessionKey, e: &Entry) {
        self.observe(|| Change::Put {
            key,
            data: &e.data,
            created_at: e.created_at,
            expires_at: e.expires_at,
            version: e.version,
            owner: e.owner.as_deref(),
        });
    }

    fn observe_move(&self, old: &SessionKey, new: &SessionKey, e: &Entry) {
        self.observe(|| Change::Move {
            old,
            new,
            data: &e.data,
            created_at: e.created_at,
            expires_at: e.expires_at,
            version: e.version,
            owner: e.owner.as_deref(),
        });
    }

    pub(crate) fn remove_locked(&self, shard: &mut Shard, key: &SessionKey) -> Option<Entry> {
        let entry = shard.records.remove(key)?;
        self.removed();
        self.unindex(key, &entry);
        self.observe(|| Change::Delete { key });
        Some(entry)
    }

    pub(crate) fn sweep(&self, now: Timestamp) -> u64 {
        self.sweep_with(now, true)
    }

    /// Removes expired records, telling the observer of each when `observed`.
    pub(crate) fn sweep_with(&self, now: Timestamp, observed: bool) -> u64 {
        let mut removed = 0u64;
        for shard in self.shards.iter() {
            // A shard with nothing due is passed under a read lock, so a sweep (also the one a
            // full store runs on `create`) does not stall readers of idle shards.
            if !shard.read().has_due(now) {
                continue;
            }
            shard.write().sweep(now, |key, entry| {
                self.removed();
                if let Some(owner) = &entry.owner {
                    self.owners.remove(owner, &key);
                }
                if observed {
                    self.observe(|| Change::Delete { key: &key });
                }
                removed += 1;
            });
        }
        removed
    }

    /// Removes `key`; true if it held a live record.
    pub(crate) fn delete(&self, key: &SessionKey, now: Timestamp) -> bool {
        let mut shard = self.write_shard(key);
        self.remove_locked(&mut shard, key)
            .is_some_and(|e| e.live(now))
    }

    /// Moves the live record at `old` to `new`, atomically: no reader sees both or neither.
    pub(crate) fn rotate(&self, old: &SessionKey, new: &SessionKey, now: Timestamp) -> Result<()> {
        let (a, b) = (shard_of(old), shard_of(new));
        // Lock both shards, lower index first, so the move is atomic and cannot deadlock.
        let mut first = self.shards[a.min(b)].write();
        let mut second = (a != b).then(|| self.shards[a.max(b)].write());
        let (from, to): (&mut Shard, &mut Shard) = match second.as_deref_mut() {
            None => return self.move_within(&mut first, old, new, now),
            Some(other) if a < b => (&mut *first, other),
            Some(other) => (other, &mut *first),
        };
        check_movable(from, to, old, new, now)?;
        self.drop_stale(to, new);
        // Present: it was found live above, under the same lock.
        let entry = from.records.remove(old).ok_or(Error::NotFound)?;
        self.unindex(old, &entry);
        self.index(new, &entry);
        self.observe_move(old, new, &entry);
        to.insert(*new, entry);
        Ok(())
    }

    /// [`rotate`](Self::rotate) when both keys live in one shard.
    fn move_within(
        &self,
        shard: &mut Shard,
        old: &SessionKey,
        new: &SessionKey,
        now: Timestamp,
    ) -> Result<()> {
        // Also refuses `old == new`: a live key is a taken target.
        check_movable(shard, shard, old, new, now)?;
        self.drop_stale(shard, new);
        // Present: it was found live above, under the same lock.
        let entry = shard.records.remove(old).ok_or(Error::NotFound)?;
        self.unindex(old, &entry);
        self.index(new, &entry);
        self.observe_move(old, new, &entry);
        shard.insert(*new, entry);
        Ok(())
    }

    /// Drops an expired record left at a move's target.
    fn drop_stale(&self, shard: &mut Shard, key: &SessionKey) {
        if let Some(stale) = shard.records.remove(key) {
            self.removed();
            self.unindex(key, &stale);
        }
    }
}

/// Fails, changing nothing, when `old` is not live in `from` or `new` is live in `to`.
fn check_movable(
    from: &Shard,
    to: &Shard,
    old: &SessionKey,
    new: &SessionKey,
    now: Timestamp,
) -> Result<()> {
    if from.live(old, now).is_none() {
        return Err(Error::NotFound);
    }
    if to.live(new, now).is_some() {
        return Err(Error::AlreadyExists);
    }
    Ok(())
}
