//! The conformance suite and the key layout against a real three-master Redis Cluster, started
//! from `redis-server` on free 127.0.0.1 ports and joined with `redis-cli --cluster create`.
//!
//! One cluster serves every case of this test binary (each case under its own prefix). Each
//! node runs under a small shell watchdog that stops it and removes its directory once this
//! process is gone, so no node outlives the tests even when a case panics.
//! Runs wherever `redis-server` and `redis-cli` are installed, under the usual
//! skip rule; it never touches the server at `REDIS_URL`.
#![cfg(feature = "cluster")]

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::redis_installed;
use session_core::conformance::Fixture;
use session_core::{Record, SessionId, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_redis::redis::{self, Commands};

const NODES: usize = 3;

struct Cluster {
    ports: Vec<u16>,
}

impl Cluster {
    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    fn node(&self, port: u16) -> redis::Connection {
        let client = match redis::Client::open(format!("redis://127.0.0.1:{port}")) {
            Ok(client) => client,
            Err(e) => panic!("bad node address: {e}"),
        };
        match client.get_connection_with_timeout(Duration::from_secs(2)) {
            Ok(conn) => conn,
            Err(e) => panic!("cluster node {port} is not answering: {e}"),
        }
    }

    /// Every key under `pattern`, per node port.
    fn keys_by_node(&self, pattern: &str) -> Vec<(u16, Vec<Vec<u8>>)> {
        self.ports
            .iter()
            .map(|&port| {
                let mut conn = self.node(port);
                let keys: Vec<Vec<u8>> = match conn.scan_match(pattern) {
                    Ok(iter) => iter.collect(),
                    Err(e) => panic!("SCAN on node {port} failed: {e}"),
                };
                (port, keys)
            })
            .collect()
    }
}

/// A port that is free, and whose cluster bus port (+10000) is free too: node ports 10000–19999,
/// bus ports 20000–29999, so no node's port is another's bus port, and both stay below Linux's
/// ephemeral range (32768 and up), where any client socket of a test running meanwhile could
/// take one between this check and the node's bind.
fn free_port(taken: &[u16]) -> u16 {
    let seed = std::process::id() as usize * 7919;
    for i in 0..10_000 {
        let port = 10_000 + ((seed + i * 13) % 10_000) as u16;
        if taken.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// Whether a node answers `PING` on `port` before `deadline`.
fn answers_by(port: u16, deadline: Instant) -> bool {
    loop {
        let up = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if up.is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts one cluster node under `base` on a free port not in `tried` and returns its port
/// once it answers. A port another process took between the check and the node's bind makes
/// the node exit at once: then another port is tried, up to three times in all.
fn start_node(base: &std::path::Path, tried: &mut Vec<u16>) -> u16 {
    for _ in 0..3 {
        let port = free_port(tried);
        tried.push(port);
        let dir = base.join(port.to_string());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        // The watchdog: run the node, and stop it (and remove its files) once the test
        // process has exited.
        let script = r#"redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" \
              --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
              --save "" --appendonly no >/dev/null 2>&1 &
            node=$!
            while kill -0 "$PARENT" 2>/dev/null; do sleep 0.3; done
            kill "$node" 2>/dev/null; wait "$node"; rm -rf "$DIR"; rmdir "$BASE" 2>/dev/null
            exit 0"#;
        let spawned = Command::new("sh")
            .args(["-c", script])
            .env("PORT", port.to_string())
            .env("DIR", &dir)
            .env("BASE", base)
            .env("PARENT", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            panic!("could not start a cluster node: {e}");
        }
        if answers_by(port, Instant::now() + Duration::from_secs(5)) {
            return port;
        }
        eprintln!("cluster node on {port} did not come up; trying another port");
    }
    panic!("no cluster node came up on any of the ports {tried:?}");
}

fn start_cluster() -> Cluster {
    let base: PathBuf = std::env::temp_dir().join(format!(
        "session-redis-cluster-{}-{}",
        std::process::id(),
        &SessionId::generate().key().to_hex()[..8]
    ));
    let mut tried = Vec::new();
    let ports = (0..NODES).map(|_| start_node(&base, &mut tried)).collect();
    let cluster = Cluster { ports };
    let deadline = Instant::now() + Duration::from_secs(15);
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output();
    match created {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("could not run redis-cli (is it installed?): {e}"),
    }
    for &port in &cluster.ports {
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut cluster.node(port))
                .unwrap_or_default();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster never reached state ok on {port}: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

fn store(prefix: &str) -> RedisStore {
    store_with(prefix, 0)
}

fn store_with(prefix: &str, multiplexed: usize) -> RedisStore {
    let built = RedisStore::builder()
        .cluster_urls(cluster().urls())
        .prefix(prefix)
        .max_data_len(Some(4096))
        .multiplexed(multiplexed)
        .build();
    match built {
        Ok(store) => store,
        Err(e) => panic!("building the cluster store failed: {e}"),
    }
}

fn random_prefix(what: &str) -> String {
    format!("{what}:{}:", &SessionId::generate().key().to_hex()[..16])
}

/// Deletes the case's keys from every node when it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let cluster = cluster();
        for (port, keys) in cluster.keys_by_node(&format!("{{{}}}*", self.0)) {
            if !keys.is_empty() {
                let _: redis::RedisResult<u64> =
                    redis::cmd("DEL").arg(keys).query(&mut cluster.node(port));
            }
        }
    }
}

async fn fixture(multiplexed: usize) -> Fixture {
    if !redis_installed(&["redis-server", "redis-cli"]) {
        return Fixture::skipped("redis-server or redis-cli is not installed");
    }
    let prefix = random_prefix("cluster");
    let again = prefix.clone();
    Fixture::new(store_with(&prefix, multiplexed))
        .reopen(move || {
            let store = store_with(&again, multiplexed);
            async move { store }
        })
        .guard(Cleanup(prefix))
}

async fn fresh_fixture() -> Fixture {
    fixture(0).await
}

session_core::conformance_tests!(fresh_fixture, durable);

/// The same suite on shared multiplexed cluster connections.
mod multiplexed {
    use session_core::conformance::Fixture;

    async fn fresh_fixture() -> Fixture {
        super::fixture(2).await
    }

    session_core::conformance_tests!(fresh_fixture, durable);
}

/// Every key of one store, sessions and owner indexes alike, is in the slot of its prefix's
/// hash tag (so on one master), and stores with different prefixes spread over the masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_share_one_slot_per_prefix_and_prefixes_spread() {
    if !redis_installed(&["redis-server", "redis-cli"]) {
        return;
    }
    let cluster = cluster();
    let mut masters_used = HashSet::new();
    for _ in 0..12 {
        let prefix = random_prefix("layout");
        let _cleanup = Cleanup(prefix.clone());
        let store = store(&prefix);
        assert_eq!(
            store.prefix(),
            format!("{{{prefix}}}"),
            "the prefix is the hash tag"
        );
        for i in 0..6u8 {
            let key = SessionId::generate().key();
            let expires = Timestamp::now() + Duration::from_secs(600);
            let record = Record::new(key, vec![i], expires).with_owner(format!("owner-{}", i % 2));
            if let Err(e) = store.create(&record).await {
                panic!("create on the cluster failed: {e}");
            }
        }
        let by_node = cluster.keys_by_node(&format!("{{{prefix}}}*"));
        let holding: Vec<&(u16, Vec<Vec<u8>>)> =
            by_node.iter().filter(|(_, k)| !k.is_empty()).collect();
        assert_eq!(
            holding.len(),
            1,
            "one store's keys must all be on one master: {by_node:?}"
        );
        let (port, keys) = holding[0];
        assert_eq!(keys.len(), 6 + 2, "6 sessions and 2 owner indexes");
        let mut conn = cluster.node(*port);
        let slots: HashSet<i64> = keys
            .iter()
            .map(
                |k| match redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query(&mut conn) {
                    Ok(slot) => slot,
                    Err(e) => panic!("CLUSTER KEYSLOT failed: {e}"),
                },
            )
            .collect();
        assert_eq!(
            slots.len(),
            1,
            "one store's keys must share one slot: {slots:?}"
        );
        let listed = match store.list().await {
            Ok(keys) => keys.len(),
            Err(e) => panic!("list on the cluster failed: {e}"),
        };
        assert_eq!(
            listed, 6,
            "SCAN must reach the master holding the store's slot"
        );
        masters_used.insert(*port);
    }
    assert!(
        masters_used.len() > 1,
        "12 random prefixes all landed on one master: {masters_used:?}"
    );
}

/// A prefix with braces would break the hash tag, so cluster mode refuses it.
#[test]
fn braces_in_a_cluster_prefix_are_refused() {
    let built = RedisStore::builder()
        .cluster_urls(["redis://127.0.0.1:1"])
        .prefix("a{b}")
        .build();
    assert!(
        matches!(built, Err(session_core::Error::Config(_))),
        "got {built:?}"
    );
}
