//! The per-request session handle.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{SessionEvent, SessionManager};
use crate::codec::{Codec, MessagePack, Values};
use session_core::Record;
use session_core::Timestamp;
use session_core::{Error, Result};
use session_core::{SessionId, SessionKey};

/// The key the session's [`Expiry`] is stored under, with its values: no key a caller's
/// `insert` can collide with in practice (it starts with NUL), never listed by `keys`.
const EXPIRY_KEY: &str = "\u{0}session_kit.expiry";

/// How long the session cookie lives in the browser, chosen per session with
/// [`Session::set_expiry`] (a "remember me" box), stored with the session so later requests
/// keep it. Either way the server ends the session at its deadline (the manager's absolute
/// lifetime and idle timeout): a cookie never outlives the absolute cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Expiry {
    /// A browser-session cookie (no `Max-Age`, no `Expires`): the browser drops it when it
    /// closes.
    BrowserSession,
    /// A persistent cookie carrying the session's absolute deadline: it survives browser
    /// restarts until the session ends.
    Persistent,
}

/// The ids a request came with: nearly always one, held without an allocation.
pub(crate) type IncomingIds = SmallVec<[SessionId; 1]>;

/// An `update` closure, given the value's key (for its errors) and current bytes.
type UpdateFn = Arc<dyn Fn(&str, Option<&[u8]>) -> Result<Vec<u8>> + Send + Sync>;

/// One change a request made, kept so it can be re-applied on top of a concurrent writer's
/// values after a version conflict.
#[derive(Clone)]
enum Op {
    Insert(String, Vec<u8>),
    Remove(String),
    Clear,
    Update(String, UpdateFn),
    SetOwner(Option<String>),
    SetExpiry(Option<Expiry>),
}

#[derive(Clone, Copy)]
struct Stored {
    key: SessionKey,
    created_at: Timestamp,
    expires_at: Timestamp,
    version: u64,
    /// The expiry the stored record holds.
    expiry: Option<Expiry>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    id: Option<SessionId>,
    /// An id this server generated for a session not stored yet (`rotate` before the first
    /// commit): the only id besides a freshly drawn one that a new session may be created under.
    unsaved_id: Option<SessionId>,
    stored: Option<Stored>,
    values: Values,
    owner: Option<String>,
    expiry: Option<Expiry>,
    /// Nearly every request makes one change or none, so one is held without an allocation.
    ops: SmallVec<[Op; 1]>,
    modified: bool,
    id_changed: bool,
    /// The session the request came with is gone (destroyed here, expired, or unknown): the
    /// client's cookie should be removed unless a new session replaces it.
    ended: bool,
    /// The keys a `destroy` or `rotate` is deleting or moving while it awaits the store.
    /// Found still set by the next caller, it means that call was dropped half-way.
    in_flight: Vec<SessionKey>,
    /// A `destroy` or `rotate` failed or was dropped, so whether the session is still
    /// stored, and under which key, is unknown. Nothing is written any more and the cookie is
    /// removed; `doubt` holds the keys a retried `destroy` deletes.
    poisoned: bool,
    doubt: Vec<SessionKey>,
}

/// Decodes the value stored under `key` as `T`. A value the codec reads well-formed but not as
/// a `T` is [`Error::WrongType`]; bytes that are not a value at all stay [`Error::Corrupt`].
fn decode_value<T: DeserializeOwned, C: Codec>(codec: &C, key: &str, bytes: &[u8]) -> Result<T> {
    match codec.decode(bytes) {
        Err(Error::Corrupt(source)) if codec.decode::<IgnoredAny>(bytes).is_ok() => {
            Err(Error::WrongType {
                key: key.to_owned(),
                expected: std::any::type_name::<T>(),
                source,
            })
        }
        other => other,
    }
}

/// Sets `key` to `value`, reusing the key's `String` when it is there already.
fn set(values: &mut Values, key: &str, value: Vec<u8>) {
    match values.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            values.insert(key.to_owned(), value);
        }
    }
}

/// What a session holds besides its values, replayed with them after a conflict.
#[derive(Default)]
struct Props {
    owner: Option<String>,
    expiry: Option<Expiry>,
}

