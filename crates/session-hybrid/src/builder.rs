//! The builder of a [`HybridStore`] and its `DEFAULT_*` values, and opening: lock the
//! directory, replay it into a memory store, start the flusher.
//!
//! The modules depend one way, each only on those before it: `format` (the at-rest form),
//! `fsio`, `health`, `error`, `apply` and `replay` (the reader), `journal` (the writer),
//! `store` (the `SessionStore` impl), `builder` (which opens a store from all of them).

use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use parking_lot::Mutex;
use session_core::{Error, Result};
use session_memory::{DEFAULT_MAX_DATA_LEN, MemoryStore};

use crate::error::{HybridError, STORE};
use crate::format;
use crate::fsio::{self, sync_dir};
use crate::journal::{Compaction, Durability, Flusher, FlusherStart, Journal};
use crate::replay::{self, segment_path};
use crate::store::HybridStore;

/// Default size of buffered log at which a flush starts before the interval is up: 1 MiB.
pub const DEFAULT_FLUSH_BYTES: usize = 1 << 20;
/// Default ratio of log size to snapshot size at which the log is compacted. Reopening reads
/// the snapshot and the log after it, so it reads at most `1 + factor` times the live data.
pub const DEFAULT_COMPACT_FACTOR: u32 = 2;
/// Default bound on changes applied in memory and not yet written to the log: 64 MiB. Past
/// it, writes that would add more wait for the disk, or are refused with
/// `Error::Unavailable` while writing the log fails.
pub const DEFAULT_MAX_UNFLUSHED_BYTES: usize = 64 << 20;
/// Default log size at which the log is compacted whatever its ratio to the snapshot: 256 MiB.
/// Reopening reads the snapshot and the whole log after it, so this bounds the log's share of
/// the time a reopen takes however many saves came since the last snapshot.
pub const DEFAULT_COMPACT_LOG_BYTES: u64 = 256 << 20;
/// Default log size below which the log is never compacted: 64 MiB.
pub const DEFAULT_COMPACT_MIN_BYTES: u64 = 64 << 20;
/// Default interval of the background sweep of expired sessions: 60 s.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
const LOCK_FILE: &str = "LOCK";

// The constructors live here, not in `store.rs`, so the store depends on nothing that opens it.
impl HybridStore {
    /// Opens `dir` with default settings; see [`HybridStoreBuilder::open`].
    ///
    /// # Errors
    /// As [`HybridStoreBuilder::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::builder(dir).open()
    }

    /// Starts configuring a store kept in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> HybridStoreBuilder {
        HybridStoreBuilder::new(dir.as_ref())
    }
}

/// Configures and opens a [`HybridStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HybridStoreBuilder {
    dir: PathBuf,
    durability: Durability,
    flush_bytes: usize,
    compact_factor: u32,
    compact_min_bytes: u64,
    compact_log_bytes: u64,
    cleanup_interval: Duration,
    max_data_len: Option<usize>,
    max_sessions: Option<u64>,
    durable_deletions: bool,
    max_unflushed_bytes: usize,
}

