//! Faults: a lock held by another process past the busy timeout, an exhausted write queue,
//! hostile and odd table names, size limits, bad files, and many stores migrating one new
//! file at once. Each failure must be a typed error that loses nothing.

mod common;

use std::time::Duration;

use common::{builder, db_path, live, ok, open, tempdir};
use session_core::conformance::sizes;
use session_core::{Error, SessionStore};
use session_sqlite::SqliteStore;
use session_sqlite::sqlx::{self, Connection as _, SqliteConnection};

/// A second connection (standing in for another process) holds the write lock: writes wait
/// `busy_timeout`, then fail with `Unavailable` having written nothing, reads go on (WAL), and
/// once the lock is released the same write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_past_the_busy_timeout_is_unavailable_and_loses_nothing() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = ok(
        "open",
        builder()
            .busy_timeout(Duration::from_millis(200))
            .open(&path)
            .await,
    );
    ok("migrate", store.migrate().await);
    let kept = live(b"kept");
    ok("create", store.create(&kept).await);

    let mut other = SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("a second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");

    let blocked = live(b"blocked");
    let started = std::time::Instant::now();
    let err = store
        .create(&blocked)
        .await
        .expect_err("the file is locked");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                store: "sqlite",
                ..
            }
        ),
        "got {err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the write did not wait for the busy timeout ({:?})",
        started.elapsed()
    );
    let mut changed = kept.clone();
    changed.data = b"changed".to_vec().into();
    let err = store.save(&changed).await.expect_err("the file is locked");
    assert!(matches!(err, Error::Unavailable { .. }), "got {err:?}");
    assert_eq!(
        ok("load while locked", store.load(&kept.key).await),
        Some(kept.clone()),
        "readers must not wait for a writer in WAL mode"
    );

    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release the lock");
    assert!(
        !ok("exists", store.exists(&blocked.key).await),
        "nothing was written"
    );
    ok(
        "create after the lock is gone",
        store.create(&blocked).await,
    );
    assert_eq!(ok("save after", store.save(&changed).await), 2);
    other.close().await.expect("close");
}

/// With the one write connection taken, writes wait `acquire_timeout` in the queue and fail
/// with `Unavailable`; reads have their own pool and go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_write_queue_is_unavailable() {
    let dir = tempdir();
    let store = ok(
        "open",
        builder()
            .acquire_timeout(Duration::from_millis(200))
            .open(db_path(dir.path()))
            .await,
    );
    ok("migrate", store.migrate().await);
    let kept = live(b"kept");
    ok("create", store.create(&kept).await);
    let held = store.write_pool().acquire().await.expect("take the writer");
    let r = live(b"queued");
    let err = store.create(&r).await.expect_err("no write connection");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                store: "sqlite",
                ..
            }
        ),
        "got {err:?}"
    );
    assert_eq!(ok("load", store.load(&kept.key).await), Some(kept));
    drop(held);
    ok("create once the writer is back", store.create(&r).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_before_any_file_is_made_and_odd_valid_ones_work() {
    let dir = tempdir();
    let path = db_path(dir.path());
    for bad in [
        "",
        "s; DROP TABLE x",
        "sessions\"; DROP TABLE users; --",
        "a b",
        "main.sessions",
        "sqlite_master",
        "1st",
        "naïve",
        &"x".repeat(49),
    ] {
        let err = builder()
            .table(bad)
            .open(&path)
            .await
            .expect_err("a hostile name");
        assert!(matches!(err, Error::Config(_)), "{bad:?}: got {err:?}");
        assert!(!path.exists(), "{bad:?}: a refused name created the file");
    }
    // Keywords and mixed case are fine: quoted everywhere, two of them side by side in one file.
    let a = ok("open", builder().table("order").open(&path).await);
    let b = ok("open", builder().table("Order_2").open(&path).await);
    ok("migrate", a.migrate().await);
    ok("migrate", b.migrate().await);
    let r = live(b"x");
    ok("create", a.create(&r).await);
    assert_eq!(ok("load", a.load(&r.key).await), Some(r.clone()));
    assert_eq!(
        ok("load", b.load(&r.key).await),
        None,
        "tables are separate"
    );
    assert!(matches!(
        builder().cleanup_batch(0).open(&path).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        builder().write_connections(0).open(&path).await,
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_default_exact_and_none() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let default = open(&path).await;
    let unlimited = ok(
        "open",
        builder().table("big").max_data_len(None).open(&path).await,
    );
    ok("migrate", unlimited.migrate().await);
    sizes::default_limit_and_none(&default, session_sqlite::DEFAULT_MAX_DATA_LEN, &unlimited).await;
    let small = ok(
        "open",
        builder()
            .table("small")
            .max_data_len(Some(10))
            .open(&path)
            .await,
    );
    ok("migrate", small.migrate().await);
    let fits = live(&[1; 10]);
    ok("create at the limit", small.create(&fits).await);
    let err = small.create(&live(&[1; 11])).await.expect_err("too large");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: 11,
                limit: 10
            }
        ),
        "got {err:?}"
    );
}

/// Six stores open one new file and migrate it at the same moment (as app servers starting
/// together would): every open and every migration succeeds, and the schema exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_and_migrations_of_a_new_file_all_succeed() {
    for _ in 0..3 {
        let dir = tempdir();
        let path = db_path(dir.path());
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move {
                    let store = builder().open(&path).await?;
                    store.migrate().await?;
                    Ok::<_, Error>(store)
                })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(ok("open and migrate", open.await.expect("task")));
        }
        let r = live(b"x");
        ok("create", stores[0].create(&r).await);
        assert_eq!(ok("load", stores[5].load(&r.key).await), Some(r));
        let (tables, indexes): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table'),
                    (SELECT count(*) FROM sqlite_master WHERE type = 'index')",
        )
        .fetch_one(stores[0].read_pool())
        .await
        .expect("schema");
        assert_eq!(
            (tables, indexes),
            (1, 2),
            "one table, expiry and owner index"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_typed_errors() {
    let dir = tempdir();
    let missing_dir = dir.path().join("no/such/dir/s.db");
    let err = builder()
        .open(&missing_dir)
        .await
        .expect_err("no directory");
    assert!(
        matches!(
            err,
            Error::Backend {
                store: "sqlite",
                ..
            }
        ),
        "got {err:?}"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write garbage");
    let err = match builder().open(&garbage).await {
        Err(e) => e,
        Ok(store) => store.migrate().await.expect_err("not a database"),
    };
    assert!(matches!(err, Error::Backend { .. }), "got {err:?}");
    assert_eq!(
        std::fs::read(&garbage).expect("read"),
        vec![0x5a; 8192],
        "a file that is not a database is left alone"
    );

    assert!(matches!(
        SqliteStore::connect("postgres://x").await,
        Err(Error::Config(_))
    ));
}
