//! Shared test helpers: a store wrapper that counts calls and can be made to fail.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use session_core::{Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait};
use session_memory::MemoryStore;

/// Wraps a memory store, counting every call; while `failing` is set every call fails with
/// `Unavailable`, as a store whose server went away.
#[derive(Debug, Clone)]
pub struct Probe {
    pub inner: MemoryStore,
    pub calls: Arc<AtomicU64>,
    pub failing: Arc<AtomicBool>,
    pub failing_writes: Arc<AtomicBool>,
}

impl Probe {
    pub fn new() -> Self {
        Self {
            inner: MemoryStore::builder()
                .cleanup_interval(std::time::Duration::ZERO)
                .build()
                .expect("memory store"),
            calls: Arc::default(),
            failing: Arc::default(),
            failing_writes: Arc::default(),
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    pub fn fail_writes(&self, on: bool) {
        self.failing_writes.store(on, Ordering::SeqCst);
    }

    fn write(&self) -> Result<()> {
        self.hit()?;
        if self.failing_writes.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "probe",
                std::io::Error::other("writes are failing"),
            ));
        }
        Ok(())
    }

    fn hit(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "probe",
                std::io::Error::other("store is down"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for Probe {
    async fn create(&self, r: &Record) -> Result<()> {
        self.write()?;
        self.inner.create(r).await
    }
    async fn load(&self, k: &SessionKey) -> Result<Option<Record>> {
        self.hit()?;
        self.inner.load(k).await
    }
    async fn save(&self, r: &Record) -> Result<u64> {
        self.write()?;
        self.inner.save(r).await
    }
    async fn delete(&self, k: &SessionKey) -> Result<bool> {
        self.write()?;
        self.inner.delete(k).await
    }
    async fn delete_many(&self, k: &[SessionKey]) -> Result<u64> {
        self.write()?;
        self.inner.delete_many(k).await
    }
    async fn exists(&self, k: &SessionKey) -> Result<bool> {
        self.hit()?;
        self.inner.exists(k).await
    }
    async fn change_id(&self, o: &SessionKey, n: &SessionKey) -> Result<()> {
        self.write()?;
        self.inner.change_id(o, n).await
    }
    async fn touch(&self, k: &SessionKey, e: Timestamp) -> Result<()> {
        self.write()?;
        self.inner.touch(k, e).await
    }
    async fn count(&self) -> Result<u64> {
        self.hit()?;
        self.inner.count().await
    }
    async fn count_expired(&self) -> Result<u64> {
        self.hit()?;
        self.inner.count_expired().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.hit()?;
        self.inner.delete_expired().await
    }
    async fn list(&self) -> Result<Vec<SessionKey>> {
        self.hit()?;
        self.inner.list().await
    }
    async fn list_by_owner(&self, o: &str) -> Result<Vec<Record>> {
        self.hit()?;
        self.inner.list_by_owner(o).await
    }
    async fn delete_by_owner(&self, o: &str) -> Result<u64> {
        self.hit()?;
        self.inner.delete_by_owner(o).await
    }
    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len()
    }
}
