//! Connections that die under a store over a connection pool (SQL servers): killed by the
//! server while statements are in flight, while connections sit idle in the pool, and over
//! and over under concurrent load. Idempotent calls are retried once on another connection
//! and must not fail; conditional writes (`create`, `save`, `rotate`) must never be retried.
//!
//! The scenarios are written once here; a backend's test supplies the store (on a pool of the
//! size each scenario names) and a [`Connections`] for its server: how to find, kill and watch
//! exactly the connections of that store's pool, and how to lock its table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Bytes, Error, Record, SessionId, SessionKey, SessionStore, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

/// The server-specific half of the scenarios: the store's pool seen from the server, through
/// connections of the test's own (never the store's).
#[async_trait]
pub trait Connections: Send {
    /// Kills every connection of the store's pool the server still lists, as close together
    /// as the server allows. Returns how many it killed and how many of those were running a
    /// statement at that moment. Connections killed here no longer count as waiting on a
    /// lock, even while the server still lists them.
    async fn kill_all(&mut self) -> (usize, usize);

    /// Waits until the server lists none of the pool's connections.
    async fn wait_gone(&mut self);

    /// How many of the pool's live connections wait on the table lock of [`lock`](Self::lock).
    async fn waiting_on_lock(&mut self) -> usize;

    /// Takes a lock that makes every statement of the store on its table wait on the server,
    /// until [`unlock`](Self::unlock).
    async fn lock(&mut self);

    /// Releases the lock of [`lock`](Self::lock).
    async fn unlock(&mut self);

    /// Opens the pool's one connection again if a failed call left the pool empty, and waits
    /// until it is idle in the pool (after the pool's own check of a returned connection), so
    /// that killing it now hands the next call a dead connection.
    async fn settle_idle(&mut self);
}

fn live(data: &'static [u8]) -> Record {
    Record::new(SessionId::generate().key(), data, Timestamp::now() + HOUR)
}

fn is_unavailable(err: &Error, store: &str) -> bool {
    matches!(err, Error::Unavailable { store: s, .. } if *s == store)
}

async fn wait_on_lock(conns: &mut impl Connections) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while conns.waiting_on_lock().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the statement never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A load whose connection is killed while it waits on the server is retried on another
/// connection and returns the record; a save in the same position fails with
/// [`Error::Unavailable`] and is not sent again (the record keeps its version once the lock is
/// gone).
///
/// `store` is on a pool of **one** connection that the pool checks before handing it out, so
/// that killing "the pool's connections" hits exactly the statement in flight. `name` is the
/// store's name in its errors.
pub async fn a_load_cut_off_mid_statement_is_retried_but_a_save_is_not<S>(
    store: &S,
    name: &str,
    conns: &mut impl Connections,
) where
    S: SessionStore + Clone,
{
    let r = live(b"survives");
    store.create(&r).await.expect("create");

    conns.lock().await;
    let blocked = {
        let (store, key) = (store.clone(), r.key);
        tokio::spawn(async move { store.load(&key).await })
    };
    wait_on_lock(conns).await;
    let (killed, active) = conns.kill_all().await;
    assert!(
        killed >= 1 && active >= 1,
        "the waiting load's connection was killed"
    );
    // The retry waits on the lock again, on a new connection.
    wait_on_lock(conns).await;
    conns.unlock().await;
    let back = blocked.await.expect("load task");
    assert_eq!(
        back.expect("a load cut off by a killed connection must be retried"),
        Some(r.clone())
    );

    conns.lock().await;
    let mut changed = r.clone();
    changed.data = Bytes::from_static(b"changed");
    let blocked = {
        let (store, changed) = (store.clone(), changed.clone());
        tokio::spawn(async move { store.save(&changed).await })
    };
    wait_on_lock(conns).await;
    conns.kill_all().await;
    // Give a resent save time to reach the lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        conns.waiting_on_lock().await,
        0,
        "the save was sent again after its connection was killed"
    );
    conns.unlock().await;
    let err = blocked
        .await
        .expect("save task")
        .expect_err("a save cut off by a killed connection must fail");
    assert!(
        is_unavailable(&err, name),
        "expected Unavailable, got {err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(
        store.load(&r.key).await.expect("load"),
        Some(r),
        "the cut-off save was applied"
    );
}