impl State {
    fn apply(values: &mut Values, props: &mut Props, op: &Op) -> Result<()> {
        match op {
            Op::Insert(k, v) => set(values, k, v.clone()),
            Op::Remove(k) => {
                values.remove(k);
            }
            Op::Clear => values.clear(),
            Op::Update(k, f) => {
                let new = f(k, values.get(k).map(Vec::as_slice))?;
                set(values, k, new);
            }
            Op::SetOwner(o) => props.owner.clone_from(o),
            Op::SetExpiry(e) => props.expiry = *e,
        }
        Ok(())
    }

    fn record(&mut self, op: Op) -> Result<()> {
        let mut props = self.take_props();
        let applied = Self::apply(&mut self.values, &mut props, &op);
        self.put_props(props);
        applied?;
        self.ops.push(op);
        self.modified = true;
        Ok(())
    }

    /// Forgets the session after a store call that may have deleted or moved it failed: from
    /// here on the handle holds nothing, writes nothing and removes the cookie.
    fn poison(&mut self) {
        let mut doubt = std::mem::take(&mut self.doubt);
        for key in std::mem::take(&mut self.in_flight) {
            if !doubt.contains(&key) {
                doubt.push(key);
            }
        }
        *self = State {
            loaded: true,
            poisoned: true,
            doubt,
            ..State::default()
        };
    }

    /// Forgets the session's contents, keeping this request's changes to replay on a fresh one.
    fn lose_session(&mut self) -> Result<()> {
        self.stored = None;
        self.id = None;
        self.unsaved_id = None;
        self.values.clear();
        let mut props = Props::default();
        for op in &self.ops {
            Self::apply(&mut self.values, &mut props, op)?;
        }
        self.put_props(props);
        Ok(())
    }

    fn take_props(&mut self) -> Props {
        Props {
            owner: self.owner.take(),
            expiry: self.expiry.take(),
        }
    }

    fn put_props(&mut self, props: Props) {
        self.owner = props.owner;
        self.expiry = props.expiry;
    }

    /// The values as stored: with the expiry, if the session has one.
    fn encode<C: Codec>(&mut self, codec: &C) -> Result<Vec<u8>> {
        let Some(expiry) = self.expiry else {
            return codec.encode_map(&self.values);
        };
        self.values
            .insert(EXPIRY_KEY.to_owned(), codec.encode(&expiry)?);
        let data = codec.encode_map(&self.values);
        self.values.remove(EXPIRY_KEY);
        data
    }
}

/// Takes the stored expiry out of a session's decoded values. One that does not decode (a
/// newer version's variant) is dropped: the cookie falls back to the adapter's default.
fn take_expiry<C: Codec>(codec: &C, values: &mut Values) -> Option<Expiry> {
    let bytes = values.remove(EXPIRY_KEY)?;
    codec.decode(&bytes).ok()
}

/// Where a session stands in this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Nothing changed; committing writes nothing (at most an idle-timeout touch).
    Unchanged,
    /// Values, owner or id changed; committing will write.
    Changed,
    /// Unchanged, but less than the rotation threshold of its lifetime is left.
    ShouldRotate,
    /// Destroyed in this request (and not replaced by new values), or a `destroy` or
    /// `rotate` failed, after which nothing is saved.
    Destroyed,
}

/// What a commit asks of the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOutcome {
    /// Send nothing: the client's cookie (if any) is still right.
    Unchanged,
    /// Send a cookie carrying `id` (the id is new or rotated, or the session's expiry
    /// changed), valid until `expires_at`.
    SetCookie {
        /// The id to put in the cookie.
        id: SessionId,
        /// The session's absolute deadline (the idle timeout is enforced by the server).
        expires_at: Timestamp,
        /// The session's own choice of cookie lifetime; `None` leaves it to the adapter's
        /// default (`persistent`).
        expiry: Option<Expiry>,
    },
    /// Send a removal cookie: the session the client holds has ended.
    RemoveCookie,
}

