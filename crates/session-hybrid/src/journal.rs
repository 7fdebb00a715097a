//! The modification log: an in-memory buffer the memory store's observer appends to, and the
//! flusher thread that writes it to the current log segment with one `write` + `fsync` per
//! batch and compacts the log into snapshots.
//!
//! The flusher is an OS thread, not a Tokio task: it spends its life in blocking `write` and
//! `fsync` calls, and `Drop` can join it to make the last changes durable without a runtime.
//!
//! When writing fails (a full disk), the batch goes back in front of the buffer and is retried
//! at most every second. The buffer is bounded by `max_unflushed_bytes`: past it, writes that
//! would grow it wait for the flusher while it succeeds (a disk slower than the writers), and
//! are refused while it fails ([`Journal::make_room`]).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use session_core::{Error, Result};
use session_memory::{Change, ChangeObserver, MemoryStore};
use tokio::sync::watch;

use crate::error::HybridError;
use crate::format;
use crate::fsio::{self, sync_dir};
use crate::health::{BacklogFull, DiskError, Health};
use crate::replay::{self, segment_path, snapshot_path, snapshot_tmp_path};

/// Size of one buffer chunk. The buffer grows by whole chunks, never by reallocating, so a
/// change appended while the flusher lags behind never copies what is already buffered.
const CHUNK: usize = 1 << 20;
/// Emptied chunks kept for reuse (their pages are already mapped); more are freed.
const KEEP_CHUNKS: usize = 16;
/// The longest pause between two attempts while writing the log fails. Callers waiting for
/// durability learn of a failure within this (or the lazy interval, if shorter).
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// While writing keeps failing, how often the failure is logged again.
const LOG_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// Default interval between two lazy flushes of the log: 1 s.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// When a change reaches the disk, relative to the store call that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Calls return once the change is in memory; the log is written and fsynced every
    /// interval (or sooner when the buffered log passes the flush size). A crash loses at most
    /// the changes of the last interval. The default, with [`DEFAULT_FLUSH_INTERVAL`].
    Lazy(Duration),
    /// Every mutating call returns only after the log batch holding its change is fsynced.
    /// Concurrent calls share one fsync (group commit), but each still waits for the disk.
    EveryWrite,
}

impl Default for Durability {
    fn default() -> Self {
        Self::Lazy(DEFAULT_FLUSH_INTERVAL)
    }
}

impl Durability {
    pub(crate) fn interval(self) -> Duration {
        match self {
            Self::Lazy(interval) => interval,
            // Changes nobody waits for (the background expiry sweep) still get flushed.
            Self::EveryWrite => DEFAULT_FLUSH_INTERVAL,
        }
    }
}

const OP_LOG: &str = "write the log";
const OP_SNAPSHOT: &str = "write a snapshot";

/// Changes appended but not yet handed to the flusher.
#[derive(Debug, Default)]
struct Pending {
    /// Encoded changes, in order; the last chunk is the one being filled.
    chunks: Vec<Vec<u8>>,
    /// Bytes in `chunks`.
    bytes: usize,
    /// Bytes the flusher has taken and not yet made durable.
    in_flight: usize,
    /// Empty chunks handed back by the flusher.
    spare: Vec<Vec<u8>>,
    /// Sequence number of the last change observed (buffered or not).
    seq: u64,
    /// Sequence number of the last change buffered.
    buffered: u64,
    /// Cleared at shutdown: later changes are counted but not buffered, so nobody waits for
    /// them to become durable.
    accepting: bool,
    flush_wanted: bool,
    stop: bool,
    /// Compactions asked for by [`Journal::request_compaction`], numbered from 1.
    compact_requests: u64,
    /// A snapshot thread has finished and waits to be collected.
    snapshot_done: bool,
}

impl Pending {
    fn unflushed(&self) -> usize {
        self.bytes + self.in_flight
    }
}

/// What the flusher has done, published to callers waiting for durability or a compaction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flushed {
    /// Every change up to this sequence number is fsynced.
    durable: u64,
    /// The last flush attempt covered changes up to here.
    attempted: u64,
    /// Why the last attempt failed, if it did.
    error: Option<DiskError>,
    failing_since: Option<SystemTime>,
    failed_flushes: u64,
    /// Compaction requests up to this number are covered by a finished attempt, and up to
    /// `compact_succeeded` by a successful one.
    compact_attempted: u64,
    compact_succeeded: u64,
    compaction_error: Option<DiskError>,
    compactions: u64,
    /// The flusher has ended; nothing more will become durable.
    stopped: bool,
}

