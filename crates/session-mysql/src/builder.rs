//! The builder of a [`MySqlStore`] and its defaults.

use std::time::Duration;

use session_core::{Error, Result};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::error::DbError;
use crate::sql::{Queries, validate_database, validate_table};
use crate::store::{Inner, MySqlStore};

/// Default largest session payload, in bytes: 4096, as session-postgres.
pub const DEFAULT_MAX_DATA_LEN: usize = 4096;
/// Default number of rows one cleanup statement deletes.
pub const DEFAULT_CLEANUP_BATCH: usize = 1000;
/// Default table.
pub const DEFAULT_TABLE: &str = "sessions";
/// Default interval of the background sweep of expired rows: 5 minutes. Expired rows are never
/// returned either way; the sweep only gives their space back.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

const DEFAULT_MAX_CONNECTIONS: u32 = 10;
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures a [`MySqlStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MySqlStoreBuilder {
    database: Option<String>,
    table: String,
    max_data_len: Option<usize>,
    cleanup_batch: usize,
    cleanup_interval: Duration,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl Default for MySqlStoreBuilder {
    fn default() -> Self {
        Self {
            database: None,
            table: DEFAULT_TABLE.to_owned(),
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            cleanup_batch: DEFAULT_CLEANUP_BATCH,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl MySqlStoreBuilder {
    /// The database holding the table. By default the table is the connection's current
    /// database (the one the URL names). A plain identifier (ASCII letters, digits, `_`, not
    /// starting with a digit, at most 64 bytes), not a system database; used as given, quoted.
    /// [`MySqlStore::migrate`] creates it when missing.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The table (default `sessions`): a plain identifier of at most 64 bytes, used as
    /// given, backtick-quoted. Whether case matters is the server's `lower_case_table_names`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The largest session payload accepted, in bytes (default
    /// `Some(`[`DEFAULT_MAX_DATA_LEN`]`)`); `None` for no limit but the server's
    /// `max_allowed_packet`. Larger payloads fail with [`Error::TooLarge`] before any query.
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
    /// [`SessionStore::delete_expired`](session_core::SessionStore::delete_expired) runs.
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
        if let Some(db) = &self.database {
            validate_database(db)?;
        }
        validate_table(&self.table)?;
        session_core::sql::cleanup_batch(self.cleanup_batch)
    }

    /// Builds the store over `pool` and starts its background sweep (unless
    /// [`cleanup_interval`](Self::cleanup_interval) is zero). Does not touch the database:
    /// call [`MySqlStore::migrate`] to create the table.
    ///
    /// # Errors
    /// [`Error::Config`] for a database or table name that is not a plain identifier, a
    /// cleanup batch of zero, or a non-zero cleanup interval outside a Tokio runtime (a store
    /// built there would otherwise never sweep).
    pub fn build(self, pool: MySqlPool) -> Result<MySqlStore> {
        let cleanup_batch = self.validate()?;
        let sql = Queries::new(self.database.as_deref(), &self.table);
        MySqlStore::start(Inner {
            pool,
            database: self.database,
            table: self.table,
            sql,
            max_data_len: self.max_data_len,
            cleanup_batch,
            cleanup_interval: self.cleanup_interval,
        })
    }

    /// Connects a new pool to `url` (`mysql://user:pass@host:port/db?...`, or `mariadb://`)
    /// and builds the store over it. The pool has [`max_connections`](Self::max_connections)
    /// connections (opened on demand) and checks each before handing it out. Connections
    /// speak utf8mb4; sqlx also sets each session's `time_zone` to UTC, which this store does
    /// not depend on (see the README).
    ///
    /// This build speaks plain text to the server: sqlx's `ssl-mode` (default `PREFERRED`)
    /// falls back to it, and a URL with `ssl-mode=REQUIRED` fails to connect.
    ///
    /// The background sweep starts as with [`build`](Self::build).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL or name; [`Error::Unavailable`] when the server cannot
    /// be reached; [`Error::Backend`] when it refuses the connection (a rejected login, an
    /// unknown database).
    pub async fn connect(self, url: &str) -> Result<MySqlStore> {
        // Refuse a bad configuration before opening any connection.
        self.validate()?;
        if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
            return Err(Error::Config(
                "a MySQL URL starts with mysql:// or mariadb://".into(),
            ));
        }
        let options: MySqlConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| Error::Config(format!("invalid MySQL URL: {e}").into()))?;
        let pool = MySqlPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(DbError)?;
        self.build(pool)
    }
}
