//! The builder: file or in-memory database, durability, pools, limits and the sweep.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_core::{CleanupHandle, CleanupTask, Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::{ResultExt as _, STORE, retry_busy};
use crate::sql::{Queries, validate_table};
use crate::store::{Inner, SqliteStore};

/// Default largest session payload, in bytes: 4096, as the PostgreSQL store.
pub const DEFAULT_MAX_DATA_LEN: usize = 4096;
/// Default number of rows one cleanup statement deletes.
pub const DEFAULT_CLEANUP_BATCH: usize = 1000;
/// Default table.
pub const DEFAULT_TABLE: &str = "sessions";
/// Default interval of the background sweep of expired rows: 5 minutes. Expired rows are never
/// returned either way; the sweep only gives their space back.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);
/// Default time a statement waits for another process's lock on the file before failing with
/// [`Error::Unavailable`]: 5 s.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `synchronous` setting: `FULL`, so a commit is on disk before it is acknowledged
/// (see [`SqliteStoreBuilder::synchronous`] for what each setting loses at a power cut).
pub const DEFAULT_SYNCHRONOUS: SqliteSynchronous = SqliteSynchronous::Full;
/// Default number of connections that only read: 4.
pub const DEFAULT_READ_CONNECTIONS: u32 = 4;
/// Default number of connections that write: 1 (see
/// [`SqliteStoreBuilder::write_connections`]).
pub const DEFAULT_WRITE_CONNECTIONS: u32 = 1;

const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// What to open.
#[derive(Debug, Clone)]
enum Target {
    File(PathBuf),
    Memory,
}

/// Configures a [`SqliteStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteStoreBuilder {
    table: String,
    max_data_len: Option<usize>,
    cleanup_batch: usize,
    cleanup_interval: Duration,
    synchronous: SqliteSynchronous,
    busy_timeout: Duration,
    read_connections: u32,
    write_connections: u32,
    acquire_timeout: Duration,
}

