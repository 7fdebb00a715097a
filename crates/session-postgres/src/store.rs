//! The store: its handle, migrations, background cleanup and the [`SessionStore`] contract.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use session_core::sql::{count_from_column, key_from_column};
use session_core::{
    CleanupHandle, CleanupTask, Error, Record, Result, SessionKey, SessionStore, Timestamp,
    async_trait, check_data_len,
};
use sqlx::Row as _;
use sqlx::postgres::PgPool;

use crate::builder::PostgresStoreBuilder;
use crate::error::{DbError, STORE, is_broken_connection, is_unique_violation};
use crate::format::{PgMillis, record_from_row, version_from_db, version_to_db};
use crate::sql::{Queries, migration_lock_key};

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) sql: Queries,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) cleanup_batch: i64,
    pub(crate) cleanup_interval: Duration,
}

/// A [`SessionStore`] keeping one row per session in a PostgreSQL table.
///
/// Cloning gives another handle to the same pool, table and cleanup task. Create the table
/// with [`migrate`](Self::migrate). Expired rows are swept in the background every
/// [`cleanup_interval`](PostgresStoreBuilder::cleanup_interval) (they are never returned
/// either way; they only take space until swept); the sweep ends with the last handle or
/// with [`stop_cleanup`](Self::stop_cleanup).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    cleanup: CleanupHandle,
}

impl fmt::Debug for PostgresStore {
    // The pool's connect options hold the password: show only what identifies the store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.sql.qualified)
            .field("max_data_len", &self.inner.max_data_len)
            .field("cleanup_batch", &self.inner.cleanup_batch)
            .field("cleanup_interval", &self.inner.cleanup_interval)
            .field("pool_size", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
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

    /// A store over `pool` with default settings: table `public.sessions`, 4096-byte limit,
    /// a sweep every
    /// [`DEFAULT_CLEANUP_INTERVAL`](crate::DEFAULT_CLEANUP_INTERVAL). Call [`migrate`](Self::migrate) once to
    /// create the table.
    ///
    /// # Errors
    /// [`Error::Config`] outside a Tokio runtime (see [`PostgresStoreBuilder::build`]).
    pub fn new(pool: PgPool) -> Result<Self> {
        PostgresStoreBuilder::default().build(pool)
    }

    /// Connects to `url` with default settings (see [`PostgresStoreBuilder::connect`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL, [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        PostgresStoreBuilder::default().connect(url).await
    }

    /// Starts configuring a store.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    /// The pool this store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema of the table.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// Creates the schema, table and indexes if they are missing. Idempotent, and safe when
    /// many app servers call it at once: it runs in one transaction holding an advisory lock
    /// on the schema, so concurrent callers wait for each other instead of racing on the
    /// catalog. Once everything exists it runs no DDL, so it takes no lock that would hold up
    /// requests on the table.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached, [`Error::Backend`] when it
    /// refuses (e.g. no `CREATE` privilege).
    pub async fn migrate(&self) -> Result<()> {
        let inner = &*self.inner;
        let mut tx = inner.pool.begin().await.map_err(DbError)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(migration_lock_key(&inner.schema))
            .execute(&mut *tx)
            .await
            .map_err(DbError)?;
        // Look before creating: `CREATE SCHEMA IF NOT EXISTS` needs the database's CREATE
        // privilege even when the schema exists, and `CREATE INDEX IF NOT EXISTS` takes a
        // SHARE lock on the table (blocking writes) before it finds the index there. So a
        // server starting next to busy ones runs no DDL at all once everything exists.
        let (schema_ok, table_ok, expiry_ok, owner_ok): (bool, bool, bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
                    to_regclass($2) IS NOT NULL, to_regclass($3) IS NOT NULL, to_regclass($4) IS NOT NULL",
        )
        .bind(&inner.schema)
        .bind(&inner.sql.qualified)
        .bind(&inner.sql.expiry_index)
        .bind(&inner.sql.owner_index)
        .fetch_one(&mut *tx)
        .await
        .map_err(DbError)?;
        let steps = [
            (schema_ok, &inner.sql.create_schema),
            (table_ok, &inner.sql.create_table),
            (expiry_ok, &inner.sql.create_expiry_index),
            (owner_ok, &inner.sql.create_owner_index),
        ];
        for (_, ddl) in steps.iter().filter(|(exists, _)| !exists) {
            sqlx::query(ddl).execute(&mut *tx).await.map_err(DbError)?;
        }
        Ok(tx.commit().await.map_err(DbError)?)
    }

    /// Stops the background sweep and waits until it has ended (a sweep under way finishes
    /// first). Idempotent; every clone of the store shares the one task.
    pub async fn stop_cleanup(&self) {
        self.cleanup.stop().await;
    }
}

