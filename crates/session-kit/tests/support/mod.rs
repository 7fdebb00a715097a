//! Shared test helpers: a store wrapper that counts calls and can be made to fail, wholesale
//! or one method at a time in the ways real backends fail.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use session_kit::{Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait};
use session_memory::MemoryStore;

/// How one store method misbehaves (see [`Probe::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Does its work, then reports `Unavailable`: a reply lost after the command ran (a Redis
    /// timeout, a dropped connection, an fsync error after the change was applied in RAM).
    ApplyThenFail,
    /// Reports `Unavailable` without doing anything.
    FailWithoutApplying,
    /// Never completes and does nothing: a hung connection. The caller has to drop the future.
    Hang,
    /// Does its work, then never completes: the caller drops it after the change was made.
    ApplyThenHang,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::ApplyThenFail,
        Fault::FailWithoutApplying,
        Fault::Hang,
        Fault::ApplyThenHang,
    ];

    /// Whether the faulty call changed the store.
    pub fn applies(self) -> bool {
        matches!(self, Fault::ApplyThenFail | Fault::ApplyThenHang)
    }
}

/// The store methods a [`Fault`] can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Create,
    Load,
    Save,
    Delete,
    DeleteMany,
    Rotate,
    ListByOwner,
    DeleteByOwner,
}

/// Wraps a memory store, counting every call; while `failing` is set every call fails with
/// `Unavailable`, as a store whose server went away; a [`Fault`] injected into one method
/// makes only that method misbehave.
#[derive(Debug, Clone)]
pub struct Probe {
    pub inner: MemoryStore,
    pub calls: Arc<AtomicU64>,
    pub failing: Arc<AtomicBool>,
    pub failing_writes: Arc<AtomicBool>,
    pub faults: Arc<Mutex<HashMap<Method, Fault>>>,
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
            faults: Arc::default(),
        }
    }

    /// Makes every later call of `method` misbehave as `fault`.
    pub fn inject(&self, method: Method, fault: Fault) {
        self.faults.lock().expect("faults").insert(method, fault);
    }

    /// Removes every injected fault.
    pub fn heal(&self) {
        self.faults.lock().expect("faults").clear();
    }

    async fn faulty<T>(&self, method: Method, call: impl Future<Output = Result<T>>) -> Result<T> {
        let fault = self.faults.lock().expect("faults").get(&method).copied();
        let lost = || {
            Error::unavailable(
                "probe",
                std::io::Error::other(format!("{method:?}: {fault:?}")),
            )
        };
        match fault {
            None => call.await,
            Some(Fault::FailWithoutApplying) => Err(lost()),
            Some(Fault::ApplyThenFail) => {
                let _ = call.await;
                Err(lost())
            }
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::ApplyThenHang) => {
                let _ = call.await;
                std::future::pending().await
            }
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
        self.faulty(Method::Create, self.inner.create(r)).await
    }
    async fn load(&self, k: &SessionKey) -> Result<Option<Record>> {
        self.hit()?;
        self.faulty(Method::Load, self.inner.load(k)).await
    }
    async fn save(&self, r: &Record) -> Result<u64> {
        self.write()?;
        self.faulty(Method::Save, self.inner.save(r)).await
    }
    async fn delete(&self, k: &SessionKey) -> Result<bool> {
        self.write()?;
        self.faulty(Method::Delete, self.inner.delete(k)).await
    }
    async fn delete_many(&self, k: &[SessionKey]) -> Result<u64> {
        self.write()?;
        self.faulty(Method::DeleteMany, self.inner.delete_many(k))
            .await
    }
    async fn exists(&self, k: &SessionKey) -> Result<bool> {
        self.hit()?;
        self.inner.exists(k).await
    }
    async fn rotate(&self, o: &SessionKey, n: &SessionKey) -> Result<()> {
        self.write()?;
        self.faulty(Method::Rotate, self.inner.rotate(o, n)).await
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
        self.faulty(Method::ListByOwner, self.inner.list_by_owner(o))
            .await
    }
    async fn delete_by_owner(&self, o: &str) -> Result<u64> {
        self.hit()?;
        self.faulty(Method::DeleteByOwner, self.inner.delete_by_owner(o))
            .await
    }
    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len()
    }
}
