//! The store: a [`MemoryStore`] whose every change is journaled to disk.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use session_core::{
    Error, MAX_OWNER_LEN, Record, Result, SessionKey, SessionStore, Timestamp, async_trait,
};
use session_memory::MemoryStore;

use crate::error::HybridError;
use crate::health::Health;
use crate::journal::{Durability, Journal};
use crate::replay::ReplayReport;

/// The boxed future `async_trait` makes of a [`SessionStore`] method.
type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A [`SessionStore`] with the speed of [`MemoryStore`] (it *is* one) that keeps its sessions
/// across restarts and crashes in a directory: an append-only log of every change, flushed in
/// batches, plus snapshots that let the log be compacted.
///
/// One store owns its directory: a second open of the same directory, from this process or
/// another, fails while this one is open. The store is not `Clone`; share it in an `Arc`.
///
/// Shut down with [`close`](Self::close). Dropping the store also writes and fsyncs what is
/// buffered, blocking the dropping thread for that one fsync.
pub struct HybridStore {
    pub(crate) memory: MemoryStore,
    pub(crate) journal: Arc<Journal>,
    pub(crate) durability: Durability,
    /// Whether deletions, owner deletions and id changes wait for the disk under `Lazy`.
    pub(crate) durable_deletions: bool,
    pub(crate) flusher: Mutex<Option<JoinHandle<()>>>,
    pub(crate) closed: AtomicBool,
    pub(crate) report: ReplayReport,
    pub(crate) dir: PathBuf,
    // Last field: the directory stays locked until the flusher has finished with it.
    pub(crate) lock: Mutex<Option<File>>,
}

impl fmt::Debug for HybridStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridStore")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("durable_deletions", &self.durable_deletions)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl HybridStore {
    /// What opening the directory found: what was replayed, and what was dropped as torn or
    /// corrupt.
    pub fn replay_report(&self) -> &ReplayReport {
        &self.report
    }

    /// The directory this store keeps its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the store makes changes durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// How many compactions (snapshot + log cleanup) have completed since the store opened.
    pub fn compactions(&self) -> u64 {
        self.journal.compactions()
    }

    /// The state of the disk: whether flushes fail and why, how much is waiting to be
    /// written, whether writes are being refused for it, and the last compaction error.
    /// Cheap enough for a health endpoint or a metrics scrape.
    pub fn health(&self) -> Health {
        self.journal.health()
    }

    /// Compacts now: moves the log on to a new segment, writes a snapshot of every session
    /// (every change made before the call included) and removes the files it replaces, as the
    /// store does by itself once the log is large enough. Returns when the snapshot is
    /// durable; the store keeps serving meanwhile. A compaction already running finishes
    /// first, then a new one starts.
    ///
    /// # Errors
    /// [`Error::Backend`] when the snapshot cannot be written (its source is a
    /// [`DiskError`](crate::DiskError)), when the log is not being written (a failing disk),
    /// or when the store is closed.
    pub async fn compact_now(&self) -> Result<()> {
        self.check_open()?;
        let ticket = self.journal.request_compaction();
        self.journal.wait_compaction(ticket).await
    }

    /// Writes and fsyncs every change made so far; returns once they are on disk.
    ///
    /// # Errors
    /// [`Error::Backend`] when writing the log fails (the changes stay buffered and are
    /// retried) or the store is closed.
    pub async fn flush(&self) -> Result<()> {
        self.check_open()?;
        let seq = self.journal.request_flush();
        self.journal.wait(seq).await
    }

    /// Flushes every change, stops the background work, and releases the directory so it
    /// can be opened again. Later calls on this store fail with [`Error::Backend`]. Idempotent.
    ///
    /// # Errors
    /// [`Error::Backend`] when the last flush fails; what it held is lost.
    pub async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.memory.stop_cleanup().await;
        let seq = self.journal.stop();
        let result = self.journal.wait(seq).await;
        self.journal.stopped().await;
        let handle = self.flusher.lock().take();
        if let Some(handle) = handle {
            // It has published `stopped` as its last act, so this returns at once.
            let _ = handle.join();
        }
        self.lock.lock().take();
        result
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(HybridError::Closed.into());
        }
        Ok(())
    }

    /// A read: the memory store's own future, with no wrapper (one allocation per call).
    fn read<'f, T: Send + 'f>(
        &self,
        op: impl FnOnce() -> StoreFuture<'f, T>,
    ) -> StoreFuture<'f, T> {
        match self.check_open() {
            Ok(()) => op(),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// A write: the memory store's own future when there is nothing to wait for (data writes
    /// under `Lazy`), else wrapped so it resolves once the change is on disk. Past the log
    /// backlog bound, kinds that would grow it first wait for the disk (or fail if it fails).
    fn write<'f, T: Changed + Send + 'f>(
        &'f self,
        kind: Kind,
        op: impl FnOnce() -> StoreFuture<'f, T> + Send + 'f,
    ) -> StoreFuture<'f, T> {
        if let Err(e) = self.check_open() {
            return Box::pin(std::future::ready(Err(e)));
        }
        let wait = match self.durability {
            Durability::EveryWrite => true,
            _ => kind.is_removal() && self.durable_deletions,
        };
        if kind.grows_backlog() && self.journal.is_full() {
            return Box::pin(async move {
                self.journal.make_room().await?;
                let result = op().await;
                if wait {
                    self.durable(result).await
                } else {
                    result
                }
            });
        }
        let applied = op();
        if wait {
            Box::pin(async move { self.durable(applied.await).await })
        } else {
            applied
        }
    }

    /// Waits until the caller's change is on disk, if it changed anything.
    async fn durable<T: Changed>(&self, result: Result<T>) -> Result<T> {
        let value = result?;
        if value.changed() {
            let seq = self.journal.request_flush();
            self.journal.wait(seq).await?;
        }
        Ok(value)
    }
}

