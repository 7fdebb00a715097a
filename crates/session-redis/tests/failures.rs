//! Failures a Redis store meets in production, each with a typed error and recovery without
//! rebuilding the store: connections killed by the server, a server restart, a hung server
//! and an exhausted pool.
//!
//! Tests that kill, pause or restart a server start their own `redis-server` on a free port
//! and never touch the shared one at `REDIS_URL`; they run wherever `redis-server` is
//! installed, under the usual skip rule.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{HOUR, Server, assert_unavailable, build, must, record, redis_installed};
use session_core::conformance::service_url;
use session_core::{Error, SessionId, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_redis::deadpool_redis::{Config, PoolConfig, Runtime, Timeouts};
use session_redis::redis;

/// Recovery after a failure, with no new store: the very next operation, a create, succeeds.
/// Checking out per operation, the pool's health check replaces dead connections first.
/// Shared multiplexed connections have no check per operation: one the server closed while
/// it was idle breaks under the create, which is sent again on fresh connections (a create's
/// retry tells its own lost attempt from a taken key).
async fn works(store: &RedisStore) {
    let r = record();
    must("create after recovery", store.create(&r)).await;
    let back = must("load after recovery", store.load(&r.key)).await;
    assert_eq!(back, Some(r), "the store must work again after recovery");
}

/// Waits until a script call is parked on the paused server, then kills every client
/// connection (the script's included).
async fn kill_once_a_script_is_parked(server: &Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = server.run(redis::cmd("CLIENT").arg("LIST"));
        let list = match list {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            other => panic!("unexpected CLIENT LIST reply {other:?}"),
        };
        if list.contains("cmd=evalsha") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the {what} never reached the server: {list}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.run(
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes"),
    );
}

async fn joined<T>(what: &str, task: tokio::task::JoinHandle<T>) -> T {
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => panic!("{what} task failed: {e}"),
        Err(_) => panic!("the {what} on a killed connection hung"),
    }
}

/// Writes held by the server (`CLIENT PAUSE WRITE`) whose connections the server then kills:
/// a save fails with `Unavailable` at once (a conditional write is never sent twice); a touch
/// is sent again on a fresh connection and succeeds once the server resumes. The store works
/// on without being rebuilt.
async fn client_kill_during_a_call_fails_a_save_retries_a_touch_in(multiplexed: usize) {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let server = Server::start();
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(multiplexed)
            .pool_size(1),
    );
    let r = record();
    must("create", store.create(&r)).await;

    server.run(redis::cmd("CLIENT").arg("PAUSE").arg(10_000).arg("WRITE"));
    let save = tokio::spawn({
        let (store, r) = (store.clone(), r.clone());
        async move { store.save(&r).await }
    });
    kill_once_a_script_is_parked(&server, "save").await;
    assert_unavailable(
        "save on a connection killed by the server",
        joined("save", save).await,
    );

    let later = Timestamp::now() + HOUR + HOUR;
    let touch = tokio::spawn({
        let store = store.clone();
        async move { store.touch(&r.key, later).await }
    });
    kill_once_a_script_is_parked(&server, "touch").await;
    // The retry may be parked by the pause in turn; it completes when the server resumes.
    server.run(redis::cmd("CLIENT").arg("UNPAUSE"));
    must("touch retried after its connection was killed", async {
        joined("touch", touch).await
    })
    .await;

    works(&store).await;
    let loaded = must("load", store.load(&r.key)).await;
    assert_eq!(
        loaded.map(|x| (x.version, x.expires_at)),
        Some((1, later)),
        "the killed save never ran, the retried touch did"
    );
}

