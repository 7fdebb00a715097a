//! Helpers shared by this crate's integration tests: isolated tables and schemas on the server
//! named by `DATABASE_URL`, dropped again when the test ends.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses its own subset of these helpers"
)]

use session_core::SessionId;
use session_core::conformance::{Server, server_url};
use session_postgres::PostgresStore;
use session_postgres::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use session_postgres::sqlx::{self, Connection as _};

/// The schema every test table lives in (created by the first `migrate`). Each test has its
/// own table in it, so tests running in parallel never see each other's rows.
pub const TEST_SCHEMA: &str = "session_postgres_test";

/// The test server's URL: `DATABASE_URL`, else this binary's PostgreSQL container (feature
/// `containers`), else `None` after a visible skip.
pub fn database_url() -> Option<String> {
    server_url(Server::Postgres)
}

/// A fresh name like `prefix_1f2e3d4c5b6a7988`, random enough that parallel and repeated runs
/// never collide.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", &SessionId::generate().key().to_hex()[..16])
}

/// A pool whose connections show `application_name` in `pg_stat_activity`, so a test can find
/// (and terminate) exactly its own backends.
pub async fn pool(url: &str, application_name: &str, max: u32) -> PgPool {
    let options: PgConnectOptions = url
        .parse()
        .expect("DATABASE_URL must be a valid PostgreSQL URL");
    PgPoolOptions::new()
        .max_connections(max)
        .connect_with(options.application_name(application_name))
        .await
        .expect("connect to DATABASE_URL")
}

/// A migrated store on `table` in [`TEST_SCHEMA`], on its own small pool.
pub async fn store(url: &str, table: &str) -> PostgresStore {
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(table)
        .max_connections(8)
        .connect(url)
        .await
        .expect("connect the store to DATABASE_URL");
    store.migrate().await.expect("migrate the test table");
    store
}

/// Drops a test table (or a whole test schema) when it goes out of scope, even when the test
/// panicked.
///
/// `Drop` cannot await, and the test's own runtime may be the one unwinding, so the drop runs
/// on a short-lived thread with its own runtime and connection, which this joins. That blocks
/// only the thread dropping the guard (the conformance runner's `block_on` thread, or a test's
/// main thread while the runtime's workers keep running), for one `DROP` statement at the end
/// of the test. A lock timeout bounds the wait if a connection of the test still holds a lock.
#[derive(Debug)]
pub struct DropOnExit {
    url: String,
    statement: String,
}

impl DropOnExit {
    /// Drops `schema.table` at the end of the test.
    pub fn table(url: &str, schema: &str, table: &str) -> Self {
        Self {
            url: url.to_owned(),
            statement: format!("DROP TABLE IF EXISTS \"{schema}\".\"{table}\""),
        }
    }

    /// Drops `schema` and everything in it at the end of the test.
    pub fn schema(url: &str, schema: &str) -> Self {
        Self {
            url: url.to_owned(),
            statement: format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
        }
    }
}

impl Drop for DropOnExit {
    fn drop(&mut self) {
        let url = self.url.clone();
        let statement = self.statement.clone();
        let worker = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&statement)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "could not clean up after the test ({}): {e}",
                self.statement
            ),
            Err(_) => eprintln!("the clean-up thread panicked ({})", self.statement),
        }
    }
}
