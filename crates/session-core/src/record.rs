//! The stored form of a session.

use std::fmt;

use bytes::Bytes;

use crate::id::SessionKey;
use crate::time::Timestamp;

/// What a store keeps for one session: opaque encoded data plus the metadata every backend
/// must preserve exactly.
///
/// The live, typed view of a session is the manager's `Session` handle; a `Record` is what
/// travels between the manager and a store.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The hashed id the record is stored under.
    pub key: SessionKey,
    /// The codec-encoded session values. Stores move these bytes and never look inside.
    pub data: Bytes,
    /// When the session was first created. Kept across saves and `rotate`.
    pub created_at: Timestamp,
    /// The deadline the store enforces: at or after it the record counts as absent.
    pub expires_at: Timestamp,
    /// Bumped by every successful save; a save names the version it loaded.
    pub version: u64,
    /// Who the session belongs to (e.g. a user id), for listing and ending one owner's sessions.
    pub owner: Option<String>,
}

impl Record {
    /// A new record at version 1, created now, with no owner.
    pub fn new(key: SessionKey, data: impl Into<Bytes>, expires_at: Timestamp) -> Self {
        Self {
            key,
            data: data.into(),
            created_at: Timestamp::now(),
            expires_at,
            version: 1,
            owner: None,
        }
    }

    /// Sets the owner, builder style.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

impl fmt::Debug for Record {
    // Session data may hold secrets (CSRF tokens, personal data): print its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("data_len", &self.data.len())
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("version", &self.version)
            .field("owner", &self.owner)
            .finish()
    }
}

/// The longest owner a store built on local files keeps, in bytes (4096): `session-files` and
/// `session-hybrid` refuse a longer one on `create` and `save` with
/// [`Error::TooLarge`](crate::Error::TooLarge). Owners are account ids; the bound is what
/// lets a reader refuse a length read from disk before allocating anything.
pub const MAX_OWNER_LEN: usize = 4096;
