//! Helpers shared by this crate's integration tests: isolated tables and schemas on the server
//! named by `DATABASE_URL`, dropped again when the test ends.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses its own subset of these helpers"
)]

use session_core::conformance::{DropGuard, Server, server_url};
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

pub use session_core::conformance::unique_name;

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

/// The guard that runs `statement` at the end of the test, even when it panicked, on a
/// connection of its own; a lock timeout bounds the wait if a connection of the test still
/// holds a lock.
fn drop_on_exit(url: &str, statement: String) -> DropGuard {
    let url = url.to_owned();
    DropGuard::new(statement.clone(), move || async move {
        let mut conn = PgConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        for sql in ["SET lock_timeout = '10s'", &statement] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        conn.close().await.map_err(|e| e.to_string())
    })
}

/// Drops `schema.table` at the end of the test.
pub fn drop_table(url: &str, schema: &str, table: &str) -> DropGuard {
    drop_on_exit(
        url,
        format!("DROP TABLE IF EXISTS \"{schema}\".\"{table}\""),
    )
}

/// Drops `schema` and everything in it at the end of the test.
pub fn drop_schema(url: &str, schema: &str) -> DropGuard {
    drop_on_exit(url, format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
}