/// Kills the pool's one connection while it is idle and waits until it is gone.
async fn kill_the_idle_connection(conns: &mut impl Connections) {
    conns.settle_idle().await;
    assert_eq!(conns.kill_all().await.0, 1, "the pool's one connection");
    conns.wait_gone().await;
}

/// On a pool that hands out idle connections unchecked, a connection killed while idle fails
/// the next statement on it: every idempotent call recovers by retrying once, while
/// `create`, `save` and `rotate` fail with [`Error::Unavailable`] and change nothing.
///
/// `store` is on a pool of **one** connection that the pool does **not** check before handing
/// it out.
pub async fn idempotent_calls_on_a_dead_connection_are_retried_and_conditional_writes_are_not<S>(
    store: &S,
    name: &str,
    conns: &mut impl Connections,
) where
    S: SessionStore,
{
    let r = live(b"x").with_owner("ann");
    store.create(&r).await.expect("create");

    macro_rules! survives {
        ($what:literal, $call:expr) => {{
            kill_the_idle_connection(conns).await;
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
            kill_the_idle_connection(conns).await;
            match $call.await {
                Err(e) if is_unavailable(&e, name) => {}
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
    changed.data = Bytes::from_static(b"changed");
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

type Failures = Arc<Mutex<BTreeMap<&'static str, Vec<String>>>>;

/// Eight tasks running every idempotent call in turn until `stop`; returns how many calls
/// they made. A failed call is noted in `failures`; a live record reported missing panics.
fn spawn_readers<S: SessionStore + Clone>(
    store: &S,
    records: &Arc<Vec<Record>>,
    stop: &Arc<AtomicBool>,
    failures: &Failures,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..8)
        .map(|task| {
            let (store, records, stop, failures) = (
                store.clone(),
                Arc::clone(records),
                Arc::clone(stop),
                Arc::clone(failures),
            );
            tokio::spawn(async move {
                let mut calls = 0u64;
                let mut i = task;
                let note = |what: &'static str, e: Error| {
                    failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
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
        .collect()
}

/// Two tasks saving their own record until `stop`, each save either applied or failed with
/// `Unavailable` (then read back to tell whether it was applied).
fn spawn_savers<S: SessionStore + Clone>(
    store: &S,
    name: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<SaveTally>> {
    (0..2)
        .map(|task| {
            let (store, stop) = (store.clone(), Arc::clone(stop));
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
                        Err(e) if is_unavailable(&e, name) => {
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
        .collect()
}

/// Kills the pool's connections again and again while tasks run every idempotent call in a
/// loop: none of those calls may fail. Tasks saving their own record see each save either
/// succeed or fail with [`Error::Unavailable`] (possibly applied), never `Conflict`, which a
/// retried save that had been applied would meet.
///
/// `store` is on a pool of a few (four) connections that the pool checks before handing
/// them out.
pub async fn idempotent_calls_survive_connections_killed_under_load<S>(
    store: &S,
    name: &'static str,
    conns: &mut impl Connections,
) where
    S: SessionStore + Clone,
{
    let records: Vec<Record> = (0..16)
        .map(|i| live(b"loaded").with_owner(format!("owner{}", i % 4)))
        .collect();
    for r in &records {
        store.create(r).await.expect("create");
    }
    let records = Arc::new(records);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Failures::default();
    let readers = spawn_readers(store, &records, &stop, &failures);
    let savers = spawn_savers(store, name, &stop);

    let (mut killed, mut active, mut rounds) = (0, 0, 0);
    // Ten rounds at least, and more (up to 50) until one kill lands mid-statement: on a
    // loaded machine the statements are short and most kills find the connections idle.
    while rounds < 10 || (active == 0 && rounds < 50) {
        rounds += 1;
        // Long enough apart that a retry is done before the next round can kill it too.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (k, a) = conns.kill_all().await;
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
        "{calls} idempotent calls and {saves:?} while {killed} connections were killed, {active} of them mid-statement"
    );
    assert!(
        active > 0,
        "no connection was killed mid-statement: the test proved nothing"
    );
    assert!(calls > 0 && saves.ok > 0);
    let failures = failures.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        failures.is_empty(),
        "idempotent calls failed when their connection was killed: {failures:#?}"
    );
}