impl Default for SqliteStoreBuilder {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.to_owned(),
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            cleanup_batch: DEFAULT_CLEANUP_BATCH,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            synchronous: DEFAULT_SYNCHRONOUS,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            read_connections: DEFAULT_READ_CONNECTIONS,
            write_connections: DEFAULT_WRITE_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl SqliteStoreBuilder {
    /// The table (default `sessions`): a plain identifier of at most 48 bytes, not starting
    /// with `sqlite_`. Used exactly as given, quoted.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The largest session payload accepted, in bytes (default
    /// `Some(`[`DEFAULT_MAX_DATA_LEN`]`)`); `None` for no limit (SQLite's own limit on a
    /// value, 1 GB by default, still applies). Larger payloads fail with [`Error::TooLarge`]
    /// before any statement runs.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// How many expired rows one cleanup statement deletes (default
    /// [`DEFAULT_CLEANUP_BATCH`]): each batch is one short write transaction, so requests and
    /// other processes get the write lock between batches.
    pub fn cleanup_batch(mut self, rows: usize) -> Self {
        self.cleanup_batch = rows;
        self
    }

    /// How often the background task deletes expired rows (default
    /// [`DEFAULT_CLEANUP_INTERVAL`]), the first time one interval after the store is opened.
    /// Zero turns the task off; expired rows are then still never returned, only kept until
    /// [`SessionStore::delete_expired`](session_core::SessionStore::delete_expired) runs.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// SQLite's `synchronous` setting for the file (default [`DEFAULT_SYNCHRONOUS`], `FULL`).
    /// In WAL mode, which this store always uses:
    ///
    /// - `FULL`: each commit fsyncs the WAL before it returns. A crash of the process or the
    ///   machine (power cut) loses nothing that was acknowledged.
    /// - `NORMAL`: the WAL is fsynced only at checkpoints. A crash of the process loses
    ///   nothing (the commit is in the OS's page cache); a power cut or kernel panic can roll
    ///   back the commits since the last checkpoint (at most about `wal_autocheckpoint`, 1000
    ///   pages, of writes). The file stays consistent either way.
    /// - `EXTRA`: as `FULL` in WAL mode (it adds a directory sync in rollback-journal modes).
    /// - `OFF`: no fsync at all. A process crash still loses nothing, but a power cut can
    ///   lose any recent commit and can corrupt the file.
    ///
    /// Sessions lost at a power cut mean users signed out; `NORMAL` trades that for writes
    /// that do not wait for the disk.
    pub fn synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a statement waits for a lock another process holds on the file before failing
    /// with [`Error::Unavailable`] (default [`DEFAULT_BUSY_TIMEOUT`]). Inside one process,
    /// writes queue for the store's write connection instead (bounded by
    /// [`acquire_timeout`](Self::acquire_timeout)), so they never meet `SQLITE_BUSY`.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How many connections serve reads (default [`DEFAULT_READ_CONNECTIONS`]). In WAL mode
    /// readers never wait for the writer or for each other. Ignored for in-memory databases,
    /// which have one connection.
    pub fn read_connections(mut self, n: u32) -> Self {
        self.read_connections = n;
        self
    }

    /// How many connections write (default [`DEFAULT_WRITE_CONNECTIONS`], 1). SQLite lets one
    /// writer at a time hold the file's write lock: with one connection, concurrent writes of
    /// this process wait in the pool's queue and take turns without contention; with more,
    /// they contend for the lock inside SQLite, whose `busy_timeout` handler sleeps and
    /// polls, and a write can fail with `SQLITE_BUSY` once the timeout runs out. One
    /// connection is the default for that guarantee, not for speed: on a loaded 2-core machine
    /// 8 write connections were about as fast with `FULL` and faster with `NORMAL`
    /// (BENCHMARKS.md, "SQLite writers"). In-memory databases always have one connection.
    pub fn write_connections(mut self, n: u32) -> Self {
        self.write_connections = n;
        self
    }

    /// How long an operation waits for a connection of the store's pools before failing with
    /// [`Error::Unavailable`] (default 5 s). This bounds the in-process queue for the write
    /// connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Checks the names and sizes; returns the batch size as the query binds it.
    fn validate(&self) -> Result<i64> {
        validate_table(&self.table)?;
        if self.read_connections == 0 || self.write_connections == 0 {
            return Err(Error::Config(
                "read_connections and write_connections must be at least 1".into(),
            ));
        }
        session_core::sql::cleanup_batch(self.cleanup_batch)
    }

    /// Opens (creating it if missing, with mode 0600 on Unix) the database file at `path`,
    /// switches it to WAL mode and starts the background sweep (unless
    /// [`cleanup_interval`](Self::cleanup_interval) is zero). Call
    /// [`SqliteStore::migrate`] to create the table.
    ///
    /// SQLite creates the `-wal` and `-shm` files next to it with the database file's mode,
    /// so they are 0600 too. A file that already exists keeps its mode.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad table name or pool size, a cleanup batch of zero, a file
    /// that cannot be put in WAL mode (a filesystem without shared memory), or a non-zero
    /// cleanup interval outside a Tokio runtime; [`Error::Backend`] when the file cannot be
    /// created or opened (missing directory, permissions, not a database);
    /// [`Error::Unavailable`] when another process holds the file locked past the
    /// [`busy_timeout`](Self::busy_timeout).
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteStore> {
        self.open_target(Target::File(path.as_ref().to_owned()))
            .await
    }

    /// Opens a fresh in-memory database, private to this store (its clones share it), gone
    /// when the last clone is dropped. For tests and single-process experiments. It has one
    /// connection, for reads and writes, kept open as long as the store lives so the data is
    /// one database throughout.
    ///
    /// # Errors
    /// As [`open`](Self::open), without the file errors.
    pub async fn open_memory(self) -> Result<SqliteStore> {
        self.open_target(Target::Memory).await
    }

    /// Opens what a URL names: `sqlite::memory:` (see [`open_memory`](Self::open_memory)),
    /// or `sqlite:PATH` / `sqlite://PATH` for a file (see [`open`](Self::open)).
    ///
    /// # Errors
    /// [`Error::Config`] for any other URL; otherwise as [`open`](Self::open).
    pub async fn connect(self, url: &str) -> Result<SqliteStore> {
        self.open_target(parse_url(url)?).await
    }

    async fn open_target(self, target: Target) -> Result<SqliteStore> {
        let cleanup_batch = self.validate()?;
        let (writer, reader, path) = match &target {
            Target::Memory => {
                // sqlx names each `:memory:` options value's database uniquely and opens it
                // with a shared cache, so every connection from these options sees the same
                // data. One connection, never closed by the pool, holds it alive.
                let options = "sqlite::memory:"
                    .parse::<SqliteConnectOptions>()
                    .db()?
                    .busy_timeout(self.busy_timeout);
                let pool = self.pool(1, options).await?;
                (pool.clone(), pool, None)
            }
            Target::File(path) => {
                create_private(path)?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .busy_timeout(self.busy_timeout)
                    .synchronous(self.synchronous);
                let writer = self.pool(self.write_connections, options.clone()).await?;
                wal_mode(&writer, self.busy_timeout).await?;
                // Readers open after the switch to WAL, and refuse writes should a bug ever
                // send one their way.
                let reader = self
                    .pool(self.read_connections, options.pragma("query_only", "ON"))
                    .await?;
                (writer, reader, Some(path.clone()))
            }
        };
        let sql = Queries::new(&self.table);
        let inner = Arc::new(Inner {
            writer,
            reader,
            path,
            table: self.table,
            sql,
            max_data_len: self.max_data_len,
            cleanup_batch,
            cleanup_interval: self.cleanup_interval,
            synchronous: self.synchronous,
            busy_timeout: self.busy_timeout,
        });
        let cleanup = CleanupTask::spawn(
            STORE,
            self.cleanup_interval,
            Arc::downgrade(&inner),
            |inner: Arc<Inner>| async move { inner.delete_expired().await },
        )?;
        Ok(SqliteStore {
            inner,
            cleanup: CleanupHandle::new(cleanup),
        })
    }

    /// A pool of `max` connections that the pool never closes by itself: an in-memory
    /// database lives only while a connection is open, and a file's connections are cheap to
    /// keep. There is no network to check, so connections are not pinged before use.
    async fn pool(&self, max: u32, options: SqliteConnectOptions) -> Result<SqlitePool> {
        retry_busy(self.busy_timeout, || {
            SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .acquire_timeout(self.acquire_timeout)
                .connect_with(options.clone())
        })
        .await
        .db()
    }
}

/// Reads `sqlite::memory:`, `sqlite:PATH` or `sqlite://PATH`.
fn parse_url(url: &str) -> Result<Target> {
    let refused = || {
        Error::Config(
            format!(
                "a SQLite URL is `sqlite::memory:`, `sqlite:PATH` or `sqlite://PATH`, not {url:?}"
            )
            .into(),
        )
    };
    let rest = url.strip_prefix("sqlite:").ok_or_else(refused)?;
    if rest == ":memory:" {
        return Ok(Target::Memory);
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() || path.contains('?') {
        return Err(refused());
    }
    Ok(Target::File(PathBuf::from(path)))
}

/// Creates the database file with mode 0600 if it does not exist, so SQLite (which gives the
/// `-wal` and `-shm` files the database file's mode) never makes any of them readable by
/// others. An existing file is left as it is.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::backend(
            STORE,
            std::io::Error::new(
                e.kind(),
                format!("cannot create the database file {}: {e}", path.display()),
            ),
        )),
    }
}

