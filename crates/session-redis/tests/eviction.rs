//! The store reads the server's `maxmemory-policy` once, on its first connection, and warns
//! when Redis may evict the store's keys: every key it writes carries an expiry, so any policy
//! but `noeviction` can drop an owner index while its sessions live on, and `delete_by_owner`
//! would then silently miss them. Each case starts its own `redis-server`; they run wherever
//! `REDIS_URL` is set (the sign that Redis is installed here), under the usual skip rule.

mod common;

use common::{Logs, Server, build, must, record};
use session_core::SessionStore;
use session_core::conformance::service_url;
use session_redis::RedisStore;

async fn warnings_with(server_args: &[&str], multiplexed: usize) -> (Vec<String>, Logs) {
    let server = Server::start_with(server_args);
    let (logs, _guard) = Logs::capture();
    let store = build(
        RedisStore::builder()
            .url(server.url())
            .multiplexed(multiplexed),
    );
    for _ in 0..3 {
        let r = record();
        must("create", store.create(&r)).await;
        must("load", store.load(&r.key)).await;
    }
    (logs.lines("WARN", "maxmemory-policy"), logs)
}

/// `allkeys-lru` and `volatile-lru` get one warning per store, naming the policy, in both
/// connection modes.
#[tokio::test]
async fn an_evicting_policy_is_warned_about_once() {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    for policy in ["allkeys-lru", "volatile-lru"] {
        for multiplexed in [0, 2] {
            let (warnings, logs) =
                warnings_with(&["--maxmemory-policy", policy], multiplexed).await;
            assert_eq!(
                warnings.len(),
                1,
                "{policy}, multiplexed({multiplexed}): one warning expected, log:\n{}",
                logs.text()
            );
            assert!(
                warnings[0].contains(policy) && warnings[0].contains("noeviction"),
                "the warning names the policy and the fix: {}",
                warnings[0]
            );
        }
    }
}

/// `noeviction` (Redis's default) is checked and accepted without a warning.
#[tokio::test]
async fn noeviction_is_not_warned_about() {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let (warnings, logs) = warnings_with(&["--maxmemory-policy", "noeviction"], 2).await;
    assert!(warnings.is_empty(), "unexpected warning: {warnings:?}");
    assert_eq!(
        logs.lines("DEBUG", "maxmemory-policy").len(),
        1,
        "the check must have run: {}",
        logs.text()
    );
}

/// A server that refuses `CONFIG` (renamed away, as managed services do) still serves the
/// store; the store says at info level that it could not check.
#[tokio::test]
async fn a_server_without_config_is_tolerated() {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let (warnings, logs) = warnings_with(&["--rename-command", "CONFIG", ""], 2).await;
    assert!(warnings.is_empty(), "unexpected warning: {warnings:?}");
    assert_eq!(
        logs.lines("INFO", "maxmemory-policy").len(),
        1,
        "the store must say it could not check: {}",
        logs.text()
    );
}
