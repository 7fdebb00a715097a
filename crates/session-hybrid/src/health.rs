//! What the store tells about its disk: the error of a failing flush or compaction, how much
//! is waiting to be written, and whether writes are being refused for it.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

/// A failed write to the store's directory: what was being done, and what the operating
/// system said. It is the `source` of the errors the store returns for it, and what
/// [`Health`] shows; [`io_error`](Self::io_error) gives the OS error (e.g. to check for
/// `ENOSPC`).
#[derive(Debug, Clone)]
pub struct DiskError {
    op: &'static str,
    error: Arc<io::Error>,
}

impl DiskError {
    pub(crate) fn new(op: &'static str, error: io::Error) -> Self {
        Self {
            op,
            error: Arc::new(error),
        }
    }

    /// What the store was doing: `"write the log"` or `"write a snapshot"`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The operating system's error.
    pub fn io_error(&self) -> &io::Error {
        &self.error
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.error)
    }
}

impl std::error::Error for DiskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// Why a write was refused: changes not yet on disk have reached
/// [`max_unflushed_bytes`](crate::HybridStoreBuilder::max_unflushed_bytes) and writing the log
/// fails. It is the `source` of the `Error::Unavailable` the store returns; its own source is
/// the flush error. Nothing was changed; the call can be retried once the disk works again
/// ([`Health`] tells when).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BacklogFull {
    /// The configured bound, in bytes.
    pub limit: u64,
    /// Bytes waiting to be written when the write was refused.
    pub unflushed: u64,
    /// Why flushes fail, if they do.
    pub flush_error: Option<DiskError>,
}

impl fmt::Display for BacklogFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes of session changes wait to be written, past the bound of {}; writes are refused until the log catches up",
            self.unflushed, self.limit
        )
    }
}

impl std::error::Error for BacklogFull {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.flush_error
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The state of the store's disk, from [`HybridStore::health`](crate::HybridStore::health).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Health {
    /// Why the last flush failed, while flushes fail; `None` once one succeeds. Changes made
    /// meanwhile stay in memory (bounded by `max_unflushed_bytes`) and are retried.
    pub flush_error: Option<DiskError>,
    /// When flushes started failing.
    pub failing_since: Option<SystemTime>,
    /// Flush attempts that failed since the last one that succeeded.
    pub failed_flushes: u64,
    /// Bytes of changes applied in memory and not yet on disk (buffered or being written).
    pub unflushed_bytes: u64,
    /// The bound past which creates, saves, touches and id changes wait for the disk, or are
    /// refused while flushes fail.
    pub max_unflushed_bytes: u64,
    /// Whether the unflushed bytes are at the bound right now.
    pub backlog_full: bool,
    /// Why the last compaction failed, if it did; `None` once one succeeds. The log keeps
    /// growing meanwhile (it is retried), so reopening gets slower.
    pub compaction_error: Option<DiskError>,
    /// Compactions completed since the store opened.
    pub compactions: u64,
}

impl Health {
    /// Whether flushes succeed and the backlog is below its bound.
    pub fn is_healthy(&self) -> bool {
        self.flush_error.is_none() && !self.backlog_full
    }
}
