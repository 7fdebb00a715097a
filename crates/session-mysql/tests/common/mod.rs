//! Helpers shared by this crate's integration tests: isolated tables (and databases) on the
//! server named by `MYSQL_URL`, dropped again when the test ends, and pools that know the
//! server-side ids of their connections, so a test can kill exactly its own.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses its own subset of these helpers"
)]

pub mod own_server;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::conformance::{DropGuard, Server, server_url};
use session_core::{Record, SessionId, Timestamp};
use session_mysql::MySqlStore;
use session_mysql::sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions,
};
use session_mysql::sqlx::{self, Connection as _};

pub const HOUR: Duration = Duration::from_secs(3600);

/// The test server's URL: `MYSQL_URL`, else this binary's MariaDB container (feature
/// `containers`), else `None` after a visible skip.
pub fn mysql_url() -> Option<String> {
    server_url(Server::MySql)
}

pub use session_core::conformance::unique_name;

/// A live record with a fresh key.
pub fn live(data: &'static [u8]) -> Record {
    Record::new(SessionId::generate().key(), data, Timestamp::now() + HOUR)
}

/// A record that expired five seconds ago.
pub fn expired(data: &'static [u8]) -> Record {
    Record::new(
        SessionId::generate().key(),
        data,
        Timestamp::now() - Duration::from_secs(5),
    )
}

/// A migrated store on `table` in the URL's database, on its own small pool.
pub async fn store(url: &str, table: &str) -> MySqlStore {
    let store = MySqlStore::builder()
        .table(table)
        .max_connections(8)
        .connect(url)
        .await
        .expect("connect the store to MYSQL_URL");
    store.migrate().await.expect("migrate the test table");
    store
}

/// The server-side ids (`CONNECTION_ID()`) of every connection a [`tracked_pool`] opened.
pub type ConnectionIds = Arc<Mutex<BTreeSet<i64>>>;

/// A pool of `max` connections that records each connection's id as it opens, optionally
/// without the pool's check of idle connections before use.
pub async fn tracked_pool(
    url: &str,
    max: u32,
    test_before_acquire: bool,
) -> (MySqlPool, ConnectionIds) {
    let ids: ConnectionIds = Arc::default();
    let options: MySqlConnectOptions = url.parse().expect("MYSQL_URL must be a MySQL URL");
    let seen = Arc::clone(&ids);
    let pool = MySqlPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(test_before_acquire)
        .after_connect(move |conn, _meta| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let id: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
                    .fetch_one(conn)
                    .await?;
                seen.lock().expect("ids").insert(id);
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .expect("connect to MYSQL_URL");
    (pool, ids)
}

/// The guard that runs `statement` at the end of the test, even when it panicked, on a
/// connection of its own; a lock wait timeout bounds the wait if a connection of the test
/// still holds a lock.
fn drop_on_exit(url: &str, statement: String) -> DropGuard {
    let url = url.to_owned();
    DropGuard::new(statement.clone(), move || async move {
        let mut conn = MySqlConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        for sql in ["SET SESSION lock_wait_timeout = 10", &statement] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        conn.close().await.map_err(|e| e.to_string())
    })
}

/// Drops `table` in the URL's database at the end of the test.
pub fn drop_table(url: &str, table: &str) -> DropGuard {
    drop_on_exit(url, format!("DROP TABLE IF EXISTS `{table}`"))
}

/// Drops `database` and everything in it at the end of the test.
pub fn drop_database(url: &str, database: &str) -> DropGuard {
    drop_on_exit(url, format!("DROP DATABASE IF EXISTS `{database}`"))
}
