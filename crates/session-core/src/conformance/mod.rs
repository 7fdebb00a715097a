//! The behaviour every [`SessionStore`] must show, as plain async functions, plus the
//! [`conformance_tests!`](crate::conformance_tests) macro that turns them into one `#[test]`
//! each for a store factory.
//!
//! Every backend of this project runs exactly this suite. To run it against your own store,
//! enable the feature in your dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! session-core = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! then write, in a test file, an async factory that returns a *fresh, empty, isolated* store
//! (a new table, prefix or directory per call, because the cases run in parallel) and hand it
//! to the macro:
//!
//! ```text
//! async fn fresh_store() -> MyStore {
//!     MyStore::connect(&format!("prefix-{}", uuid())).await.unwrap()
//! }
//! session_core::conformance_tests!(fresh_store);
//! ```
//!
//! A durable store (one whose data outlives the process) returns a [`Fixture`] that knows how
//! to open the same data again, and adds `durable` so the reopen case runs too:
//!
//! ```text
//! async fn fresh_fixture() -> Fixture {
//!     let dir = tempfile::tempdir().unwrap();
//!     let path = dir.path().to_owned();
//!     Fixture::new(MyFileStore::open(&path).unwrap())
//!         .reopen(move || { let path = path.clone(); async move { MyFileStore::open(&path).unwrap() } })
//!         .guard(dir)
//! }
//! session_core::conformance_tests!(fresh_fixture, durable);
//! ```
//!
//! Each case is also callable directly (`session_core::conformance::round_trip_binary(&store)`),
//! which is how the suite's own tests show that it catches broken stores. A case fails by
//! panicking with a message that names the broken behaviour.
//!
//! Stores that expire data by themselves ([`SessionStore::expiry_is_native`]) are held to the
//! same cases, with `count_expired`/`delete_expired` allowed to see nothing.
//!
//! A store that needs a server gets its address from [`server_url`]: the environment URL, else
//! (with the `containers` feature) a container this test binary starts in Docker, else a
//! visible skip ([`skip_test`]) that is counted and summed up when the binary exits, or a
//! failure under `SESSION_REQUIRE_SERVICES=1`:
//!
//! ```text
//! async fn fresh_fixture() -> Fixture {
//!     let Some(url) = server_url(Server::Postgres) else {
//!         return Fixture::skipped("no PostgreSQL server");
//!     };
//!     Fixture::new(MyPgStore::connect(&url).await.unwrap())
//! }
//! ```

mod cases;
pub mod child;
mod guard;
pub mod lost_connections;
pub mod processes;
mod servers;
pub mod sizes;
mod skip;
pub mod sweeps;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use cases::survives_reopen;
pub use guard::{DropGuard, io, ok, unique_name, unique_suffix};
pub use servers::{Server, server_url};
pub use skip::{services_required, skip_test, skipped_tests};

use crate::store::SessionStore;

/// How long one case may run before it is failed as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

type ReopenFn =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn SessionStore>> + Send>> + Send + Sync>;

/// A store under test, with what the suite needs around it.
pub struct Fixture {
    skipped: Option<String>,
    store: Option<Arc<dyn SessionStore>>,
    reopen: Option<ReopenFn>,
    guards: Vec<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("skipped", &self.skipped)
            .field("store", &self.store)
            .field("reopen", &self.reopen.is_some())
            .field("guards", &self.guards.len())
            .finish()
    }
}

impl Fixture {
    /// A fixture around a fresh, empty store.
    pub fn new(store: impl SessionStore) -> Self {
        Self {
            skipped: None,
            store: Some(Arc::new(store)),
            reopen: None,
            guards: Vec::new(),
        }
    }

