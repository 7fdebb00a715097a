//! Driver errors as the session layer's [`Error`] categories.

use session_core::Error;

/// The name every error of this store carries.
pub(crate) const STORE: &str = "sqlite";

/// A failed sqlx call, classified once by [`From`] into [`Error`] so every operation maps
/// errors the same way.
#[derive(Debug)]
pub(crate) struct SqliteError(pub(crate) sqlx::Error);

impl From<sqlx::Error> for SqliteError {
    fn from(error: sqlx::Error) -> Self {
        Self(error)
    }
}

/// SQLite's primary result codes this store tells apart (the low byte of an extended code).
mod code {
    /// The file is locked by another connection (another process, here: this one's writes
    /// all go through one connection) for longer than `busy_timeout`.
    pub(super) const BUSY: i32 = 5;
    /// A table is locked inside a shared cache (in-memory databases).
    pub(super) const LOCKED: i32 = 6;
    /// Out of memory.
    pub(super) const NOMEM: i32 = 7;
    /// A constraint (the primary key) was violated.
    pub(super) const CONSTRAINT: i32 = 19;
}

impl SqliteError {
    /// The primary SQLite result code, if the error came from SQLite.
    pub(crate) fn primary_code(&self) -> Option<i32> {
        match &self.0 {
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff),
            _ => None,
        }
    }

    /// Whether SQLite gave up waiting for a lock (`SQLITE_BUSY` after `busy_timeout`, or
    /// `SQLITE_LOCKED` in a shared cache).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.primary_code(), Some(code::BUSY | code::LOCKED))
    }

    /// Whether a unique or primary-key constraint refused the write.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(&self.0, sqlx::Error::Database(db) if db.is_unique_violation())
            || self.primary_code() == Some(code::CONSTRAINT)
    }
}

impl From<SqliteError> for Error {
    /// Lock waits that ran out, a pool that had no connection in time, and a closed pool are
    /// [`Error::Unavailable`] (retrying later may succeed); a full disk, an I/O error, a
    /// corrupt file, a schema mismatch and everything else are [`Error::Backend`].
    fn from(error: SqliteError) -> Self {
        let transient = error.is_busy()
            || matches!(error.primary_code(), Some(code::NOMEM))
            || matches!(
                error.0,
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
            );
        if transient {
            Error::unavailable(STORE, error.0)
        } else {
            Error::backend(STORE, error.0)
        }
    }
}

/// Lets `?` turn a driver error straight into the session layer's error.
pub(crate) trait ResultExt<T> {
    /// Maps the error through [`SqliteError`].
    fn db(self) -> Result<T, Error>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, Error> {
        self.map_err(|e| SqliteError(e).into())
    }
}

/// Retries `op` while SQLite answers `SQLITE_BUSY` at once, for up to `timeout`.
///
/// Around a new file SQLite returns `SQLITE_BUSY` without calling the busy handler: when two
/// connections switch it to WAL mode at the same moment, and when one connects while another is
/// still creating the WAL index. Opening and migrating go through this, so stores opening one
/// new file together wait for each other as `busy_timeout` promises
/// (`concurrent_opens_and_migrations_of_a_new_file_all_succeed`).
pub(crate) async fn retry_busy<T, F, Fut>(
    timeout: std::time::Duration,
    mut op: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match op().await {
            Err(e) => {
                let error = SqliteError(e);
                if !(error.is_busy() && tokio::time::Instant::now() < deadline) {
                    return Err(error.0);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            ok => return ok,
        }
    }
}
