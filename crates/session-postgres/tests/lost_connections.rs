//! Connections that die under the store: backends terminated with `pg_terminate_backend`
//! (only this test's own, found by `application_name`) while statements are in flight, while
//! connections sit idle in the pool, and over and over under concurrent load. Idempotent calls
//! are retried once on another connection and must not fail; conditional writes (`create`,
//! `save`, `rotate`) must never be retried.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::{Error, Record, SessionId, SessionKey, SessionStore, Timestamp};
use session_postgres::PostgresStore;
use session_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use session_postgres::sqlx::{self, Connection as _};

use common::{DropOnExit, TEST_SCHEMA};

const HOUR: Duration = Duration::from_secs(3600);

fn live(data: &'static [u8]) -> Record {
    Record::new(SessionId::generate().key(), data, Timestamp::now() + HOUR)
}

fn is_unavailable(err: &Error) -> bool {
    matches!(
        err,
        Error::Unavailable {
            store: "postgres",
            ..
        }
    )
}

/// Drops the statistics snapshot a transaction keeps, so `pg_stat_activity` read inside the
/// test's lock-holding transaction shows the backends as they are now, not as first read.
async fn fresh_stats(admin: &mut sqlx::PgConnection) {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(admin)
        .await
        .expect("pg_stat_clear_snapshot");
}

/// PIDs of the backends whose `application_name` is `app`, optionally only those waiting on a lock.
async fn backends(admin: &mut sqlx::PgConnection, app: &str, waiting_on_lock: bool) -> Vec<i32> {
    fresh_stats(admin).await;
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND (NOT $2 OR wait_event_type = 'Lock')",
    )
    .bind(app)
    .bind(waiting_on_lock)
    .fetch_all(admin)
    .await
    .expect("read pg_stat_activity")
}

/// Terminates every backend of `app`; returns how many there were and how many of them were
/// running a statement at that moment.
async fn terminate(admin: &mut sqlx::PgConnection, app: &str) -> (i64, i64) {
    fresh_stats(admin).await;
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'active')
         FROM (SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) AS killed",
    )
    .bind(app)
    .fetch_one(admin)
    .await
    .expect("pg_terminate_backend")
}