/// Loads and saves from many tasks while the server keeps killing every client connection:
/// every failure is `Unavailable` (never a panic, a hang or a wrong answer), and once the
/// killing stops the same store works.
async fn client_kill_under_load_gives_typed_errors_then_recovers_in(multiplexed: usize) {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let server = Arc::new(Server::start());
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(multiplexed)
            .pool_size(4),
    );
    let mut records = Vec::new();
    for _ in 0..8 {
        let r = record();
        must("create", store.create(&r)).await;
        records.push(r);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let killer = std::thread::spawn({
        let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
        move || {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(mut conn) = server.admin() {
                    let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
                        .query(&mut conn);
                    kills += killed.unwrap_or(0);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            kills
        }
    });

    // Each task loads its own session and saves it back: a save is never retried, so kills
    // this frequent are sure to fail some; a load fails only when its retry is killed too.
    let mut tasks = Vec::new();
    for r in records {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..300 {
                match store.load(&r.key).await {
                    Ok(Some(found)) => {
                        assert_eq!(found.key, r.key, "a load must never return another record");
                        if let Err(e) = store.save(&found).await {
                            failures.push(e);
                        }
                    }
                    Ok(None) => {
                        panic!("a live record loaded as None while connections were killed")
                    }
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(f)) => failures.extend(f),
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("calls hung while connections were killed"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let kills = match killer.join() {
        Ok(kills) => kills,
        Err(e) => std::panic::resume_unwind(e),
    };
    assert!(
        kills > 0,
        "the server killed no connection, so this test tested nothing"
    );
    assert!(
        !failures.is_empty(),
        "{kills} kills and not one save failed: the kills missed every call"
    );
    for e in failures {
        assert!(
            matches!(e, Error::Unavailable { store: "redis", .. }),
            "a killed connection must give Unavailable, got {e:?}"
        );
    }
    works(&store).await;
}

/// While the server is down every call fails with `Unavailable`; when it is back on the same
/// port the same store works again (its data is gone: this server keeps nothing on disk).
async fn server_restart_is_unavailable_then_recovers_in(multiplexed: usize) {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let mut server = Server::start();
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(multiplexed)
            .pool_size(2),
    );
    let r = record();
    must("create", store.create(&r)).await;

    server.stop();
    let started = Instant::now();
    assert_unavailable("load while down", store.load(&r.key).await);
    assert_unavailable("create while down", store.create(&record()).await);
    assert_unavailable("save while down", store.save(&r).await);
    assert_unavailable("count while down", store.count().await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused connection must fail fast"
    );

    server.restart();
    works(&store).await;
    assert_eq!(
        must("load of a session from before", store.load(&r.key)).await,
        None
    );
}

/// A server that stops answering (SIGSTOP) makes calls fail with `Unavailable` after the
/// command timeout instead of hanging; when it resumes, the store works.
async fn hung_server_times_out_then_recovers_in(multiplexed: usize) {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let server = Server::start();
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(multiplexed)
            .pool_size(1)
            .command_timeout(Some(Duration::from_millis(300))),
    );
    works(&store).await;

    server.signal("-STOP");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), store.load(&record().key)).await;
    server.signal("-CONT");
    match result {
        Ok(result) => assert_unavailable("load from a stopped server", result),
        Err(_) => panic!("a load from a stopped server hung past the command timeout"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "timed out before the limit"
    );
    works(&store).await;
}

/// With every connection checked out, a call fails with `Unavailable` after the pool's wait
/// timeout instead of waiting; once a connection is back, calls work. Checked for the pool the
/// store builds and for a pool the user hands in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_is_unavailable_not_a_hang() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let prefix = format!("failures:{}:", &SessionId::generate().key().to_hex()[..16]);
    let own = build(
        RedisStore::builder()
            .url(&url)
            .prefix(&prefix)
            .pool_size(1)
            .wait_timeout(Duration::from_millis(100))
            // Exhaustion is about checking a connection out per operation.
            .multiplexed(0),
    );
    let mut config = Config::from_url(url);
    let mut pool_config = PoolConfig::new(1);
    pool_config.timeouts = Timeouts::wait_millis(100);
    config.pool = Some(pool_config);
    let pool = match config.create_pool(Some(Runtime::Tokio1)) {
        Ok(pool) => pool,
        Err(e) => panic!("building the pool failed: {e}"),
    };
    let theirs = build(
        RedisStore::builder()
            .pool(pool)
            .prefix(&prefix)
            .multiplexed(0),
    );

    for store in [own, theirs] {
        let r = record();
        must("create", store.create(&r)).await;
        let Some(pool) = store.pool() else {
            panic!("a single-server store has a pool")
        };
        let held = match pool.get().await {
            Ok(conn) => conn,
            Err(e) => panic!("checkout failed: {e}"),
        };
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(3), store.load(&r.key)).await {
            Ok(result) => assert_unavailable("load from an exhausted pool", result),
            Err(_) => panic!("a load from an exhausted pool hung"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the wait timeout did not apply"
        );
        drop(held);
        assert_eq!(
            must("load", store.load(&r.key)).await.map(|x| x.version),
            Some(1)
        );
        assert!(must("delete", store.delete(&r.key)).await);
    }
}

