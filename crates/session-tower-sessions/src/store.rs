//! [`TowerSessionStore`] and the logic both trait versions share. The per-version trait impls
//! (in `versions.rs`) only convert their `Id`, `Record` and error types and call in here.

use std::fmt;
use std::sync::Arc;

use session_core::{Error, Record, SessionKey, SessionStore, Timestamp};
use time::OffsetDateTime;

use crate::builder::TowerSessionStoreBuilder;
use crate::error::BridgeError;
use crate::format::{self, Data};
use crate::hints::Hints;

/// How many ids `create` tries before giving up: with 128 random bits a second one is
/// already never needed, so running out means a broken generator, not bad luck.
const CREATE_ATTEMPTS: usize = 16;

/// How many times `save` reloads after losing a race to another save of the same session.
const SAVE_ATTEMPTS: usize = 16;

/// Reads an owner (e.g. a user id) from a session's data, for the store's owner index.
pub type OwnerFn = dyn Fn(&Data) -> Option<String> + Send + Sync;

/// One of our stores behind `tower_sessions_core::SessionStore` (0.14 with feature `v0_14`,
/// 0.15 with `v0_15`), for `SessionManagerLayer::new` and axum-login's
/// `AuthManagerLayerBuilder`.
///
/// Cloning is cheap: clones share the store.
#[derive(Clone)]
pub struct TowerSessionStore {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) owner: Option<Arc<OwnerFn>>,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) hints: Arc<Hints>,
}

impl fmt::Debug for TowerSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionStore")
            .field("store", &self.store)
            .field("owner", &self.owner.is_some())
            .field("max_data_len", &self.max_data_len)
            .finish()
    }
}

impl TowerSessionStore {
    /// Wraps `store` with no owner extractor and the store's own size limit.
    pub fn new(store: impl SessionStore) -> Self {
        Self::builder(store).build()
    }

    /// A builder for the owner extractor and the size limit, over `store` taken by value
    /// (`MemoryStore::new()`) or already shared: an `Arc<dyn SessionStore>` or a
    /// `Box<dyn SessionStore>` is used as it is, without a second layer of indirection (as
    /// `session_kit::SessionManager::builder` does, so one store can serve both).
    pub fn builder(store: impl SessionStore) -> TowerSessionStoreBuilder {
        TowerSessionStoreBuilder::new(session_core::shared_store(store))
    }

    /// The store underneath, for what their trait cannot say (counts, listing, owners).
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The largest encoded session this bridge writes, in bytes; `None` when unlimited.
    pub fn max_data_len(&self) -> Option<usize> {
        self.max_data_len
    }

    /// Ends every session whose owner extractor returned `owner` ("sign out everywhere");
    /// returns how many. A request still holding one of them cannot bring it back: its save
    /// writes nothing (see the README).
    pub async fn delete_by_owner(&self, owner: &str) -> Result<u64, Error> {
        self.store.delete_by_owner(owner).await
    }

    /// How many live sessions `owner` has.
    pub async fn count_by_owner(&self, owner: &str) -> Result<usize, Error> {
        Ok(self.store.list_by_owner(owner).await?.len())
    }

    /// The key the store keeps the session with tower-sessions id `id` under: the SHA-256 of
    /// the id's 16 bytes (little-endian, the bytes their cookie encodes). The id itself is
    /// never stored.
    pub fn key_of(id: i128) -> SessionKey {
        SessionKey::derive(&id.to_le_bytes())
    }

    fn record(&self, id: i128, data: &Data, expiry: OffsetDateTime) -> Result<Record, BridgeError> {
        let bytes = format::encode(data, self.max_data_len)?;
        let mut record = Record::new(Self::key_of(id), bytes, to_timestamp(expiry));
        record.owner = self.owner.as_ref().and_then(|owner| owner(data));
        Ok(record)
    }

