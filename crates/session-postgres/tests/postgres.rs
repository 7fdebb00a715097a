//! Behaviour beyond the shared suite: migrations, batched cleanup under load and by default,
//! refused names, the size limit and timestamp edges (lost connections are in
//! `lost_connections.rs`). Each test has its own table (or schema)
//! on the server from `DATABASE_URL`, dropped when it ends.

mod common;

use std::time::Duration;

use session_core::conformance::DropGuard;
use session_core::conformance::{sizes, sweeps};
use session_core::{Error, Record, SessionId, SessionStore, Timestamp};
use session_postgres::PostgresStore;
use session_postgres::sqlx::postgres::PgPoolOptions;
use session_postgres::sqlx::{self, Connection as _};

use common::TEST_SCHEMA;

const HOUR: Duration = Duration::from_secs(3600);

fn live(data: &'static [u8]) -> Record {
    Record::new(SessionId::generate().key(), data, Timestamp::now() + HOUR)
}

fn expired(data: &'static [u8]) -> Record {
    Record::new(
        SessionId::generate().key(),
        data,
        Timestamp::now() - Duration::from_secs(5),
    )
}

/// A migrated store on a fresh table, with the guard that drops it.
async fn fresh(url: &str) -> (PostgresStore, DropGuard) {
    let table = common::unique_name("t");
    let guard = common::drop_table(url, TEST_SCHEMA, &table);
    (common::store(url, &table).await, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_twice_keeps_data() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let r = live(b"kept");
    store.create(&r).await.expect("create");
    store.migrate().await.expect("second migrate");
    store.migrate().await.expect("third migrate");
    assert_eq!(store.load(&r.key).await.expect("load"), Some(r));
    assert_eq!(store.count().await.expect("count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_an_existing_table_does_not_wait_for_writers() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    // An open write transaction holds ROW EXCLUSIVE on the table; any DDL on it (even a
    // `CREATE INDEX IF NOT EXISTS` that finds the index) would queue behind it.
    let mut writer = sqlx::PgConnection::connect(&url)
        .await
        .expect("writer connection");
    let mut tx = writer.begin().await.expect("begin");
    sqlx::query(&format!(
        "DELETE FROM \"{}\".\"{}\" WHERE false",
        store.schema(),
        store.table()
    ))
    .execute(&mut *tx)
    .await
    .expect("take ROW EXCLUSIVE");
    let migrated = tokio::time::timeout(Duration::from_secs(10), store.migrate()).await;
    assert!(
        matches!(migrated, Ok(Ok(()))),
        "migrate waited for a writer: {migrated:?}"
    );
    tx.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_a_new_schema_all_succeed() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = common::unique_name("schema");
    let _guard = common::drop_schema(&url, &schema);
    // Separate pools, like separate app servers starting at once. Without the advisory lock,
    // concurrent `CREATE SCHEMA/TABLE IF NOT EXISTS` fail with unique violations on the catalog.
    let mut stores = Vec::new();
    for _ in 0..6 {
        let store = PostgresStore::builder()
            .schema(&schema)
            .table("sessions")
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect");
        stores.push(store);
    }
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.migrate().await }))
        .collect();
    for task in tasks {
        task.await
            .expect("migration task")
            .expect("every concurrent migrate succeeds");
    }
    let r = live(b"x");
    stores[0].create(&r).await.expect("create");
    assert_eq!(stores[5].load(&r.key).await.expect("load"), Some(r));
    // Two at once on the already migrated schema, too.
    let (a, b) = tokio::join!(stores[1].migrate(), stores[2].migrate());
    a.expect("migrate again");
    b.expect("migrate again");
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'sessions'",
    )
    .bind(&schema)
    .fetch_one(stores[0].pool())
    .await
    .expect("count indexes");
    assert_eq!(
        indexes, 3,
        "primary key, expiry and owner indexes, once each"
    );
}

/// Adds `n` expired rows straight in SQL (fast), returning nothing: they are only swept.
/// Their expiries are a millisecond apart, oldest first, as sessions created over time have.
async fn insert_expired_rows(store: &PostgresStore, n: i64) {
    insert_expired_rows_at(store, n, "1 millisecond").await;
}

