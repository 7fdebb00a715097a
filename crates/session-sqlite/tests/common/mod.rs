//! Helpers shared by this crate's integration tests: temp databases and runtimes.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses its own subset of these helpers"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use session_core::{Error, Record, SessionId, Timestamp};
use session_sqlite::{SqliteStore, SqliteStoreBuilder};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn ok<T>(what: &str, r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("building a runtime failed: {e}"),
    }
}

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

/// A key from small numbers, the same in every process of a test: `tag` says what the key
/// is for, `i` which one, and `seed` keeps runs apart.
pub fn key(seed: u64, tag: u8, i: u32) -> session_core::SessionKey {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[1..5].copy_from_slice(&i.to_be_bytes());
    b[8..16].copy_from_slice(&seed.to_le_bytes());
    session_core::SessionKey::from_bytes(b)
}

/// A seed that differs between runs.
pub fn seed() -> u64 {
    u64::from_le_bytes(
        SessionId::generate().key().as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    )
}

pub fn io<T>(what: &str, r: std::io::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}