/// What a write does to the log, which decides when it is refused and when it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `create`, `save`, `touch`: an entry as large as the record; lazy under `Lazy`.
    Data,
    /// `rotate`: as large as the record, and a session the caller wants gone from its old
    /// id, so it waits for the disk under durable deletions.
    Move,
    /// `delete`, `delete_many`, `delete_by_owner`: small entries, at most one per stored
    /// session, so they never grow the backlog without bound and are never refused; they
    /// wait for the disk under durable deletions (a logout must survive a crash).
    Removal,
    /// `delete_expired`: a crash that revives an expired session costs nothing (replay skips
    /// it), so it never waits under `Lazy`.
    Sweep,
}

impl Kind {
    fn grows_backlog(self) -> bool {
        matches!(self, Self::Data | Self::Move)
    }

    fn is_removal(self) -> bool {
        matches!(self, Self::Move | Self::Removal)
    }
}

/// Whether a call's result says it changed something, so waiting for the disk is needed.
trait Changed {
    fn changed(&self) -> bool;
}

impl Changed for () {
    fn changed(&self) -> bool {
        true
    }
}

impl Changed for bool {
    fn changed(&self) -> bool {
        *self
    }
}

impl Changed for u64 {
    fn changed(&self) -> bool {
        *self > 0
    }
}

/// Refuses an owner longer than [`MAX_OWNER_LEN`], which bounds every log entry's size.
fn check_owner(record: &Record) -> Result<()> {
    match &record.owner {
        Some(owner) if owner.len() > MAX_OWNER_LEN => Err(Error::TooLarge {
            size: owner.len(),
            limit: MAX_OWNER_LEN,
        }),
        _ => Ok(()),
    }
}

impl Drop for HybridStore {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.journal.stop();
        let handle = self.flusher.get_mut().take();
        if let Some(handle) = handle {
            // Best effort: the flusher writes and fsyncs what is buffered, then ends.
            let _ = handle.join();
        }
    }
}

#[async_trait]
impl SessionStore for HybridStore {
    // The hot methods hand out the memory store's own boxed future when there is nothing to
    // add (reads, and writes under `Lazy`) instead of boxing a wrapper around it: one
    // allocation per call instead of two, a tenth of the cost of a load.

    fn create<'s, 'r, 'f>(&'s self, record: &'r Record) -> StoreFuture<'f, ()>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        if let Err(e) = check_owner(record) {
            return Box::pin(std::future::ready(Err(e)));
        }
        self.write(Kind::Data, || self.memory.create(record))
    }

    fn load<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Option<Record>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.read(|| self.memory.load(key))
    }

    fn save<'s, 'r, 'f>(&'s self, record: &'r Record) -> StoreFuture<'f, u64>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        if let Err(e) = check_owner(record) {
            return Box::pin(std::future::ready(Err(e)));
        }
        self.write(Kind::Data, || self.memory.save(record))
    }

    fn delete<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, bool>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.write(Kind::Removal, || self.memory.delete(key))
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        self.write(Kind::Removal, || self.memory.delete_many(keys))
            .await
    }

    fn exists<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, bool>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.read(|| self.memory.exists(key))
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        self.write(Kind::Move, || self.memory.rotate(old, new))
            .await
    }

    fn touch<'s, 'k, 'f>(
        &'s self,
        key: &'k SessionKey,
        expires_at: Timestamp,
    ) -> StoreFuture<'f, ()>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        self.write(Kind::Data, move || self.memory.touch(key, expires_at))
    }

    async fn count(&self) -> Result<u64> {
        self.check_open()?;
        self.memory.count().await
    }

    async fn count_expired(&self) -> Result<u64> {
        self.check_open()?;
        self.memory.count_expired().await
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.write(Kind::Sweep, || self.memory.delete_expired())
            .await
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        self.check_open()?;
        self.memory.list().await
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        self.check_open()?;
        self.memory.list_by_owner(owner).await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        self.write(Kind::Removal, || self.memory.delete_by_owner(owner))
            .await
    }

    fn max_data_len(&self) -> Option<usize> {
        self.memory.max_data_len()
    }
}