/// Adds `n` expired rows whose expiries are `step` apart (`'0'`: all the same instant).
async fn insert_expired_rows_at(store: &PostgresStore, n: i64, step: &str) {
    let sql = format!(
        "INSERT INTO \"{}\".\"{}\" (key, data, created_at, expires_at, version)
         SELECT sha256(convert_to($1 || i::text, 'UTF8')), '\\x00', now() - interval '2 hours',
                now() - interval '1 hour' + i * $3::interval, 1
         FROM generate_series(1, $2) AS i",
        store.schema(),
        store.table()
    );
    sqlx::query(&sql)
        .bind(common::unique_name("seed"))
        .bind(n)
        .bind(step)
        .execute(store.pool())
        .await
        .expect("seed expired rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_exactly_the_expired_rows_while_loads_continue() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("cleanup");
    let _guard = common::drop_table(&url, TEST_SCHEMA, &table);
    // The sweep runs every 50 ms from the moment the store is built, with no call to start
    // it; it fails quietly (and tries again) until the table exists.
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(&table)
        .cleanup_batch(1000)
        .cleanup_interval(Duration::from_millis(50))
        .connect(&url)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    sweeps::background_sweep_removes_only_expired_sessions(
        &store,
        insert_expired_rows(&store, 2_500),
        store.stop_cleanup(),
        || {
            PostgresStore::builder()
                .schema(TEST_SCHEMA)
                .table(&table)
                .cleanup_interval(Duration::from_millis(100))
                .build(store.pool().clone())
                .expect("build")
        },
    )
    .await;
}

/// The default store sweeps by itself: building it starts the task, and expired rows
/// disappear without any other call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_without_being_asked() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("autosweep");
    let _guard = common::drop_table(&url, TEST_SCHEMA, &table);
    let setup = common::store(&url, &table).await;
    setup.stop_cleanup().await;
    sweeps::sweeps_without_being_asked(&setup, insert_expired_rows(&setup, 300), 300, async {
        PostgresStore::builder()
            .schema(TEST_SCHEMA)
            .table(&table)
            .cleanup_interval(Duration::from_millis(100))
            .connect(&url)
            .await
            .expect("connect")
    })
    .await;
}

/// Outside a Tokio runtime a store cannot run its sweep: building one with a non-zero cleanup
/// interval is refused with `Error::Config` instead of silently never sweeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_outside_a_runtime_is_refused_unless_cleanup_is_off() {
    let Some(url) = common::database_url() else {
        return;
    };
    let pool = PgPoolOptions::new().connect_lazy(&url).expect("lazy pool");
    let outside = std::thread::spawn(move || {
        let default = PostgresStore::builder().build(pool.clone()).map(drop);
        let new = PostgresStore::new(pool.clone()).map(drop);
        let off = PostgresStore::builder()
            .cleanup_interval(Duration::ZERO)
            .build(pool)
            .map(drop);
        (default, new, off)
    })
    .join()
    .expect("the thread without a runtime");
    assert!(
        matches!(outside.0, Err(Error::Config(_))),
        "{:?}",
        outside.0
    );
    assert!(
        matches!(outside.1, Err(Error::Config(_))),
        "{:?}",
        outside.1
    );
    assert!(outside.2.is_ok(), "{:?}", outside.2);
}

/// Records how many rows each `DELETE` statement on the store's table removed, in order, with
/// a statement-level trigger over the deleted rows (it fires for a statement that deletes
/// nothing too).
async fn log_deletes_per_statement(store: &PostgresStore, log: &str) {
    let (schema, table) = (store.schema(), store.table());
    for sql in [
        format!("CREATE TABLE \"{schema}\".\"{log}\" (n bigint NOT NULL, at bigserial)"),
        format!(
            "CREATE FUNCTION \"{schema}\".\"{log}_fn\"() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO \"{schema}\".\"{log}\" (n) SELECT count(*) FROM gone; RETURN NULL; END $$"
        ),
        format!(
            "CREATE TRIGGER \"{log}_tr\" AFTER DELETE ON \"{schema}\".\"{table}\"
             REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
             EXECUTE FUNCTION \"{schema}\".\"{log}_fn\"()"
        ),
    ] {
        sqlx::query(&sql)
            .execute(store.pool())
            .await
            .expect("set up the delete log");
    }
}