/// The buffered log, shared by the memory store's observer, the store, and the flusher.
pub(crate) struct Journal {
    pending: Mutex<Pending>,
    wake: Condvar,
    flush_bytes: usize,
    max_unflushed: usize,
    /// Whether the unflushed bytes are at or past `max_unflushed`: read without the lock
    /// before every data write, so the bound costs the hot path one relaxed load.
    full: AtomicBool,
    flushed: watch::Sender<Flushed>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("flush_bytes", &self.flush_bytes)
            .field("max_unflushed", &self.max_unflushed)
            .finish_non_exhaustive()
    }
}

impl ChangeObserver for Journal {
    // Runs under a shard lock of the memory store: append and leave; the flusher does the I/O.
    fn observe(&self, change: Change<'_>) {
        let mut p = self.pending.lock();
        p.seq += 1;
        if !p.accepting {
            return;
        }
        let p = &mut *p;
        if p.chunks.last().is_none_or(|c| c.len() >= CHUNK) {
            let chunk = p.spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
            p.chunks.push(chunk);
        }
        if let Some(chunk) = p.chunks.last_mut() {
            let before = chunk.len();
            format::encode_change(chunk, &change);
            p.bytes += chunk.len() - before;
        }
        p.buffered = p.seq;
        if p.unflushed() >= self.max_unflushed {
            self.full.store(true, Ordering::Relaxed);
        }
        if p.bytes >= self.flush_bytes && !p.flush_wanted {
            p.flush_wanted = true;
            self.wake.notify_one();
        }
    }
}

impl Journal {
    pub(crate) fn new(flush_bytes: usize, max_unflushed: usize) -> Self {
        Self {
            pending: Mutex::new(Pending {
                accepting: true,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            flush_bytes,
            max_unflushed,
            full: AtomicBool::new(false),
            flushed: watch::Sender::new(Flushed::default()),
        }
    }

    /// Whether the buffer has reached `max_unflushed` (a write must call
    /// [`make_room`](Self::make_room) first). A bound checked before the change, not under its
    /// lock: writers racing past it add at most one entry each.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Waits until the buffer is below its bound: flushes, and waits for them, while they
    /// succeed; fails with `Unavailable` (source [`BacklogFull`]) as soon as one fails.
    pub(crate) async fn make_room(&self) -> Result<()> {
        while self.is_full() {
            if self.flushed.borrow().error.is_some() {
                return Err(self.backlog_full());
            }
            let seq = self.request_flush();
            if self.wait(seq).await.is_err() {
                return Err(self.backlog_full());
            }
        }
        Ok(())
    }

    fn backlog_full(&self) -> Error {
        let unflushed = self.pending.lock().unflushed();
        HybridError::Backlog(BacklogFull {
            limit: self.max_unflushed as u64,
            unflushed: unflushed as u64,
            flush_error: self.flushed.borrow().error.clone(),
        })
        .into()
    }

    fn update_full(&self, p: &Pending) {
        self.full
            .store(p.unflushed() >= self.max_unflushed, Ordering::Relaxed);
    }

    /// Asks for a flush now; returns the sequence number it will cover.
    pub(crate) fn request_flush(&self) -> u64 {
        let mut p = self.pending.lock();
        p.flush_wanted = true;
        let seq = p.seq;
        drop(p);
        self.wake.notify_one();
        seq
    }

    /// Waits until every change up to `seq` is fsynced, or fails with why it is not.
    pub(crate) async fn wait(&self, seq: u64) -> Result<()> {
        let mut rx = self.flushed.subscribe();
        let state = match rx
            .wait_for(|f| f.durable >= seq || f.attempted >= seq || f.stopped)
            .await
        {
            Ok(state) => state.clone(),
            // The sender lives in `self`, so it cannot be gone.
            Err(_) => Flushed {
                stopped: true,
                ..Flushed::default()
            },
        };
        if state.durable >= seq {
            return Ok(());
        }
        match state.error {
            Some(e) => Err(HybridError::Disk(e).into()),
            None => Err(HybridError::ClosedBeforeFlush.into()),
        }
    }

    /// Asks for a compaction that starts after every change made so far; returns its ticket.
    pub(crate) fn request_compaction(&self) -> u64 {
        let mut p = self.pending.lock();
        p.compact_requests += 1;
        let ticket = p.compact_requests;
        drop(p);
        self.wake.notify_one();
        ticket
    }

    /// Waits until a compaction covering `ticket` has finished, or fails with why it did not.
    pub(crate) async fn wait_compaction(&self, ticket: u64) -> Result<()> {
        let mut rx = self.flushed.subscribe();
        let state = match rx
            .wait_for(|f| f.compact_attempted >= ticket || f.stopped)
            .await
        {
            Ok(state) => state.clone(),
            Err(_) => Flushed {
                stopped: true,
                ..Flushed::default()
            },
        };
        if state.compact_succeeded >= ticket {
            return Ok(());
        }
        match state.compaction_error {
            Some(e) if state.compact_attempted >= ticket => Err(HybridError::Disk(e).into()),
            _ => Err(HybridError::ClosedBeforeCompaction.into()),
        }
    }

    /// The disk's state, for [`HybridStore::health`](crate::HybridStore::health).
    pub(crate) fn health(&self) -> Health {
        let unflushed = self.pending.lock().unflushed();
        let f = self.flushed.borrow();
        Health {
            flush_error: f.error.clone(),
            failing_since: f.failing_since,
            failed_flushes: f.failed_flushes,
            unflushed_bytes: unflushed as u64,
            max_unflushed_bytes: self.max_unflushed as u64,
            backlog_full: self.full.load(Ordering::Relaxed),
            compaction_error: f.compaction_error.clone(),
            compactions: f.compactions,
        }
    }

    pub(crate) fn compactions(&self) -> u64 {
        self.flushed.borrow().compactions
    }

    /// Tells the flusher to write what is buffered and end; returns the last sequence number
    /// that will be written.
    pub(crate) fn stop(&self) -> u64 {
        let mut p = self.pending.lock();
        p.stop = true;
        p.accepting = false;
        let seq = p.buffered;
        drop(p);
        self.wake.notify_one();
        seq
    }

    /// Waits until the flusher has ended.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.flushed.subscribe();
        let _ = rx.wait_for(|f| f.stopped).await;
    }

    /// Wakes the flusher to collect a finished snapshot.
    fn snapshot_done(&self) {
        self.pending.lock().snapshot_done = true;
        self.wake.notify_one();
    }
}

/// Publishes `stopped` when the flusher ends, even by a panic, so no caller waits forever.
struct StopGuard(Arc<Journal>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.flushed.send_modify(|f| f.stopped = true);
    }
}