/// Puts the file in WAL mode (a setting the file keeps; later opens find it set). Several
/// stores switching a new file at once wait for each other through `busy_timeout`, as
/// `concurrent_opens_and_migrations_of_a_new_file_all_succeed` checks.
async fn wal_mode(pool: &SqlitePool, busy_timeout: Duration) -> Result<()> {
    let mode: String = retry_busy(busy_timeout, || {
        sqlx::query_scalar("PRAGMA journal_mode = WAL").fetch_one(pool)
    })
    .await
    .db()?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(Error::Config(
            format!("the database file refused WAL mode (it stays in {mode:?}); put it on a local filesystem").into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(matches!(parse_url("sqlite::memory:"), Ok(Target::Memory)));
        assert!(
            matches!(parse_url("sqlite:/tmp/s.db"), Ok(Target::File(p)) if p == Path::new("/tmp/s.db"))
        );
        assert!(
            matches!(parse_url("sqlite://rel/s.db"), Ok(Target::File(p)) if p == Path::new("rel/s.db"))
        );
        for bad in [
            "sqlite:",
            "sqlite://",
            "postgres://x",
            "s.db",
            "sqlite:a.db?mode=ro",
        ] {
            assert!(matches!(parse_url(bad), Err(Error::Config(_))), "{bad}");
        }
    }
}
