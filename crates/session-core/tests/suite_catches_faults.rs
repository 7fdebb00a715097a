//! The conformance suite must catch broken stores, not just bless working ones: each fault
//! below is injected into a wrapper around the memory store, and the case that guards against
//! it must fail, while the same case passes on the healthy store.

use std::future::Future;
use std::sync::Arc;

use session_core::conformance;
use session_core::{Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait};
use session_memory::MemoryStore;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Save writes whatever version it is given: lost updates.
    SaveIgnoresVersion,
    /// Save of a deleted record creates it again: logout resurrection.
    SaveResurrects,
    /// rotate copies instead of moving.
    RotateCopies,
    /// rotate copies to the new key, then deletes the old one: both are live for a while.
    RotateLeavesBoth,
    /// rotate deletes the old key, then creates the new one: neither is live for a while.
    RotateLeavesNeither,
    /// create replaces a live record.
    CreateOverwrites,
    /// Reports a limit but enforces none.
    SizeLimitUnenforced,
    /// Loading an unknown key stores an empty session (Django CVE-2015-5143).
    LoadCreates,
    /// delete_many counts the keys it was given, not the ones it removed.
    DeleteManyMiscounts,
    /// touch of a missing key creates it.
    TouchCreates,
    /// rotate onto a key whose record has expired fails as if the key were taken (a unique
    /// index that still holds the expired row).
    RotateBlockedByExpired,
}

#[derive(Debug)]
struct Faulty {
    inner: MemoryStore,
    fault: Fault,
    /// Every key a record was created under, expired or not: what a unique index would hold.
    created: std::sync::Mutex<std::collections::HashSet<SessionKey>>,
}

fn healthy() -> MemoryStore {
    match MemoryStore::builder().max_data_len(Some(4096)).build() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[async_trait]
impl SessionStore for Faulty {
    async fn create(&self, record: &Record) -> Result<()> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(record.key);
        if self.fault == Fault::CreateOverwrites {
            self.inner.delete(&record.key).await?;
        }
        if self.fault == Fault::SizeLimitUnenforced {
            return MemoryStore::builder()
                .max_data_len(None)
                .build()?
                .create(record)
                .await
                .and(self.inner.restore_for_test(record.clone()));
        }
        self.inner.create(record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let found = self.inner.load(key).await?;
        if found.is_none() && self.fault == Fault::LoadCreates {
            let empty = Record::new(
                *key,
                Vec::new(),
                Timestamp::now() + std::time::Duration::from_secs(60),
            );
            self.inner.create(&empty).await?;
        }
        Ok(found)
    }
    async fn save(&self, record: &Record) -> Result<u64> {
        match self.fault {
            Fault::SaveIgnoresVersion => {
                let mut r = record.clone();
                if let Some(current) = self.inner.load(&record.key).await? {
                    r.version = current.version;
                }
                self.inner.save(&r).await
            }
            Fault::SaveResurrects => match self.inner.save(record).await {
                Err(Error::NotFound) => {
                    let mut r = record.clone();
                    r.version += 1;
                    self.inner.create(&r).await?;
                    Ok(r.version)
                }
                other => other,
            },
            Fault::SizeLimitUnenforced => {
                let r = record.clone();
                let stored = self.inner.load(&r.key).await?.ok_or(Error::NotFound)?;
                if stored.version != r.version {
                    return Err(Error::Conflict);
                }
                self.inner.restore_for_test(Record {
                    version: r.version + 1,
                    ..r
                })?;
                Ok(record.version + 1)
            }
            _ => self.inner.save(record).await,
        }
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        let n = self.inner.delete_many(keys).await?;
        Ok(if self.fault == Fault::DeleteManyMiscounts {
            keys.len() as u64
        } else {
            n
        })
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.inner.exists(key).await
    }
    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let held = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(new);
        if self.fault == Fault::RotateBlockedByExpired && held {
            return Err(Error::AlreadyExists);
        }
        if self.fault == Fault::RotateCopies {
            let record = self.inner.load(old).await?.ok_or(Error::NotFound)?;
            return self
                .inner
                .create(&Record {
                    key: *new,
                    ..record
                })
                .await;
        }
        if matches!(
            self.fault,
            Fault::RotateLeavesBoth | Fault::RotateLeavesNeither
        ) {
            let record = self.inner.load(old).await?.ok_or(Error::NotFound)?;
            let moved = Record {
                key: *new,
                ..record
            };
            if self.fault == Fault::RotateLeavesBoth {
                self.inner.create(&moved).await?;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                self.inner.delete(old).await?;
            } else {
                self.inner.delete(old).await?;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                self.inner.create(&moved).await?;
            }
            return Ok(());
        }
        self.inner.rotate(old, new).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        match self.inner.touch(key, expires_at).await {
            Err(Error::NotFound) if self.fault == Fault::TouchCreates => {
                self.inner
                    .create(&Record::new(*key, Vec::new(), expires_at))
                    .await
            }
            other => other,
        }
    }
    async fn count(&self) -> Result<u64> {
        self.inner.count().await
    }
    async fn count_expired(&self) -> Result<u64> {
        self.inner.count_expired().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
    async fn list(&self) -> Result<Vec<SessionKey>> {
        self.inner.list().await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        self.inner.list_by_owner(owner).await
    }
    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        self.inner.delete_by_owner(owner).await
    }
    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len()
    }
}

