//! Connections that die under the store: killed with `KILL CONNECTION` from another connection
//! (only this test's own, found by the ids its pool recorded) while statements are in flight,
//! while connections sit idle in the pool, and over and over under concurrent load.
//! Idempotent calls are retried once on another connection and must not fail; conditional
//! writes (`create`, `save`, `rotate`) must never be retried; and the pool recovers.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::{Error, Record, SessionId, SessionKey, SessionStore};
use session_mysql::MySqlStore;
use session_mysql::sqlx::{self, Connection as _};

use common::{ConnectionIds, DropOnExit, live};

fn is_unavailable(err: &Error) -> bool {
    matches!(err, Error::Unavailable { store: "mysql", .. })
}

/// The server's sessions among `ids`: `(id, command, state)`.
async fn sessions(
    admin: &mut sqlx::MySqlConnection,
    ids: &ConnectionIds,
) -> Vec<(i64, String, String)> {
    let all: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT CAST(ID AS SIGNED), COMMAND, STATE FROM information_schema.PROCESSLIST",
    )
    .fetch_all(&mut *admin)
    .await
    .expect("read the process list");
    let ids = ids.lock().expect("ids").clone();
    all.into_iter()
        .filter(|(id, _, _)| ids.contains(id))
        .map(|(id, command, state)| (id, command, state.unwrap_or_default()))
        .collect()
}

/// Ids of this pool's sessions waiting on a table lock, but for the `killed` ones (a killed
/// session may stay listed, in its wait, for a moment).
async fn waiting_on_lock(
    admin: &mut sqlx::MySqlConnection,
    ids: &ConnectionIds,
    killed: &[i64],
) -> Vec<i64> {
    sessions(admin, ids)
        .await
        .into_iter()
        .filter(|(id, _, state)| {
            !killed.contains(id) && state.to_ascii_lowercase().contains("lock")
        })
        .map(|(id, _, _)| id)
        .collect()
}

/// Kills every live session of the pool; returns their ids and how many of them were
/// running a statement at that moment.
///
/// The `KILL`s go in one multi-statement round trip, so they land microseconds apart: a call
/// retried after the first one cannot take a connection the same round kills a moment later.
async fn kill_all(admin: &mut sqlx::MySqlConnection, ids: &ConnectionIds) -> (Vec<i64>, usize) {
    let found = sessions(admin, ids).await;
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
        let _ = sqlx::raw_sql(&batch).execute(&mut *admin).await;
    }
    (killed, active)
}

/// Waits until none of the pool's sessions is left on the server.
async fn wait_gone(admin: &mut sqlx::MySqlConnection, ids: &ConnectionIds) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sessions(admin, ids).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed sessions did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_on_lock(admin: &mut sqlx::MySqlConnection, ids: &ConnectionIds, killed: &[i64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while waiting_on_lock(admin, ids, killed).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the statement never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store on `table` over a tracked pool of `max` connections.
async fn store_on(
    url: &str,
    table: &str,
    max: u32,
    test_before_acquire: bool,
) -> (MySqlStore, ConnectionIds) {
    let (pool, ids) = common::tracked_pool(url, max, test_before_acquire).await;
    let store = MySqlStore::builder()
        .table(table)
        .build(pool)
        .expect("build");
    store.migrate().await.expect("migrate");
    (store, ids)
}

/// A load whose connection is killed while it waits on the server is retried on another
/// connection and returns the record; a save in the same position fails with `Unavailable`
/// and is not sent again (the record keeps its version once the lock is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_cut_off_mid_statement_is_retried_but_a_save_is_not() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("kill");
    let _guard = DropOnExit::table(&url, &table);
    // One connection, so killing "the pool's sessions" hits exactly the statement in flight.
    let (store, ids) = store_on(&url, &table, 1, true).await;
    let r = live(b"survives");
    store.create(&r).await.expect("create");
    let mut admin = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("admin connection");
    let mut locker = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("lock connection");

    sqlx::query(&format!("LOCK TABLES `{table}` WRITE"))
        .execute(&mut locker)
        .await
        .expect("lock the table");
    let blocked = {
        let (store, key) = (store.clone(), r.key);
        tokio::spawn(async move { store.load(&key).await })
    };
    wait_on_lock(&mut admin, &ids, &[]).await;
    let (killed, active) = kill_all(&mut admin, &ids).await;
    assert!(
        !killed.is_empty() && active >= 1,
        "the waiting load's connection was killed"
    );
    // The retry waits on the lock again, on a new connection.
    wait_on_lock(&mut admin, &ids, &killed).await;
    sqlx::query("UNLOCK TABLES")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let back = blocked.await.expect("load task");
    assert_eq!(
        back.expect("a load cut off by a killed connection must be retried"),
        Some(r.clone())
    );

    sqlx::query(&format!("LOCK TABLES `{table}` WRITE"))
        .execute(&mut locker)
        .await
        .expect("lock the table");
    let mut changed = r.clone();
    changed.data = session_core::Bytes::from_static(b"changed");
    let blocked = {
        let (store, changed) = (store.clone(), changed.clone());
        tokio::spawn(async move { store.save(&changed).await })
    };
    wait_on_lock(&mut admin, &ids, &[]).await;
    let (killed, _) = kill_all(&mut admin, &ids).await;
    let err = blocked
        .await
        .expect("save task")
        .expect_err("a save cut off by a killed connection must fail");
    assert!(is_unavailable(&err), "expected Unavailable, got {err:?}");
    assert!(err.is_transient());
    // Give a resent save time to reach the lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiting_on_lock(&mut admin, &ids, &killed).await.is_empty(),
        "the save was sent again after its connection was killed"
    );
    sqlx::query("UNLOCK TABLES")
        .execute(&mut locker)
        .await
        .expect("unlock");
    assert_eq!(
        store.load(&r.key).await.expect("load"),
        Some(r),
        "the cut-off save was applied"
    );
}

