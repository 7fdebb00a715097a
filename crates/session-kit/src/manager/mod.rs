//! The session manager: lifetimes, rotation, conflict-free commits, events.
//!
//! The manager turns a store of opaque [`Record`]s into sessions with typed values. It knows
//! nothing of HTTP: a framework adapter (`crate::axum`, `crate::actix`, over the shared cookie
//! rules of `crate::cookie`) reads the cookie, asks the manager for a [`Session`] handle, and
//! calls [`Session::commit`] (or, for a 5xx response, [`Session::discard`]) once before the
//! response goes out.

mod session;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use session::{CommitOutcome, Expiry, Session, Status};

use crate::codec::{Codec, MessagePack};
use session_core::Record;
use session_core::SessionStore;
use session_core::Timestamp;
use session_core::{Error, Result};
use session_core::{SessionId, SessionKey};

/// Default absolute lifetime of a session: 24 hours.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Default number of times a commit re-applies its changes after a version conflict.
pub const DEFAULT_CONFLICT_RETRIES: u32 = 32;
/// Most ids of one request tried in turn for a live session (see
/// [`SessionManager::session_for_ids`]); further ones are ignored unread.
pub const MAX_INCOMING_IDS: usize = 4;

/// Something that happened to a session. Events carry the store key, never the id, so they
/// are safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new session was stored.
    Created {
        /// Its key.
        key: SessionKey,
    },
    /// A session's values or owner were saved.
    Updated {
        /// Its key.
        key: SessionKey,
    },
    /// A session moved to a new id, keeping its data.
    Rotated {
        /// The key it had.
        old: SessionKey,
        /// The key it has now.
        new: SessionKey,
    },
    /// A session was ended on purpose (logout, sign out everywhere).
    Destroyed {
        /// Its key.
        key: SessionKey,
    },
    /// A request presented a well-formed id whose session is no longer live: expired by
    /// lifetime or idle timeout, ended, or never issued by this server.
    Expired {
        /// The key the id hashes to.
        key: SessionKey,
    },
}

/// Receives [`SessionEvent`]s. Called inline on the request path: keep it quick.
pub trait SessionListener: Send + Sync + 'static {
    /// Called once per event.
    fn on_event(&self, event: &SessionEvent);
}

impl<F: Fn(&SessionEvent) + Send + Sync + 'static> SessionListener for F {
    fn on_event(&self, event: &SessionEvent) {
        self(event)
    }
}

pub(crate) struct Config<C> {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) codec: C,
    pub(crate) lifetime: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) rotation_threshold: Option<Duration>,
    pub(crate) max_encoded_len: Option<usize>,
    pub(crate) listener: Option<Arc<dyn SessionListener>>,
    pub(crate) conflict_retries: u32,
    pub(crate) max_sessions_per_owner: Option<usize>,
}

impl<C: Codec> Config<C> {
    /// The store as `&dyn`: calling through the `Arc` would go through the forwarding impl
    /// and box a second future on every call.
    pub(crate) fn store(&self) -> &dyn SessionStore {
        &*self.store
    }

    /// The deadline a session created at `created_at` has when last used at `now`: the
    /// earlier of its absolute end and its idle end.
    pub(crate) fn deadline(&self, created_at: Timestamp, now: Timestamp) -> Timestamp {
        let absolute = created_at + self.lifetime;
        match self.idle_timeout {
            Some(idle) => absolute.min(now + idle),
            None => absolute,
        }
    }

    /// How far the idle deadline must move before a request that changed nothing writes a
    /// touch: a tenth of the idle timeout, so an active session costs one write per tenth.
    pub(crate) fn touch_granularity(&self) -> Option<Duration> {
        self.idle_timeout.map(|idle| idle / 10)
    }

    pub(crate) fn emit(&self, event: SessionEvent) {
        if let Some(listener) = &self.listener {
            listener.on_event(&event);
        }
    }