struct Inner<C: Codec> {
    manager: SessionManager<C>,
    /// The well-formed ids the request came with, in order, at most
    /// [`MAX_INCOMING_IDS`](super::MAX_INCOMING_IDS).
    incoming: IncomingIds,
    /// Which of `incoming` was found live.
    live: OnceLock<usize>,
    /// Whether anything read or changed the session, so the response may depend on the cookie.
    used: AtomicBool,
    state: tokio::sync::Mutex<State>,
}

/// A request's view of its session: typed values, lazily loaded, committed once.
///
/// Clones share one state, so concurrent handlers of one request see each other's changes.
/// Nothing is read from the store until a method needs the session's contents, and a request
/// that changes nothing writes nothing.
///
/// # What a failure leaves behind
///
/// - **A failed [`commit`](Self::commit)** (a store error, [`Error::TooLarge`]): none of this
///   request's changes are saved; the stored session is as it was before the request, or as a
///   concurrent writer left it. The layer answers with its error handler's status and sends
///   no cookie, so the client keeps the one it has.
/// - **A failed or cancelled [`destroy`](Self::destroy)** (the store erred, maybe after
///   applying the delete, or the future was dropped): the handle is poisoned. It holds no
///   values, and its commit writes nothing and removes the cookie, so the session never comes
///   back under the client's id and is never copied under a new one. If the delete did not
///   reach the store, the record stays there, unreachable through this client's cookie, until
///   its deadline; calling `destroy` again retries it.
/// - **A failed or cancelled [`rotate`](Self::rotate)**: the same, as the session may
///   now be under its old key or its new one. Nothing the request did afterwards (the login)
///   is saved; `destroy` deletes both keys.
/// - **A response with a 5xx status** (through the layer): [`discard`](Self::discard) instead
///   of commit, so nothing the request changed is saved (unless the layer is built with
///   `commit_on_server_error`). `destroy` and `rotate` acted at once and stand: the
///   removal or the rotated id's cookie is still sent.
pub struct Session<C: Codec = MessagePack> {
    inner: Arc<Inner<C>>,
}

impl<C: Codec> Clone for Session<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Codec> fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("incoming", &self.inner.incoming)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Session<C> {
    pub(crate) fn new(manager: SessionManager<C>, incoming: IncomingIds) -> Self {
        Self {
            inner: Arc::new(Inner {
                manager,
                incoming,
                live: OnceLock::new(),
                used: AtomicBool::new(false),
                state: tokio::sync::Mutex::new(State::default()),
            }),
        }
    }

    /// The id the request's session was found under; before it is loaded, the first
    /// well-formed id the request came with (not yet known to be live). Prints masked.
    pub fn incoming_id(&self) -> Option<&SessionId> {
        let inner = &self.inner;
        match inner.live.get() {
            Some(&i) => inner.incoming.get(i),
            None => inner.incoming.first(),
        }
    }

