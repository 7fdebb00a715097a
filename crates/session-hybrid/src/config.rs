//! How a [`HybridStore`](crate::HybridStore) is configured, and what opening one found.

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_core::{Error, Result};
use session_memory::DEFAULT_MAX_DATA_LEN;

use crate::store::HybridStore;

/// Default interval between two lazy flushes of the log: 1 s.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
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
// With `max_data_len` it bounds the size of every entry, so replay never reads a length from
// disk it cannot check first.
pub use session_core::MAX_OWNER_LEN;
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

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

/// Configures and opens a [`HybridStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HybridStoreBuilder {
    pub(crate) dir: PathBuf,
    pub(crate) durability: Durability,
    pub(crate) flush_bytes: usize,
    pub(crate) compact_factor: u32,
    pub(crate) compact_min_bytes: u64,
    pub(crate) compact_log_bytes: u64,
    pub(crate) cleanup_interval: Duration,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) max_sessions: Option<u64>,
    pub(crate) durable_deletions: bool,
    pub(crate) max_unflushed_bytes: usize,
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

    /// How often expired sessions are swept from memory (default 60 s; zero disables the
    /// sweep, see `session_memory::MemoryStoreBuilder::cleanup_interval`). Swept sessions are
    /// journaled like deletions.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// The largest payload accepted, in bytes (default 1 MiB); `None` for no limit.
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
        HybridStore::open_with(self)
    }
}

/// What opening a directory found and did: how much was replayed and how much was dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The number of the snapshot loaded (the first log segment it does not cover), if any.
    pub snapshot: Option<u64>,
    /// Records read from that snapshot.
    pub snapshot_records: u64,
    /// Snapshots that failed their checks and were set aside (renamed to `*.corrupt`).
    pub snapshots_rejected: u64,
    /// Log segments replayed (wholly or up to their first bad entry).
    pub segments_replayed: u64,
    /// Log entries replayed.
    pub entries_applied: u64,
    /// Log bytes cut off: the rest of the segment after the first bad entry, plus every later
    /// segment.
    pub bytes_dropped: u64,
    /// Whole segments removed because they came after a bad entry or a missing segment.
    pub segments_dropped: u64,
    /// Whether the log ended inside an entry (a write cut short by a crash).
    pub torn_tail: bool,
    /// Whether a complete entry failed its checksum or could not be decoded (damage, not a
    /// crash).
    pub corrupt_entry: bool,
    /// Entries not loaded because they are larger than
    /// [`max_data_len`](HybridStoreBuilder::max_data_len) allows (written under a larger
    /// limit): the sessions they set are dropped. Their checksums are verified without reading
    /// them into memory whole.
    pub oversized_dropped: u64,
    /// Sessions live after replay, now in memory.
    pub sessions_loaded: u64,
    /// Sessions found expired on replay and not loaded.
    pub expired_skipped: u64,
}

impl ReplayReport {
    /// Whether anything was dropped: a rejected snapshot, a cut log, removed segments, or
    /// sessions above the size limit.
    pub fn lost_anything(&self) -> bool {
        self.snapshots_rejected > 0
            || self.bytes_dropped > 0
            || self.segments_dropped > 0
            || self.oversized_dropped > 0
    }
}
