//! Connections that die under the store: backends terminated with `pg_terminate_backend`
//! (only this test's own, found by `application_name`) while statements are in flight, while
//! connections sit idle in the pool, and over and over under concurrent load. The scenarios
//! are `session_core::conformance::lost_connections`'; this file is how PostgreSQL finds,
//! terminates and watches the store's backends.

mod common;

use std::time::Duration;

use session_core::async_trait;
use session_core::conformance::DropGuard;
use session_core::conformance::lost_connections::{self, Connections};
use session_postgres::PostgresStore;
use session_postgres::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use session_postgres::sqlx::{self, Connection as _, Executor as _};

use common::TEST_SCHEMA;

/// The store's pool as the server sees it: its backends by `application_name`, and a table
/// lock held in a transaction of the test's own.
struct Server {
    admin: PgConnection,
    locker: PgConnection,
    app: String,
    pool: PgPool,
    table: String,
}

impl Server {
    /// PIDs of the pool's backends, optionally only those waiting on a lock.
    async fn backends(&mut self, waiting_on_lock: bool) -> Vec<i32> {
        // Drops the statistics snapshot the connection keeps, so `pg_stat_activity` shows the
        // backends as they are now, not as first read.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut self.admin)
            .await
            .expect("pg_stat_clear_snapshot");
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND (NOT $2 OR wait_event_type = 'Lock')",
        )
        .bind(&self.app)
        .bind(waiting_on_lock)
        .fetch_all(&mut self.admin)
        .await
        .expect("read pg_stat_activity")
    }
}

#[async_trait]
impl Connections for Server {
    /// One statement terminates them all, so they go microseconds apart.
    async fn kill_all(&mut self) -> (usize, usize) {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut self.admin)
            .await
            .expect("pg_stat_clear_snapshot");
        let (killed, active): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'active')
             FROM (SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) AS killed",
        )
        .bind(&self.app)
        .fetch_one(&mut self.admin)
        .await
        .expect("pg_terminate_backend");
        let count = |n: i64| usize::try_from(n).expect("a count");
        (count(killed), count(active))
    }

    /// Termination is a signal, not instant.
    async fn wait_gone(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.backends(false).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the backends did not exit"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn waiting_on_lock(&mut self) -> usize {
        self.backends(true).await.len()
    }

    /// `ACCESS EXCLUSIVE` on the table in an open transaction of the locker's.
    async fn lock(&mut self) {
        let lock = format!(
            "BEGIN; LOCK TABLE \"{TEST_SCHEMA}\".\"{}\" IN ACCESS EXCLUSIVE MODE",
            self.table
        );
        self.locker
            .execute(lock.as_str())
            .await
            .expect("lock the table");
    }

    async fn unlock(&mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.locker)
            .await
            .expect("release the lock");
    }

    /// The pool pings a connection as it takes it back; this returns once that is done.
    async fn settle_idle(&mut self) {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .expect("reconnect the pool");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Exactly one, not at least one: sqlx counts an idle connection only after queueing it,
        // and a checkout that takes it in between subtracts first, so while the previous
        // release's thread is held up, the count reads `usize::MAX` (0 − 1) with the connection
        // still in its release ping. Killed then, it is found dead by that ping, the pool opens
        // a fresh one, and the next call no longer meets a dead connection (CI saw a create on
        // the "dead" connection succeed). The pool holds one connection, so 1 is the true count.
        while self.pool.num_idle() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection never went idle"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A store on a fresh table over a pool of `max` connections named by a fresh
/// `application_name`, the server view of it, and the guard that drops the table (first, so
/// it drops last); `None` after a visible skip.
async fn setup(
    name: &str,
    max: u32,
    test_before_acquire: bool,
) -> Option<(DropGuard, PostgresStore, Server)> {
    let url = common::database_url()?;
    let table = common::unique_name(name);
    let guard = common::drop_table(&url, TEST_SCHEMA, &table);
    let app = common::unique_name("app");
    let options: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(test_before_acquire)
        .connect_with(options.application_name(&app))
        .await
        .expect("connect");
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(&table)
        .build(pool.clone())
        .expect("build");
    store.migrate().await.expect("migrate");
    let server = Server {
        admin: PgConnection::connect(&url).await.expect("admin connection"),
        locker: PgConnection::connect(&url).await.expect("lock connection"),
        app,
        pool,
        table,
    };
    Some((guard, store, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_cut_off_mid_statement_is_retried_but_a_save_is_not() {
    // One connection, so terminating "the app's backends" hits exactly the statement in
    // flight, never the connection its retry is about to use.
    let Some((_guard, store, mut server)) = setup("terminate", 1, true).await else {
        return;
    };
    lost_connections::a_load_cut_off_mid_statement_is_retried_but_a_save_is_not(
        &store,
        "postgres",
        &mut server,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_on_a_dead_connection_are_retried_and_conditional_writes_are_not() {
    let Some((_guard, store, mut server)) = setup("deadconn", 1, false).await else {
        return;
    };
    lost_connections::idempotent_calls_on_a_dead_connection_are_retried_and_conditional_writes_are_not(
        &store,
        "postgres",
        &mut server,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_backends_killed_under_load() {
    let Some((_guard, store, mut server)) = setup("killload", 4, true).await else {
        return;
    };
    lost_connections::idempotent_calls_survive_connections_killed_under_load(
        &store,
        "postgres",
        &mut server,
    )
    .await;
}