    /// Whether anything in this request read or changed the session, so that the response may
    /// depend on the request's cookie (the layer then marks it `Vary: Cookie`).
    pub fn was_used(&self) -> bool {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The state, after turning an interrupted `destroy` or `rotate` into a poisoned handle.
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, State> {
        let mut st = self.inner.state.lock().await;
        if !st.in_flight.is_empty() {
            st.poison();
        }
        st
    }

    async fn loaded(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        self.inner.used.store(true, Ordering::Relaxed);
        let mut st = self.lock().await;
        if !st.loaded {
            self.load_into(&mut st).await?;
            st.loaded = true;
        }
        Ok(st)
    }

    /// Loads the first of the request's ids that names a live session.
    async fn load_into(&self, st: &mut State) -> Result<()> {
        for (i, id) in self.inner.incoming.iter().enumerate() {
            if self.load_live(st, id).await? {
                let _ = self.inner.live.set(i);
                return Ok(());
            }
        }
        st.ended = !self.inner.incoming.is_empty();
        Ok(())
    }

    /// Fills `st` from the session stored under `id` and returns true, or returns false if
    /// there is no live, readable session under it.
    async fn load_live(&self, st: &mut State, id: &SessionId) -> Result<bool> {
        let config = &self.inner.manager.config;
        let key = id.key();
        let Some(record) = config.store().load(&key).await? else {
            config.emit(SessionEvent::Expired { key });
            return Ok(false);
        };
        let now = Timestamp::now();
        // A lifetime shortened by configuration applies to sessions stored before the change.
        if record.created_at + config.lifetime <= now {
            let _ = config.store().delete(&key).await;
            config.emit(SessionEvent::Expired { key });
            return Ok(false);
        }
        match config.codec.decode_map(&record.data) {
            Ok(mut values) => {
                let expiry = take_expiry(&config.codec, &mut values);
                st.values = values;
                st.owner = record.owner;
                st.expiry = expiry;
                st.id = Some(id.clone());
                st.stored = Some(Stored {
                    key,
                    created_at: record.created_at,
                    expires_at: record.expires_at,
                    version: record.version,
                    expiry,
                });
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(session = %id, %error, "session data failed to decode; treating it as corrupt and starting afresh");
                let _ = config.store().delete(&key).await;
                Ok(false)
            }
        }
    }

    /// The value under `key`, decoded as `T`.
    ///
    /// # Errors
    /// Store errors while loading; [`Error::WrongType`] if the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let st = self.loaded().await?;
        let codec = &self.inner.manager.config.codec;
        st.values
            .get(key)
            .map(|bytes| decode_value(codec, key, bytes))
            .transpose()
    }

    /// The keys of every value, sorted.
    pub async fn keys(&self) -> Result<Vec<String>> {
        Ok(self.loaded().await?.values.keys().cloned().collect())
    }

