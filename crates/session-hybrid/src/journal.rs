//! The modification log: an in-memory buffer the memory store's observer appends to, and the
//! flusher thread that writes it to the current log segment with one `write` + `fsync` per
//! batch and compacts the log into snapshots.
//!
//! The flusher is an OS thread, not a Tokio task: it spends its life in blocking `write` and
//! `fsync` calls, and `Drop` can join it to make the last changes durable without a runtime.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use session_core::{Error, Result};
use session_memory::{Change, ChangeObserver, MemoryStore};
use tokio::sync::watch;

use crate::codec;
use crate::fsio::{self, sync_dir};
use crate::replay::{self, segment_path, snapshot_path, snapshot_tmp_path};

const STORE: &str = "hybrid";
/// Size of one buffer chunk. The buffer grows by whole chunks, never by reallocating, so a
/// change appended while the flusher lags behind never copies what is already buffered.
const CHUNK: usize = 1 << 20;
/// Emptied chunks kept for reuse (their pages are already mapped); more are freed.
const KEEP_CHUNKS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Changes appended but not yet handed to the flusher.
#[derive(Debug, Default)]
struct Pending {
    /// Encoded changes, in order; the last chunk is the one being filled.
    chunks: Vec<Vec<u8>>,
    /// Bytes in `chunks`.
    bytes: usize,
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
}

/// What the flusher has done, published to callers waiting for durability.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flushed {
    /// Every change up to this sequence number is fsynced.
    durable: u64,
    /// The last flush attempt covered changes up to here.
    attempted: u64,
    /// Why the last attempt failed, if it did.
    error: Option<Arc<io::Error>>,
    /// The flusher has ended; nothing more will become durable.
    stopped: bool,
}

/// The buffered log, shared by the memory store's observer, the store, and the flusher.
pub(crate) struct Journal {
    pending: Mutex<Pending>,
    wake: Condvar,
    flush_bytes: usize,
    flushed: watch::Sender<Flushed>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("flush_bytes", &self.flush_bytes)
            .finish_non_exhaustive()
    }
}

impl ChangeObserver for Journal {
    // Runs under a shard lock of the memory store: append and leave; the flusher does the I/O.
    fn observe(&self, change: Change<'_>) {
        let mut p = lock(&self.pending);
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
            codec::encode_change(chunk, &change);
            p.bytes += chunk.len() - before;
        }
        p.buffered = p.seq;
        if p.bytes >= self.flush_bytes && !p.flush_wanted {
            p.flush_wanted = true;
            self.wake.notify_one();
        }
    }
}

impl Journal {
    pub(crate) fn new(flush_bytes: usize) -> Self {
        Self {
            pending: Mutex::new(Pending {
                accepting: true,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            flush_bytes,
            flushed: watch::Sender::new(Flushed::default()),
        }
    }

    /// Asks for a flush now; returns the sequence number it will cover.
    pub(crate) fn request_flush(&self) -> u64 {
        let mut p = lock(&self.pending);
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
            Some(e) => Err(Error::backend(
                STORE,
                io::Error::new(e.kind(), e.to_string()),
            )),
            None => Err(Error::backend(
                STORE,
                "the store was closed before this change reached its log",
            )),
        }
    }

    /// Tells the flusher to write what is buffered and end; returns the last sequence number
    /// that will be written.
    pub(crate) fn stop(&self) -> u64 {
        let mut p = lock(&self.pending);
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
    /// The snapshot replay would start from now, and its size.
    pub(crate) base: Option<u64>,
    pub(crate) base_bytes: u64,
    /// Log bytes written since that snapshot.
    pub(crate) log_since_base: u64,
}

impl Compaction {
    fn threshold(&self) -> u64 {
        self.min_bytes
            .max(self.base_bytes.saturating_mul(u64::from(self.factor)))
    }
}

/// A snapshot being written by its own thread.
struct Running {
    segment: u64,
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<io::Result<u64>>,
}

/// The flusher thread's state.
pub(crate) struct Flusher {
    pub(crate) journal: Arc<Journal>,
    pub(crate) memory: MemoryStore,
    pub(crate) dir: PathBuf,
    pub(crate) interval: Duration,
    pub(crate) file: File,
    pub(crate) segment: u64,
    pub(crate) segment_len: u64,
    pub(crate) compaction: Compaction,
    /// Log bytes written since the current snapshot started (they count toward the next one).
    since_rotation: u64,
    /// After a failed compaction, the log size at which to try again.
    retry_at: u64,
    running: Option<Running>,
    compactions: Arc<AtomicU64>,
}

impl Flusher {
    #[expect(
        clippy::too_many_arguments,
        reason = "internal constructor, called once"
    )]
    pub(crate) fn new(
        journal: Arc<Journal>,
        memory: MemoryStore,
        dir: PathBuf,
        interval: Duration,
        file: File,
        segment: u64,
        segment_len: u64,
        compaction: Compaction,
        compactions: Arc<AtomicU64>,
    ) -> Self {
        Self {
            journal,
            memory,
            dir,
            interval,
            file,
            segment,
            segment_len,
            compaction,
            since_rotation: 0,
            retry_at: 0,
            running: None,
            compactions,
        }
    }

