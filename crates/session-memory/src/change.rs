//! What the store reports of each change it applies, and the observer it reports to.

use std::fmt;

use session_core::{Bytes, SessionKey, Timestamp};

/// A change to the store, reported to a [`ChangeObserver`] while the record's shard is still
/// locked, so the observed order of changes to one key is the order they were applied in.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Change<'a> {
    /// A record was created or saved; this is its whole new state.
    Put {
        /// The record's key.
        key: &'a SessionKey,
        /// Its data.
        data: &'a Bytes,
        /// When it was created.
        created_at: Timestamp,
        /// Its new deadline.
        expires_at: Timestamp,
        /// Its new version.
        version: u64,
        /// Its owner.
        owner: Option<&'a str>,
    },
    /// A record got a new deadline and nothing else.
    Touch {
        /// The record's key.
        key: &'a SessionKey,
        /// The new deadline.
        expires_at: Timestamp,
        /// The touched record's version, unchanged by the touch.
        version: u64,
        /// The touched record's creation time, unchanged by the touch. With `version` it lets a
        /// journal replay apply the touch only to the record it was made on.
        created_at: Timestamp,
    },
    /// A record was removed (deleted, swept, or replaced after expiring).
    Delete {
        /// The removed key.
        key: &'a SessionKey,
    },
    /// A record moved from one key to another, unchanged. The moved record's whole state comes
    /// along, so a journal can replay the move without relying on what it holds for `old`.
    Move {
        /// Where it was.
        old: &'a SessionKey,
        /// Where it is now.
        new: &'a SessionKey,
        /// Its data.
        data: &'a Bytes,
        /// When it was created.
        created_at: Timestamp,
        /// Its deadline.
        expires_at: Timestamp,
        /// Its version.
        version: u64,
        /// Its owner.
        owner: Option<&'a str>,
    },
}

/// Sees every change to a [`MemoryStore`](crate::MemoryStore) in the order it was applied per
/// key; the hook a persistence layer (`session-hybrid`) uses to journal the store.
///
/// Called with a shard lock held: keep it short and never call back into the store.
pub trait ChangeObserver: fmt::Debug + Send + Sync + 'static {
    /// Reports one applied change.
    fn observe(&self, change: Change<'_>);
}
