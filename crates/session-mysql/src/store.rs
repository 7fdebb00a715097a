//! The store: its handle, migrations, background cleanup and the [`SessionStore`] contract.
//!
//! Round trips per operation (the README has the table): one for `load`, `save`, `exists`,
//! `touch`, the counts and the listings; `create` and `rotate` add a clean-up of an expired
//! row only when the key they need is taken; `delete`, `delete_many` and `delete_by_owner`
//! take a second statement only when expired rows may be left behind.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use session_core::sql::{count_from_column, key_from_column};
use session_core::{
    CleanupHandle, CleanupTask, Error, Record, Result, SessionKey, SessionStore, Timestamp,
    async_trait, check_data_len,
};
use sqlx::mysql::MySqlPool;

use crate::builder::MySqlStoreBuilder;
use crate::error::{DbError, STORE, is_broken_connection, is_duplicate_key};
use crate::format::{check_owner, record_from_row};
use crate::sql::{DELETE_MANY_CHUNK, Queries, migration_lock_name};

/// MySQL: a duplicate index name (an index created meanwhile by an older migration).
const ER_DUP_KEYNAME: u16 = 1061;
/// How long `migrate` waits for another process's migration of the same table.
const MIGRATION_LOCK_SECS: i64 = 60;

pub(crate) struct Inner {
    pub(crate) pool: MySqlPool,
    pub(crate) database: Option<String>,
    pub(crate) table: String,
    pub(crate) sql: Queries,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) cleanup_batch: i64,
    pub(crate) cleanup_interval: Duration,
}

/// A [`SessionStore`] keeping one row per session in a MySQL 8 or MariaDB 10.11+ table.
///
/// Cloning gives another handle to the same pool, table and cleanup task. Create the table
/// with [`migrate`](Self::migrate). Expired rows are swept in the background every
/// [`cleanup_interval`](MySqlStoreBuilder::cleanup_interval) (they are never returned either
/// way; they only take space until swept); the sweep ends with the last handle or with
/// [`stop_cleanup`](Self::stop_cleanup).
#[derive(Clone)]
pub struct MySqlStore {
    inner: Arc<Inner>,
    cleanup: CleanupHandle,
}

impl fmt::Debug for MySqlStore {
    // The pool's connect options hold the password: show only what identifies the store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.inner.sql.qualified)
            .field("max_data_len", &self.inner.max_data_len)
            .field("cleanup_batch", &self.inner.cleanup_batch)
            .field("cleanup_interval", &self.inner.cleanup_interval)
            .field("pool_size", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

impl MySqlStore {
    /// Wraps a configured store and starts its sweep.
    pub(crate) fn start(inner: Inner) -> Result<Self> {
        let interval = inner.cleanup_interval;
        let inner = Arc::new(inner);
        let cleanup = CleanupTask::spawn(
            STORE,
            interval,
            Arc::downgrade(&inner),
            |inner: Arc<Inner>| async move { inner.delete_expired().await },
        )?;
        Ok(Self {
            inner,
            cleanup: CleanupHandle::new(cleanup),
        })
    }

    /// A store over `pool` with default settings: table `sessions` in the connection's
    /// database, 4096-byte limit, a sweep every
    /// [`DEFAULT_CLEANUP_INTERVAL`](crate::DEFAULT_CLEANUP_INTERVAL). Call
    /// [`migrate`](Self::migrate) once to create the table.
    ///
    /// # Errors
    /// [`Error::Config`] outside a Tokio runtime (see [`MySqlStoreBuilder::build`]).
    pub fn new(pool: MySqlPool) -> Result<Self> {
        MySqlStoreBuilder::default().build(pool)
    }

    /// Connects to `url` with default settings (see [`MySqlStoreBuilder::connect`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL, [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        MySqlStoreBuilder::default().connect(url).await
    }

    /// Starts configuring a store.
    pub fn builder() -> MySqlStoreBuilder {
        MySqlStoreBuilder::default()
    }

    /// The pool this store runs on.
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    /// The configured database, or `None` for the connection's current one.
    pub fn database(&self) -> Option<&str> {
        self.inner.database.as_deref()
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// Creates the database (when one is configured), the table and its indexes if they are
    /// missing. Idempotent, and safe when many app servers call it at once: it holds a named
    /// lock (`GET_LOCK`) for the table while it looks and creates, so concurrent callers wait
    /// for each other instead of racing on the data dictionary. Once everything exists it runs
    /// no DDL, so it takes no metadata lock that would hold up requests on the table.
    ///
    /// # Errors
    /// [`Error::Config`] when no database is configured and the connection has none selected;
    /// [`Error::Unavailable`] when the server cannot be reached or another migration holds
    /// the lock for over a minute; [`Error::Backend`] when the server refuses (e.g. no
    /// `CREATE` privilege).
    pub async fn migrate(&self) -> Result<()> {
        let inner = &*self.inner;
        let mut conn = inner.pool.acquire().await.map_err(DbError)?;
        let lock = migration_lock_name(inner.database.as_deref(), &inner.table);
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock)
            .bind(MIGRATION_LOCK_SECS)
            .fetch_one(&mut *conn)
            .await
            .map_err(DbError)?;
        if locked != Some(1) {
            return Err(Error::unavailable(
                STORE,
                format!(
                    "another migration of {} held its lock for over {MIGRATION_LOCK_SECS} s",
                    inner.sql.qualified
                ),
            ));
        }
        let migrated = inner.migrate_locked(&mut conn).await;
        // The lock also ends with the connection, should this fail.
        let released = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut *conn)
            .await
            .map_err(DbError);
        migrated?;
        released?;
        Ok(())
    }