    pub(crate) fn run(mut self) {
        let _guard = StopGuard(Arc::clone(&self.journal));
        let mut deadline = Instant::now() + self.interval;
        loop {
            let (mut batch, seq, stop) = {
                let mut p = lock(&self.journal.pending);
                loop {
                    let now = Instant::now();
                    if p.stop || p.flush_wanted || now >= deadline {
                        break;
                    }
                    p = match self.journal.wake.wait_timeout(p, deadline - now) {
                        Ok((p, _)) => p,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
                p.flush_wanted = false;
                p.bytes = 0;
                (std::mem::take(&mut p.chunks), p.buffered, p.stop)
            };
            if Instant::now() >= deadline {
                deadline = Instant::now() + self.interval;
            }
            let written = self.write_batch(&mut batch, seq);
            if !batch.is_empty() {
                let mut p = lock(&self.journal.pending);
                for mut chunk in batch {
                    if p.spare.len() < KEEP_CHUNKS && chunk.capacity() == CHUNK {
                        chunk.clear();
                        p.spare.push(chunk);
                    }
                }
            }
            self.tend_compaction(stop, written);
            if stop {
                break;
            }
        }
    }

    /// Writes and fsyncs one batch, publishing the outcome. On failure the batch goes back in
    /// front of the buffer and the file is cut back, so a retry appends whole frames only.
    fn write_batch(&mut self, batch: &mut Vec<Vec<u8>>, seq: u64) -> bool {
        if batch.is_empty() {
            self.journal.flushed.send_if_modified(|f| {
                let moved = f.durable < seq;
                f.durable = f.durable.max(seq);
                f.attempted = f.attempted.max(seq);
                moved
            });
            return true;
        }
        let len: u64 = batch.iter().map(|c| c.len() as u64).sum();
        // One write per filled chunk (1 MiB), one fsync for the batch.
        let result = batch
            .iter()
            .try_for_each(|chunk| self.file.write_all(chunk))
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.segment_len += len;
                self.since_rotation += len;
                self.compaction.log_since_base += len;
                self.journal.flushed.send_modify(|f| {
                    f.durable = seq;
                    f.attempted = seq;
                    f.error = None;
                });
                true
            }
            Err(error) => {
                tracing::error!(%error, dir = %self.dir.display(), "writing the session log failed; keeping the batch for the next flush");
                if let Err(error) = self.file.set_len(self.segment_len) {
                    tracing::error!(%error, "cutting a partial batch off the session log failed");
                }
                {
                    let mut p = lock(&self.journal.pending);
                    let newer = std::mem::take(&mut p.chunks);
                    p.chunks = std::mem::take(batch);
                    p.chunks.extend(newer);
                    p.bytes += usize::try_from(len).unwrap_or(usize::MAX);
                }
                self.journal.flushed.send_modify(|f| {
                    f.attempted = seq;
                    f.error = Some(Arc::new(error));
                });
                false
            }
        }
    }

    fn tend_compaction(&mut self, stop: bool, last_write_ok: bool) {
        if let Some(running) = self.running.take_if(|r| stop || r.handle.is_finished()) {
            if stop {
                running.cancel.store(true, Ordering::Relaxed);
            }
            match running.handle.join() {
                Ok(Ok(bytes)) => {
                    self.compaction.base = Some(running.segment);
                    self.compaction.base_bytes = bytes;
                    self.compaction.log_since_base = self.since_rotation;
                    self.compactions.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    if !stop {
                        tracing::warn!(%error, "writing a session snapshot failed; the log is kept and compaction retried later");
                    }
                    self.retry_at = self.compaction.log_since_base + self.compaction.threshold();
                }
                Err(_) => {
                    tracing::error!("the session snapshot thread panicked");
                    self.retry_at = self.compaction.log_since_base + self.compaction.threshold();
                }
            }
        }
        let due = self.compaction.log_since_base >= self.compaction.threshold().max(self.retry_at);
        if stop || !last_write_ok || self.running.is_some() || !due {
            return;
        }
        if let Err(error) = self.start_compaction() {
            tracing::warn!(%error, "starting a session log compaction failed; retrying later");
            self.retry_at = self.compaction.log_since_base + self.compaction.threshold();
        }
    }

    /// Moves the log on to a new segment, then snapshots the store in the background. Every
    /// change observed before the switch is in an older segment and already applied in memory,
    /// so the snapshot holds it; every later one lands in the new segment.
    fn start_compaction(&mut self) -> io::Result<()> {
        let next = self.segment + 1;
        let file = fsio::open_segment(&segment_path(&self.dir, next), true)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.segment = next;
        self.segment_len = 0;
        self.since_rotation = 0;
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Snapshot {
            memory: self.memory.clone(),
            dir: self.dir.clone(),
            segment: next,
            previous: self.compaction.base,
            cancel: Arc::clone(&cancel),
        };
        let handle = std::thread::Builder::new()
            .name("session-hybrid-snapshot".into())
            .spawn(move || job.write())?;
        self.running = Some(Running {
            segment: next,
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
}

impl Snapshot {
    fn write(self) -> io::Result<u64> {
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
        codec::encode_snapshot_header(&mut frame, self.segment);
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
                    codec::encode_change(&mut pending.borrow_mut(), &record);
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
        codec::encode_snapshot_end(&mut frame, count.get());
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