/// Compaction settings and state, owned by the flusher.
#[derive(Debug)]
pub(crate) struct Compaction {
    pub(crate) factor: u32,
    pub(crate) min_bytes: u64,
    pub(crate) log_bytes: u64,
    /// The snapshot replay would start from now, and its size.
    pub(crate) base: Option<u64>,
    pub(crate) base_bytes: u64,
    /// Log bytes written since that snapshot.
    pub(crate) log_since_base: u64,
}

impl Compaction {
    /// The log size that makes a compaction due: `factor` times the snapshot, but never more
    /// than `log_bytes` (reopening reads the whole log, so its size, not its ratio to the
    /// snapshot, is what bounds the time a reopen takes), nor less than `min_bytes`.
    fn threshold(&self) -> u64 {
        self.min_bytes.max(
            self.base_bytes
                .saturating_mul(u64::from(self.factor))
                .min(self.log_bytes),
        )
    }
}

/// A snapshot being written by its own thread.
struct Running {
    segment: u64,
    /// The compaction requests it answers.
    covers: u64,
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<io::Result<u64>>,
}

/// A run of failed log writes.
struct Failing {
    since: Instant,
    logged_at: Instant,
    attempts: u64,
}

/// The flusher thread's state.
pub(crate) struct Flusher {
    journal: Arc<Journal>,
    memory: MemoryStore,
    dir: PathBuf,
    interval: Duration,
    file: File,
    segment: u64,
    segment_len: u64,
    compaction: Compaction,
    /// Log bytes written since the current snapshot started (they count toward the next one).
    since_rotation: u64,
    /// After a failed compaction, the log size at which to try again.
    retry_bytes: u64,
    /// Compaction requests already answered by a started (or refused) compaction.
    compact_started: u64,
    running: Option<Running>,
    failing: Option<Failing>,
    /// After a failed write, no attempt before this.
    retry_at: Instant,
}

/// Where the flusher starts: the open segment and the compaction state replay found.
pub(crate) struct FlusherStart {
    pub(crate) file: File,
    pub(crate) segment: u64,
    pub(crate) segment_len: u64,
    pub(crate) compaction: Compaction,
}