/// The rows each logged `DELETE` statement removed, oldest statement first; clears the log.
async fn deletes_per_statement(store: &PostgresStore, log: &str) -> Vec<i64> {
    let schema = store.schema();
    let counts = sqlx::query_scalar(&format!("SELECT n FROM \"{schema}\".\"{log}\" ORDER BY at"))
        .fetch_all(store.pool())
        .await
        .expect("read the delete log");
    sqlx::query(&format!("DELETE FROM \"{schema}\".\"{log}\""))
        .execute(store.pool())
        .await
        .expect("clear the delete log");
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_runs_in_bounded_batches_until_done() {
    let Some(url) = common::database_url() else {
        return;
    };
    // A schema of its own, so the log table and its trigger function go with it.
    let schema = common::unique_name("batches");
    let _guard = common::drop_schema(&url, &schema);
    let store = PostgresStore::builder()
        .schema(&schema)
        .table("sessions")
        .cleanup_batch(7)
        .cleanup_interval(Duration::ZERO)
        .connect(&url)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let log = "deletes";
    log_deletes_per_statement(&store, log).await;
    let keep = live(b"keep");
    store.create(&keep).await.expect("create");

    // Distinct expiries: five statements of exactly one batch each, then one that finds
    // nothing (the loop must not stop at a full batch).
    insert_expired_rows(&store, 35).await;
    assert_eq!(store.delete_expired().await.expect("delete_expired"), 35);
    assert_eq!(deletes_per_statement(&store, log).await, [7, 7, 7, 7, 7, 0]);
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);

    // Twenty rows expired at one instant go in one statement (a batch ends after the last
    // row sharing its bound's expiry), the three later ones in the next.
    insert_expired_rows_at(&store, 20, "0").await;
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".sessions (key, data, created_at, expires_at, version)
         SELECT sha256(convert_to($1 || i::text, 'UTF8')), '\\x00', now() - interval '2 hours',
                now() - interval '30 minutes' + i * interval '1 millisecond', 1
         FROM generate_series(1, 3) AS i"
    ))
    .bind(common::unique_name("later"))
    .execute(store.pool())
    .await
    .expect("seed later expired rows");
    assert_eq!(store.delete_expired().await.expect("delete_expired"), 23);
    assert_eq!(deletes_per_statement(&store, log).await, [20, 3]);

    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
    assert_eq!(store.load(&keep.key).await.expect("load"), Some(keep));
    assert!(matches!(
        PostgresStore::builder()
            .cleanup_batch(0)
            .build(store.pool().clone()),
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_exhausted_pool_are_unavailable() {
    let Some(url) = common::database_url() else {
        return;
    };
    // Port 1 on loopback refuses connections.
    let err = PostgresStore::builder()
        .acquire_timeout(Duration::from_secs(2))
        .connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                store: "postgres",
                ..
            }
        ),
        "expected Unavailable, got {err:?}"
    );
    for bad in ["mysql://nope", "postgres://u@h:99999999/db"] {
        let err = PostgresStore::connect(bad)
            .await
            .expect_err("not a PostgreSQL URL");
        assert!(
            matches!(err, Error::Config(_)),
            "{bad}: expected Config, got {err:?}"
        );
    }

    let (store, _guard) = fresh(&url).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .connect(&url)
        .await
        .expect("connect");
    let small = PostgresStore::builder()
        .schema(store.schema())
        .table(store.table())
        .build(pool.clone())
        .expect("build");
    let held = pool.acquire().await.expect("take the only connection");
    let err = small
        .load(&SessionId::generate().key())
        .await
        .expect_err("the pool is exhausted");
    assert!(
        matches!(err, Error::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    drop(held);
    assert_eq!(
        small
            .load(&SessionId::generate().key())
            .await
            .expect("load"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_odd_valid_ones_work() {
    let Some(url) = common::database_url() else {
        return;
    };
    let pool = PgPoolOptions::new().connect_lazy(&url).expect("lazy pool");
    for table in [
        "sessions\"; DROP TABLE users; --",
        "a b",
        "",
        "1x",
        "x.y",
        "sessions'--",
        &"t".repeat(49),
    ] {
        let err = PostgresStore::builder().table(table).build(pool.clone());
        assert!(
            matches!(err, Err(Error::Config(_))),
            "table {table:?} must be refused, got {err:?}"
        );
    }
    for schema in ["public\".\"x", "pg_catalog", "a;b", ""] {
        let err = PostgresStore::builder().schema(schema).build(pool.clone());
        assert!(
            matches!(err, Err(Error::Config(_))),
            "schema {schema:?} must be refused, got {err:?}"
        );
    }
    // `connect` refuses before connecting: nothing listens on port 1, yet the error is Config.
    let err = PostgresStore::builder()
        .table("x;y")
        .connect("postgres://postgres@127.0.0.1:1/test")
        .await;
    assert!(matches!(err, Err(Error::Config(_))), "got {err:?}");
    // A reserved word and mixed case are fine: they are always quoted.
    let schema = common::unique_name("Mixed");
    let _guard = common::drop_schema(&url, &schema);
    let store = PostgresStore::builder()
        .schema(&schema)
        .table("user")
        .build(pool)
        .expect("valid names");
    store.migrate().await.expect("migrate");
    let r = live(b"quoted");
    store.create(&r).await.expect("create");
    assert_eq!(store.load(&r.key).await.expect("load"), Some(r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_defaults_to_4096_and_none_means_unlimited() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let by_new = PostgresStore::new(store.pool().clone()).expect("new");
    assert_eq!(by_new.max_data_len(), Some(4096));
    let unlimited = PostgresStore::builder()
        .schema(store.schema())
        .table(store.table())
        .max_data_len(None)
        .build(store.pool().clone())
        .expect("build");
    sizes::default_limit_and_none(&store, 4096, &unlimited).await;
}

/// The rotate statement deletes an expired row at the target before it moves the session;
/// when the old key turns out not to be live, that delete is rolled back with it. (Rotating
/// onto an expired key is a conformance case.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_of_an_expired_key_leaves_an_expired_target_alone() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let old = expired(b"old");
    let target = expired(b"target");
    store.create(&old).await.expect("create");
    store.create(&target).await.expect("create");
    let err = store
        .rotate(&old.key, &target.key)
        .await
        .expect_err("old is not live");
    assert!(matches!(err, Error::NotFound), "got {err:?}");
    assert_eq!(
        store.count_expired().await.expect("count_expired"),
        2,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_exact_across_the_range() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    // Before 1970 and before 2000 (negative offsets from both epochs, not whole seconds),
    // and far in the future.
    for (created, expires) in [
        (-1, 4_102_444_800_123),
        (-86_400_001, 253_402_300_799_999),
        (946_684_799_999, 9_000_000_000_000_001),
    ] {
        let mut r = live(b"t");
        r.created_at = Timestamp::from_unix_millis(created);
        r.expires_at = Timestamp::from_unix_millis(expires);
        store.create(&r).await.expect("create");
        assert_eq!(store.load(&r.key).await.expect("load"), Some(r));
    }
    // Beyond timestamptz's range: a typed error, nothing written.
    let mut r = live(b"t");
    r.expires_at = Timestamp::from_unix_millis(i64::MAX);
    let err = store.create(&r).await.expect_err("out of range");
    assert!(
        matches!(
            err,
            Error::Backend {
                store: "postgres",
                ..
            }
        ),
        "got {err:?}"
    );
    assert!(!store.exists(&r.key).await.expect("exists"));
    assert_eq!(store.count().await.expect("count"), 3);
}

/// `list_page` is keyset pagination: one index range scan from the cursor that stops after
/// the page, so a page of 10 out of 5,000 live sessions reads 11 rows, where `list` reads
/// them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_only_its_own_rows() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("pages");
    let _guard = common::drop_table(&url, TEST_SCHEMA, &table);
    // One connection, so every statement below runs in the same backend and its statistics
    // can be flushed and read there.
    let pool = common::pool(&url, &common::unique_name("app"), 1).await;
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(&table)
        .build(pool)
        .expect("build");
    store.migrate().await.expect("migrate");
    sqlx::query(&format!(
        "INSERT INTO \"{TEST_SCHEMA}\".\"{table}\" (key, data, created_at, expires_at, version)
         SELECT sha256(convert_to(i::text, 'UTF8')), '\\x00', now(), now() + interval '1 hour', 1
         FROM generate_series(1, 5000) AS i"
    ))
    .execute(store.pool())
    .await
    .expect("seed live rows");
    sqlx::query(&format!("ANALYZE \"{TEST_SCHEMA}\".\"{table}\""))
        .execute(store.pool())
        .await
        .expect("analyze");
    // Rows read from the table so far, by sequential and index scans, with this backend's
    // pending counts flushed first (PostgreSQL 15 reports them at most once a second otherwise).
    let rows_read = || async {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(store.pool())
            .await
            .expect("flush statistics");
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(store.pool())
            .await
            .expect("clear the statistics snapshot");
        let n: i64 = sqlx::query_scalar(
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
        )
        .bind(TEST_SCHEMA)
        .bind(&table)
        .fetch_one(store.pool())
        .await
        .expect("read table statistics");
        n
    };

    let (first, next) = store.list_page(None, 10).await.expect("first page");
    assert_eq!(first.len(), 10);
    let before = rows_read().await;
    let (second, _) = store
        .list_page(next.as_ref(), 10)
        .await
        .expect("second page");
    let read = rows_read().await - before;
    assert_eq!(second.len(), 10);
    assert!(first.last() < second.first(), "pages follow each other");
    assert!(
        (10..=12).contains(&read),
        "a page of 10 read {read} rows: it must seek to the cursor and stop after the page"
    );
    let before = rows_read().await;
    assert_eq!(store.list().await.expect("list").len(), 5000);
    let read = rows_read().await - before;
    assert!(read >= 5000, "list read {read} rows of 5000");
}

/// The sweep commits its batches without waiting for the WAL flush, but only its own: the
/// setting ends with each batch's statement, so the pooled connection it ran on (the only one
/// here) goes on committing durably, and every expired row is still gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeps_asynchronous_commit_does_not_outlive_its_statement() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("asyncsweep");
    let _guard = common::drop_table(&url, TEST_SCHEMA, &table);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("pool of one");
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(&table)
        .cleanup_batch(100)
        .cleanup_interval(Duration::ZERO)
        .build(pool.clone())
        .expect("build");
    store.migrate().await.expect("migrate");
    let before: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .expect("show");
    insert_expired_rows(&store, 250).await;
    assert_eq!(store.delete_expired().await.expect("sweep"), 250);
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
    let after: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(
        after, before,
        "the sweep's setting leaked to the connection"
    );
    assert_ne!(after, "off", "the server's own setting is durable here");
}

/// A session created under the key of an expired row while a sweep is about to delete that
/// row survives: the sweep waits for the writer's lock, sees the row live again and keeps it,
/// and sweeps the rest. The writer here is a transaction holding the row (an `UPDATE` as the
/// store's create-over-expired does), so the sweep provably waits on it before it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_recreated_while_the_sweep_waits_on_its_row_survives() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("resweep");
    let _guard = common::drop_table(&url, TEST_SCHEMA, &table);
    let app = common::unique_name("sweeper");
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(&table)
        .cleanup_batch(1000)
        .cleanup_interval(Duration::ZERO)
        .build(common::pool(&url, &app, 2).await)
        .expect("build");
    store.migrate().await.expect("migrate");
    let reborn = expired(b"old");
    store.create(&reborn).await.expect("create expired");
    insert_expired_rows(&store, 40).await;

    let mut writer = sqlx::PgConnection::connect(&url).await.expect("writer");
    sqlx::query("BEGIN")
        .execute(&mut writer)
        .await
        .expect("begin");
    let t = format!("\"{TEST_SCHEMA}\".\"{table}\"");
    let updated = sqlx::query(&format!(
        "UPDATE {t} SET data = '\\x6e6577', expires_at = now() + interval '1 hour', version = 7
         WHERE key = $1 AND expires_at <= now()"
    ))
    .bind(reborn.key.as_bytes().as_slice())
    .execute(&mut writer)
    .await
    .expect("re-create over the expired row")
    .rows_affected();
    assert_eq!(updated, 1);

    let sweep = {
        let store = store.clone();
        tokio::spawn(async move { store.delete_expired().await })
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("admin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut admin)
            .await
            .expect("fresh stats");
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&app)
        .fetch_one(&mut admin)
        .await
        .expect("read pg_stat_activity");
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep never waited on the re-created row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("COMMIT")
        .execute(&mut writer)
        .await
        .expect("commit");

    let swept = sweep.await.expect("sweep task").expect("sweep");
    assert_eq!(
        swept, 40,
        "every other expired row goes, the re-created one stays"
    );
    let back = store
        .load(&reborn.key)
        .await
        .expect("load")
        .expect("the re-created session was deleted by the sweep");
    assert_eq!((&back.data[..], back.version), (&b"new"[..], 7));
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
}