/// Waits until no backend of `app` is left (termination is a signal, not instant).
async fn wait_gone(admin: &mut sqlx::PgConnection, app: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !backends(admin, app, false).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backends did not exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store on `table` over a pool of `max` connections named `app`, optionally without the
/// pool's check of idle connections before use.
async fn store_on(
    url: &str,
    table: &str,
    app: &str,
    max: u32,
    test_before_acquire: bool,
) -> PostgresStore {
    let options: PgConnectOptions = url.parse().expect("DATABASE_URL");
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(test_before_acquire)
        .connect_with(options.application_name(app))
        .await
        .expect("connect");
    let store = PostgresStore::builder()
        .schema(TEST_SCHEMA)
        .table(table)
        .build(pool)
        .expect("build");
    store.migrate().await.expect("migrate");
    store
}

/// Holds `ACCESS EXCLUSIVE` on the table in a transaction of `admin`, so statements of the
/// store wait on the server until it is rolled back.
async fn lock_table<'c>(
    admin: &'c mut sqlx::PgConnection,
    table: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut tx = admin.begin().await.expect("begin");
    sqlx::query(&format!(
        "LOCK TABLE \"{TEST_SCHEMA}\".\"{table}\" IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *tx)
    .await
    .expect("lock the table");
    tx
}

async fn wait_on_lock(tx: &mut sqlx::PgConnection, app: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while backends(tx, app, true).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the statement never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A load whose backend is terminated while it runs is retried on another connection and
/// returns the record; a save in the same position fails with `Unavailable` and is not
/// retried (the record keeps its version once the lock is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_cut_off_mid_statement_is_retried_but_a_save_is_not() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("terminate");
    let _guard = DropOnExit::table(&url, TEST_SCHEMA, &table);
    let app = common::unique_name("app");
    // One connection, so terminating "the app's backends" hits exactly the statement in
    // flight, never the connection its retry is about to use.
    let store = store_on(&url, &table, &app, 1, true).await;
    let r = live(b"survives");
    store.create(&r).await.expect("create");
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("admin connection");

    let mut tx = lock_table(&mut admin, &table).await;
    let blocked = {
        let (store, key) = (store.clone(), r.key);
        tokio::spawn(async move { store.load(&key).await })
    };
    wait_on_lock(&mut tx, &app).await;
    let (killed, active) = terminate(&mut tx, &app).await;
    assert!(
        killed >= 1 && active >= 1,
        "the waiting load's backend was terminated"
    );
    // The retry waits on the lock again, on a new connection.
    wait_on_lock(&mut tx, &app).await;
    tx.rollback().await.expect("release the lock");
    let back = blocked.await.expect("load task");
    assert_eq!(
        back.expect("a load cut off by a terminated backend must be retried"),
        Some(r.clone())
    );

    let mut tx = lock_table(&mut admin, &table).await;
    let mut changed = r.clone();
    changed.data = session_core::Bytes::from_static(b"changed");
    let blocked = {
        let (store, changed) = (store.clone(), changed.clone());
        tokio::spawn(async move { store.save(&changed).await })
    };
    wait_on_lock(&mut tx, &app).await;
    terminate(&mut tx, &app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        backends(&mut tx, &app, true).await.is_empty(),
        "the save was sent again after its backend was terminated"
    );
    tx.rollback().await.expect("release the lock");
    let err = blocked
        .await
        .expect("save task")
        .expect_err("a save cut off by a terminated backend must fail");
    assert!(is_unavailable(&err), "expected Unavailable, got {err:?}");
    assert!(err.is_transient());
    assert_eq!(
        store.load(&r.key).await.expect("load"),
        Some(r),
        "the cut-off save was applied"
    );
}

/// Waits until the pool's only connection is back in the pool, then terminates its backend
/// and waits for it to exit, so the next call is handed a dead connection.
async fn kill_the_idle_connection(
    store: &PostgresStore,
    admin: &mut sqlx::PgConnection,
    app: &str,
) {
    // A call that failed leaves the pool empty: open its connection again.
    sqlx::query("SELECT 1")
        .execute(store.pool())
        .await
        .expect("reconnect the pool");
    // The pool pings a connection as it takes it back; terminate only once that is done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.pool().num_idle() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection never went idle"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(terminate(admin, app).await.0, 1);
    wait_gone(admin, app).await;
}

/// On a pool that hands out idle connections unchecked, a connection killed while idle fails
/// the next statement on it: every idempotent call recovers by retrying once, while
/// `create`, `save` and `rotate` fail with `Unavailable` and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_on_a_dead_connection_are_retried_and_conditional_writes_are_not() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("deadconn");
    let _guard = DropOnExit::table(&url, TEST_SCHEMA, &table);
    let app = common::unique_name("app");
    let store = store_on(&url, &table, &app, 1, false).await;
    let r = live(b"x").with_owner("ann");
    store.create(&r).await.expect("create");
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("admin connection");

    macro_rules! survives {
        ($what:literal, $call:expr) => {{
            kill_the_idle_connection(&store, &mut admin, &app).await;
            match $call.await {
                Ok(v) => v,
                Err(e) => panic!("{} on a dead connection must be retried, got {e:?}", $what),
            }
        }};
    }
    assert_eq!(survives!("load", store.load(&r.key)), Some(r.clone()));
    assert!(survives!("exists", store.exists(&r.key)));
    assert_eq!(survives!("count", store.count()), 1);
    assert_eq!(survives!("count_expired", store.count_expired()), 0);
    assert_eq!(survives!("list", store.list()), vec![r.key]);
    assert_eq!(
        survives!("list_page", store.list_page(None, 10)),
        (vec![r.key], None)
    );
    assert_eq!(
        survives!("list_by_owner", store.list_by_owner("ann")),
        vec![r.clone()]
    );
    survives!("touch", store.touch(&r.key, r.expires_at));
    let missing = SessionId::generate().key();
    assert!(!survives!("delete", store.delete(&missing)));
    assert_eq!(survives!("delete_many", store.delete_many(&[missing])), 0);
    assert_eq!(
        survives!("delete_by_owner", store.delete_by_owner("bob")),
        0
    );
    assert_eq!(survives!("delete_expired", store.delete_expired()), 0);

    macro_rules! not_retried {
        ($what:literal, $call:expr) => {{
            kill_the_idle_connection(&store, &mut admin, &app).await;
            match $call.await {
                Err(e) if is_unavailable(&e) => {}
                other => panic!(
                    "{} on a dead connection must fail with Unavailable and not be retried, got {other:?}",
                    $what
                ),
            }
        }};
    }
    let fresh = live(b"fresh");
    not_retried!("create", store.create(&fresh));
    let mut changed = r.clone();
    changed.data = session_core::Bytes::from_static(b"changed");
    not_retried!("save", store.save(&changed));
    let new_key = SessionId::generate().key();
    not_retried!("rotate", store.rotate(&r.key, &new_key));
    assert!(!store.exists(&fresh.key).await.expect("exists"));
    assert!(!store.exists(&new_key).await.expect("exists"));
    assert_eq!(store.load(&r.key).await.expect("load"), Some(r));
}

/// What the saving tasks saw.
#[derive(Debug, Default)]
struct SaveTally {
    ok: u64,
    /// Reported `Unavailable`, and the record kept its version.
    failed_not_applied: u64,
    /// Reported `Unavailable`, yet the record has the new version: the commit happened and
    /// only its reply was lost.
    failed_but_applied: u64,
}

/// Terminates this test's backends again and again while tasks run every idempotent call in
/// a loop: none of those calls may fail. Tasks saving their own record see each save either
/// succeed or fail with `Unavailable` (possibly applied), never `Conflict`, which a retried
/// save that had been applied would meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_backends_killed_under_load() {
    let Some(url) = common::database_url() else {
        return;
    };
    let table = common::unique_name("killload");
    let _guard = DropOnExit::table(&url, TEST_SCHEMA, &table);
    let app = common::unique_name("app");
    let store = store_on(&url, &table, &app, 4, true).await;
    let records: Vec<Record> = (0..16)
        .map(|i| live(b"loaded").with_owner(format!("owner{}", i % 4)))
        .collect();
    for r in &records {
        store.create(r).await.expect("create");
    }
    let records = Arc::new(records);
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<BTreeMap<&'static str, Vec<String>>>> = Arc::default();

    let readers: Vec<_> = (0..8)
        .map(|task| {
            let (store, records, stop, failures) = (
                store.clone(),
                Arc::clone(&records),
                Arc::clone(&stop),
                Arc::clone(&failures),
            );
            tokio::spawn(async move {
                let mut calls = 0u64;
                let mut i = task;
                let note = |what: &'static str, e: Error| {
                    failures
                        .lock()
                        .expect("failures")
                        .entry(what)
                        .or_default()
                        .push(format!("{e:?}"));
                };
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 1) % records.len();
                    let r = &records[i];
                    let missing: SessionKey = SessionId::generate().key();
                    match i % 6 {
                        0 => match store.load(&r.key).await {
                            Ok(Some(back)) => assert_eq!(back.key, r.key),
                            Ok(None) => panic!("a live record vanished"),
                            Err(e) => note("load", e),
                        },
                        1 => match store.exists(&r.key).await {
                            Ok(live) => assert!(live, "a live record vanished"),
                            Err(e) => note("exists", e),
                        },
                        2 => {
                            if let Err(e) = store.touch(&r.key, r.expires_at).await {
                                note("touch", e);
                            }
                        }
                        3 => {
                            if let Err(e) = store.count().await {
                                note("count", e);
                            }
                            if let Err(e) = store.list_page(None, 5).await {
                                note("list_page", e);
                            }
                        }
                        4 => {
                            if let Err(e) = store.list_by_owner("owner1").await {
                                note("list_by_owner", e);
                            }
                        }
                        _ => {
                            if let Err(e) = store.delete(&missing).await {
                                note("delete", e);
                            }
                            if let Err(e) = store.delete_many(&[missing]).await {
                                note("delete_many", e);
                            }
                        }
                    }
                    calls += 1;
                }
                calls
            })
        })
        .collect();

    let savers: Vec<_> = (0..2)
        .map(|task| {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut mine = live(b"saved").with_owner(format!("saver{task}"));
                store.create(&mine).await.expect("create the saver's record");
                let mut tally = SaveTally::default();
                while !stop.load(Ordering::Relaxed) {
                    match store.save(&mine).await {
                        Ok(v) => {
                            mine.version = v;
                            tally.ok += 1;
                        }
                        Err(e) if is_unavailable(&e) => {
                            // Reading back may meet a killed connection too; it is retried.
                            let stored = store
                                .load(&mine.key)
                                .await
                                .expect("load after a failed save")
                                .expect("the saver's record");
                            if stored.version == mine.version {
                                tally.failed_not_applied += 1;
                            } else {
                                assert_eq!(stored.version, mine.version + 1);
                                tally.failed_but_applied += 1;
                                mine.version = stored.version;
                            }
                        }
                        Err(e) => panic!(
                            "a save failed with {e:?}: only Unavailable is possible when a save is never retried"
                        ),
                    }
                }
                tally
            })
        })
        .collect();

    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("admin connection");
    let (mut killed, mut active, mut rounds) = (0, 0, 0);
    // Ten rounds at least, and more (up to 50) until one kill lands mid-statement: on a
    // loaded machine the statements are short and most kills find the connections idle.
    while rounds < 10 || (active == 0 && rounds < 50) {
        rounds += 1;
        // Long enough apart that a retry is done before the next round can kill it too.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (k, a) = terminate(&mut admin, &app).await;
        killed += k;
        active += a;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for reader in readers {
        calls += reader.await.expect("reader task");
    }
    let mut saves = SaveTally::default();
    for saver in savers {
        let t = saver.await.expect("saver task");
        saves.ok += t.ok;
        saves.failed_not_applied += t.failed_not_applied;
        saves.failed_but_applied += t.failed_but_applied;
    }
    eprintln!(
        "{calls} idempotent calls and {saves:?} while {killed} backends were terminated, {active} of them mid-statement"
    );
    assert!(
        active > 0,
        "no backend was terminated mid-statement: the test proved nothing"
    );
    assert!(calls > 0 && saves.ok > 0);
    let failures = failures.lock().expect("failures");
    assert!(
        failures.is_empty(),
        "idempotent calls failed when their connection was killed: {failures:#?}"
    );
}
