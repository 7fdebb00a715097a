//! The store's handle and the [`SessionStore`] contract: an async front (a semaphore and
//! `spawn_blocking`) over the blocking core in [`crate::blocking`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_core::{
    CleanupHandle, CleanupTask, Record, Result, SessionKey, SessionStore, Timestamp, async_trait,
    check_data_len,
};

use crate::blocking::Inner;
use crate::builder::FileStoreBuilder;
use crate::error::STORE;
use crate::format::check_owner;

/// A [`SessionStore`] keeping one checksummed file per session under a root directory.
///
/// Cloning gives another handle to the same store. See the [crate docs](crate) for the layout,
/// the file format, durability, and what each operation costs.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
    cleanup: CleanupHandle,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.inner.layout.root())
            .field("max_data_len", &self.inner.max_data_len)
            .field("concurrency", &self.inner.concurrency)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Wraps an opened store and starts its sweep every `interval` (none for zero).
    pub(crate) fn start(inner: Inner, interval: Duration) -> Result<Self> {
        let inner = Arc::new(inner);
        let cleanup = CleanupTask::spawn(
            STORE,
            interval,
            Arc::downgrade(&inner),
            |inner: Arc<Inner>| async move { inner.run(|i| i.delete_expired(Timestamp::now())).await },
        )?;
        Ok(Self {
            inner,
            cleanup: CleanupHandle::new(cleanup),
        })
    }

    /// Opens a store on `root` with default settings, creating the directory if missing, and
    /// starts its sweep every [`DEFAULT_CLEANUP_INTERVAL`](crate::DEFAULT_CLEANUP_INTERVAL).
    ///
    /// # Errors
    /// As [`FileStoreBuilder::open`]; in particular [`Error::Config`](session_core::Error::Config) outside a Tokio runtime,
    /// where the sweep cannot run (open the store inside the runtime, or use the builder with
    /// a zero [`cleanup_interval`](FileStoreBuilder::cleanup_interval)).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::builder(root).open()
    }

    /// Starts configuring a store on `root`.
    pub fn builder(root: impl Into<PathBuf>) -> FileStoreBuilder {
        FileStoreBuilder::new(root.into())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// Stops the background cleanup task and waits for it to end. Idempotent.
    pub async fn stop_cleanup(&self) {
        self.cleanup.stop().await;
    }
}

#[async_trait]
impl SessionStore for FileStore {
    async fn create(&self, record: &Record) -> Result<()> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        check_owner(record.owner.as_deref())?;
        let record = record.clone();
        self.inner.run(move |i| i.create(&record)).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let key = *key;
        self.inner.run(move |i| i.load(&key)).await
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        check_owner(record.owner.as_deref())?;
        let record = record.clone();
        self.inner.run(move |i| i.save(&record)).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.inner.run(move |i| i.delete(&key)).await
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let keys = keys.to_vec();
        self.inner
            .run(move |i| {
                let mut removed = 0;
                for key in &keys {
                    if i.delete(key)? {
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.inner.run(move |i| i.exists(&key)).await
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let (old, new) = (*old, *new);
        self.inner.run(move |i| i.rotate(&old, &new)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let key = *key;
        self.inner.run(move |i| i.touch(&key, expires_at)).await
    }

    async fn count(&self) -> Result<u64> {
        self.inner
            .run(|i| i.tally(Timestamp::now(), None).map(|(live, _)| live))
            .await
    }

    async fn count_expired(&self) -> Result<u64> {
        self.inner
            .run(|i| i.tally(Timestamp::now(), None).map(|(_, expired)| expired))
            .await
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.inner.run(|i| i.delete_expired(Timestamp::now())).await
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        self.inner
            .run(|i| {
                let mut keys = Vec::new();
                i.tally(Timestamp::now(), Some(&mut keys))?;
                Ok(keys)
            })
            .await
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let owner = owner.to_owned();
        self.inner.run(move |i| i.list_by_owner(&owner)).await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.inner.run(move |i| i.delete_by_owner(&owner)).await
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }
}
