//! Connections that die under the store: killed with `KILL CONNECTION` from another connection
//! (only this test's own, found by the ids its pool recorded) while statements are in flight,
//! while connections sit idle in the pool, and over and over under concurrent load. The
//! scenarios are `session_core::conformance::lost_connections`'; this file is how MySQL finds,
//! kills and watches the store's connections.

mod common;

use std::time::Duration;

use session_core::async_trait;
use session_core::conformance::DropGuard;
use session_core::conformance::lost_connections::{self, Connections};
use session_mysql::MySqlStore;
use session_mysql::sqlx::mysql::{MySqlConnection, MySqlPool};
use session_mysql::sqlx::{self, Connection as _, Executor as _};

use common::ConnectionIds;

/// The store's pool as the server sees it: its connections by the ids the pool recorded as
/// it opened them, and a table lock held by a connection of the test's own.
struct Server {
    admin: MySqlConnection,
    locker: MySqlConnection,
    ids: ConnectionIds,
    /// Connections already killed: a killed session may stay listed, in its wait, for a moment.
    killed: Vec<i64>,
    pool: MySqlPool,
    table: String,
}

impl Server {
    async fn new(url: &str, store: &MySqlStore, ids: ConnectionIds) -> Self {
        Self {
            admin: MySqlConnection::connect(url)
                .await
                .expect("admin connection"),
            locker: MySqlConnection::connect(url)
                .await
                .expect("lock connection"),
            ids,
            killed: Vec::new(),
            pool: store.pool().clone(),
            table: store.table().to_owned(),
        }
    }

    /// The server's sessions of the pool: `(id, command, state)`.
    async fn sessions(&mut self) -> Vec<(i64, String, String)> {
        let all: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT CAST(ID AS SIGNED), COMMAND, STATE FROM information_schema.PROCESSLIST",
        )
        .fetch_all(&mut self.admin)
        .await
        .expect("read the process list");
        let ids = self.ids.lock().expect("ids").clone();
        all.into_iter()
            .filter(|(id, _, _)| ids.contains(id))
            .map(|(id, command, state)| (id, command, state.unwrap_or_default()))
            .collect()
    }
}

#[async_trait]
impl Connections for Server {
    /// The `KILL`s go in one multi-statement round trip, so they land microseconds apart: a
    /// call retried after the first one cannot take a connection the same round kills a
    /// moment later.
    async fn kill_all(&mut self) -> (usize, usize) {
        let found = self.sessions().await;
        let active = found
            .iter()
            .filter(|(_, command, _)| command != "Sleep")
            .count();
        let killed: Vec<i64> = found.iter().map(|(id, _, _)| *id).collect();
        if !killed.is_empty() {
            let batch: String = killed
                .iter()
                .map(|id| format!("KILL CONNECTION {id};"))
                .collect();
            // A session that ended meanwhile ("Unknown thread id") ends the batch early: fine,
            // the test counts what it found, and the next round gets the rest.
            let _ = self.admin.execute(batch.as_str()).await;
        }
        self.killed.extend(&killed);
        (killed.len(), active)
    }

    async fn wait_gone(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.sessions().await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the killed sessions did not end"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn waiting_on_lock(&mut self) -> usize {
        let sessions = self.sessions().await;
        sessions
            .iter()
            .filter(|(id, _, state)| {
                !self.killed.contains(id) && state.to_ascii_lowercase().contains("lock")
            })
            .count()
    }

    async fn lock(&mut self) {
        sqlx::query(&format!("LOCK TABLES `{}` WRITE", self.table))
            .execute(&mut self.locker)
            .await
            .expect("lock the table");
    }

    async fn unlock(&mut self) {
        sqlx::query("UNLOCK TABLES")
            .execute(&mut self.locker)
            .await
            .expect("unlock");
    }

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

/// A store on a fresh table over a tracked pool of `max` connections, the server view of it,
/// and the guard that drops the table; `None` after a visible skip.
async fn setup(
    name: &str,
    max: u32,
    test_before_acquire: bool,
) -> Option<(DropGuard, MySqlStore, Server)> {
    let url = common::mysql_url()?;
    let table = common::unique_name(name);
    let guard = common::drop_table(&url, &table);
    let (pool, ids) = common::tracked_pool(&url, max, test_before_acquire).await;
    let store = MySqlStore::builder()
        .table(&table)
        .build(pool)
        .expect("build");
    store.migrate().await.expect("migrate");
    let server = Server::new(&url, &store, ids).await;
    // The guard first, so it drops last: after the test's connections have let go of the table.
    Some((guard, store, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_cut_off_mid_statement_is_retried_but_a_save_is_not() {
    // One connection, so killing "the pool's sessions" hits exactly the statement in flight.
    let Some((_guard, store, mut server)) = setup("kill", 1, true).await else {
        return;
    };
    lost_connections::a_load_cut_off_mid_statement_is_retried_but_a_save_is_not(
        &store,
        "mysql",
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
        "mysql",
        &mut server,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_connections_killed_under_load() {
    let Some((_guard, store, mut server)) = setup("killload", 4, true).await else {
        return;
    };
    lost_connections::idempotent_calls_survive_connections_killed_under_load(
        &store,
        "mysql",
        &mut server,
    )
    .await;
}