impl Inner {
    /// Runs an idempotent statement, and once more (on another connection from the pool) when
    /// its connection broke under it. Only for statements whose second run cannot do harm when
    /// the first was applied and only its reply was lost: reads, deletes, and `touch`, which
    /// sets the same deadline again. The answer is then the second run's (a delete whose first
    /// run removed the row reports that nothing was there).
    ///
    /// The broken connection is not reused: the pool pings it when it comes back and drops it,
    /// and the retry takes another (one the pool has checked, when it tests before handing
    /// connections out, as pools made by [`PostgresStoreBuilder::connect`] do).
    async fn retrying<'a, T, Fut>(&'a self, op: impl Fn(&'a PgPool) -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'a,
    {
        match op(&self.pool).await {
            Err(e) if is_broken_connection(&e) => {
                tracing::debug!(store = STORE, error = %e, "connection lost; retrying an idempotent statement once");
                Ok(op(&self.pool).await.map_err(DbError)?)
            }
            other => other.map_err(|e| DbError(e).into()),
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
            // A short batch means nothing expired was left when it ran.
            if deleted < self.cleanup_batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create(&self, record: &Record) -> Result<()> {
        let inner = &*self.inner;
        check_data_len(inner.max_data_len, record.data.len())?;
        let inserted = sqlx::query(&inner.sql.insert)
            .bind(record.key.as_bytes().as_slice())
            .bind(&record.data[..])
            .bind(PgMillis(record.created_at))
            .bind(PgMillis(record.expires_at))
            .bind(version_to_db(record.version)?)
            .bind(record.owner.as_deref())
            .execute(&inner.pool)
            .await
            .map_err(DbError)?
            .rows_affected();
        if inserted == 0 {
            Err(Error::AlreadyExists)
        } else {
            Ok(())
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
        let row = sqlx::query(&inner.sql.save)
            .bind(record.key.as_bytes().as_slice())
            .bind(version_to_db(record.version)?)
            .bind(&record.data[..])
            .bind(PgMillis(record.expires_at))
            .bind(record.owner.as_deref())
            .fetch_one(&inner.pool)
            .await
            .map_err(DbError)?;
        let new_version: Option<i64> = row.try_get(0).map_err(DbError)?;
        let was_live: bool = row.try_get(1).map_err(DbError)?;
        match (new_version, was_live) {
            (Some(v), _) => version_from_db(v),
            (None, true) => Err(Error::Conflict),
            (None, false) => Err(Error::NotFound),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let inner = &*self.inner;
        let live: Option<bool> = inner
            .retrying(|pool| {
                sqlx::query_scalar(&inner.sql.delete)
                    .bind(key.as_bytes().as_slice())
                    .fetch_optional(pool)
            })
            .await?;
        Ok(live.unwrap_or(false))
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let inner = &*self.inner;
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes().as_slice()).collect();
        let n: i64 = inner
            .retrying(|pool| {
                sqlx::query_scalar(&inner.sql.delete_many)
                    .bind(&keys)
                    .fetch_one(pool)
            })
            .await?;
        Ok(count_from_column(n))
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let inner = &*self.inner;
        inner
            .retrying(|pool| {
                sqlx::query_scalar(&inner.sql.exists)
                    .bind(key.as_bytes().as_slice())
                    .fetch_one(pool)
            })
            .await
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let inner = &*self.inner;
        let moved = sqlx::query(&inner.sql.rotate)
            .bind(old.as_bytes().as_slice())
            .bind(new.as_bytes().as_slice())
            .execute(&inner.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::AlreadyExists
                } else {
                    Error::from(DbError(e))
                }
            })?
            .rows_affected();
        if moved == 0 {
            Err(Error::NotFound)
        } else {
            Ok(())
        }
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let inner = &*self.inner;
        let touched = inner
            .retrying(|pool| {
                sqlx::query(&inner.sql.touch)
                    .bind(key.as_bytes().as_slice())
                    .bind(PgMillis(expires_at))
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
        // One row beyond the page tells whether another page follows, so the last page ends
        // the walk without an extra empty query.
        let fetch = i64::try_from(limit.max(1)).unwrap_or(i64::MAX - 1) + 1;
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
        let more = keys.len() as u64 > limit.max(1) as u64;
        if more {
            keys.truncate(limit.max(1));
        }
        let next = if more { keys.last().copied() } else { None };
        Ok((keys, next))
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let inner = &*self.inner;
        let rows = inner
            .retrying(|pool| {
                sqlx::query(&inner.sql.list_by_owner)
                    .bind(owner)
                    .fetch_all(pool)
            })
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let inner = &*self.inner;
        let n: i64 = inner
            .retrying(|pool| {
                sqlx::query_scalar(&inner.sql.delete_by_owner)
                    .bind(owner)
                    .fetch_one(pool)
            })
            .await?;
        Ok(count_from_column(n))
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }
}