    /// Sets `key` to `value`.
    pub async fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = self.inner.manager.config.codec.encode(value)?;
        let mut st = self.loaded().await?;
        st.record(Op::Insert(key.to_owned(), bytes))
    }

    /// Removes `key` and returns the value it had, decoded as `T` (`None` if there was none):
    /// a flash message is read and cleared in one call. To remove a value without reading it,
    /// ask for [`serde::de::IgnoredAny`].
    ///
    /// # Errors
    /// Store errors while loading; [`Error::WrongType`] if the value is not a `T`, and then
    /// it is not removed.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let mut st = self.loaded().await?;
        let Some(bytes) = st.values.get(key) else {
            return Ok(None);
        };
        let value = decode_value(&self.inner.manager.config.codec, key, bytes)?;
        st.record(Op::Remove(key.to_owned()))?;
        Ok(Some(value))
    }

    /// Removes every value (the session itself, its id and owner stay).
    pub async fn clear(&self) -> Result<()> {
        let mut st = self.loaded().await?;
        st.record(Op::Clear)
    }

    /// Read-modify-write of one value: `f` gets the current value (or `None`) and returns the
    /// new one, which is also returned.
    ///
    /// If a concurrent request saves this session first, the commit re-runs `f` on that
    /// request's value instead of overwriting it, so increments and appends are never lost.
    /// `f` may therefore run more than once: keep it free of side effects.
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let codec = self.inner.manager.config.codec.clone();
        let run = move |name: &str, old: Option<&[u8]>| -> Result<(T, Vec<u8>)> {
            let old = old.map(|b| decode_value(&codec, name, b)).transpose()?;
            let new = f(old);
            let bytes = codec.encode(&new)?;
            Ok((new, bytes))
        };
        let mut st = self.loaded().await?;
        let (value, bytes) = run(key, st.values.get(key).map(Vec::as_slice))?;
        set(&mut st.values, key, bytes);
        st.ops.push(Op::Update(
            key.to_owned(),
            Arc::new(move |name, old| run(name, old).map(|(_, b)| b)),
        ));
        st.modified = true;
        Ok(value)
    }

    /// Sets (or with `None`, clears) the session's owner, e.g. the signed-in user's id, for
    /// [`SessionManager::destroy_owner`] and [`SessionManager::sessions_of`].
    pub async fn set_owner(&self, owner: Option<String>) -> Result<()> {
        let mut st = self.loaded().await?;
        st.record(Op::SetOwner(owner))
    }

    /// The session's owner.
    pub async fn owner(&self) -> Result<Option<String>> {
        Ok(self.loaded().await?.owner.clone())
    }

    /// Chooses how long this session's cookie lives in the browser ("remember me"):
    /// [`Expiry::Persistent`] until the session's absolute deadline, or
    /// [`Expiry::BrowserSession`] until the browser closes; `None` goes back to the
    /// adapter's default (its `persistent` setting).
    ///
    /// Saved with the session, so later requests keep it, and it moves with the session on
    /// [`rotate`](Self::rotate). A change re-sends the cookie with the same id. It never
    /// extends the session: the server ends it at its deadline either way.
    pub async fn set_expiry(&self, expiry: Option<Expiry>) -> Result<()> {
        let mut st = self.loaded().await?;
        st.record(Op::SetExpiry(expiry))
    }

    /// The session's own cookie lifetime, as [`set_expiry`](Self::set_expiry) chose it.
    pub async fn expiry(&self) -> Result<Option<Expiry>> {
        Ok(self.loaded().await?.expiry)
    }

    /// The session's current id (`None` before a new session's first commit). Prints masked.
    pub async fn id(&self) -> Result<Option<SessionId>> {
        Ok(self.loaded().await?.id.clone())
    }

    /// When the session ends if nothing else happens: the stored deadline, or for a session
    /// not stored yet, the one it will get.
    pub async fn expires_at(&self) -> Result<Option<Timestamp>> {
        let st = self.loaded().await?;
        let config = &self.inner.manager.config;
        Ok(match &st.stored {
            Some(s) => Some(s.expires_at),
            None if st.modified => Some(config.deadline(Timestamp::now(), Timestamp::now())),
            None => None,
        })
    }

    /// When the session was created, if it is stored.
    pub async fn created_at(&self) -> Result<Option<Timestamp>> {
        Ok(self.loaded().await?.stored.map(|s| s.created_at))
    }

    /// Where the session stands in this request.
    pub async fn status(&self) -> Result<Status> {
        let st = self.loaded().await?;
        let config = &self.inner.manager.config;
        if st.poisoned {
            return Ok(Status::Destroyed);
        }
        if st.modified || st.id_changed {
            return Ok(Status::Changed);
        }
        if st.ended && st.stored.is_none() && !self.inner.incoming.is_empty() {
            return Ok(Status::Destroyed);
        }
        if let (Some(threshold), Some(stored)) = (config.rotation_threshold, &st.stored) {
            let end = stored.created_at + config.lifetime;
            if Timestamp::now().until(end) < threshold {
                return Ok(Status::ShouldRotate);
            }
        }
        Ok(Status::Unchanged)
    }

    /// Gives the session a new id at once, keeping its data, owner and absolute deadline; the
    /// old id stops working immediately. Call it on every privilege change (login) to defeat
    /// session fixation.
    ///
    /// # Errors
    /// A store error from moving the session. Whether the move happened is then unknown, so
    /// the handle is poisoned, as after a failed [`destroy`](Self::destroy): this request
    /// saves nothing (the login does not take effect) and the cookie is removed. The same holds
    /// if this future is dropped before it finishes.
    pub async fn rotate(&self) -> Result<()> {
        let mut st = self.loaded().await?;
        let config = Arc::clone(&self.inner.manager.config);
        let mut new_id = SessionId::generate();
        if let Some(stored) = st.stored {
            let mut attempts = 0;
            loop {
                st.in_flight = vec![stored.key, new_id.key()];
                let moved = config.store().rotate(&stored.key, &new_id.key()).await;
                match moved {
                    Ok(()) => {
                        st.in_flight.clear();
                        config.emit(SessionEvent::Rotated {
                            old: stored.key,
                            new: new_id.key(),
                        });
                        st.stored = Some(Stored {
                            key: new_id.key(),
                            ..stored
                        });
                        break;
                    }
                    // The new key is taken, so nothing moved: try another.
                    Err(Error::AlreadyExists) if attempts < 3 => {
                        st.in_flight.clear();
                        attempts += 1;
                        new_id = SessionId::generate();
                    }
                    // Ended concurrently (logout elsewhere): what remains is a fresh session
                    // holding only this request's changes, never the old one's data.
                    Err(Error::NotFound) => {
                        st.in_flight.clear();
                        st.lose_session()?;
                        break;
                    }
                    Err(e) => {
                        st.poison();
                        return Err(e);
                    }
                }
            }
        }
        if st.stored.is_none() {
            st.unsaved_id = Some(new_id.clone());
        }
        st.id = Some(new_id);
        st.id_changed = true;
        Ok(())
    }

    /// Ends the session at once: its record is deleted and the client's cookie will be
    /// removed. Values set afterwards in this request start a fresh session with a new id.
    ///
    /// A session not read yet is not loaded first: every id the request presented is deleted.
    ///
    /// # Errors
    /// A store error from the delete. The handle is then poisoned, and stays so if this future
    /// is dropped before it finishes: it holds no values, [`commit`](Self::commit) writes
    /// nothing (no fresh session under any id, no copy of the old one) and removes the cookie,
    /// and the record is left as the store left it, deleted or not. Calling `destroy` again
    /// retries the delete; once it succeeds the handle works normally again.
    pub async fn destroy(&self) -> Result<()> {
        self.inner.used.store(true, Ordering::Relaxed);
        let mut st = self.lock().await;
        let config = Arc::clone(&self.inner.manager.config);
        let keys: Vec<SessionKey> = if st.loaded {
            st.doubt
                .iter()
                .copied()
                .chain(st.stored.map(|s| s.key))
                .collect()
        } else {
            self.inner.incoming.iter().map(SessionId::key).collect()
        };
        let had_session = st.id.is_some() || !self.inner.incoming.is_empty();
        // Until the store confirms every delete, the stored key is kept here: a failed or
        // dropped delete must leave a handle that writes nothing, not one that still holds the
        // client's id without a stored record (which a commit would create afresh).
        st.in_flight.clone_from(&keys);
        for key in keys {
            match config.store().delete(&key).await {
                Ok(true) => config.emit(SessionEvent::Destroyed { key }),
                Ok(false) => {}
                Err(e) => {
                    st.poison();
                    return Err(e);
                }
            }
        }
        *st = State {
            loaded: true,
            ended: had_session,
            ..State::default()
        };
        Ok(())
    }

    /// Ends every other live session of this session's owner ("sign out everywhere else"),
    /// keeping this one; returns how many were ended. A session without an owner ends none.
    ///
    /// Each ended session is reported as [`SessionEvent::Destroyed`]. Sessions are deleted one
    /// by one (one store call each, so each removal is known); on a store error the ones
    /// already ended stay ended and calling again finishes the job.
    pub async fn destroy_others(&self) -> Result<u64> {
        let st = self.loaded().await?;
        let Some(owner) = &st.owner else {
            return Ok(0);
        };
        let config = &self.inner.manager.config;
        let current = st.stored.map(|s| s.key);
        let others: Vec<SessionKey> = config
            .store()
            .list_by_owner(owner)
            .await?
            .into_iter()
            .map(|r| r.key)
            .filter(|key| Some(*key) != current)
            .collect();
        config.end_sessions(&others).await
    }

    /// Writes the session back if needed and says what the cookie should do. The tower layer
    /// calls this exactly once per request; calling it again is harmless (it finds nothing
    /// left to do).
    ///
    /// - Changed values are saved conditionally on the version loaded. On a conflict the
    ///   fresh record is reloaded, this request's changes are re-applied on top of it
    ///   (re-running [`update`](Self::update) closures), and the save is retried, up to the
    ///   manager's retry limit, then [`Error::Conflict`].
    /// - A session that was destroyed or rotated by a concurrent request is never written
    ///   back: the commit drops this request's changes and leaves the cookie alone.
    /// - A new session is created under a fresh id (never one the client sent).
    /// - Unchanged sessions are written only to push an idle deadline forward (a touch).
    /// - After a failed or interrupted [`destroy`](Self::destroy) or
    ///   [`rotate`](Self::rotate), nothing is written and the cookie is removed.
    /// - Setting an owner under [`max_sessions_per_owner`] first ends that owner's oldest
    ///   other sessions beyond the cap.
    ///
    /// # Errors
    /// [`Error::TooLarge`] and [`Error::Encode`] before any I/O; store errors; then the
    /// stored session is as it was before this request (or as a concurrent writer left it),
    /// and the client keeps its cookie.
    ///
    /// [`max_sessions_per_owner`]: super::SessionManagerBuilder::max_sessions_per_owner
    pub async fn commit(&self) -> Result<CommitOutcome> {
        let mut st = self.lock().await;
        if st.poisoned {
            return Ok(CommitOutcome::RemoveCookie);
        }
        if !st.loaded {
            return Ok(CommitOutcome::Unchanged);
        }
        let config = Arc::clone(&self.inner.manager.config);
        let now = Timestamp::now();
        if st.modified {
            let sets_owner = st.ops.iter().any(|op| matches!(op, Op::SetOwner(Some(_))));
            if let (true, Some(owner)) = (sets_owner, &st.owner) {
                let current = st.stored.map(|s| s.key);
                config.enforce_owner_cap(owner, current).await?;
            }
            let mut conflicts = 0u32;
            loop {
                let data = st.encode(&config.codec)?;
                session_core::check_data_len(config.max_encoded_len, data.len())?;
                let Some(stored) = st.stored else {
                    return self.create_new(&mut st, data, now).await;
                };
                let expires_at = config.deadline(stored.created_at, now);
                let record = Record {
                    key: stored.key,
                    data: data.into(),
                    created_at: stored.created_at,
                    expires_at,
                    version: stored.version,
                    owner: st.owner.clone(),
                };
                match config.store().save(&record).await {
                    Ok(version) => {
                        config.emit(SessionEvent::Updated { key: stored.key });
                        // A new expiry changes the cookie even though the id stays.
                        st.id_changed |= stored.expiry != st.expiry;
                        st.stored = Some(Stored {
                            version,
                            expires_at,
                            expiry: st.expiry,
                            ..stored
                        });
                        return Ok(self.settle(&mut st));
                    }
                    Err(Error::Conflict) if conflicts < config.conflict_retries => {
                        conflicts += 1;
                        backoff(conflicts).await;
                        if !self.reload_and_replay(&mut st, stored.key).await? {
                            return Ok(self.ended_concurrently(&mut st));
                        }
                    }
                    Err(Error::NotFound) => return Ok(self.ended_concurrently(&mut st)),
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(stored) = st.stored {
            if let Some(granularity) = config.touch_granularity() {
                let deadline = config.deadline(stored.created_at, now);
                if deadline > stored.expires_at + granularity {
                    match config.store().touch(&stored.key, deadline).await {
                        Ok(()) => {
                            st.stored = Some(Stored {
                                expires_at: deadline,
                                ..stored
                            });
                            return Ok(self.settle(&mut st));
                        }
                        Err(Error::NotFound) => return Ok(self.ended_concurrently(&mut st)),
                        Err(e) => return Err(e),
                    }
                }
            }
            return Ok(self.settle(&mut st));
        }
        if st.ended {
            st.ended = false;
            return Ok(CommitOutcome::RemoveCookie);
        }
        Ok(CommitOutcome::Unchanged)
    }

    /// Says what the cookie should do without saving anything this request changed: for a
    /// response that failed (the layer calls it instead of [`commit`](Self::commit) for 5xx
    /// responses). Does no I/O.
    ///
    /// What [`destroy`](Self::destroy) and [`rotate`](Self::rotate) did is already in
    /// the store, so the outcome follows it: the rotated id's cookie, or the removal of an
    /// ended one. Values, owner and the new session a request would have created are dropped.
    pub async fn discard(&self) -> CommitOutcome {
        let mut st = self.lock().await;
        if st.poisoned {
            return CommitOutcome::RemoveCookie;
        }
        if !st.loaded {
            return CommitOutcome::Unchanged;
        }
        st.ops.clear();
        st.modified = false;
        if let Some(stored) = st.stored {
            st.expiry = stored.expiry;
            return self.settle(&mut st);
        }
        if st.ended {
            st.ended = false;
            return CommitOutcome::RemoveCookie;
        }
        CommitOutcome::Unchanged
    }

    async fn create_new(
        &self,
        st: &mut State,
        data: Vec<u8>,
        now: Timestamp,
    ) -> Result<CommitOutcome> {
        let config = &self.inner.manager.config;
        let data = session_core::Bytes::from(data);
        let expires_at = config.deadline(now, now);
        // Never `st.id`: for a session that is not stored that may be an id the client sent.
        let mut id = st.unsaved_id.clone().unwrap_or_else(SessionId::generate);
        for _ in 0..4 {
            let record = Record {
                key: id.key(),
                data: data.clone(),
                created_at: now,
                expires_at,
                version: 1,
                owner: st.owner.clone(),
            };
            match config.store().create(&record).await {
                Ok(()) => {
                    config.emit(SessionEvent::Created { key: record.key });
                    st.stored = Some(Stored {
                        key: record.key,
                        created_at: now,
                        expires_at,
                        version: 1,
                        expiry: st.expiry,
                    });
                    st.id = Some(id);
                    st.unsaved_id = None;
                    st.id_changed = true;
                    st.ended = false;
                    return Ok(self.settle(st));
                }
                Err(Error::AlreadyExists) => id = SessionId::generate(),
                Err(e) => return Err(e),
            }
        }
        Err(Error::AlreadyExists)
    }

    /// Reloads the record after a conflict and replays this request's changes on it. Returns
    /// false if the session is gone.
    async fn reload_and_replay(&self, st: &mut State, key: SessionKey) -> Result<bool> {
        let config = &self.inner.manager.config;
        let Some(fresh) = config.store().load(&key).await? else {
            return Ok(false);
        };
        let Ok(mut values) = config.codec.decode_map(&fresh.data) else {
            return Ok(false);
        };
        let expiry = take_expiry(&config.codec, &mut values);
        let mut props = Props {
            owner: fresh.owner,
            expiry,
        };
        for op in &st.ops {
            State::apply(&mut values, &mut props, op)?;
        }
        st.values = values;
        st.put_props(props);
        st.stored = Some(Stored {
            key,
            created_at: fresh.created_at,
            expires_at: fresh.expires_at,
            version: fresh.version,
            expiry,
        });
        Ok(true)
    }

    fn ended_concurrently(&self, st: &mut State) -> CommitOutcome {
        tracing::debug!(session = ?self.incoming_id(), "session ended by a concurrent request; this request's changes are dropped");
        *st = State {
            loaded: true,
            ..State::default()
        };
        CommitOutcome::Unchanged
    }

    /// Marks the state clean after a write and says whether the cookie must be sent.
    ///
    /// The cookie carries the session's absolute deadline, which never moves (not even on
    /// rotation), while the idle timeout is enforced here on the server. So a cookie is sent
    /// only for a new or rotated id, never because an idle deadline slid forward: a busy
    /// session does not re-send `Set-Cookie` on every request, and a cookie that outlives an
    /// idle-expired session only ever yields a fresh session.
    fn settle(&self, st: &mut State) -> CommitOutcome {
        st.ops.clear();
        st.modified = false;
        let send = std::mem::take(&mut st.id_changed);
        let lifetime = self.inner.manager.config.lifetime;
        match (&st.id, &st.stored) {
            (Some(id), Some(stored)) if send => CommitOutcome::SetCookie {
                id: id.clone(),
                expires_at: stored.created_at + lifetime,
                expiry: stored.expiry,
            },
            _ => CommitOutcome::Unchanged,
        }
    }
}

/// Waits a little, more after each conflict, with jitter so retrying writers spread out.
async fn backoff(attempt: u32) {
    let mut jitter = [0u8; 2];
    let _ = getrandom::fill(&mut jitter);
    let cap_us = 50u64 << attempt.min(7);
    let us = u64::from(u16::from_le_bytes(jitter)) % cap_us.max(1);
    tokio::time::sleep(Duration::from_micros(us)).await;
}
