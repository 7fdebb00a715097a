//! Faults and edges beyond the shared suite: migrations (repeated, concurrent, next to open
//! writers), batched cleanup, refused names, unreachable servers and exhausted pools, size
//! and owner limits, the unchanged-row case of `touch`, rotation over an expired key, and
//! timestamp and version edges. Lost connections are in `lost_connections.rs`, time zones in
//! `time_zones.rs`. Each test has its own table (or database), dropped when it ends.

mod common;

use std::time::Duration;

use session_core::conformance::DropGuard;
use session_core::conformance::{sizes, sweeps};
use session_core::{Error, SessionId, SessionStore, Timestamp};
use session_mysql::MySqlStore;
use session_mysql::sqlx::mysql::MySqlPoolOptions;
use session_mysql::sqlx::{self, Connection as _};

use common::{HOUR, expired, live};

/// A migrated store on a fresh table, with the guard that drops it.
async fn fresh(url: &str) -> (MySqlStore, DropGuard) {
    let table = common::unique_name("t");
    let guard = common::drop_table(url, &table);
    (common::store(url, &table).await, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_twice_keeps_data() {
    let Some(url) = common::mysql_url() else {
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

/// An open transaction that wrote to the table holds a metadata lock on it until it ends;
/// any DDL on the table would queue behind it (for `lock_wait_timeout`, a year by default),
/// and every request behind the DDL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_an_existing_table_does_not_wait_for_writers() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let mut writer = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("writer connection");
    let mut tx = writer.begin().await.expect("begin");
    let r = live(b"in a transaction");
    sqlx::query(&format!(
        "INSERT INTO `{}` (`key`, `data`, `created_at`, `expires_at`, `version`) VALUES (?, x'00', 0, ?, 1)",
        store.table()
    ))
    .bind(r.key.as_bytes().as_slice())
    .bind(r.expires_at.unix_millis())
    .execute(&mut *tx)
    .await
    .expect("write in an open transaction");
    let migrated = tokio::time::timeout(Duration::from_secs(10), store.migrate()).await;
    assert!(
        matches!(migrated, Ok(Ok(()))),
        "migrate waited for a writer: {migrated:?}"
    );
    tx.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_a_new_database_all_succeed() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let database = common::unique_name("db");
    let _guard = common::drop_database(&url, &database);
    // Separate pools, like separate app servers starting at once.
    let mut stores = Vec::new();
    for _ in 0..6 {
        let store = MySqlStore::builder()
            .database(&database)
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
    let (a, b) = tokio::join!(stores[1].migrate(), stores[2].migrate());
    a.expect("migrate again");
    b.expect("migrate again");
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'sessions'",
    )
    .bind(&database)
    .fetch_all(stores[0].pool())
    .await
    .expect("list indexes");
    indexes.sort();
    assert_eq!(indexes, ["PRIMARY", "expires_at_idx", "owner_idx"]);
}

/// A table made by hand (or by an older version) without the secondary indexes gets them
/// from `migrate`, and keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_adds_missing_indexes() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let r = live(b"kept").with_owner("ann");
    store.create(&r).await.expect("create");
    for index in ["expires_at_idx", "owner_idx"] {
        sqlx::query(&format!("DROP INDEX `{index}` ON `{}`", store.table()))
            .execute(store.pool())
            .await
            .expect("drop index");
    }
    store.migrate().await.expect("migrate");
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(store.table())
    .fetch_one(store.pool())
    .await
    .expect("count indexes");
    assert_eq!(n, 3);
    assert_eq!(store.list_by_owner("ann").await.expect("list"), vec![r]);
}

/// Adds `n` (at most 10,000) expired rows straight in SQL, fast; they are only swept.
async fn insert_expired_rows(store: &MySqlStore, n: i64) {
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
                   UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let sql = format!(
        "INSERT INTO `{}` (`key`, `data`, `created_at`, `expires_at`, `version`)
         SELECT UNHEX(SHA2(CONCAT(?, i), 256)), x'00', 0, 1000, 1
         FROM (SELECT a.d * 1000 + b.d * 100 + c.d * 10 + e.d AS i
               FROM {digits} a, {digits} b, {digits} c, {digits} e) AS seq
         WHERE i < ?",
        store.table()
    );
    sqlx::query(&sql)
        .bind(common::unique_name("seed"))
        .bind(n)
        .execute(store.pool())
        .await
        .expect("seed expired rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_exactly_the_expired_rows_while_loads_continue() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("cleanup");
    let _guard = common::drop_table(&url, &table);
    // The sweep runs every 50 ms from the moment the store is built, with no call to start
    // it; it fails quietly (and tries again) until the table exists.
    let store = MySqlStore::builder()
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
            MySqlStore::builder()
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
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("autosweep");
    let _guard = common::drop_table(&url, &table);
    let setup = common::store(&url, &table).await;
    setup.stop_cleanup().await;
    sweeps::sweeps_without_being_asked(&setup, insert_expired_rows(&setup, 300), 300, async {
        MySqlStore::builder()
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
    let Some(url) = common::mysql_url() else {
        return;
    };
    let pool = MySqlPoolOptions::new()
        .connect_lazy(&url)
        .expect("lazy pool");
    let outside = std::thread::spawn(move || {
        let default = MySqlStore::builder().build(pool.clone()).map(drop);
        let new = MySqlStore::new(pool.clone()).map(drop);
        let off = MySqlStore::builder()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_runs_in_bounded_batches_until_done() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("batches");
    let _guard = common::drop_table(&url, &table);
    let store = MySqlStore::builder()
        .table(&table)
        .cleanup_batch(7)
        .connect(&url)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let keep = live(b"keep");
    store.create(&keep).await.expect("create");
    // 35 = five full batches, then an empty one: the loop must not stop at a full batch.
    insert_expired_rows(&store, 35).await;
    assert_eq!(store.delete_expired().await.expect("delete_expired"), 35);
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
    assert_eq!(store.load(&keep.key).await.expect("load"), Some(keep));
    assert!(matches!(
        MySqlStore::builder()
            .cleanup_batch(0)
            .build(store.pool().clone()),
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_exhausted_pool_are_unavailable() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    // Port 1 on loopback refuses connections.
    let err = MySqlStore::builder()
        .acquire_timeout(Duration::from_secs(2))
        .connect("mysql://root@127.0.0.1:1/test")
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(err, Error::Unavailable { store: "mysql", .. }),
        "expected Unavailable, got {err:?}"
    );
    for bad in [
        "postgres://nope",
        "mysql://u@h:99999999/db",
        "mysql://u@h/db?ssl-mode=sometimes",
    ] {
        let err = MySqlStore::connect(bad).await.expect_err("not a MySQL URL");
        assert!(
            matches!(err, Error::Config(_)),
            "{bad}: expected Config, got {err:?}"
        );
    }
    // A rejected login is the server's answer, not an outage.
    let err = MySqlStore::builder()
        .acquire_timeout(Duration::from_secs(5))
        .connect(&format!("{}_missing_db", url.trim_end_matches('/')))
        .await
        .expect_err("unknown database");
    assert!(
        matches!(err, Error::Backend { store: "mysql", .. }),
        "got {err:?}"
    );

    let (store, _guard) = fresh(&url).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .connect(&url)
        .await
        .expect("connect");
    let small = MySqlStore::builder()
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
    assert!(err.is_transient());
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
    let Some(url) = common::mysql_url() else {
        return;
    };
    let pool = MySqlPoolOptions::new()
        .connect_lazy(&url)
        .expect("lazy pool");
    for table in [
        "sessions`; DROP TABLE users; --",
        "a b",
        "",
        "1x",
        "x.y",
        "sessions'--",
        "t\0",
        &"t".repeat(65),
    ] {
        let err = MySqlStore::builder().table(table).build(pool.clone());
        assert!(
            matches!(err, Err(Error::Config(_))),
            "table {table:?} must be refused, got {err:?}"
        );
    }
    for database in ["test`.`x", "mysql", "information_schema", "a;b", ""] {
        let err = MySqlStore::builder().database(database).build(pool.clone());
        assert!(
            matches!(err, Err(Error::Config(_))),
            "database {database:?} must be refused, got {err:?}"
        );
    }
    // `connect` refuses before connecting: nothing listens on port 1, yet the error is Config.
    let err = MySqlStore::builder()
        .table("x;y")
        .connect("mysql://root@127.0.0.1:1/test")
        .await;
    assert!(matches!(err, Err(Error::Config(_))), "got {err:?}");
    // Reserved words are fine: they are always quoted.
    let database = common::unique_name("Mixed");
    let _guard = common::drop_database(&url, &database);
    for table in ["key", "user", "order"] {
        let store = MySqlStore::builder()
            .database(&database)
            .table(table)
            .build(pool.clone())
            .expect("valid names");
        store.migrate().await.expect("migrate");
        let r = live(b"quoted").with_owner("ann");
        store.create(&r).await.expect("create");
        assert_eq!(store.load(&r.key).await.expect("load"), Some(r.clone()));
        assert_eq!(store.list_by_owner("ann").await.expect("list"), vec![r]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_defaults_to_4096_and_none_means_unlimited() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let by_new = MySqlStore::new(store.pool().clone()).expect("new");
    assert_eq!(by_new.max_data_len(), Some(4096));
    // The 3 MiB session is above 64 KiB (a BLOB) and 2 MiB: the column is a LONGBLOB.
    let unlimited = MySqlStore::builder()
        .table(store.table())
        .max_data_len(None)
        .build(store.pool().clone())
        .expect("build");
    sizes::default_limit_and_none(&store, 4096, &unlimited).await;
}

/// Owners are compared exactly (no trailing-space padding, no case folding), and an owner
/// longer than the column holds is refused before any query instead of being truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_match_exactly_and_overlong_ones_are_refused() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let ann = live(b"a").with_owner("ann");
    let padded = live(b"b").with_owner("ann ");
    let upper = live(b"c").with_owner("ANN");
    for r in [&ann, &padded, &upper] {
        store.create(r).await.expect("create");
    }
    assert_eq!(
        store.list_by_owner("ann").await.expect("list"),
        vec![ann.clone()]
    );
    assert_eq!(
        store.list_by_owner("ann ").await.expect("list"),
        vec![padded.clone()]
    );
    assert_eq!(store.delete_by_owner("ann").await.expect("delete"), 1);
    assert_eq!(store.count().await.expect("count"), 2);

    let long = "x".repeat(65_536);
    let err = store
        .create(&live(b"l").with_owner(long.as_str()))
        .await
        .expect_err("owner too long");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: 65_536,
                limit: 65_535
            }
        ),
        "got {err:?}"
    );
    let mut moved = padded.clone();
    moved.owner = Some(long);
    let err = store.save(&moved).await.expect_err("owner too long");
    assert!(matches!(err, Error::TooLarge { .. }), "got {err:?}");
    assert_eq!(store.load(&padded.key).await.expect("load"), Some(padded));
    // The longest owner that fits comes back whole.
    let longest = live(b"m").with_owner("é".repeat(65_535 / 2));
    store.create(&longest).await.expect("create");
    assert_eq!(store.load(&longest.key).await.expect("load"), Some(longest));
}

/// sqlx asks for CLIENT_FOUND_ROWS, so an `UPDATE` that matches a row but changes nothing
/// reports it as affected. `touch` with the deadline the record already has is such an
/// update and must succeed, not report `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_row_counts_as_found() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    let r = live(b"same");
    store.create(&r).await.expect("create");
    let unchanged = sqlx::query(&format!(
        "UPDATE `{}` SET `expires_at` = `expires_at` WHERE `key` = ?",
        store.table()
    ))
    .bind(r.key.as_bytes().as_slice())
    .execute(store.pool())
    .await
    .expect("no-op update");
    assert_eq!(
        unchanged.rows_affected(),
        1,
        "the pool's connections do not use CLIENT_FOUND_ROWS: touch would report NotFound for an unchanged deadline"
    );
    store
        .touch(&r.key, r.expires_at)
        .await
        .expect("touch with the same deadline");
    store.touch(&r.key, r.expires_at).await.expect("and again");
    assert_eq!(store.load(&r.key).await.expect("load"), Some(r));
}

/// The rotate statement deletes an expired row at the target before it moves the session;
/// when the old key turns out not to be live, that delete is rolled back with it. (Rotating
/// onto an expired key is a conformance case.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_of_an_expired_key_leaves_an_expired_target_alone() {
    let Some(url) = common::mysql_url() else {
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
async fn timestamps_and_versions_are_exact_across_their_range() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let (store, _guard) = fresh(&url).await;
    // BIGINT milliseconds hold every Timestamp, before 1970 and far in the future.
    for (created, expires) in [
        (-1, 4_102_444_800_123),
        (i64::MIN, i64::MAX),
        (0, 253_402_300_799_999),
    ] {
        let mut r = live(b"t");
        r.created_at = Timestamp::from_unix_millis(created);
        r.expires_at = Timestamp::from_unix_millis(expires);
        store.create(&r).await.expect("create");
        assert_eq!(store.load(&r.key).await.expect("load"), Some(r));
    }
    // The largest version round-trips; saving it cannot bump it: a typed error, no change.
    let mut top = live(b"v");
    top.version = u64::MAX;
    store.create(&top).await.expect("create");
    assert_eq!(store.load(&top.key).await.expect("load"), Some(top.clone()));
    let err = store
        .save(&top)
        .await
        .expect_err("no version above u64::MAX");
    assert!(
        matches!(err, Error::Backend { store: "mysql", .. }),
        "got {err:?}"
    );
    assert_eq!(store.load(&top.key).await.expect("load"), Some(top));
}

/// Rows read by this connection's statements so far (the handler counters of the session).
async fn rows_read(conn: &mut sqlx::MySqlConnection) -> i64 {
    let rows: Vec<(String, String)> = sqlx::query_as("SHOW SESSION STATUS LIKE 'Handler_read%'")
        .fetch_all(&mut *conn)
        .await
        .expect("read handler counters");
    rows.iter()
        .filter(|(name, _)| name != "Handler_read_key")
        .map(|(_, v)| v.parse::<i64>().unwrap_or(0))
        .sum()
}

/// `list_page` is keyset pagination: one range scan from the cursor that stops after the
/// page, so a page of 10 out of 5,000 live sessions reads about 11 rows, where `list` reads
/// them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_only_its_own_rows() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("pages");
    let _guard = common::drop_table(&url, &table);
    // One connection, so every statement below runs in the same session and its counters
    // can be read there.
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("pool");
    let store = MySqlStore::builder()
        .table(&table)
        .build(pool)
        .expect("build");
    store.migrate().await.expect("migrate");
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
                   UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
    sqlx::query(&format!(
        "INSERT INTO `{table}` (`key`, `data`, `created_at`, `expires_at`, `version`)
         SELECT UNHEX(SHA2(i, 256)), x'00', 0, ?, 1
         FROM (SELECT a.d * 1000 + b.d * 100 + c.d * 10 + e.d AS i
               FROM {digits} a, {digits} b, {digits} c, {digits} e) AS seq
         WHERE i < 5000"
    ))
    .bind((Timestamp::now() + HOUR).unix_millis())
    .execute(store.pool())
    .await
    .expect("seed live rows");
    sqlx::query(&format!("ANALYZE TABLE `{table}`"))
        .execute(store.pool())
        .await
        .expect("analyze");
    let mut conn = store.pool().acquire().await.expect("the pool's connection");
    // What reading the counters costs by itself.
    let base = {
        let a = rows_read(&mut conn).await;
        rows_read(&mut conn).await - a
    };
    drop(conn);

    let (first, next) = store.list_page(None, 10).await.expect("first page");
    assert_eq!(first.len(), 10);
    let mut conn = store.pool().acquire().await.expect("connection");
    let before = rows_read(&mut conn).await;
    drop(conn);
    let (second, _) = store
        .list_page(next.as_ref(), 10)
        .await
        .expect("second page");
    let mut conn = store.pool().acquire().await.expect("connection");
    let read = rows_read(&mut conn).await - before - base;
    drop(conn);
    assert_eq!(second.len(), 10);
    assert!(first.last() < second.first(), "pages follow each other");
    assert!(
        (10..=13).contains(&read),
        "a page of 10 read {read} rows: it must seek to the cursor and stop after the page"
    );
    let mut conn = store.pool().acquire().await.expect("connection");
    let before = rows_read(&mut conn).await;
    drop(conn);
    assert_eq!(store.list().await.expect("list").len(), 5000);
    let mut conn = store.pool().acquire().await.expect("connection");
    let read = rows_read(&mut conn).await - before - base;
    assert!(read >= 5000, "list read {read} rows of 5000");
}