impl HybridStoreBuilder {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            durability: Durability::default(),
            flush_bytes: DEFAULT_FLUSH_BYTES,
            compact_factor: DEFAULT_COMPACT_FACTOR,
            compact_min_bytes: DEFAULT_COMPACT_MIN_BYTES,
            compact_log_bytes: DEFAULT_COMPACT_LOG_BYTES,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            max_sessions: None,
            durable_deletions: true,
            max_unflushed_bytes: DEFAULT_MAX_UNFLUSHED_BYTES,
        }
    }

    /// When changes reach the disk (default: [`Durability::Lazy`] every second).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Whether `delete`, `delete_many`, `delete_by_owner` and `rotate` are durable before
    /// they return under [`Durability::Lazy`] (default `true`). Each one that changed
    /// something starts a flush at once, group-committed with whatever is buffered, and
    /// waits for it: a logout or an id rotation costs one fsync, not an interval, and a crash
    /// right after it returned cannot bring the old session back. Creates, saves and touches
    /// stay lazy. `false` makes them lazy too (a crash may then revive sessions deleted in
    /// the last interval). Under [`Durability::EveryWrite`] every write waits anyway.
    pub fn durable_deletions(mut self, durable: bool) -> Self {
        self.durable_deletions = durable;
        self
    }

    /// The most bytes of changes held in memory and not yet written to the log (default
    /// [`DEFAULT_MAX_UNFLUSHED_BYTES`]). Past it, `create`, `save`, `touch` and `rotate`
    /// first wait for the flusher to write the backlog while it succeeds (writers faster than
    /// the disk are slowed to its pace), and fail with `Error::Unavailable` whose source is a
    /// [`BacklogFull`](crate::BacklogFull) while it fails (a full disk: a failed flush keeps
    /// its batch and retries it), instead of growing memory without bound. Deletions always
    /// go through (each adds a small entry, at most one per stored session). Concurrent
    /// writers may pass the bound by one entry each.
    pub fn max_unflushed_bytes(mut self, bytes: usize) -> Self {
        self.max_unflushed_bytes = bytes;
        self
    }

    /// Buffered log size at which a flush starts without waiting for the interval (default
    /// [`DEFAULT_FLUSH_BYTES`]).
    pub fn flush_bytes(mut self, bytes: usize) -> Self {
        self.flush_bytes = bytes;
        self
    }

    /// Compacts once the log written since the last snapshot is `factor` times that
    /// snapshot's size (default [`DEFAULT_COMPACT_FACTOR`]) or
    /// [`compact_log_bytes`](Self::compact_log_bytes), whichever comes first, and at least
    /// [`compact_min_bytes`](Self::compact_min_bytes).
    pub fn compact_factor(mut self, factor: u32) -> Self {
        self.compact_factor = factor;
        self
    }

    /// The log size at which a compaction is due whatever the factor (default
    /// [`DEFAULT_COMPACT_LOG_BYTES`]). Reopening reads the newest snapshot and the whole log
    /// after it, so this caps the log's part of a reopen; a larger value writes fewer
    /// snapshots of a large store (each is a copy of every session) and reopens more slowly.
    pub fn compact_log_bytes(mut self, bytes: u64) -> Self {
        self.compact_log_bytes = bytes;
        self
    }

    /// The log size below which no compaction happens (default
    /// [`DEFAULT_COMPACT_MIN_BYTES`]).
    pub fn compact_min_bytes(mut self, bytes: u64) -> Self {
        self.compact_min_bytes = bytes;
        self
    }

    /// How often expired sessions are swept from memory (default
    /// [`DEFAULT_CLEANUP_INTERVAL`]; zero disables the
    /// sweep, see `session_memory::MemoryStoreBuilder::cleanup_interval`). Swept sessions are
    /// journaled like deletions.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// The largest payload accepted, in bytes (default
    /// `session_memory::DEFAULT_MAX_DATA_LEN`, 1 MiB); `None` for no limit.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// The most sessions the store holds (default `None`: no limit), as
    /// `session_memory::MemoryStoreBuilder::max_sessions`: past it `create` fails with
    /// `Error::Unavailable` whose source is a [`StoreFull`](session_memory::StoreFull), and
    /// nothing is written. Reopening a directory that holds more loads them all; creates are
    /// refused until enough expire or are deleted.
    pub fn max_sessions(mut self, limit: Option<u64>) -> Self {
        self.max_sessions = limit;
        self
    }

    /// Opens the directory (creating it if needed), replays it, and starts the flusher.
    ///
    /// This blocks while the snapshot and log are read (a few seconds per million
    /// sessions): open stores before serving, or inside `spawn_blocking`.
    ///
    /// # Errors
    /// - [`Error::Config`] for a refused setting, when another store (in this process or
    ///   another) holds the directory, or when the cleanup interval is not zero and there is
    ///   no Tokio runtime.
    /// - [`Error::Backend`] when the directory cannot be read or written.
    ///
    /// Corrupt or torn files are not errors: they are cut at the first bad entry and
    /// described by [`HybridStore::replay_report`].
    pub fn open(self) -> Result<HybridStore> {
        if self.flush_bytes == 0 {
            return Err(Error::Config(
                "hybrid store: flush_bytes must be above zero".into(),
            ));
        }
        if self.max_unflushed_bytes < self.flush_bytes {
            return Err(Error::Config(
                "hybrid store: max_unflushed_bytes must be at least flush_bytes".into(),
            ));
        }
        // Checked before the directory is touched: the memory store would refuse the same
        // later, after a replay that can take seconds.
        if !self.cleanup_interval.is_zero() && tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "hybrid store: background cleanup needs a Tokio runtime: open the store inside one, or set cleanup_interval to zero".into(),
            ));
        }
        if self.compact_factor == 0 {
            return Err(Error::Config(
                "hybrid store: compact_factor must be at least 1".into(),
            ));
        }
        if let Durability::Lazy(interval) = self.durability
            && interval.is_zero()
        {
            return Err(Error::Config(
                "hybrid store: a lazy flush interval must be above zero (use Durability::EveryWrite to flush on every write)".into(),
            ));
        }
        self.open_checked()
    }

    /// Opens the checked configuration.
    fn open_checked(self) -> Result<HybridStore> {
        let config = self;
        let dir = config.dir;
        fsio::create_private_dir(&dir).map_err(HybridError::from)?;
        let lock = fsio::open_lock(&dir.join(LOCK_FILE)).map_err(HybridError::from)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(HybridError::InUse(dir).into()),
            Err(TryLockError::Error(e)) => return Err(HybridError::from(e).into()),
        }
        let journal = Arc::new(Journal::new(config.flush_bytes, config.max_unflushed_bytes));
        let memory = MemoryStore::builder()
            .name(STORE)
            .cleanup_interval(config.cleanup_interval)
            .max_data_len(config.max_data_len)
            .max_sessions(config.max_sessions)
            .observer(Arc::clone(&journal) as _)
            .build()?;
        // Replay is mostly hash-map and allocator work: it is spread over the cores.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let replayed = replay::replay(
            &dir,
            &memory,
            format::max_payload(config.max_data_len),
            threads,
        )
        .map_err(HybridError::from)?;
        let report = replayed.report;
        let segment = segment_path(&dir, replayed.segment);
        let created = !segment.exists();
        let file = fsio::open_segment(&segment, false).map_err(HybridError::from)?;
        if created {
            sync_dir(&dir).map_err(HybridError::from)?;
        }
        let flusher = Flusher::new(
            Arc::clone(&journal),
            memory.clone(),
            dir.clone(),
            config.durability.interval(),
            FlusherStart {
                file,
                segment: replayed.segment,
                segment_len: replayed.segment_len,
                compaction: Compaction {
                    factor: config.compact_factor,
                    min_bytes: config.compact_min_bytes,
                    log_bytes: config.compact_log_bytes,
                    base: replayed.base,
                    base_bytes: replayed.base_bytes,
                    log_since_base: replayed.log_since_base,
                },
            },
        );
        let flusher = std::thread::Builder::new()
            .name("session-hybrid-flush".into())
            .spawn(move || flusher.run())
            .map_err(HybridError::from)?;
        if report.lost_anything() {
            tracing::warn!(dir = %dir.display(), ?report, "session store opened with damaged files; the damage was cut off");
        }
        Ok(HybridStore {
            memory,
            journal,
            durability: config.durability,
            durable_deletions: config.durable_deletions,
            flusher: Mutex::new(Some(flusher)),
            closed: AtomicBool::new(false),
            report,
            dir,
            lock: Mutex::new(Some(lock)),
        })
    }
}