    /// A fixture for a store whose server is not reachable here: every case skips visibly
    /// with `reason` ([`skip_test`]) and passes, or fails under `SESSION_REQUIRE_SERVICES=1`.
    /// Build it when [`server_url`] (or [`service_url`]) returned `None`.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self {
            skipped: Some(reason.into()),
            store: None,
            reopen: None,
            guards: Vec::new(),
        }
    }

    /// Why the cases skip, if they do, after telling the terminal and counting the test
    /// ([`skip_test`]; a test whose factory already told is not told or counted twice).
    ///
    /// # Panics
    /// When the fixture skips and `SESSION_REQUIRE_SERVICES=1`.
    pub fn skip_notice(&self) -> Option<&str> {
        let reason = self.skipped.as_deref()?;
        skip_test(reason);
        Some(reason)
    }

    /// How to open the same data again after the store was dropped (durable stores only).
    pub fn reopen<S, F, Fut>(mut self, reopen: F) -> Self
    where
        S: SessionStore,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = S> + Send + 'static,
    {
        self.reopen = Some(Box::new(move || {
            let fut = reopen();
            Box::pin(async move { Arc::new(fut.await) as Arc<dyn SessionStore> })
        }));
        self
    }

    /// Keeps `guard` alive as long as the fixture (a temp dir, a table dropper, a server).
    pub fn guard(mut self, guard: impl Any + Send) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    /// The store under test.
    ///
    /// # Panics
    /// After [`take_store`](Self::take_store).
    pub fn store(&self) -> Arc<dyn SessionStore> {
        match &self.store {
            Some(store) => Arc::clone(store),
            None => panic!("the fixture's store was taken"),
        }
    }

    /// Takes the store out, so it can be dropped before reopening.
    pub fn take_store(&mut self) -> Option<Arc<dyn SessionStore>> {
        self.store.take()
    }

    /// Opens the same data again, if this fixture knows how.
    pub async fn open_again(&self) -> Option<Arc<dyn SessionStore>> {
        match &self.reopen {
            Some(reopen) => Some(reopen().await),
            None => None,
        }
    }
}

impl<S: SessionStore> From<S> for Fixture {
    fn from(store: S) -> Self {
        Self::new(store)
    }
}

/// The environment variable that turns a missing service from a skip into a failure. CI sets
/// it to `1`.
pub const REQUIRE_SERVICES_VAR: &str = "SESSION_REQUIRE_SERVICES";

/// Reads a service address from the environment only (e.g. `DATABASE_URL` for a test that
/// needs a local server binary, not a container); [`server_url`] also starts containers.
///
/// - Set and non-empty: returns it.
/// - Unset: [`skip_test`] tells and counts the skip and this returns `None`; under
///   `SESSION_REQUIRE_SERVICES=1` that panics, so CI can never pass by skipping.
pub fn service_url(var: &str) -> Option<String> {
    let url = servers::env_url(var);
    if url.is_none() {
        skip_test(&format!(
            "{var} is not set, so this backend test cannot reach its server"
        ));
    }
    url
}

/// Runs one case on a fresh multi-threaded Tokio runtime, failing it after [`CASE_TIMEOUT`].
///
/// Used by [`conformance_tests!`](crate::conformance_tests); the runtime is the suite's own, so
/// a user's crate needs no Tokio features for it.
pub fn run<F: Future<Output = ()>>(case: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => panic!("could not build a Tokio runtime for the conformance case: {e}"),
    };
    runtime.block_on(async {
        if tokio::time::timeout(CASE_TIMEOUT, case).await.is_err() {
            panic!("conformance case hung for {CASE_TIMEOUT:?}");
        }
    });
}