    /// Deletes each key and reports each live session removed as `Destroyed`. One call per key,
    /// because `delete_many` says how many were removed but not which. Stops at the first
    /// store error; what was removed before it stays removed (and reported).
    pub(crate) async fn end_sessions(&self, keys: &[SessionKey]) -> Result<u64> {
        let mut ended = 0;
        for &key in keys {
            if self.store().delete(&key).await? {
                ended += 1;
                self.emit(SessionEvent::Destroyed { key });
            }
        }
        Ok(ended)
    }

    /// Ends the oldest sessions of `owner` other than `current` so that, with `current`, the
    /// owner has at most `max_sessions_per_owner`.
    pub(crate) async fn enforce_owner_cap(
        &self,
        owner: &str,
        current: Option<SessionKey>,
    ) -> Result<()> {
        let Some(cap) = self.max_sessions_per_owner else {
            return Ok(());
        };
        let mut others: Vec<Record> = self
            .store()
            .list_by_owner(owner)
            .await?
            .into_iter()
            .filter(|r| Some(r.key) != current)
            .collect();
        // The session being committed counts as one of the `cap`.
        let excess = (others.len() + 1).saturating_sub(cap);
        if excess == 0 {
            return Ok(());
        }
        others.sort_unstable_by_key(|r| (r.created_at, r.key));
        let oldest: Vec<SessionKey> = others[..excess].iter().map(|r| r.key).collect();
        self.end_sessions(&oldest).await.map(drop)
    }
}

/// Hands out [`Session`] handles over one store. Cheap to clone.
pub struct SessionManager<C: Codec = MessagePack> {
    pub(crate) config: Arc<Config<C>>,
}

impl<C: Codec> Clone for SessionManager<C> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<C: Codec> fmt::Debug for SessionManager<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("SessionManager")
            .field("store", &c.store)
            .field("codec", &c.codec)
            .field("lifetime", &c.lifetime)
            .field("idle_timeout", &c.idle_timeout)
            .field("rotation_threshold", &c.rotation_threshold)
            .field("max_encoded_len", &c.max_encoded_len)
            .field("conflict_retries", &c.conflict_retries)
            .field("max_sessions_per_owner", &c.max_sessions_per_owner)
            .finish_non_exhaustive()
    }
}

impl SessionManager<MessagePack> {
    /// Starts configuring a manager over `store`, with the MessagePack codec.
    ///
    /// The store is taken by value (`MemoryStore::new()`) or already shared: an
    /// `Arc<dyn SessionStore>` (what [`store_from_url`](crate::store_from_url) returns) or a
    /// `Box<dyn SessionStore>` is used as it is, without a second layer of indirection. An
    /// `Arc<S>` of a concrete store works too (through the forwarding impl, one more pointer
    /// and boxed future per call); coerce it to `Arc<dyn SessionStore>` first to avoid that.
    pub fn builder(store: impl SessionStore) -> SessionManagerBuilder<MessagePack> {
        SessionManagerBuilder::new(session_core::shared_store(store), MessagePack)
    }
}

impl<C: Codec> SessionManager<C> {
    /// A lazy handle for a request that presented `incoming` (the raw cookie value, if any).
    ///
    /// Nothing is read from the store until a value is asked for. A value that is not a
    /// well-formed id is dropped here: it never reaches the store and is never adopted.
    pub fn session(&self, incoming: Option<&str>) -> Session<C> {
        self.session_for_ids(incoming.and_then(|raw| raw.parse::<SessionId>().ok()))
    }

    /// A lazy handle for an already-parsed id.
    pub fn session_for(&self, id: Option<SessionId>) -> Session<C> {
        self.session_for_ids(id)
    }

