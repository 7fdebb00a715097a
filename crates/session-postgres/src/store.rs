//! The store, its builder, migrations and background cleanup.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use session_core::{
    Bytes, CleanupTask, Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait,
    check_data_len,
};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};

use crate::error::{DbError, STORE, is_broken_connection, is_unique_violation};
use crate::format::{PgMillis, version_from_db, version_to_db};
use crate::sql::{Queries, migration_lock_key, validate_schema, validate_table};

/// Default largest session payload, in bytes: 4096, as Go's pgstore.
pub const DEFAULT_MAX_DATA_LEN: usize = 4096;
/// Default number of rows one cleanup statement deletes.
pub const DEFAULT_CLEANUP_BATCH: usize = 1000;
/// Default schema.
pub const DEFAULT_SCHEMA: &str = "public";
/// Default table.
pub const DEFAULT_TABLE: &str = "sessions";
/// Default interval of the background sweep of expired rows: 5 minutes. Expired rows are never
/// returned either way; the sweep only gives their space back.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

const DEFAULT_MAX_CONNECTIONS: u32 = 10;
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const APPLICATION_NAME: &str = "session-postgres";

struct Inner {
    pool: PgPool,
    schema: String,
    table: String,
    sql: Queries,
    max_data_len: Option<usize>,
    cleanup_batch: i64,
    cleanup_interval: Duration,
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
    cleanup: Arc<Mutex<Option<CleanupTask>>>,
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

/// Configures a [`PostgresStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresStoreBuilder {
    schema: String,
    table: String,
    max_data_len: Option<usize>,
    cleanup_batch: usize,
    cleanup_interval: Duration,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            cleanup_batch: DEFAULT_CLEANUP_BATCH,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl PostgresStoreBuilder {
    /// The schema holding the table (default `public`). It must be a plain identifier (ASCII
    /// letters, digits, `_`, not starting with a digit or `pg_`); it is used exactly as given,
    /// quoted, so case matters.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The table (default `sessions`): a plain identifier of at most 48 bytes, so the index
    /// names derived from it fit PostgreSQL's 63-byte limit. Used exactly as given, quoted.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The largest session payload accepted, in bytes (default [`DEFAULT_MAX_DATA_LEN`]);
    /// `None` for no limit. Larger payloads fail with [`Error::TooLarge`] before any query.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// How many expired rows one cleanup statement deletes (default
    /// [`DEFAULT_CLEANUP_BATCH`]): smaller batches hold fewer row locks for less time.
    pub fn cleanup_batch(mut self, rows: usize) -> Self {
        self.cleanup_batch = rows;
        self
    }

    /// How often the background task deletes expired rows (default
    /// [`DEFAULT_CLEANUP_INTERVAL`]), the first time one interval after the store is built.
    /// Zero turns the task off; expired rows are then still never returned, only kept until
    /// [`SessionStore::delete_expired`] runs. Several app servers sweeping the same table do
    /// not block each other (the sweep skips rows another one has locked).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Pool size when the store builds its own pool with [`connect`](Self::connect)
    /// (default 10).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// How long an operation waits for a pooled connection before failing with
    /// [`Error::Unavailable`], when the store builds its own pool (default 5 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Checks the names and the batch size; returns the batch size as the query binds it.
    fn validate(&self) -> Result<i64> {
        validate_schema(&self.schema)?;
        validate_table(&self.table)?;
        i64::try_from(self.cleanup_batch)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::Config(
                    format!(
                        "cleanup batch must be 1 to {}, got {}",
                        i64::MAX,
                        self.cleanup_batch
                    )
                    .into(),
                )
            })
    }

    /// Builds the store over `pool` and starts its background sweep (unless
    /// [`cleanup_interval`](Self::cleanup_interval) is zero). Does not touch the database:
    /// call [`PostgresStore::migrate`] to create the table.
    ///
    /// # Errors
    /// [`Error::Config`] for a schema or table name that is not a plain identifier, a cleanup
    /// batch of zero, or a non-zero cleanup interval outside a Tokio runtime (a store built
    /// there would otherwise never sweep: build it inside the runtime, or set the interval to
    /// zero and call [`SessionStore::delete_expired`] yourself).
    pub fn build(self, pool: PgPool) -> Result<PostgresStore> {
        let cleanup_batch = self.validate()?;
        let sql = Queries::new(&self.schema, &self.table);
        let inner = Arc::new(Inner {
            pool,
            schema: self.schema,
            table: self.table,
            sql,
            max_data_len: self.max_data_len,
            cleanup_batch,
            cleanup_interval: self.cleanup_interval,
        });
        let cleanup = CleanupTask::spawn(
            STORE,
            self.cleanup_interval,
            Arc::downgrade(&inner),
            |inner: Arc<Inner>| async move { inner.delete_expired().await },
        )?;
        Ok(PostgresStore {
            inner,
            cleanup: Arc::new(Mutex::new(cleanup)),
        })
    }

    /// Connects a new pool to `url` (`postgres://user:pass@host:port/db?...`) and builds the
    /// store over it. The pool has [`max_connections`](Self::max_connections) connections
    /// (opened on demand), checks each before handing it out, and names itself
    /// `session-postgres` in `pg_stat_activity` unless the URL sets `application_name`.
    ///
    /// TLS follows the URL's `sslmode` (`disable`, `prefer`, the default, `require`,
    /// `verify-ca`, `verify-full`) and `sslrootcert`, as with `libpq`, when the crate is built
    /// with its `tls` feature (rustls). Without it every connection is plain text, and a URL
    /// that requires TLS is refused with [`Error::Config`] naming the feature.
    ///
    /// The background sweep starts as with [`build`](Self::build).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL or name, or a URL requiring TLS in a build without it;
    /// [`Error::Unavailable`] when the
    /// server cannot be reached; [`Error::Backend`] when the server refuses the connection (a
    /// TLS certificate that does not verify, a rejected login).
    pub async fn connect(self, url: &str) -> Result<PostgresStore> {
        // Refuse a bad configuration before opening any connection.
        self.validate()?;

        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::Config(
                "a PostgreSQL URL starts with postgres:// or postgresql://".into(),
            ));
        }
        let mut options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            Error::Config(format!("invalid PostgreSQL URL: {e}").into())
        })?;
        if options.get_application_name().is_none() {
            options = options.application_name(APPLICATION_NAME);
        }
        let wants_tls = matches!(
            options.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        );
        let loopback = options.get_socket().is_some()
            || matches!(options.get_host(), "localhost" | "127.0.0.1" | "::1");
        if !cfg!(feature = "tls")
            && matches!(options.get_ssl_mode(), PgSslMode::Prefer)
            && !loopback
        {
            // `prefer` (what a URL without `sslmode` means) quietly falls back to plain text
            // in a build without TLS; say so once, where an operator will see it.
            tracing::warn!(
                store = STORE,
                host = options.get_host(),
                "connecting to PostgreSQL in plain text: session-postgres is built without its `tls` feature; enable it, or set sslmode=disable to silence this"
            );
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| match e {
                // sqlx says so only as text; the mode check keeps a real handshake failure of
                // a TLS-enabled build from being taken for a missing feature.
                sqlx::Error::Tls(_) if wants_tls && !cfg!(feature = "tls") => Error::Config(
                    "this URL requires TLS (sslmode), but session-postgres was built without \
                     it: enable its `tls` feature (`postgres-tls` in the `sessions` crate)"
                        .into(),
                ),
                e => Error::from(DbError(e)),
            })?;
        self.build(pool)
    }
}

