//! The storage contract every backend implements.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::SessionKey;
use crate::record::Record;
use crate::time::Timestamp;

/// A place that keeps session [`Record`]s by [`SessionKey`].
///
/// Stores know nothing of HTTP, cookies or codecs: they keep opaque bytes with an expiry, a
/// version and an optional owner. Every behaviour listed on a method is checked by a case of
/// the [conformance suite](crate::conformance) (feature `conformance`).
///
/// The trait is object safe: the manager holds an `Arc<dyn SessionStore>`.
///
/// "Live" below means present and `expires_at > now`. An expired record behaves exactly like an
/// absent one for every method except [`count_expired`](Self::count_expired) and
/// [`delete_expired`](Self::delete_expired).
#[async_trait]
pub trait SessionStore: Debug + Send + Sync + 'static {
    /// Inserts `record` exactly as given if no live record has its key.
    ///
    /// - A live record under the key is left untouched and the call fails with
    ///   [`Error::AlreadyExists`](crate::Error::AlreadyExists).
    /// - Data longer than [`max_data_len`](Self::max_data_len) fails with
    ///   [`Error::TooLarge`](crate::Error::TooLarge) and writes nothing.
    async fn create(&self, record: &Record) -> Result<()>;

    /// Returns the live record under `key`, or `None`.
    ///
    /// - Expired records are `None`.
    /// - Loading an unknown key creates nothing.
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>>;

    /// Conditionally replaces the live record under `record.key`.
    ///
    /// `record.version` is the version the caller loaded. The store writes `record` with
    /// version `record.version + 1` and returns that new version, but only if the stored version
    /// is still `record.version`.
    /// - Another version stored: [`Error::Conflict`](crate::Error::Conflict), nothing changes.
    /// - No live record (deleted, expired, moved by `rotate`):
    ///   [`Error::NotFound`](crate::Error::NotFound), and the record is *not* brought back.
    /// - Too large: [`Error::TooLarge`](crate::Error::TooLarge), nothing changes.
    /// - `created_at` is kept from the stored record.
    async fn save(&self, record: &Record) -> Result<u64>;

    /// Removes the record under `key`; returns whether a live one was there.
    ///
    /// - Deleting a missing key succeeds with `false`.
    async fn delete(&self, key: &SessionKey) -> Result<bool>;

    /// Removes every record whose key is listed; returns how many live ones were removed.
    ///
    /// - Missing keys are skipped; an empty list is a no-op returning 0.
    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64>;

    /// Whether a live record is stored under `key`.
    async fn exists(&self, key: &SessionKey) -> Result<bool>;

    /// Atomically moves the live record under `old` to `new`, keeping data, timestamps,
    /// version and owner. No reader ever sees both keys live, or neither.
    ///
    /// - `old` not live: [`Error::NotFound`](crate::Error::NotFound), nothing changes.
    /// - `new` live: [`Error::AlreadyExists`](crate::Error::AlreadyExists), nothing changes.
    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()>;

    /// Sets a new deadline on the live record under `key` without rewriting its data or
    /// changing its version.
    ///
    /// - No live record: [`Error::NotFound`](crate::Error::NotFound), and nothing is created.
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()>;

    /// Number of live records.
    async fn count(&self) -> Result<u64>;

    /// Number of expired records still held. Stores whose backend drops expired data by itself
    /// ([`expiry_is_native`](Self::expiry_is_native)) hold none and return 0.
    async fn count_expired(&self) -> Result<u64>;

    /// Removes expired records; returns how many. Live records are never touched.
    async fn delete_expired(&self) -> Result<u64>;

    /// Keys of all live records, in no particular order.
    async fn list(&self) -> Result<Vec<SessionKey>>;

    /// One page of live keys in ascending order (the byte order of [`SessionKey`]), for
    /// walking a large store without holding every key at once.
    ///
    /// Returns at most `limit` keys greater than `after` (all keys when `after` is `None`), and
    /// the cursor to pass as `after` for the next page: the page's last key, or `None` when no
    /// live key follows. Walk by calling again with the cursor until it is `None`.
    /// - A `limit` of 0 is taken as 1, so a walk always moves forward.
    /// - Expired and deleted keys are never returned.
    /// - A walk returns each key that stays live throughout it exactly once, and never a key
    ///   twice; a key created or removed during the walk may appear or not.
    /// - A page may be empty with a `None` cursor (nothing left), and a `Some` cursor may lead
    ///   to an empty page when the keys after it expired or were deleted meanwhile.
    ///
    /// The default implementation filters and sorts [`list`](Self::list) on every call, so a
    /// walk costs O(n²/limit): stores that can seek by key (an ordered index) should override it.
    async fn list_page(
        &self,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<(Vec<SessionKey>, Option<SessionKey>)> {
        let mut keys: Vec<SessionKey> = self
            .list()
            .await?
            .into_iter()
            .filter(|k| after.is_none_or(|after| k > after))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Ok(page_of(keys, limit))
    }

    /// Live records whose owner is `owner`, in no particular order.
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>>;

    /// Removes every live record whose owner is `owner`; returns how many.
    async fn delete_by_owner(&self, owner: &str) -> Result<u64>;

    /// The largest `data` this store accepts, in bytes; `None` when unlimited.
    fn max_data_len(&self) -> Option<usize>;

    /// Whether the backend removes expired records by itself (Redis TTLs), so that
    /// [`count_expired`](Self::count_expired) and [`delete_expired`](Self::delete_expired)
    /// always see none.
    fn expiry_is_native(&self) -> bool {
        false
    }
}

