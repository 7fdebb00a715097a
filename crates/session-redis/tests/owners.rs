//! An owner with a very large number of sessions: `list_by_owner` and `delete_by_owner` work
//! through the owner index in batches, one script call per batch, so no single call keeps
//! Redis (which runs one script at a time, for every client) busy in proportion to the owner's
//! session count. Asserted by counting the script calls on a `redis-server` of the test's own
//! (`INFO commandstats`), not by timing. Runs wherever `REDIS_URL` is set (the sign that Redis
//! is installed here), under the usual skip rule.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{HOUR, Server, build, must};
use session_core::conformance::service_url;
use session_core::{Record, SessionId, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_redis::redis;

/// Creates `n` sessions owned by `owner`, 64 at a time.
async fn populate(store: &RedisStore, owner: &str, n: usize) -> HashSet<String> {
    let store = Arc::new(store.clone());
    let mut tasks = Vec::new();
    for task in 0..64 {
        let (store, owner) = (Arc::clone(&store), owner.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut keys = Vec::new();
            for _ in (task..n).step_by(64) {
                let r = Record::new(
                    SessionId::generate().key(),
                    &b"data"[..],
                    Timestamp::now() + HOUR,
                )
                .with_owner(owner.clone());
                must("create", store.create(&r)).await;
                keys.push(r.key.to_hex());
            }
            keys
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        match task.await {
            Ok(keys) => all.extend(keys),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    all
}

fn scripts_run(server: &Server) -> u64 {
    server.calls("evalsha") + server.calls("eval")
}

/// 100,000 sessions of one owner are listed and deleted exactly, and by many script calls of
/// at most about 1,000 members each rather than one call over all of them; another owner's
/// sessions are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_owner_is_listed_and_deleted_in_bounded_batches() {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    const SESSIONS: usize = 100_000;
    let server = Server::start();
    let store = build(RedisStore::builder().url(server.url()).pool_size(4));
    let keys = populate(&store, "big", SESSIONS).await;
    let bystander = populate(&store, "small", 3).await;

    server.run(redis::cmd("CONFIG").arg("RESETSTAT"));
    let listed = must("list_by_owner", store.list_by_owner("big")).await;
    let listing_calls = scripts_run(&server);
    eprintln!("{SESSIONS} sessions listed in {listing_calls} script calls");
    assert_eq!(listed.len(), SESSIONS, "every session listed once");
    let listed_keys: HashSet<String> = listed.iter().map(|r| r.key.to_hex()).collect();
    assert_eq!(listed_keys, keys);
    assert!(
        listing_calls >= (SESSIONS / 1000) as u64,
        "{SESSIONS} sessions listed in {listing_calls} script calls: some call handled more than 1,000"
    );

    server.run(redis::cmd("CONFIG").arg("RESETSTAT"));
    let deleted = must("delete_by_owner", store.delete_by_owner("big")).await;
    let deleting_calls = scripts_run(&server);
    eprintln!("{SESSIONS} sessions deleted in {deleting_calls} script calls");
    assert_eq!(deleted, SESSIONS as u64);
    assert!(
        deleting_calls >= (SESSIONS / 1000) as u64,
        "{SESSIONS} sessions deleted in {deleting_calls} script calls: some call handled more than 1,000"
    );
    assert_eq!(must("count", store.count()).await, 3);
    let left: Vec<String> = must("list_by_owner", store.list_by_owner("small"))
        .await
        .iter()
        .map(|r| r.key.to_hex())
        .collect();
    assert_eq!(left.into_iter().collect::<HashSet<_>>(), bystander);
    let index: bool = match server.run(redis::cmd("EXISTS").arg("session:owner:big")) {
        redis::Value::Int(n) => n == 1,
        other => panic!("unexpected EXISTS reply {other:?}"),
    };
    assert!(!index, "the emptied owner index must be gone");
}

/// Listings that run at once, each dropping the index members of deleted sessions as it goes,
/// still each return exactly the live sessions: a batch never skips a member because another
/// call removed one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batched_listings_miss_no_live_session() {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let server = Server::start();
    let store = build(RedisStore::builder().url(server.url()).owner_batch(7));
    let keys: Vec<String> = populate(&store, "ann", 600).await.into_iter().collect();
    let (gone, live) = keys.split_at(300);
    let gone: Vec<_> = gone
        .iter()
        .filter_map(|hex| session_core::SessionKey::from_hex(hex))
        .collect();
    assert_eq!(must("delete_many", store.delete_many(&gone)).await, 300);
    let live: HashSet<String> = live.iter().cloned().collect();

    let mut listings = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        listings.push(tokio::spawn(async move {
            must("list_by_owner", store.list_by_owner("ann")).await
        }));
    }
    for listing in listings {
        let listed = match listing.await {
            Ok(listed) => listed,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let listed: HashSet<String> = listed.iter().map(|r| r.key.to_hex()).collect();
        assert_eq!(
            listed, live,
            "a listing must return exactly the live sessions"
        );
    }
    let members: u64 = match server.run(redis::cmd("ZCARD").arg("session:owner:ann")) {
        redis::Value::Int(n) => n.unsigned_abs(),
        other => panic!("unexpected ZCARD reply {other:?}"),
    };
    assert_eq!(members, 300, "the deleted sessions' members are trimmed");
}
