//! How many sockets a store uses, counted by the server (`CLIENT LIST`): `multiplexed(n)`
//! uses exactly `n` distinct connections (or the pool's size, if smaller), whether operations
//! come one at a time or all at once, and again `n` after the server dropped them all.
//!
//! Each case runs its own `redis-server`, so no other client is counted.

mod common;

use common::{Server, build, must, record, redis_installed};
use session_core::{Error, SessionStore};
use session_redis::{RedisStore, redis};

/// The server's normal client connections, one `CLIENT LIST` line each, without the one
/// asking.
fn clients(server: &Server) -> Vec<String> {
    let list = match server.run(redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("normal")) {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected CLIENT LIST reply {other:?}"),
    };
    list.lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .map(str::to_owned)
        .collect()
}

/// Asserts the store holds `n` connections and that each served the store's commands (its
/// last command is one of the store's, not the pool's `PING` or nothing).
fn assert_sockets(server: &Server, n: usize, when: &str) {
    let clients = clients(server);
    assert_eq!(clients.len(), n, "{when}: connections: {clients:#?}");
    for line in &clients {
        assert!(
            ["cmd=get ", "cmd=set ", "cmd=exists ", "cmd=config|get "]
                .iter()
                .any(|c| line.contains(c)),
            "{when}: a connection served none of the store's operations: {line}"
        );
    }
}

async fn sequential_then_concurrent(store: &RedisStore, server: &Server, n: usize) {
    let r = record();
    must("create", store.create(&r)).await;
    // One at a time: each operation finds every earlier one finished.
    for _ in 0..4 * n {
        must("load", store.load(&r.key)).await;
    }
    assert_sockets(server, n, "after operations one at a time");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, key) = (store.clone(), r.key);
            tokio::spawn(async move { store.exists(&key).await })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok(true)) => {}
            other => panic!("a concurrent exists failed: {other:?}"),
        }
    }
    assert_sockets(server, n, "after 64 concurrent operations");
}

/// `multiplexed(n)` opens `n` distinct sockets and uses every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_uses_exactly_n_distinct_connections() {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    for n in [1, 2, 3] {
        let server = Server::start();
        let store = build(
            RedisStore::builder()
                .url(server.url())
                .multiplexed(n)
                .pool_size(8),
        );
        sequential_then_concurrent(&store, &server, n).await;
    }
}

/// After the server dropped every connection, the store again holds exactly `n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_refills_all_n_after_the_server_dropped_them() {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let server = Server::start();
    let n = 3;
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(n)
            .pool_size(8),
    );
    sequential_then_concurrent(&store, &server, n).await;
    server.run(
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes"),
    );
    assert!(clients(&server).is_empty(), "the kill left connections");
    // The first load finds its socket dead, drops them all and is retried on fresh ones.
    must("load after the kill", store.load(&record().key)).await;
    sequential_then_concurrent(&store, &server, n).await;
}

/// A pool smaller than `multiplexed` caps the count at the pool's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_beyond_the_pool_uses_the_whole_pool() {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let server = Server::start();
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(4)
            .pool_size(2),
    );
    sequential_then_concurrent(&store, &server, 2).await;
}

/// A server that refuses connections fails the first operation with `Unavailable` (no slot
/// half filled); once it is up, the store fills all `n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fill_is_unavailable_and_the_next_use_fills_all() {
    if !redis_installed(&["redis-server"]) {
        return;
    }
    let mut server = Server::start();
    let n = 2;
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(n)
            .pool_size(4),
    );
    server.stop();
    match store.load(&record().key).await {
        Err(Error::Unavailable { store: "redis", .. }) => {}
        other => panic!("a load with the server down: expected Unavailable, got {other:?}"),
    }
    server.restart();
    sequential_then_concurrent(&store, &server, n).await;
}