macro_rules! forward_store {
    ($ty:ty) => {
        #[async_trait]
        impl<T: SessionStore + ?Sized> SessionStore for $ty {
            async fn create(&self, record: &Record) -> Result<()> {
                (**self).create(record).await
            }
            async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
                (**self).load(key).await
            }
            async fn save(&self, record: &Record) -> Result<u64> {
                (**self).save(record).await
            }
            async fn delete(&self, key: &SessionKey) -> Result<bool> {
                (**self).delete(key).await
            }
            async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
                (**self).delete_many(keys).await
            }
            async fn exists(&self, key: &SessionKey) -> Result<bool> {
                (**self).exists(key).await
            }
            async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
                (**self).rotate(old, new).await
            }
            async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
                (**self).touch(key, expires_at).await
            }
            async fn count(&self) -> Result<u64> {
                (**self).count().await
            }
            async fn count_expired(&self) -> Result<u64> {
                (**self).count_expired().await
            }
            async fn delete_expired(&self) -> Result<u64> {
                (**self).delete_expired().await
            }
            async fn list(&self) -> Result<Vec<SessionKey>> {
                (**self).list().await
            }
            async fn list_page(
                &self,
                after: Option<&SessionKey>,
                limit: usize,
            ) -> Result<(Vec<SessionKey>, Option<SessionKey>)> {
                (**self).list_page(after, limit).await
            }
            async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
                (**self).list_by_owner(owner).await
            }
            async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
                (**self).delete_by_owner(owner).await
            }
            fn max_data_len(&self) -> Option<usize> {
                (**self).max_data_len()
            }
            fn expiry_is_native(&self) -> bool {
                (**self).expiry_is_native()
            }
        }
    };
}

forward_store!(Arc<T>);
forward_store!(Box<T>);

/// Cuts ascending, distinct `keys` (all of them greater than the cursor) to one page of
/// [`SessionStore::list_page`]: at most `limit` (at least 1) keys, and the last one as the next
/// cursor when more keys follow.
fn page_of(mut keys: Vec<SessionKey>, limit: usize) -> (Vec<SessionKey>, Option<SessionKey>) {
    let limit = limit.max(1);
    if keys.len() <= limit {
        return (keys, None);
    }
    keys.truncate(limit);
    let next = keys.last().copied();
    (keys, next)
}

/// Refuses `len` bytes of data when a limit is set and `len` is above it.
///
/// Stores call this before any I/O so an oversized record costs nothing.
pub fn check_data_len(limit: Option<usize>, len: usize) -> Result<()> {
    match limit {
        Some(limit) if len > limit => Err(crate::Error::TooLarge { size: len, limit }),
        _ => Ok(()),
    }
}

/// `store` as one shared `Arc<dyn SessionStore>`, for whatever holds a store for many tasks
/// (the manager, the tower-sessions bridge): a store given by value (`MemoryStore::new()`)
/// goes behind a new `Arc`; an `Arc<dyn SessionStore>` (what `session_kit::store_from_url`
/// returns) or a `Box<dyn SessionStore>` is reused as it is, so calls go through one pointer
/// and one boxed future, not a forwarding layer around another. (An `Arc<S>` of a concrete
/// store is wrapped once more: coerce it to `Arc<dyn SessionStore>` first to avoid that.)
pub fn shared_store<S: SessionStore>(store: S) -> Arc<dyn SessionStore> {
    let mut slot = Some(store);
    let any: &mut dyn std::any::Any = &mut slot;
    if let Some(arc) = any
        .downcast_mut::<Option<Arc<dyn SessionStore>>>()
        .and_then(Option::take)
    {
        return arc;
    }
    if let Some(boxed) = any
        .downcast_mut::<Option<Box<dyn SessionStore>>>()
        .and_then(Option::take)
    {
        return Arc::from(boxed);
    }
    match slot {
        Some(store) => Arc::new(store),
        None => unreachable!("only a matching downcast takes the store, and it returned"),
    }
}