/// Waits until the pool's only connection is back in the pool, then kills it and waits for
/// it to end, so the next call is handed a dead connection.
async fn kill_the_idle_connection(
    store: &MySqlStore,
    admin: &mut sqlx::MySqlConnection,
    ids: &ConnectionIds,
) {
    // A call that failed leaves the pool empty: open its connection again.
    sqlx::query("SELECT 1")
        .execute(store.pool())
        .await
        .expect("reconnect the pool");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.pool().num_idle() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection never went idle"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(kill_all(admin, ids).await.0.len(), 1);
    wait_gone(admin, ids).await;
}

/// On a pool that hands out idle connections unchecked, a connection killed while idle fails
/// the next statement on it: every idempotent call recovers by retrying once, while
/// `create`, `save` and `rotate` fail with `Unavailable` and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_on_a_dead_connection_are_retried_and_conditional_writes_are_not() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("deadconn");
    let _guard = DropOnExit::table(&url, &table);
    let (store, ids) = store_on(&url, &table, 1, false).await;
    let r = live(b"x").with_owner("ann");
    store.create(&r).await.expect("create");
    let mut admin = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("admin connection");

    macro_rules! survives {
        ($what:literal, $call:expr) => {{
            kill_the_idle_connection(&store, &mut admin, &ids).await;
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
            kill_the_idle_connection(&store, &mut admin, &ids).await;
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
    // The pool recovers: the next calls get a new connection.
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

/// Kills this test's connections again and again while tasks run every idempotent call in a
/// loop: none of those calls may fail. Tasks saving their own record see each save either
/// succeed or fail with `Unavailable` (possibly applied), never `Conflict`, which a retried
/// save that had been applied would meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_connections_killed_under_load() {
    let Some(url) = common::mysql_url() else {
        return;
    };
    let table = common::unique_name("killload");
    let _guard = DropOnExit::table(&url, &table);
    let (store, ids) = store_on(&url, &table, 4, true).await;
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

    let mut admin = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("admin connection");
    let (mut killed, mut active, mut rounds) = (0, 0, 0);
    // Ten rounds at least, and more (up to 50) until one kill lands mid-statement: on a
    // loaded machine the statements are short and most kills find the connections idle.
    while rounds < 10 || (active == 0 && rounds < 50) {
        rounds += 1;
        // Long enough apart that a retry is done before the next round can kill it too.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (k, a) = kill_all(&mut admin, &ids).await;
        killed += k.len();
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
        "{calls} idempotent calls and {saves:?} while {killed} connections were killed, {active} of them mid-statement"
    );
    assert!(
        active > 0,
        "no connection was killed mid-statement: the test proved nothing"
    );
    assert!(calls > 0 && saves.ok > 0);
    let failures = failures.lock().expect("failures");
    assert!(
        failures.is_empty(),
        "idempotent calls failed when their connection was killed: {failures:#?}"
    );
}
