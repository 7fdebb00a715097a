//! What a benchmark target is, and the one generic target for every `SessionStore`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use session_core::{BoxError, Error, Record, SessionId, SessionStore, Timestamp};

use crate::keys::session_key;
use crate::runner::{FRESH, Instance};
use crate::session::{Payload, TTL, decode_bytes};

/// A boxed future, as the registry hands out builders through plain function pointers.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How one operation ended. Anything else is an error and fails the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It did what was asked.
    Done,
    /// The session was not there (a load miss, a delete of a missing key).
    Missing,
    /// Another task got there first (a taken key on create, a stale version on save).
    Conflict,
}

/// The result of one operation.
pub(crate) type OpResult = Result<Outcome, BoxError>;

/// One store under test, as the workloads drive it.
///
/// Session `i` is the same logical session for every target; each target maps `i` to its own
/// key type and stores the [`Payload`] in its own form. A value of this type is a handle that
/// one task owns: `clone` gives each task its own handle (with its own scratch record) on the
/// same shared store, the way each request handler holds its own session.
///
/// The methods are statically dispatched (`async fn` in a trait, not `async_trait`), so the
/// harness adds no allocation per operation; whatever a target's own API costs (a boxed
/// `async_trait` future, a clone of the record) is part of what is measured.
pub(crate) trait BenchTarget: Clone + Send + Sync + 'static {
    /// Stores session `i` if absent.
    fn create(&mut self, i: u64) -> impl Future<Output = OpResult> + Send;
    /// Reads session `i` (whole record, as a request does).
    fn load(&mut self, i: u64) -> impl Future<Output = OpResult> + Send;
    /// Writes session `i` again with a fresh expiry, as the end of a request that changed it.
    fn save(&mut self, i: u64) -> impl Future<Output = OpResult> + Send;
    /// Removes session `i`.
    fn delete(&mut self, i: u64) -> impl Future<Output = OpResult> + Send;
}

/// What a target is measured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// One of this workspace's stores.
    Ours,
    /// The bare map: what a store cannot beat.
    Limit,
    /// Another crate's store, for comparison.
    Peer,
}

/// Builds a target for `keys` pre-populated sessions; `Ok(None)` when it cannot run here
/// (a server-backed target without its URL), after printing why.
pub(crate) type Build =
    fn(Arc<Payload>, u64) -> BoxFuture<'static, Result<Option<Box<dyn Instance>>, BoxError>>;

/// A registry entry: one target the harness can run.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    /// Name on the command line and in the tables.
    pub(crate) name: &'static str,
    /// Short column header for ratios against it.
    pub(crate) short: &'static str,
    pub(crate) role: Role,
    /// Whether bytes of RSS per session mean anything (in-process stores only).
    pub(crate) in_process: bool,
    /// One line for the report: what exactly is measured.
    pub(crate) about: &'static str,
    pub(crate) build: Build,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Any [`SessionStore`] as a target: the one implementation every backend of this workspace
/// uses.
///
/// `save` is the conditional save a request makes: it names the version it loaded. The
/// harness remembers the last version it saw of each pre-populated session (in `versions`,
/// as the request would have it from its load), so a save costs one store call; when two
/// tasks race on one session the loser gets [`Outcome::Conflict`] and re-reads the version.
///
/// Calls go through `&dyn SessionStore` (`store.as_ref()`): a method called on the `Arc`
/// itself resolves to session-core's forwarding impl for `Arc<T>`, which boxes a second
/// `async_trait` future around the store's own on every call.
#[derive(Clone)]
pub(crate) struct StoreTarget {
    store: Arc<dyn SessionStore>,
    /// Whatever must outlive the store (its temp directory, its table); declared after it so
    /// the store goes first.
    guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// Version minus one of session `i` (so a zeroed slot means version 1).
    versions: Arc<[AtomicU64]>,
    scratch: Record,
    /// Whether a load decodes the record's data (`--decode-on-load`).
    decode: bool,
    /// Whether a create during a round files the session under a newly generated id's key,
    /// as the manager does for every new session (`SessionId::generate` and its SHA-256),
    /// instead of a key derived from the session's number. The pre-populated sessions keep
    /// their numbered keys.
    fresh_ids: bool,
}

impl fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTarget")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl StoreTarget {
    /// A target on `store` for `keys` pre-populated sessions, each owned by `owner` if set.
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        payload: &Payload,
        keys: u64,
        owner: Option<&str>,
    ) -> Self {
        let mut scratch = Record::new(
            session_key(0),
            payload.encoded.clone(),
            Timestamp::now() + TTL,
        );
        scratch.owner = owner.map(str::to_owned);
        Self {
            store,
            guard: None,
            versions: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            scratch,
            decode: payload.decode,
            fresh_ids: false,
        }
    }

    /// Makes every create generate a new session id and file the session under its key.
    pub(crate) fn with_fresh_ids(mut self) -> Self {
        self.fresh_ids = true;
        self
    }

    /// Keeps `guard` alive until the last clone of this target is gone, after the store.
    pub(crate) fn with_guard(mut self, guard: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.guard = Some(guard);
        self
    }

    fn stamp(&mut self, i: u64) {
        let now = Timestamp::now();
        self.scratch.key = session_key(i);
        self.scratch.created_at = now;
        self.scratch.expires_at = now + TTL;
    }
}

impl BenchTarget for StoreTarget {
    async fn create(&mut self, i: u64) -> OpResult {
        self.stamp(i);
        // Only the sessions a round creates: the pre-populated ones keep their numbered keys,
        // which the round's loads and saves address.
        if self.fresh_ids && i >= FRESH {
            self.scratch.key = SessionId::generate().key();
        }
        self.scratch.version = 1;
        match self.store.as_ref().create(&self.scratch).await {
            Ok(()) => Ok(Outcome::Done),
            Err(Error::AlreadyExists) => Ok(Outcome::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    async fn load(&mut self, i: u64) -> OpResult {
        match self.store.as_ref().load(&session_key(i)).await? {
            Some(record) => {
                if self.decode {
                    decode_bytes(&record.data)?;
                }
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::Missing),
        }
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.stamp(i);
        let slot = usize::try_from(i).ok().and_then(|i| self.versions.get(i));
        self.scratch.version = match slot {
            Some(slot) => slot.load(Ordering::Relaxed) + 1,
            // Not a pre-populated session: a request would have loaded it first.
            None => match self.store.as_ref().load(&self.scratch.key).await? {
                Some(record) => record.version,
                None => return Ok(Outcome::Missing),
            },
        };
        match self.store.as_ref().save(&self.scratch).await {
            Ok(version) => {
                if let Some(slot) = slot {
                    slot.fetch_max(version - 1, Ordering::Relaxed);
                }
                Ok(Outcome::Done)
            }
            Err(Error::Conflict) => {
                if let (Some(slot), Some(record)) =
                    (slot, self.store.as_ref().load(&self.scratch.key).await?)
                {
                    slot.fetch_max(record.version - 1, Ordering::Relaxed);
                }
                Ok(Outcome::Conflict)
            }
            Err(Error::NotFound) => Ok(Outcome::Missing),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        match self.store.as_ref().delete(&session_key(i)).await? {
            true => Ok(Outcome::Done),
            false => Ok(Outcome::Missing),
        }
    }
}

/// A directory under `TMPDIR`, removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    /// Creates `session-bench-<kind>-<random>`.
    pub(crate) fn new(kind: &str) -> Result<Self, BoxError> {
        let name = format!(
            "session-bench-{kind}-{}",
            &session_core::SessionId::generate().key().to_hex()[..16]
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
