//! The store: its pools, migrations, background cleanup and the [`SessionStore`] impl.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_core::sql::{count_from_column, key_from_column};
use session_core::{
    CleanupHandle, Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait,
    check_data_len,
};
use sqlx::sqlite::{SqlitePool, SqliteSynchronous};

use crate::builder::SqliteStoreBuilder;
use crate::error::{ResultExt as _, SqliteError, retry_busy};
use crate::format::{keys_as_json, millis, now, record_from_row, version_from_db, version_to_db};
use crate::sql::Queries;

pub(crate) struct Inner {
    /// Every write goes through this pool (one connection by default), so writes of this
    /// process queue here instead of contending for SQLite's write lock.
    pub(crate) writer: SqlitePool,
    /// Reads; the same pool as `writer` for an in-memory database.
    pub(crate) reader: SqlitePool,
    pub(crate) path: Option<PathBuf>,
    pub(crate) table: String,
    pub(crate) sql: Queries,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) cleanup_batch: i64,
    pub(crate) cleanup_interval: Duration,
    pub(crate) synchronous: SqliteSynchronous,
    /// How long a lock wait may take; also bounds the retries of [`retry_busy`].
    pub(crate) busy_timeout: Duration,
}

/// A [`SessionStore`] keeping one row per session in a SQLite database: a file (WAL mode,
/// shareable between processes) or a private in-memory database.
///
/// Cloning gives another handle to the same pools, table and cleanup task. Create the table
/// with [`migrate`](Self::migrate). Expired rows are swept in the background every
/// [`cleanup_interval`](SqliteStoreBuilder::cleanup_interval) (they are never returned
/// either way); the sweep ends with the last handle or with
/// [`stop_cleanup`](Self::stop_cleanup).
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
    pub(crate) cleanup: CleanupHandle,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("SqliteStore")
            .field("path", &inner.path)
            .field("table", &inner.table)
            .field("max_data_len", &inner.max_data_len)
            .field("synchronous", &inner.synchronous)
            .field("cleanup_batch", &inner.cleanup_batch)
            .field("cleanup_interval", &inner.cleanup_interval)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Starts configuring a store.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::default()
    }

    /// Opens the file at `path` with default settings (see [`SqliteStoreBuilder::open`]).
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        SqliteStoreBuilder::default().open(path).await
    }

    /// Opens a fresh in-memory database with default settings (see
    /// [`SqliteStoreBuilder::open_memory`]).
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::open_memory`].
    pub async fn open_memory() -> Result<Self> {
        SqliteStoreBuilder::default().open_memory().await
    }

    /// Opens what `url` names with default settings (see [`SqliteStoreBuilder::connect`]).
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self> {
        SqliteStoreBuilder::default().connect(url).await
    }

    /// The pool every write goes through.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.inner.writer
    }

    /// The pool reads go through (the write pool, for an in-memory database).
    pub fn read_pool(&self) -> &SqlitePool {
        &self.inner.reader
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// The SQL this store runs for `operation` (`"create"`, `"load"`, `"save"`, `"delete"`,
    /// `"rotate"`, `"touch"`), exactly as it sends it, for tools that must run the same
    /// statements (the benchmark's bare-sqlx baseline asserts it does). `None` for any other
    /// name.
    pub fn statement(&self, operation: &str) -> Option<&str> {
        let sql = &self.inner.sql;
        Some(match operation {
            "create" => &sql.insert,
            "load" => &sql.load,
            "save" => &sql.save,
            "delete" => &sql.delete,
            "rotate" => &sql.rotate,
            "touch" => &sql.touch,
            _ => return None,
        })
    }

    /// Creates the table and its indexes if they are missing. Idempotent, and safe when
    /// several stores or processes call it at once: it is one `BEGIN IMMEDIATE` transaction,
    /// which takes the write lock before reading the schema, so concurrent callers wait for
    /// each other (up to the busy timeout) instead of racing.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when another process holds the write lock past the busy
    /// timeout, [`Error::Backend`] when SQLite refuses (a read-only file, a table of that name
    /// with another shape is reported by the first operation instead).
    pub async fn migrate(&self) -> Result<()> {
        let inner = &*self.inner;
        retry_busy(inner.busy_timeout, || async move {
            let mut conn = inner.writer.acquire().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            for ddl in [
                &inner.sql.create_table,
                &inner.sql.create_expiry_index,
                &inner.sql.create_owner_index,
            ] {
                sqlx::query(ddl).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
        .await
        .db()
    }

    /// Stops the background sweep and waits until it has ended (a sweep under way finishes
    /// first). Idempotent; every clone of the store shares the one task.
    pub async fn stop_cleanup(&self) {
        self.cleanup.stop().await;
    }

    /// Moves the live record at `old` to `new`: one statement, then (only when it moved
    /// nothing) one read to say why.
    async fn move_record(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let inner = &*self.inner;
        // A concurrent change between the move and the probe (the old key expiring, the new
        // one being freed) makes the probe's answer contradict the move's; then try again.
        for _ in 0..3 {
            let now = now();
            let moved = sqlx::query(&inner.sql.rotate)
                .bind(old.as_bytes().as_slice())
                .bind(new.as_bytes().as_slice())
                .bind(now)
                .execute(&inner.writer)
                .await
                .map_err(SqliteError)
                .map_err(|e| {
                    if e.is_unique_violation() {
                        Error::AlreadyExists
                    } else {
                        e.into()
                    }
                })?
                .rows_affected();
            if moved > 0 {
                return Ok(());
            }
            let (old_live, new_live): (bool, bool) = sqlx::query_as(&inner.sql.rotate_probe)
                .bind(old.as_bytes().as_slice())
                .bind(new.as_bytes().as_slice())
                .bind(now)
                .fetch_one(&inner.reader)
                .await
                .db()?;
            if !old_live {
                return Err(Error::NotFound);
            }
            if new_live {
                return Err(Error::AlreadyExists);
            }
        }
        Err(Error::Conflict)
    }
}

impl Inner {
    pub(crate) async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let deleted = sqlx::query(&self.sql.delete_expired_batch)
                .bind(now())
                .bind(self.cleanup_batch)
                .execute(&self.writer)
                .await
                .db()?
                .rows_affected();
            total += deleted;
            if deleted < self.cleanup_batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

/// How many of the `RETURNING expires_at > now` flags of a delete are true: the live rows.
fn live_of(flags: &[bool]) -> u64 {
    flags.iter().filter(|live| **live).count() as u64
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &Record) -> Result<()> {
        let inner = &*self.inner;
        check_data_len(inner.max_data_len, record.data.len())?;
        let inserted = sqlx::query(&inner.sql.insert)
            .bind(record.key.as_bytes().as_slice())
            .bind(&record.data[..])
            .bind(millis(record.created_at))
            .bind(millis(record.expires_at))
            .bind(version_to_db(record.version)?)
            .bind(record.owner.as_deref())
            .bind(now())
            .execute(&inner.writer)
            .await
            .db()?
            .rows_affected();
        if inserted == 0 {
            Err(Error::AlreadyExists)
        } else {
            Ok(())
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let inner = &*self.inner;
        let row = sqlx::query(&inner.sql.load)
            .bind(key.as_bytes().as_slice())
            .bind(now())
            .fetch_optional(&inner.reader)
            .await
            .db()?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        let inner = &*self.inner;
        check_data_len(inner.max_data_len, record.data.len())?;
        let now = now();
        let version: Option<i64> = sqlx::query_scalar(&inner.sql.save)
            .bind(record.key.as_bytes().as_slice())
            .bind(version_to_db(record.version)?)
            .bind(&record.data[..])
            .bind(millis(record.expires_at))
            .bind(record.owner.as_deref())
            .bind(now)
            .fetch_optional(&inner.writer)
            .await
            .db()?;
        if let Some(version) = version {
            return version_from_db(version);
        }
        let live: bool = sqlx::query_scalar(&inner.sql.is_live)
            .bind(record.key.as_bytes().as_slice())
            .bind(now)
            .fetch_one(&inner.reader)
            .await
            .db()?;
        Err(if live {
            Error::Conflict
        } else {
            Error::NotFound
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let inner = &*self.inner;
        let live: Option<bool> = sqlx::query_scalar(&inner.sql.delete)
            .bind(key.as_bytes().as_slice())
            .bind(now())
            .fetch_optional(&inner.writer)
            .await
            .db()?;
        Ok(live.unwrap_or(false))
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let inner = &*self.inner;
        let flags: Vec<bool> = sqlx::query_scalar(&inner.sql.delete_many)
            .bind(keys_as_json(keys))
            .bind(now())
            .fetch_all(&inner.writer)
            .await
            .db()?;
        Ok(live_of(&flags))
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let inner = &*self.inner;
        sqlx::query_scalar(&inner.sql.exists)
            .bind(key.as_bytes().as_slice())
            .bind(now())
            .fetch_one(&inner.reader)
            .await
            .db()
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        self.move_record(old, new).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let inner = &*self.inner;
        let touched = sqlx::query(&inner.sql.touch)
            .bind(key.as_bytes().as_slice())
            .bind(millis(expires_at))
            .bind(now())
            .execute(&inner.writer)
            .await
            .db()?
            .rows_affected();
        if touched == 0 {
            Err(Error::NotFound)
        } else {
            Ok(())
        }
    }

    async fn count(&self) -> Result<u64> {
        let inner = &*self.inner;
        let n: i64 = sqlx::query_scalar(&inner.sql.count)
            .bind(now())
            .fetch_one(&inner.reader)
            .await
            .db()?;
        Ok(count_from_column(n))
    }

    async fn count_expired(&self) -> Result<u64> {
        let inner = &*self.inner;
        let n: i64 = sqlx::query_scalar(&inner.sql.count_expired)
            .bind(now())
            .fetch_one(&inner.reader)
            .await
            .db()?;
        Ok(count_from_column(n))
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        let inner = &*self.inner;
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(&inner.sql.list)
            .bind(now())
            .fetch_all(&inner.reader)
            .await
            .db()?;
        rows.iter().map(|k| key_from_column(k)).collect()
    }

    async fn list_page(
        &self,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<(Vec<SessionKey>, Option<SessionKey>)> {
        let inner = &*self.inner;
        let limit = limit.max(1);
        // One row beyond the page tells whether another page follows, so the last page ends
        // the walk without an extra empty query.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let query = match after {
            None => sqlx::query_scalar(&inner.sql.list_first_page)
                .bind(now())
                .bind(fetch),
            Some(after) => sqlx::query_scalar(&inner.sql.list_page_after)
                .bind(now())
                .bind(fetch)
                .bind(after.as_bytes().as_slice()),
        };
        let rows: Vec<Vec<u8>> = query.fetch_all(&inner.reader).await.db()?;
        let mut keys = rows
            .iter()
            .map(|k| key_from_column(k))
            .collect::<Result<Vec<_>>>()?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = if more { keys.last().copied() } else { None };
        Ok((keys, next))
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let inner = &*self.inner;
        let rows = sqlx::query(&inner.sql.list_by_owner)
            .bind(owner)
            .bind(now())
            .fetch_all(&inner.reader)
            .await
            .db()?;
        rows.iter().map(record_from_row).collect()
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let inner = &*self.inner;
        let flags: Vec<bool> = sqlx::query_scalar(&inner.sql.delete_by_owner)
            .bind(owner)
            .bind(now())
            .fetch_all(&inner.writer)
            .await
            .db()?;
        Ok(live_of(&flags))
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }
}
