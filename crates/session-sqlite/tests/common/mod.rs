//! Helpers shared by this crate's integration tests: temp databases and runtimes.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses its own subset of these helpers"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::{io, ok};
use session_core::{Record, SessionId, Timestamp};
use session_sqlite::{SqliteStore, SqliteStoreBuilder};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    }
}

#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::child::runtime;

/// The database file of a test directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("sessions.db")
}

/// The builder every test starts from: no background sweep, so tests see exactly what
/// they did.
pub fn builder() -> SqliteStoreBuilder {
    SqliteStore::builder().cleanup_interval(Duration::ZERO)
}

/// A migrated store on the file at `path`.
pub async fn open(path: &Path) -> SqliteStore {
    let store = ok("open", builder().open(path).await);
    ok("migrate", store.migrate().await);
    store
}

/// A migrated in-memory store.
pub async fn memory() -> SqliteStore {
    let store = ok("open_memory", builder().open_memory().await);
    ok("migrate", store.migrate().await);
    store
}

pub fn live(data: &[u8]) -> Record {
    Record::new(
        SessionId::generate().key(),
        data.to_vec(),
        Timestamp::now() + HOUR,
    )
}

pub fn expired(data: &[u8]) -> Record {
    Record::new(
        SessionId::generate().key(),
        data.to_vec(),
        Timestamp::now() - Duration::from_secs(5),
    )
}

/// Keys from small numbers, the same in every process of a test, and a seed that keeps runs
/// apart.
#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::processes::{key, seed};