trait RestoreForTest {
    fn restore_for_test(&self, record: Record) -> Result<()>;
}

impl RestoreForTest for MemoryStore {
    fn restore_for_test(&self, record: Record) -> Result<()> {
        self.restore(record);
        Ok(())
    }
}

/// Runs `case` against `store` on its own task; returns whether it failed (panicked).
async fn fails<F, Fut>(store: Arc<dyn SessionStore>, case: F) -> bool
where
    F: FnOnce(Arc<dyn SessionStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(case(store)).await.is_err_and(|e| e.is_panic())
}

async fn caught<F, Fut>(fault: Fault, case: F)
where
    F: Fn(Arc<dyn SessionStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    assert!(
        !fails(Arc::new(healthy()), &case).await,
        "the healthy store must pass the case guarding {fault:?}"
    );
    let broken = Arc::new(Faulty {
        inner: healthy(),
        fault,
        created: std::sync::Mutex::default(),
    });
    assert!(
        fails(broken, &case).await,
        "the suite did not catch {fault:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_updates_are_caught() {
    caught(
        Fault::SaveIgnoresVersion,
        conformance::stale_save_conflicts_and_changes_nothing,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resurrection_is_caught() {
    caught(
        Fault::SaveResurrects,
        conformance::save_after_delete_does_not_resurrect,
    )
    .await;
    caught(
        Fault::SaveResurrects,
        conformance::save_after_rotate_does_not_resurrect,
    )
    .await;
    caught(
        Fault::TouchCreates,
        conformance::touch_after_delete_does_not_resurrect,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_rotate_is_caught() {
    caught(Fault::RotateCopies, conformance::rotate_keeps_everything).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_blocked_by_an_expired_record_is_caught() {
    caught(
        Fault::RotateBlockedByExpired,
        conformance::rotate_onto_expired_key_replaces_it,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_atomic_rotate_is_caught() {
    caught(Fault::RotateLeavesBoth, conformance::rotate_is_atomic).await;
    caught(Fault::RotateLeavesNeither, conformance::rotate_is_atomic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwriting_create_is_caught() {
    caught(
        Fault::CreateOverwrites,
        conformance::create_on_taken_key_fails_without_overwriting,
    )
    .await;
    caught(
        Fault::CreateOverwrites,
        conformance::concurrent_creates_one_winner,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenforced_size_limit_is_caught() {
    caught(Fault::SizeLimitUnenforced, conformance::size_limit_is_exact).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_on_load_is_caught() {
    caught(
        Fault::LoadCreates,
        conformance::loading_unknown_creates_nothing,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miscounted_delete_many_is_caught() {
    caught(
        Fault::DeleteManyMiscounts,
        conformance::delete_many_removes_listed_only,
    )
    .await;
}
