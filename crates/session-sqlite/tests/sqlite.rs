//! Behaviour beyond the shared suite: what is on disk (file modes, no raw id), 64 tasks that
//! never meet `SQLITE_BUSY`, batched and background cleanup, rotation over an expired row,
//! timestamps across the range.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{HOUR, builder, db_path, expired, live, ok, open, tempdir};
use session_core::{Bytes, Error, Record, SessionId, SessionStore, Timestamp};
use session_sqlite::SqliteStore;
use session_sqlite::sqlx;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The database and the `-wal` and `-shm` files SQLite makes next to it are 0600 whatever
/// the umask lets through (the test process's umask is usually 022, which would give 0644).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_wal_and_shm_files_are_private() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = open(&path).await;
    ok("create", store.create(&live(b"x")).await);
    for file in [path.clone(), sidecar(&path, "-wal"), sidecar(&path, "-shm")] {
        assert_eq!(mode(&file), 0o600, "{} is not private", file.display());
    }
}

/// Nothing at rest can be replayed as a cookie: the database file and its WAL hold the
/// SHA-256 keys (checked, so the scan is known to read the right bytes) and never the ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_id_is_never_at_rest() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = open(&path).await;
    let ids: Vec<SessionId> = (0..20).map(|_| SessionId::generate()).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut r = Record::new(id.key(), vec![i as u8; 40], Timestamp::now() + HOUR);
        r.owner = Some(format!("user{i}"));
        ok("create", store.create(&r).await);
        r.data = Bytes::from_static(b"second");
        ok("save", store.save(&r).await);
    }
    let rotated = SessionId::generate();
    ok("rotate", store.rotate(&ids[0].key(), &rotated.key()).await);
    let scan = |label: &str| {
        let mut bytes = Vec::new();
        for file in [path.clone(), sidecar(&path, "-wal")] {
            if let Ok(b) = std::fs::read(&file) {
                bytes.extend(b);
            }
        }
        let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            holds(rotated.key().as_bytes()),
            "{label}: the scan did not find a stored key; it reads the wrong bytes"
        );
        for id in ids.iter().chain([&rotated]) {
            assert!(
                !holds(id.expose().as_bytes()),
                "{label}: a raw session id is stored"
            );
        }
    };
    scan("in the WAL");
    // Closing the pools checkpoints the WAL into the main file.
    store.write_pool().close().await;
    store.read_pool().close().await;
    drop(store);
    scan("after the checkpoint");
}

/// 64 tasks of one process create, load, save, touch, rotate and delete at once with a busy
/// timeout of zero, so any lock contention inside SQLite would surface at once as
/// `SQLITE_BUSY`: through the one write connection there is none, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_never_meet_a_busy_database() {
    let dir = tempdir();
    let store = ok(
        "open",
        builder()
            .busy_timeout(Duration::ZERO)
            .open(db_path(dir.path()))
            .await,
    );
    ok("migrate", store.migrate().await);
    let errors = run_mixed(&store, 64, 15).await;
    assert!(errors.is_empty(), "errors under load: {errors:?}");
}

/// The control for the test above: the same load through four write connections with no
/// busy timeout does meet `SQLITE_BUSY` (as `Unavailable`), so the test above could fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_write_connections_do_contend() {
    let dir = tempdir();
    let store = ok(
        "open",
        builder()
            .busy_timeout(Duration::ZERO)
            .write_connections(4)
            .open(db_path(dir.path()))
            .await,
    );
    ok("migrate", store.migrate().await);
    let errors = run_mixed(&store, 64, 15).await;
    assert!(
        errors.keys().any(|e| e.starts_with("Unavailable")),
        "four writers with no busy timeout never contended: {errors:?}"
    );
}

/// Runs `tasks` tasks of `rounds` create/load/save/touch/rotate/delete each, and checks what
/// every task left; returns the errors seen, by kind.
async fn run_mixed(store: &SqliteStore, tasks: usize, rounds: usize) -> HashMap<String, usize> {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut errors: Vec<String> = Vec::new();
                let mut note = |what: &str, e: Error| {
                    errors.push(format!("{e:?} in {what}").chars().take(60).collect())
                };
                let mut mine = Vec::new();
                for i in 0..rounds {
                    let mut r = Record::new(
                        SessionId::generate().key(),
                        format!("task {t} round {i}").into_bytes(),
                        Timestamp::now() + HOUR,
                    );
                    if let Err(e) = store.create(&r).await {
                        note("create", e);
                        continue;
                    }
                    match store.load(&r.key).await {
                        Ok(Some(back)) if back == r => {}
                        Ok(other) => panic!("task {t}: read back {other:?}"),
                        Err(e) => note("load", e),
                    }
                    r.data = Bytes::from(format!("task {t} round {i} saved"));
                    match store.save(&r).await {
                        Ok(v) => r.version = v,
                        Err(e) => note("save", e),
                    }
                    if let Err(e) = store.touch(&r.key, Timestamp::now() + HOUR * 2).await {
                        note("touch", e);
                    }
                    let new = SessionId::generate().key();
                    match store.rotate(&r.key, &new).await {
                        Ok(()) => r.key = new,
                        Err(e) => note("rotate", e),
                    }
                    if i % 2 == 0 {
                        match store.delete(&r.key).await {
                            Ok(true) => {}
                            Ok(false) => panic!("task {t}: its session vanished"),
                            Err(e) => note("delete", e),
                        }
                    } else {
                        mine.push(r.key);
                    }
                }
                for key in mine {
                    match store.exists(&key).await {
                        Ok(true) => {}
                        Ok(false) => panic!("task {t}: an acknowledged session is gone"),
                        Err(e) => note("exists", e),
                    }
                }
                errors
            })
        })
        .collect();
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for h in handles {
        for e in h.await.expect("a task panicked") {
            *by_kind.entry(e).or_default() += 1;
        }
    }
    by_kind
}