impl PostgresStore {
    /// A store over `pool` with default settings: table `public.sessions`, 4096-byte limit,
    /// a sweep every [`DEFAULT_CLEANUP_INTERVAL`]. Call [`migrate`](Self::migrate) once to
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
        let task = self
            .cleanup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.stop().await;
        }
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
            // A short batch means nothing expired is left (or the rest is locked by requests
            // right now and will be swept next time).
            if deleted < self.cleanup_batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}

fn key_from_db(bytes: &[u8]) -> Result<SessionKey> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::corrupt(format!("stored key is {} bytes, not 32", bytes.len())))?;
    Ok(SessionKey::from_bytes(bytes))
}

/// Reads a row of `key, data, created_at, expires_at, version, owner`.
fn record_from_row(row: &PgRow) -> Result<Record> {
    let key: &[u8] = row.try_get(0).map_err(DbError)?;
    let data: Vec<u8> = row.try_get(1).map_err(DbError)?;
    let created_at: PgMillis = row.try_get(2).map_err(DbError)?;
    let expires_at: PgMillis = row.try_get(3).map_err(DbError)?;
    let version: i64 = row.try_get(4).map_err(DbError)?;
    let owner: Option<String> = row.try_get(5).map_err(DbError)?;
    Ok(Record {
        key: key_from_db(key)?,
        data: Bytes::from(data),
        created_at: created_at.0,
        expires_at: expires_at.0,
        version: version_from_db(version)?,
        owner,
    })
}

fn count_from_db(n: i64) -> u64 {
    // `count(*)` is never negative.
    n.unsigned_abs()
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
        Ok(count_from_db(n))
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
        Ok(count_from_db(n))
    }

    async fn count_expired(&self) -> Result<u64> {
        let inner = &*self.inner;
        let n: i64 = inner
            .retrying(|pool| sqlx::query_scalar(&inner.sql.count_expired).fetch_one(pool))
            .await?;
        Ok(count_from_db(n))
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        let inner = &*self.inner;
        let rows: Vec<Vec<u8>> = inner
            .retrying(|pool| sqlx::query_scalar(&inner.sql.list).fetch_all(pool))
            .await?;
        rows.iter().map(|k| key_from_db(k)).collect()
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
            .map(|k| key_from_db(k))
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
        Ok(count_from_db(n))
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        check::<PostgresStore>();
        check::<PostgresStoreBuilder>();
    }
}