    /// Inserts a new session, drawing a fresh id from `fresh_id` (their generator) for as long
    /// as the id is taken: an existing session is never overwritten.
    pub(crate) async fn create_data(
        &self,
        id: &mut i128,
        data: &Data,
        expiry: OffsetDateTime,
        fresh_id: impl Fn() -> i128 + Send,
    ) -> Result<(), BridgeError> {
        let mut record = self.record(*id, data, expiry)?;
        for _ in 0..CREATE_ATTEMPTS {
            match self.store.create(&record).await {
                Ok(()) => return Ok(()),
                Err(Error::AlreadyExists) => {
                    tracing::warn!("session id collision on create; cycling the id");
                    *id = fresh_id();
                    record.key = Self::key_of(*id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(BridgeError::NoFreeId(CREATE_ATTEMPTS))
    }

    /// The live session's data and expiry, or `None`. Never creates anything.
    pub(crate) async fn load_data(
        &self,
        id: i128,
    ) -> Result<Option<(Data, OffsetDateTime)>, BridgeError> {
        let Some(record) = self.store.load(&Self::key_of(id)).await? else {
            return Ok(None);
        };
        // Stores never return expired records; checking again costs nothing and keeps the
        // promise even for a store that does.
        if record.is_expired_at(Timestamp::now()) {
            return Ok(None);
        }
        let data = format::decode(&record.data)?;
        self.hints.put(record.key, record.version);
        Ok(Some((data, from_timestamp(record.expires_at))))
    }

    /// Their unversioned upsert over our versioned save: the last writer wins, as in their
    /// stores, but a session that is gone (deleted, signed out everywhere, expired) is not
    /// brought back: the save writes nothing and succeeds.
    pub(crate) async fn save_data(
        &self,
        id: i128,
        data: &Data,
        expiry: OffsetDateTime,
    ) -> Result<(), BridgeError> {
        let mut record = self.record(id, data, expiry)?;
        // The usual case: this request loaded the session, so its version is known and one
        // conditional save is all it takes.
        if let Some(version) = self.hints.take(&record.key) {
            record.version = version;
            match self.store.save(&record).await {
                Ok(version) => {
                    self.hints.put(record.key, version);
                    return Ok(());
                }
                Err(Error::NotFound) => return ended_concurrently(),
                // Someone saved in between: fall through to their last-writer-wins.
                Err(Error::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for _ in 0..SAVE_ATTEMPTS {
            let Some(stored) = self.store.load(&record.key).await? else {
                return ended_concurrently();
            };
            record.version = stored.version;
            match self.store.save(&record).await {
                Ok(version) => {
                    self.hints.put(record.key, version);
                    return Ok(());
                }
                Err(Error::NotFound) => return ended_concurrently(),
                Err(Error::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict.into())
    }

    pub(crate) async fn delete_id(&self, id: i128) -> Result<(), BridgeError> {
        let key = Self::key_of(id);
        self.hints.forget(&key);
        self.store.delete(&key).await?;
        Ok(())
    }

    pub(crate) async fn sweep(&self) -> Result<(), BridgeError> {
        let removed = self.store.delete_expired().await?;
        if removed > 0 {
            tracing::debug!(removed, "swept expired sessions");
        }
        Ok(())
    }
}

/// What a save of a session that is gone returns: success, having written nothing.
fn ended_concurrently() -> Result<(), BridgeError> {
    tracing::debug!(
        "session ended by a concurrent request (logout, sign out everywhere, expiry); this save writes nothing"
    );
    Ok(())
}

/// Their expiry in whole milliseconds (rounded down), the precision every store keeps.
pub(crate) fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    Timestamp::from_unix_millis(i64::try_from(ms).unwrap_or(if ms < 0 {
        i64::MIN
    } else {
        i64::MAX
    }))
}

/// Our timestamp as their expiry, clamped to the range `time` can express.
pub(crate) fn from_timestamp(t: Timestamp) -> OffsetDateTime {
    let nanos = i128::from(t.unix_millis()) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(if nanos < 0 {
        time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keeps_milliseconds_and_clamps() {
        let t =
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("in range");
        let ts = to_timestamp(t);
        assert_eq!(ts.unix_millis(), 1_700_000_000_123);
        assert_eq!(
            from_timestamp(ts).unix_timestamp_nanos(),
            1_700_000_000_123_000_000
        );
        let before = OffsetDateTime::from_unix_timestamp_nanos(-1).expect("in range");
        assert_eq!(to_timestamp(before).unix_millis(), -1, "rounds down");
        assert_eq!(
            from_timestamp(Timestamp::from_unix_millis(i64::MAX)),
            time::PrimitiveDateTime::MAX.assume_utc()
        );
    }

    #[test]
    fn the_key_is_the_hash_of_the_id_bytes() {
        let id: i128 = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
        assert_eq!(
            TowerSessionStore::key_of(id),
            SessionKey::derive(&id.to_le_bytes())
        );
        assert_ne!(
            TowerSessionStore::key_of(id),
            TowerSessionStore::key_of(id + 1)
        );
    }
}