/// Adds `n` expired rows straight in SQL (fast): they are only swept.
async fn insert_expired_rows(store: &SqliteStore, n: i64) {
    let sql = format!(
        "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < ?1)
         INSERT INTO \"{}\" (key, data, created_at, expires_at, version)
         SELECT randomblob(32), x'00', ?2 - 7200000, ?2 - 3600000, 1 FROM i",
        store.table()
    );
    sqlx::query(&sql)
        .bind(n)
        .bind(Timestamp::now().unix_millis())
        .execute(store.write_pool())
        .await
        .expect("seed expired rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_runs_in_bounded_batches_until_done() {
    let dir = tempdir();
    let store = ok(
        "open",
        builder().cleanup_batch(7).open(db_path(dir.path())).await,
    );
    ok("migrate", store.migrate().await);
    let keep = live(b"keep");
    ok("create", store.create(&keep).await);
    // 35 = five full batches, then an empty one: the loop must not stop at a full batch.
    insert_expired_rows(&store, 35).await;
    assert_eq!(ok("count_expired", store.count_expired().await), 35);
    assert_eq!(ok("delete_expired", store.delete_expired().await), 35);
    assert_eq!(ok("count_expired", store.count_expired().await), 0);
    assert_eq!(ok("load", store.load(&keep.key).await), Some(keep));
}

/// The sweep runs by itself on the store's interval, in batches, while loads of live sessions
/// keep succeeding; it ends with the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_in_the_background_while_loads_continue() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let setup = open(&path).await;
    insert_expired_rows(&setup, 2_500).await;
    let lives: Vec<Record> = (0..20).map(|_| live(b"live")).collect();
    for r in &lives {
        ok("create", setup.create(r).await);
    }
    let store = ok(
        "open",
        SqliteStore::builder()
            .cleanup_interval(Duration::from_millis(50))
            .cleanup_batch(100)
            .open(&path)
            .await,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ok("count_expired", store.count_expired().await) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background sweep within 30 s"
        );
        for r in &lives {
            assert_eq!(
                ok("load during the sweep", store.load(&r.key).await).as_ref(),
                Some(r)
            );
        }
    }
    assert_eq!(ok("count", store.count().await), 20);
    store.stop_cleanup().await;
    store.stop_cleanup().await;
}

/// A store built with the defaults sweeps (the interval is not zero).
#[test]
fn cleanup_is_on_by_default() {
    assert!(!session_sqlite::DEFAULT_CLEANUP_INTERVAL.is_zero());
    let debug = format!("{:?}", SqliteStore::builder());
    assert!(
        debug.contains(&format!(
            "cleanup_interval: {:?}",
            session_sqlite::DEFAULT_CLEANUP_INTERVAL
        )),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_replaces_an_expired_row_at_the_new_key() {
    let dir = tempdir();
    let store = open(&db_path(dir.path())).await;
    let r = live(b"mine").with_owner("ann");
    let stale = expired(b"stale").with_owner("bob");
    ok("create", store.create(&r).await);
    ok("create expired", store.create(&stale).await);
    ok(
        "an expired row must not block the move",
        store.rotate(&r.key, &stale.key).await,
    );
    assert_eq!(ok("load", store.load(&r.key).await), None);
    assert_eq!(
        ok("load", store.load(&stale.key).await),
        Some(Record {
            key: stale.key,
            ..r
        })
    );
    assert_eq!(ok("count_expired", store.count_expired().await), 0);
    assert!(ok("list", store.list_by_owner("bob").await).is_empty());

    // An expired old key moves nothing and leaves an expired row at the target alone.
    let old = expired(b"old");
    let target = expired(b"target");
    ok("create", store.create(&old).await);
    ok("create", store.create(&target).await);
    let err = store
        .rotate(&old.key, &target.key)
        .await
        .expect_err("old is not live");
    assert!(matches!(err, Error::NotFound), "got {err:?}");
    assert_eq!(ok("count_expired", store.count_expired().await), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_exact_across_the_range() {
    let dir = tempdir();
    let store = open(&db_path(dir.path())).await;
    for (created, expires) in [
        (i64::MIN, i64::MAX),
        (-1, 4_102_444_800_123),
        (-86_400_001, 253_402_300_799_999),
    ] {
        let mut r = live(b"t");
        r.created_at = Timestamp::from_unix_millis(created);
        r.expires_at = Timestamp::from_unix_millis(expires);
        ok("create", store.create(&r).await);
        assert_eq!(ok("load", store.load(&r.key).await), Some(r));
    }
}

/// Clones share one store; a second store on the same file sees every write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_see_each_other() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let a = Arc::new(open(&path).await);
    let b = Arc::new(open(&path).await);
    for _ in 0..20 {
        let r = live(b"shared");
        ok("create", a.create(&r).await);
        assert_eq!(ok("load", b.load(&r.key).await), Some(r.clone()));
        let err = b.create(&r).await.expect_err("taken");
        assert!(matches!(err, Error::AlreadyExists), "got {err:?}");
        assert!(ok("delete", b.delete(&r.key).await));
        assert!(!ok("exists", a.exists(&r.key).await));
    }
}