impl Flusher {
    pub(crate) fn new(
        journal: Arc<Journal>,
        memory: MemoryStore,
        dir: PathBuf,
        interval: Duration,
        start: FlusherStart,
    ) -> Self {
        Self {
            journal,
            memory,
            dir,
            interval,
            file: start.file,
            segment: start.segment,
            segment_len: start.segment_len,
            compaction: start.compaction,
            since_rotation: 0,
            retry_bytes: 0,
            compact_started: 0,
            running: None,
            failing: None,
            retry_at: Instant::now(),
        }
    }

    pub(crate) fn run(mut self) {
        let _guard = StopGuard(Arc::clone(&self.journal));
        let mut deadline = Instant::now() + self.interval;
        loop {
            let (taken, stop, requests, snapshot_done) = {
                let mut p = self.journal.pending.lock();
                loop {
                    let now = Instant::now();
                    let may_write = now >= self.retry_at;
                    let asked = p.flush_wanted || p.compact_requests > self.compact_started;
                    if p.stop || p.snapshot_done || now >= deadline || (asked && may_write) {
                        break;
                    }
                    let until = if asked { self.retry_at } else { deadline };
                    self.journal
                        .wake
                        .wait_for(&mut p, until.min(deadline) - now);
                }
                let snapshot_done = std::mem::take(&mut p.snapshot_done);
                // Woken only to collect a snapshot while pausing after a failure: no write.
                let taken = (p.stop || Instant::now() >= self.retry_at).then(|| {
                    p.flush_wanted = false;
                    p.in_flight = p.bytes;
                    p.bytes = 0;
                    (std::mem::take(&mut p.chunks), p.buffered)
                });
                (taken, p.stop, p.compact_requests, snapshot_done)
            };
            if Instant::now() >= deadline {
                deadline = Instant::now() + self.interval;
            }
            if let Some((mut batch, seq)) = taken {
                self.write_batch(&mut batch, seq);
                if !batch.is_empty() {
                    let mut p = self.journal.pending.lock();
                    for mut chunk in batch {
                        if p.spare.len() < KEEP_CHUNKS && chunk.capacity() == CHUNK {
                            chunk.clear();
                            p.spare.push(chunk);
                        }
                    }
                }
            }
            self.tend_compaction(stop, snapshot_done, requests);
            if stop {
                break;
            }
        }
    }

    /// Writes and fsyncs one batch, publishing the outcome. On failure the batch goes back in
    /// front of the buffer and the file is cut back, so a retry appends whole frames only.
    fn write_batch(&mut self, batch: &mut Vec<Vec<u8>>, seq: u64) {
        let len: u64 = batch.iter().map(|c| c.len() as u64).sum();
        // One write per filled chunk (1 MiB), one fsync for the batch.
        let result = if batch.is_empty() {
            Ok(())
        } else {
            batch
                .iter()
                .try_for_each(|chunk| self.file.write_all(chunk))
                .and_then(|()| self.file.sync_data())
        };
        match result {
            Ok(()) => {
                self.segment_len += len;
                self.since_rotation += len;
                self.compaction.log_since_base += len;
                {
                    let mut p = self.journal.pending.lock();
                    p.in_flight = 0;
                    self.journal.update_full(&p);
                }
                if let Some(failing) = self.failing.take() {
                    tracing::warn!(dir = %self.dir.display(), failed_attempts = failing.attempts, down_for = ?failing.since.elapsed(), "writing the session log works again");
                }
                self.journal.flushed.send_if_modified(|f| {
                    let changed = f.durable < seq || f.error.is_some();
                    f.durable = f.durable.max(seq);
                    f.attempted = f.attempted.max(seq);
                    f.error = None;
                    f.failing_since = None;
                    f.failed_flushes = 0;
                    changed
                });
            }
            Err(error) => {
                if let Err(error) = self.file.set_len(self.segment_len) {
                    tracing::error!(%error, "cutting a partial batch off the session log failed");
                }
                let unflushed = {
                    let mut p = self.journal.pending.lock();
                    let newer = std::mem::take(&mut p.chunks);
                    p.chunks = std::mem::take(batch);
                    p.chunks.extend(newer);
                    p.bytes += p.in_flight;
                    p.in_flight = 0;
                    self.journal.update_full(&p);
                    p.unflushed()
                };
                let now = Instant::now();
                let failing = self.failing.get_or_insert(Failing {
                    since: now,
                    logged_at: now,
                    attempts: 0,
                });
                failing.attempts += 1;
                if failing.attempts == 1 || failing.logged_at.elapsed() >= LOG_AGAIN_AFTER {
                    failing.logged_at = now;
                    tracing::error!(%error, dir = %self.dir.display(), failed_attempts = failing.attempts, unflushed_bytes = unflushed, max_unflushed_bytes = self.journal.max_unflushed, "writing the session log failed; the changes stay in memory and are retried");
                }
                self.retry_at = now + self.interval.min(MAX_RETRY_PAUSE);
                let error = DiskError::new(OP_LOG, error);
                self.journal.flushed.send_modify(|f| {
                    f.attempted = f.attempted.max(seq);
                    f.error = Some(error);
                    f.failing_since.get_or_insert_with(SystemTime::now);
                    f.failed_flushes += 1;
                });
            }
        }
    }