    /// A lazy handle for a request that presented several ids for the session cookie (a
    /// cookie tossed from a subdomain, or a stale one with a longer `Path`, next to the real
    /// one). They are tried in order when the session is first needed, and the first live
    /// one is the session; repeats are skipped, and only the first [`MAX_INCOMING_IDS`] are
    /// looked at.
    pub fn session_for_ids(&self, ids: impl IntoIterator<Item = SessionId>) -> Session<C> {
        let mut incoming = session::IncomingIds::new();
        for id in ids {
            if incoming.len() == MAX_INCOMING_IDS {
                break;
            }
            if !incoming.contains(&id) {
                incoming.push(id);
            }
        }
        Session::new(self.clone(), incoming)
    }

    /// The store behind this manager.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.config.store
    }

    /// The codec values are encoded with.
    pub fn codec(&self) -> &C {
        &self.config.codec
    }

    /// Ends the session `id` at once. Returns whether it was live.
    pub async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let key = id.key();
        let removed = self.config.store().delete(&key).await?;
        if removed {
            self.config.emit(SessionEvent::Destroyed { key });
        }
        Ok(removed)
    }

    /// Ends every listed session (keys as [`sessions_of`](Self::sessions_of) lists them);
    /// returns how many were live.
    ///
    /// Each one removed is reported as [`SessionEvent::Destroyed`], keys that were not live
    /// are not. That takes one store call per key (the store's `delete_many` says how many it
    /// removed, not which); on a store error the sessions already ended stay ended, and
    /// calling again finishes the job.
    pub async fn destroy_many(&self, keys: &[SessionKey]) -> Result<u64> {
        self.config.end_sessions(keys).await
    }

    /// Ends every live session of `owner` ("sign out everywhere"); returns how many.
    ///
    /// One atomic `delete_by_owner`, so a session created while the listing ran is ended too.
    /// The sessions listed just before it are reported as [`SessionEvent::Destroyed`] (a
    /// listed one that expired or was ended elsewhere in between is reported as well; one
    /// created in between is ended and counted but not reported). To keep the current
    /// session, use [`Session::destroy_others`].
    ///
    /// # Errors
    /// A store error: whether the sessions were ended is then unknown, and nothing is
    /// reported. Calling again is safe.
    pub async fn destroy_owner(&self, owner: &str) -> Result<u64> {
        let store = self.config.store();
        let listed = store.list_by_owner(owner).await?;
        let ended = store.delete_by_owner(owner).await?;
        for record in listed {
            self.config
                .emit(SessionEvent::Destroyed { key: record.key });
        }
        Ok(ended)
    }

    /// The live sessions of `owner` (their records: creation time, expiry, size), e.g. for a
    /// "your devices" page.
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<Record>> {
        self.config.store().list_by_owner(owner).await
    }
}

/// Configures a [`SessionManager`]. Invalid settings are refused by [`build`](Self::build).
#[must_use]
pub struct SessionManagerBuilder<C: Codec> {
    store: Arc<dyn SessionStore>,
    codec: C,
    lifetime: Duration,
    idle_timeout: Option<Duration>,
    rotation_threshold: Option<Duration>,
    max_encoded_len: Option<usize>,
    listener: Option<Arc<dyn SessionListener>>,
    conflict_retries: u32,
    max_sessions_per_owner: Option<usize>,
}

