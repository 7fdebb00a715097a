//! The optional bound on how many sessions a store holds, and the error a `create` past it
//! returns.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use session_core::Error;

/// Why a `create` failed: the store already holds its
/// [`max_sessions`](crate::MemoryStoreBuilder::max_sessions). It is the `source` of the
/// [`Error::Unavailable`] the store returns, so callers can tell it from a server that does not
/// answer:
///
/// ```
/// # use session_core::Error;
/// # use session_memory::StoreFull;
/// fn is_full(error: &Error) -> Option<u64> {
///     match error {
///         Error::Unavailable { source, .. } => source.downcast_ref::<StoreFull>().map(|f| f.limit),
///         _ => None,
///     }
/// }
/// ```
///
/// `Unavailable` because it is what it means for a caller: nothing was written, and trying
/// again later may succeed (sessions expire or are deleted); an HTTP service answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreFull {
    /// The configured limit.
    pub limit: u64,
}

impl fmt::Display for StoreFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the store holds its limit of {} sessions; no new session can be created until some expire or are deleted",
            self.limit
        )
    }
}

impl std::error::Error for StoreFull {}

/// The number of records held (live or expired but not yet swept), against the limit.
#[derive(Debug)]
pub(crate) struct Limit {
    max: u64,
    held: AtomicU64,
}

impl Limit {
    pub(crate) fn new(max: u64) -> Self {
        Self {
            max,
            held: AtomicU64::new(0),
        }
    }

    /// Takes a slot for a new record, if one is free.
    pub(crate) fn try_reserve(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a record inserted without a reservation (restored from disk): it may go past the
    /// limit, which then only refuses creates.
    pub(crate) fn added(&self) {
        self.held.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back a slot: a record removed, or a reservation not used.
    pub(crate) fn removed(&self) {
        // Never below zero, even if a bug ever removed more than was counted.
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Forgets every record (the store was emptied).
    pub(crate) fn reset(&self) {
        self.held.store(0, Ordering::Release);
    }

    pub(crate) fn error(&self, store: &'static str) -> Error {
        Error::unavailable(store, StoreFull { limit: self.max })
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}
