//! The builder of a [`PostgresStore`] and its defaults.

use std::time::Duration;

use session_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use crate::error::{DbError, STORE};
use crate::sql::{Queries, validate_schema, validate_table};
use crate::store::{Inner, PostgresStore};

/// Default largest session payload, in bytes: 4096, as Go's pgstore.
pub const DEFAULT_MAX_DATA_LEN: usize = 4096;
/// Default number of rows one cleanup statement deletes: 5,000, since a batch costs a round
/// trip and a statement on top of its rows (a sweep of 10,000 among 100,000 rows took 1.6× one
/// bare `DELETE` in batches of 5,000, about 2× in batches of 1,000; BENCHMARKS.md). Requests
/// never wait on a batch's row locks: they only write live rows.
pub const DEFAULT_CLEANUP_BATCH: usize = 5000;
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
    /// [`SessionStore::delete_expired`](session_core::SessionStore::delete_expired) runs. Several app servers may sweep the same table:
    /// a batch waits at most for the rows another server's batch is deleting at that moment.
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
        session_core::sql::cleanup_batch(self.cleanup_batch)
    }

    /// Builds the store over `pool` and starts its background sweep (unless
    /// [`cleanup_interval`](Self::cleanup_interval) is zero). Does not touch the database:
    /// call [`PostgresStore::migrate`] to create the table.
    ///
    /// # Errors
    /// [`Error::Config`] for a schema or table name that is not a plain identifier, a cleanup
    /// batch of zero, or a non-zero cleanup interval outside a Tokio runtime (a store built
    /// there would otherwise never sweep: build it inside the runtime, or set the interval to
    /// zero and call
    /// [`SessionStore::delete_expired`](session_core::SessionStore::delete_expired) yourself).
    pub fn build(self, pool: PgPool) -> Result<PostgresStore> {
        let cleanup_batch = self.validate()?;
        let sql = Queries::new(&self.schema, &self.table);
        PostgresStore::start(Inner {
            pool,
            schema: self.schema,
            table: self.table,
            sql,
            max_data_len: self.max_data_len,
            cleanup_batch,
            cleanup_interval: self.cleanup_interval,
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