    /// Stops the background sweep and waits until it has ended (a sweep under way finishes
    /// first). Idempotent; every clone of the store shares the one task.
    pub async fn stop_cleanup(&self) {
        self.cleanup.stop().await;
    }
}

impl Inner {
    /// The steps of [`MySqlStore::migrate`] under its lock.
    async fn migrate_locked(&self, conn: &mut sqlx::MySqlConnection) -> Result<()> {
        let database = match &self.database {
            Some(db) => Some(db.clone()),
            None => sqlx::query_scalar("SELECT DATABASE()")
                .fetch_one(&mut *conn)
                .await
                .map_err(DbError)?,
        };
        let Some(database) = database else {
            return Err(Error::Config(
                "no database: name one in the URL (mysql://host/DB) or with MySqlStoreBuilder::database".into(),
            ));
        };
        // Look before creating: `CREATE DATABASE IF NOT EXISTS` needs the global CREATE
        // privilege even when the database exists, and `CREATE INDEX` is an ALTER TABLE.
        let (db_ok, table_ok, expiry_ok, owner_ok): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?),
                (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?),
                (SELECT COUNT(*) FROM information_schema.STATISTICS
                    WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'expires_at_idx'),
                (SELECT COUNT(*) FROM information_schema.STATISTICS
                    WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'owner_idx')",
        )
        .bind(&database)
        .bind(&database)
        .bind(&self.table)
        .bind(&database)
        .bind(&self.table)
        .bind(&database)
        .bind(&self.table)
        .fetch_one(&mut *conn)
        .await
        .map_err(DbError)?;
        if let (0, Some(ddl)) = (db_ok, &self.sql.create_database) {
            sqlx::query(ddl)
                .execute(&mut *conn)
                .await
                .map_err(DbError)?;
        }
        if table_ok == 0 {
            // The table comes with both indexes.
            sqlx::query(&self.sql.create_table)
                .execute(&mut *conn)
                .await
                .map_err(DbError)?;
            return Ok(());
        }
        for (exists, ddl) in [
            (expiry_ok, &self.sql.create_expiry_index),
            (owner_ok, &self.sql.create_owner_index),
        ] {
            if exists > 0 {
                continue;
            }
            match sqlx::query(ddl).execute(&mut *conn).await {
                Err(sqlx::Error::Database(db))
                    if db
                        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|e| e.number() == ER_DUP_KEYNAME) => {}
                other => {
                    other.map_err(DbError)?;
                }
            }
        }
        Ok(())
    }

    /// Runs an idempotent statement (or a short sequence of them), and once more, on another
    /// connection from the pool, when its connection broke under it. Only for work whose second
    /// run cannot do harm when the first was applied and only its reply was lost: reads,
    /// deletes, and `touch`, which sets the same deadline again. The answer is then the second
    /// run's (a delete whose first run removed the row reports that nothing was there).
    ///
    /// The broken connection is not reused: sqlx closes it, and the retry takes another (one
    /// the pool has checked, when it tests before handing connections out, as pools made by
    /// [`MySqlStoreBuilder::connect`] do).
    async fn retrying<'a, T, Fut>(&'a self, op: impl Fn(&'a MySqlPool) -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'a,
    {
        match op(&self.pool).await {
            Err(e) if is_broken_connection(&e) => {
                tracing::debug!(store = STORE, error = %e, "connection lost; retrying an idempotent statement once");
                Ok(op(&self.pool).await.map_err(DbError)?)
            }
            other => Ok(other.map_err(DbError)?),
        }
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let deleted = self
                .retrying(|pool| {
                    sqlx::query(&self.sql.delete_expired_batch)
                        .bind(self.cleanup_batch)
                        .execute(pool)
                })
                .await?
                .rows_affected();
            total += deleted;
            // A short batch means nothing expired is left.
            if deleted < self.cleanup_batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    async fn insert(&self, record: &Record) -> Result<(), sqlx::Error> {
        sqlx::query(&self.sql.insert)
            .bind(record.key.as_bytes().as_slice())
            .bind(&record.data[..])
            .bind(record.created_at.unix_millis())
            .bind(record.expires_at.unix_millis())
            .bind(record.version)
            .bind(record.owner.as_deref())
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Moves the live row at `old` to `new` in one transaction, after removing an expired
    /// row that holds `new`; rolled back (so nothing changes) unless the move happened.
    async fn rotate_over_expired(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(DbError)?;
        sqlx::query(&self.sql.delete_expired_at)
            .bind(new.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(DbError)?;
        let moved = sqlx::query(&self.sql.rotate)
            .bind(new.as_bytes().as_slice())
            .bind(old.as_bytes().as_slice())
            .execute(&mut *tx)
            .await;
        match moved {
            Ok(done) if done.rows_affected() > 0 => {
                tx.commit().await.map_err(DbError)?;
                Ok(())
            }
            // Dropping the transaction rolls it back; say so to the server now, so the
            // connection goes back to the pool clean.
            Ok(_) => {
                tx.rollback().await.map_err(DbError)?;
                Err(Error::NotFound)
            }
            Err(e) if is_duplicate_key(&e) => {
                tx.rollback().await.map_err(DbError)?;
                Err(Error::AlreadyExists)
            }
            Err(e) => Err(DbError(e).into()),
        }
    }

    /// Moves the live record at `old` to `new` (the trait's rotation).
    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        // One statement, so atomic on its own: the common case, a fresh key.
        let moved = sqlx::query(&self.sql.rotate)
            .bind(new.as_bytes().as_slice())
            .bind(old.as_bytes().as_slice())
            .execute(&self.pool)
            .await;
        match moved {
            Ok(done) if done.rows_affected() > 0 => Ok(()),
            Ok(_) => Err(Error::NotFound),
            // `new` is taken: by a live row (AlreadyExists), or by an expired one, which must
            // not block the move.
            Err(e) if is_duplicate_key(&e) => self.rotate_over_expired(old, new).await,
            Err(e) => Err(DbError(e).into()),
        }
    }
}

#[async_trait]
impl SessionStore for MySqlStore {
    async fn create(&self, record: &Record) -> Result<()> {
        let inner = &*self.inner;
        check_data_len(inner.max_data_len, record.data.len())?;
        check_owner(record.owner.as_deref())?;
        match inner.insert(record).await {
            Ok(()) => Ok(()),
            Err(e) if is_duplicate_key(&e) => {
                // The key is taken, maybe by an expired row, which must not block the create.
                // Remove that one and insert again: the primary key then decides.
                sqlx::query(&inner.sql.delete_expired_at)
                    .bind(record.key.as_bytes().as_slice())
                    .execute(&inner.pool)
                    .await
                    .map_err(DbError)?;
                match inner.insert(record).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_duplicate_key(&e) => Err(Error::AlreadyExists),
                    Err(e) => Err(DbError(e).into()),
                }
            }
            Err(e) => Err(DbError(e).into()),
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let inner = &*self.inner;
        let row = inner
            .retrying(|pool| {
                sqlx::query(&inner.sql.load)
                    .bind(key.as_bytes().as_slice())
                    .fetch_optional(pool)
            })
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        let inner = &*self.inner;
        check_data_len(inner.max_data_len, record.data.len())?;
        check_owner(record.owner.as_deref())?;
        let next = record.version.checked_add(1).ok_or_else(|| {
            Error::backend(
                STORE,
                format!("version {} cannot be incremented", record.version),
            )
        })?;
        let saved = sqlx::query(&inner.sql.save)
            .bind(&record.data[..])
            .bind(record.expires_at.unix_millis())
            .bind(record.owner.as_deref())
            .bind(record.key.as_bytes().as_slice())
            .bind(record.version)
            .execute(&inner.pool)
            .await
            .map_err(DbError)?
            .rows_affected();
        if saved > 0 {
            return Ok(next);
        }
        // Nothing written: tell a live row of another version from no live row.
        if self.exists(&record.key).await? {
            Err(Error::Conflict)
        } else {
            Err(Error::NotFound)
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let inner = &*self.inner;
        let key = key.as_bytes().as_slice();
        inner
            .retrying(|pool| async move {
                // Both statements on one connection, so a lost connection fails the attempt
                // once, not once per statement.
                let mut conn = pool.acquire().await?;
                let live = sqlx::query(&inner.sql.delete_live)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if live > 0 {
                    return Ok(true);
                }
                // An expired row may still be there: it goes too.
                sqlx::query(&inner.sql.delete_any)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
                Ok(false)
            })
            .await
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        let inner = &*self.inner;
        let mut total = 0;
        for chunk in keys.chunks(DELETE_MANY_CHUNK) {
            let (live_sql, expired_sql) = (
                inner.sql.delete_many(chunk.len(), true),
                inner.sql.delete_many(chunk.len(), false),
            );
            let (live_sql, expired_sql) = (&live_sql, &expired_sql);
            total += inner
                .retrying(|pool| async move {
                    let mut conn = pool.acquire().await?;
                    let mut live = sqlx::query(live_sql);
                    for key in chunk {
                        live = live.bind(key.as_bytes().as_slice());
                    }
                    let removed = live.execute(&mut *conn).await?.rows_affected();
                    if removed < chunk.len() as u64 {
                        let mut expired = sqlx::query(expired_sql);
                        for key in chunk {
                            expired = expired.bind(key.as_bytes().as_slice());
                        }
                        expired.execute(&mut *conn).await?;
                    }
                    Ok(removed)
                })
                .await?;
        }
        Ok(total)
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let inner = &*self.inner;
        let row = inner
            .retrying(|pool| {
                sqlx::query(&inner.sql.exists)
                    .bind(key.as_bytes().as_slice())
                    .fetch_optional(pool)
            })
            .await?;
        Ok(row.is_some())
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        self.inner.rotate(old, new).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let inner = &*self.inner;
        let touched = inner
            .retrying(|pool| {
                sqlx::query(&inner.sql.touch)
                    .bind(expires_at.unix_millis())
                    .bind(key.as_bytes().as_slice())
                    .execute(pool)
            })
            .await?
            .rows_affected();
        if touched == 0 {
            Err(Error::NotFound)
        } else {
            Ok(())
        }
    }

    async fn count(&self) -> Result<u64> {
        let inner = &*self.inner;
        let n: i64 = inner
            .retrying(|pool| sqlx::query_scalar(&inner.sql.count).fetch_one(pool))
            .await?;
        Ok(count_from_column(n))
    }

    async fn count_expired(&self) -> Result<u64> {
        let inner = &*self.inner;
        let n: i64 = inner
            .retrying(|pool| sqlx::query_scalar(&inner.sql.count_expired).fetch_one(pool))
            .await?;
        Ok(count_from_column(n))
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        let inner = &*self.inner;
        let rows: Vec<Vec<u8>> = inner
            .retrying(|pool| sqlx::query_scalar(&inner.sql.list).fetch_all(pool))
            .await?;
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
        let rows: Vec<Vec<u8>> = inner
            .retrying(|pool| match after {
                None => sqlx::query_scalar(&inner.sql.list_first_page)
                    .bind(fetch)
                    .fetch_all(pool),
                Some(after) => sqlx::query_scalar(&inner.sql.list_page_after)
                    .bind(after.as_bytes().as_slice())
                    .bind(fetch)
                    .fetch_all(pool),
            })
            .await?;
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
        let rows = inner
            .retrying(|pool| {
                sqlx::query(&inner.sql.list_by_owner)
                    .bind(owner)
                    .bind(owner)
                    .fetch_all(pool)
            })
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let inner = &*self.inner;
        inner
            .retrying(|pool| async move {
                let mut conn = pool.acquire().await?;
                let live = sqlx::query(&inner.sql.delete_live_by_owner)
                    .bind(owner)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                // The owner's expired rows go too (they are garbage anyway); only live ones
                // count. A row live for the first statement was deleted by it.
                sqlx::query(&inner.sql.delete_expired_by_owner)
                    .bind(owner)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await?;
                Ok(live)
            })
            .await
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }
}