/// With shared multiplexed connections the pool is needed only to open them: while the pool
/// is exhausted a store that has none yet fails with `Unavailable`; once it has one, it keeps
/// working whoever holds the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_store_needs_the_pool_only_to_connect() {
    let Some(url) = service_url("REDIS_URL") else {
        return;
    };
    let prefix = format!("failures:{}:", &SessionId::generate().key().to_hex()[..16]);
    let store = build(
        RedisStore::builder()
            .url(&url)
            .prefix(&prefix)
            .pool_size(1)
            .wait_timeout(Duration::from_millis(100))
            .multiplexed(1),
    );
    let Some(pool) = store.pool() else {
        panic!("a single-server store has a pool")
    };
    let held = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => panic!("checkout failed: {e}"),
    };
    let r = record();
    match tokio::time::timeout(Duration::from_secs(3), store.create(&r)).await {
        Ok(result) => assert_unavailable("create with no connection and an exhausted pool", result),
        Err(_) => panic!("a create on an exhausted pool hung"),
    }
    drop(held);
    must("create", store.create(&r)).await;
    let held = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => panic!("the store must give its pooled connection back: {e}"),
    };
    assert_eq!(
        must("load while the pool is held", store.load(&r.key))
            .await
            .map(|x| x.key),
        Some(r.key)
    );
    drop(held);
    assert!(must("delete", store.delete(&r.key)).await);
}

/// A bad URL or prefix is refused when the store is built, before any I/O.
#[test]
fn bad_configuration_is_refused() {
    for builder in [
        RedisStore::builder(),
        RedisStore::builder().url("not a url"),
        RedisStore::builder().url("redis://127.0.0.1:1").prefix(""),
    ] {
        match builder.build() {
            Err(Error::Config(_)) => {}
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }
}

/// Without the `tls` feature a `rediss://` URL is refused when the store is built, with an
/// error that names the feature to enable.
#[cfg(not(feature = "tls"))]
#[test]
fn a_rediss_url_without_the_tls_feature_names_the_feature() {
    match RedisStore::builder().url("rediss://127.0.0.1:1").build() {
        Err(Error::Config(message)) => assert!(
            message.contains("`tls` feature") && message.contains("redis-tls"),
            "the error must name the feature: {message}"
        ),
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

/// The sweep methods of a natively expiring store do no I/O: the server here does not exist.
#[tokio::test]
async fn sweeping_is_a_no_op_without_io() {
    let store = build(RedisStore::builder().url("redis://127.0.0.1:1"));
    assert!(store.expiry_is_native());
    assert_eq!(must("count_expired", store.count_expired()).await, 0);
    assert_eq!(must("delete_expired", store.delete_expired()).await, 0);
}

/// Oversized data fails with `TooLarge` before any I/O: the server here does not exist.
#[tokio::test]
async fn too_large_is_checked_before_io() {
    let store = build(
        RedisStore::builder()
            .url("redis://127.0.0.1:1")
            .max_data_len(Some(8)),
    );
    let mut r = record();
    r.data = vec![0; 9].into();
    assert!(matches!(
        store.create(&r).await,
        Err(Error::TooLarge { size: 9, limit: 8 })
    ));
    assert!(matches!(
        store.save(&r).await,
        Err(Error::TooLarge { size: 9, limit: 8 })
    ));
    let debug = format!(
        "{:?}",
        RedisStore::builder().url("redis://user:hunter2@127.0.0.1:1")
    );
    assert!(
        !debug.contains("hunter2"),
        "the builder's Debug must hide the URL: {debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_during_a_call_fails_a_save_retries_a_touch() {
    client_kill_during_a_call_fails_a_save_retries_a_touch_in(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_during_a_call_fails_a_save_retries_a_touch_multiplexed() {
    client_kill_during_a_call_fails_a_save_retries_a_touch_in(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_under_load_gives_typed_errors_then_recovers() {
    client_kill_under_load_gives_typed_errors_then_recovers_in(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_under_load_gives_typed_errors_then_recovers_multiplexed() {
    client_kill_under_load_gives_typed_errors_then_recovers_in(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_unavailable_then_recovers() {
    server_restart_is_unavailable_then_recovers_in(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_unavailable_then_recovers_multiplexed() {
    server_restart_is_unavailable_then_recovers_in(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_times_out_then_recovers() {
    hung_server_times_out_then_recovers_in(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_times_out_then_recovers_multiplexed() {
    hung_server_times_out_then_recovers_in(2).await;
}