/// Expands to one `#[test]` per conformance case, each on a fresh store from `$factory`, and
/// the same again through `Arc<dyn SessionStore>` (module `through_arc`) and
/// `Box<dyn SessionStore>` (module `through_box`), so a forwarding impl that drops a method
/// is caught too.
///
/// `$factory` is the path of an async function returning a store or a
/// [`Fixture`](crate::conformance::Fixture); a server-backed store returns
/// `Fixture::skipped(..)` when [`server_url`](crate::conformance::server_url) finds no server.
/// Add `, durable` when the fixture can reopen its
/// data, to also run [`survives_reopen`](crate::conformance::survives_reopen). See the
/// [module docs](crate::conformance).
///
/// The list of cases below is the only one: it also defines the public case functions (whose
/// bodies are private, so one left out of the list fails the build as dead code) and
/// [`CASES`](crate::conformance::CASES).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@with_cases tests $factory);
    };
    ($factory:path, durable) => {
        $crate::conformance_tests!($factory);
        #[test]
        fn survives_reopen() {
            $crate::conformance::run(async {
                let fixture: $crate::conformance::Fixture = $factory().await.into();
                if fixture.skip_notice().is_some() {
                    return;
                }
                $crate::conformance::survives_reopen(fixture).await;
            });
        }
    };
    (@with_cases $then:ident $($args:path)?) => {
        $crate::conformance_tests!(@$then $($args)?;
            /// Every byte value survives a round trip.
            round_trip_binary,
            /// Unicode data and a unicode owner survive a round trip.
            round_trip_unicode,
            /// An empty payload is kept as empty, not as absent.
            round_trip_empty_data,
            /// Created and expiry times come back to the millisecond, and version as given.
            timestamps_are_exact,
            /// Loading a key never stored gives `None`.
            missing_is_none,
            /// Loading unknown keys stores nothing (Django CVE-2015-5143).
            loading_unknown_creates_nothing,
            /// An expired record loads as `None` and is not counted live.
            expired_is_none,
            /// `create` on a live key fails with `AlreadyExists` and keeps the first record.
            create_on_taken_key_fails_without_overwriting,
            /// `create` may reuse the key of an expired record.
            create_over_expired_key_succeeds,
            /// Of many concurrent creates on one key (on parallel tasks), exactly one wins and its data
            /// is stored.
            concurrent_creates_one_winner,
            /// `save` with the loaded version replaces data, expiry and owner.
            save_overwrites,
            /// Each save bumps the version by one, and the next save names the new version.
            save_bumps_version,
            /// A save keeps the stored `created_at`, whatever the caller passes.
            save_keeps_created_at,
            /// A save naming a stale version gets `Conflict` and changes nothing.
            stale_save_conflicts_and_changes_nothing,
            /// A save of a record deleted after it was loaded fails and does not bring it back
            /// (Rack CVE-2025-46336, gorilla/sessions #10, Spring Session gh-1031).
            save_after_delete_does_not_resurrect,
            /// A save to the old key of a record moved by `rotate` fails and revives nothing.
            save_after_rotate_does_not_resurrect,
            /// A save of a record that has expired fails with `NotFound` and does not revive it.
            save_of_expired_is_not_found,
            /// `touch` moves the deadline and leaves data and version alone.
            touch_extends_without_changing_data,
            /// A touch of a deleted record fails with `NotFound` and creates nothing.
            touch_after_delete_does_not_resurrect,
            /// A touch of an expired record does not revive it.
            touch_of_expired_does_not_revive,
            /// `delete` removes a live record and reports it.
            delete_removes,
            /// Deleting a missing key succeeds with `false`.
            delete_missing_is_false,
            /// `delete_many` removes exactly the listed live keys and counts them.
            delete_many_removes_listed_only,
            /// `delete_many` with no keys does nothing.
            delete_many_empty_is_noop,
            /// `exists` is true for live records only.
            exists_sees_live_only,
            /// `rotate` keeps data, times, version and owner; the old key is gone at once.
            rotate_keeps_everything,
            /// While other tasks keep loading both keys, `rotate` never lets one see both the old
            /// and the new key live, or neither.
            rotate_is_atomic,
            /// `rotate` onto a live key fails with `AlreadyExists` and changes neither record.
            rotate_to_taken_key_fails,
            /// `rotate` onto a key whose record has expired replaces that record: the moved session
            /// is live there, its owner index follows it, and the expired record's owner lists nothing.
            rotate_onto_expired_key_replaces_it,
            /// `rotate` of a missing or expired key fails with `NotFound` and creates nothing.
            rotate_of_missing_fails,
            /// `count`, `count_expired` and `delete_expired` agree, and a sweep spares live records.
            counts_and_sweep_agree,
            /// `list` returns every live key and no expired or deleted one.
            list_shows_only_live,
            /// Following `list_page` cursors from the start returns every live key exactly once, in
            /// ascending order, and no expired or deleted key, whatever the page size (0 counts as 1).
            list_page_walks_every_live_key_once,
            /// While other tasks create, delete and expire sessions, a `list_page` walk still returns
            /// every key that stays live throughout exactly once, never a key twice, and only keys that
            /// were live at some point of the walk.
            list_page_is_stable_under_concurrent_writes,
            /// 64 concurrent tasks on distinct sessions lose nothing.
            concurrent_distinct_sessions_lose_nothing,
            /// Concurrent read-modify-write saves to one session leave one whole value, never a mix; no
            /// increment is lost; and the version counts exactly the saves that succeeded.
            concurrent_saves_leave_one_whole_value,
            /// Listing by owner returns exactly that owner's live sessions.
            owner_listing_is_exact,
            /// Deleting by owner removes exactly that owner's live sessions.
            owner_deletion_is_exact,
            /// A save that changes or clears the owner moves the session between owner listings.
            owner_moves_with_save,
            /// After `rotate`, owner listing and deletion see the new key and not the old one.
            owner_follows_rotate,
            /// The largest allowed record round-trips; one byte more is refused with `TooLarge` by both
            /// `create` and `save`, writing nothing. Unlimited stores round-trip 1 MiB.
            size_limit_is_exact,
            /// A deleted key can be created again, starting from the new record.
            delete_then_create_again,
        );
    };
    (@define; $($(#[$doc:meta])* $case:ident,)*) => {
        $(
            $(#[$doc])*
            pub async fn $case(store: Arc<dyn SessionStore>) {
                cases::$case(store).await
            }
        )*
        /// The name of every case [`conformance_tests!`](crate::conformance_tests) runs, in
        /// order (without [`survives_reopen`], which only durable stores run).
        pub const CASES: &[&str] = &[$(stringify!($case)),*];
    };
    (@tests $factory:path; $($(#[$doc:meta])* $case:ident,)*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $case() {
                $crate::conformance::run_case(
                    $factory,
                    $crate::conformance::Through::Store,
                    $crate::conformance::$case,
                );
            }
        )*
        /// Every case again, on the store behind a second `Arc<dyn SessionStore>`.
        mod through_arc {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::conformance::run_case(
                        $factory,
                        $crate::conformance::Through::Arc,
                        $crate::conformance::$case,
                    );
                }
            )*
        }
        /// Every case again, on the store behind a `Box<dyn SessionStore>`.
        mod through_box {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::conformance::run_case(
                        $factory,
                        $crate::conformance::Through::Box,
                        $crate::conformance::$case,
                    );
                }
            )*
        }
    };
}

conformance_tests!(@with_cases define);

/// How [`run_case`] hands the fixture's store to a case.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// As the fixture holds it.
    Store,
    /// Wrapped in another `Arc`, so calls go through `impl SessionStore for Arc<T>`.
    Arc,
    /// Wrapped in a `Box<dyn SessionStore>`, so calls go through `impl SessionStore for Box<T>`.
    Box,
}

/// Runs one case on a fresh fixture from `factory`, handed over as `through` says; what
/// [`conformance_tests!`](crate::conformance_tests) expands to.
#[doc(hidden)]
pub fn run_case<F, Fut, X, C, CFut>(factory: F, through: Through, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = X>,
    X: Into<Fixture>,
    C: FnOnce(Arc<dyn SessionStore>) -> CFut,
    CFut: Future<Output = ()>,
{
    run(async move {
        let fixture: Fixture = factory().await.into();
        if fixture.skip_notice().is_some() {
            return;
        }
        let store = fixture.store();
        let store: Arc<dyn SessionStore> = match through {
            Through::Store => store,
            Through::Arc => Arc::new(store),
            Through::Box => Arc::new(Box::new(store) as Box<dyn SessionStore>),
        };
        case(store).await;
        drop(fixture);
    });
}