impl<C: Codec> fmt::Debug for SessionManagerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManagerBuilder")
            .field("store", &self.store)
            .field("lifetime", &self.lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> SessionManagerBuilder<C> {
    fn new(store: Arc<dyn SessionStore>, codec: C) -> Self {
        Self {
            store,
            codec,
            lifetime: DEFAULT_LIFETIME,
            idle_timeout: None,
            rotation_threshold: None,
            max_encoded_len: None,
            listener: None,
            conflict_retries: DEFAULT_CONFLICT_RETRIES,
            max_sessions_per_owner: None,
        }
    }

    /// Uses another codec (e.g. [`Json`](crate::Json)).
    pub fn codec<D: Codec>(self, codec: D) -> SessionManagerBuilder<D> {
        SessionManagerBuilder {
            store: self.store,
            codec,
            lifetime: self.lifetime,
            idle_timeout: self.idle_timeout,
            rotation_threshold: self.rotation_threshold,
            max_encoded_len: self.max_encoded_len,
            listener: self.listener,
            conflict_retries: self.conflict_retries,
            max_sessions_per_owner: self.max_sessions_per_owner,
        }
    }

    /// Absolute lifetime: a session ends this long after it was created, however active
    /// (default 24 h). Never extended, not even by rotation.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Idle timeout: a session also ends this long after its last use. Applies together with
    /// the lifetime; whichever comes first ends the session.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Flags a session ([`Status::ShouldRotate`]) when less than `threshold` of its absolute
    /// lifetime is left, so the application can re-authenticate or renew it.
    pub fn rotation_threshold(mut self, threshold: Duration) -> Self {
        self.rotation_threshold = Some(threshold);
        self
    }

    /// Largest encoded session accepted (default: the store's limit). A commit above it fails
    /// with [`Error::TooLarge`] before any I/O.
    pub fn max_encoded_len(mut self, limit: usize) -> Self {
        self.max_encoded_len = Some(limit);
        self
    }

    /// Receives every [`SessionEvent`].
    pub fn listener(mut self, listener: impl SessionListener) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// How many times a commit reloads and re-applies its changes after a concurrent save
    /// before giving up with [`Error::Conflict`] (default 32).
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// Caps the live sessions one owner may have (default: no cap). When a commit sets a
    /// session's owner ([`Session::set_owner`]) and that owner would then have more than `max`
    /// sessions, the oldest of the others (by creation time) are ended first, reported as
    /// [`SessionEvent::Destroyed`]; the session being committed is never among them.
    ///
    /// The check costs one `list_by_owner` per commit that sets an owner, plus one delete per
    /// session ended. Concurrent logins of one owner each enforce the cap on what they list,
    /// so for a moment the owner can hold a session or two more than `max`.
    pub fn max_sessions_per_owner(mut self, max: usize) -> Self {
        self.max_sessions_per_owner = Some(max);
        self
    }

    /// Checks the settings and builds the manager.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero lifetime or idle timeout, a rotation threshold not below
    /// the lifetime, a size limit above the store's, or a cap of zero sessions per owner.
    pub fn build(self) -> Result<SessionManager<C>> {
        if self.max_sessions_per_owner == Some(0) {
            return Err(Error::Config(
                "max_sessions_per_owner must allow at least one session".into(),
            ));
        }
        if self.lifetime.is_zero() {
            return Err(Error::Config(
                "the session lifetime must be longer than zero".into(),
            ));
        }
        if self.idle_timeout.is_some_and(|i| i.is_zero()) {
            return Err(Error::Config(
                "the idle timeout must be longer than zero".into(),
            ));
        }
        if self.rotation_threshold.is_some_and(|t| t >= self.lifetime) {
            return Err(Error::Config(
                "the rotation threshold must be shorter than the lifetime".into(),
            ));
        }
        let store_limit = self.store.max_data_len();
        let max_encoded_len = match (self.max_encoded_len, store_limit) {
            (Some(mine), Some(store)) if mine > store => {
                return Err(Error::Config(
                    format!("max_encoded_len {mine} is above the store's limit of {store} bytes")
                        .into(),
                ));
            }
            (Some(mine), _) => Some(mine),
            (None, store) => store,
        };
        Ok(SessionManager {
            config: Arc::new(Config {
                store: self.store,
                codec: self.codec,
                lifetime: self.lifetime,
                idle_timeout: self.idle_timeout,
                rotation_threshold: self.rotation_threshold,
                max_encoded_len,
                listener: self.listener,
                conflict_retries: self.conflict_retries,
                max_sessions_per_owner: self.max_sessions_per_owner,
            }),
        })
    }
}