    /// Publishes the outcome of a compaction attempt answering requests up to `covers`.
    fn publish_compaction(&self, covers: u64, outcome: std::result::Result<(), DiskError>) {
        self.journal.flushed.send_modify(|f| {
            f.compact_attempted = f.compact_attempted.max(covers);
            match outcome {
                Ok(()) => {
                    f.compact_succeeded = f.compact_succeeded.max(covers);
                    f.compaction_error = None;
                    f.compactions += 1;
                }
                Err(e) => f.compaction_error = Some(e),
            }
        });
    }

    /// Collects a finished snapshot (`done`: its thread said it is ending), and starts a
    /// compaction when one is due or asked for.
    fn tend_compaction(&mut self, stop: bool, done: bool, requests: u64) {
        if let Some(running) = self
            .running
            .take_if(|r| stop || done || r.handle.is_finished())
        {
            if stop {
                running.cancel.store(true, Ordering::Relaxed);
            }
            let outcome = match running.handle.join() {
                Ok(Ok(bytes)) => {
                    self.compaction.base = Some(running.segment);
                    self.compaction.base_bytes = bytes;
                    self.compaction.log_since_base = self.since_rotation;
                    Ok(())
                }
                Ok(Err(error)) => {
                    if !stop {
                        tracing::warn!(%error, "writing a session snapshot failed; the log is kept and compaction retried later");
                    }
                    self.retry_bytes = self.compaction.log_since_base + self.compaction.threshold();
                    Err(DiskError::new(OP_SNAPSHOT, error))
                }
                Err(_) => {
                    tracing::error!("the session snapshot thread panicked");
                    self.retry_bytes = self.compaction.log_since_base + self.compaction.threshold();
                    Err(DiskError::new(
                        OP_SNAPSHOT,
                        io::Error::other("the snapshot thread panicked"),
                    ))
                }
            };
            self.publish_compaction(running.covers, outcome);
        }
        if stop || self.running.is_some() {
            return;
        }
        let requested = requests > self.compact_started;
        let due =
            self.compaction.log_since_base >= self.compaction.threshold().max(self.retry_bytes);
        if !requested && !due {
            return;
        }
        if self.failing.is_some() {
            // The log is not being written: a snapshot now would not let it be cleaned up.
            if requested {
                let error = self.journal.flushed.borrow().error.clone();
                let error = error.unwrap_or_else(|| {
                    DiskError::new(OP_LOG, io::Error::other("writing the log fails"))
                });
                self.compact_started = requests;
                self.publish_compaction(requests, Err(error));
            }
            return;
        }
        self.compact_started = requests;
        if let Err(error) = self.start_compaction(requests) {
            tracing::warn!(%error, "starting a session log compaction failed; retrying later");
            self.retry_bytes = self.compaction.log_since_base + self.compaction.threshold();
            self.publish_compaction(requests, Err(DiskError::new(OP_SNAPSHOT, error)));
        }
    }

    /// Moves the log on to a new segment, then snapshots the store in the background. Every
    /// change observed before the switch is in an older segment and already applied in memory,
    /// so the snapshot holds it; every later one lands in the new segment.
    fn start_compaction(&mut self, covers: u64) -> io::Result<()> {
        let next = self.segment + 1;
        let file = fsio::open_segment(&segment_path(&self.dir, next), true)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.segment = next;
        self.segment_len = 0;
        self.since_rotation = 0;
        // A flag left by the previous snapshot (collected before it was seen) must not make
        // the flusher wait for this one.
        self.journal.pending.lock().snapshot_done = false;
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Snapshot {
            memory: self.memory.clone(),
            dir: self.dir.clone(),
            segment: next,
            previous: self.compaction.base,
            cancel: Arc::clone(&cancel),
            journal: Arc::clone(&self.journal),
        };
        let handle = std::thread::Builder::new()
            .name("session-hybrid-snapshot".into())
            .spawn(move || job.write())?;
        self.running = Some(Running {
            segment: next,
            covers,
            cancel,
            handle,
        });
        Ok(())
    }
}

/// One snapshot to write.
struct Snapshot {
    memory: MemoryStore,
    dir: PathBuf,
    segment: u64,
    /// The snapshot this one replaces; it and the segments after it are kept as a fallback,
    /// everything older is removed.
    previous: Option<u64>,
    cancel: Arc<AtomicBool>,
    /// Woken when the snapshot is done, so a waiting `compact_now` hears of it at once.
    journal: Arc<Journal>,
}

/// Wakes the flusher when the snapshot thread ends, even by a panic.
struct DoneGuard(Arc<Journal>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.snapshot_done();
    }
}

impl Snapshot {
    fn write(self) -> io::Result<u64> {
        let _done = DoneGuard(Arc::clone(&self.journal));
        let tmp = snapshot_tmp_path(&self.dir, self.segment);
        let result = self.write_to(&tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let bytes = result?;
        if let Some(previous) = self.previous {
            remove_older_than(&self.dir, previous);
        }
        Ok(bytes)
    }

    fn write_to(&self, tmp: &Path) -> io::Result<u64> {
        let mut out = BufWriter::with_capacity(1 << 20, fsio::create_temp(tmp)?);
        let mut frame = Vec::with_capacity(4096);
        format::encode_snapshot_header(&mut frame, self.segment);
        out.write_all(&frame)?;
        let mut failed = None;
        // Records are encoded into `pending` while their shard is read-locked (copies only,
        // no allocation once it has grown); the writes happen after the lock is released.
        let pending = RefCell::new(Vec::new());
        let count = Cell::new(0u64);
        let stopped = Cell::new(false);
        self.memory.for_each_live_shard(
            |record| {
                if !stopped.get() {
                    format::encode_change(&mut pending.borrow_mut(), &record);
                    count.set(count.get() + 1);
                }
            },
            || {
                let mut pending = pending.borrow_mut();
                if failed.is_none() && self.cancel.load(Ordering::Relaxed) {
                    failed = Some(io::Error::other("snapshot cancelled by shutdown"));
                }
                if failed.is_none()
                    && let Err(e) = out.write_all(&pending)
                {
                    failed = Some(e);
                }
                stopped.set(failed.is_some());
                pending.clear();
            },
        );
        if let Some(error) = failed {
            return Err(error);
        }
        frame.clear();
        format::encode_snapshot_end(&mut frame, count.get());
        out.write_all(&frame)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        drop(file);
        fs::rename(tmp, snapshot_path(&self.dir, self.segment))?;
        sync_dir(&self.dir)?;
        Ok(bytes)
    }
}

/// Removes snapshots and segments older than snapshot `keep`. Failures only leave files
/// behind, which replay ignores.
fn remove_older_than(dir: &Path, keep: u64) {
    let listing = match replay::list(dir) {
        Ok(listing) => listing,
        Err(error) => {
            tracing::warn!(%error, "listing the session directory for cleanup failed");
            return;
        }
    };
    let old_snapshots = listing
        .snapshots
        .iter()
        .filter(|&&n| n < keep)
        .map(|&n| snapshot_path(dir, n));
    let old_segments = listing
        .segments
        .iter()
        .filter(|&&n| n < keep)
        .map(|&n| segment_path(dir, n));
    for path in old_snapshots.chain(old_segments) {
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(%error, path = %path.display(), "removing an old session log file failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Compaction;

    fn compaction(base_bytes: u64) -> Compaction {
        Compaction {
            factor: 2,
            min_bytes: 64 << 20,
            log_bytes: 256 << 20,
            base: Some(1),
            base_bytes,
            log_since_base: 0,
        }
    }

    #[test]
    fn the_log_size_caps_what_the_factor_allows() {
        // A small store: the factor decides, above the minimum.
        assert_eq!(compaction(10 << 20).threshold(), 64 << 20);
        assert_eq!(compaction(100 << 20).threshold(), 200 << 20);
        // A million sessions' snapshot (~600 MB): the factor would allow 1.2 GB of log.
        assert_eq!(compaction(600 << 20).threshold(), 256 << 20);
    }
}
