//! What a broken connection costs callers. Idempotent operations (`load`, `exists`, `touch`,
//! `count`, `list`, `delete`, `delete_many`, `list_by_owner`, `delete_by_owner`) are sent once
//! more on a fresh connection, so a connection the server drops costs no errors; so is
//! `create`, whose retry recognises its own lost attempt by the stored bytes. The other
//! conditional writes (`save`, `rotate`) never are, because the lost attempt may have been
//! applied: they fail with `Unavailable`, possibly applied.
//!
//! Each case runs its own `redis-server` behind a proxy (`common::proxy`) that records every
//! byte the store sends, so attempts are counted on the wire, and that can lose a reply after
//! the server ran the command. Runs wherever `REDIS_URL` is set (the sign that Redis is
//! installed here), under the usual skip rule; it never touches the server at `REDIS_URL`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::proxy::Proxy;
use common::{HOUR, Logs, Server, assert_unavailable, build, must};
use session_core::conformance::service_url;
use session_core::{Error, Record, SessionId, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_redis::redis;

struct Rig {
    // Dropped in this order: the store, then the proxy, then the server.
    store: RedisStore,
    proxy: Proxy,
    _server: Server,
}

async fn rig(multiplexed: usize) -> Rig {
    rig_with_pool(multiplexed, 2).await
}

async fn rig_with_pool(multiplexed: usize, pool_size: usize) -> Rig {
    let server = Server::start();
    let proxy = Proxy::start(server.port).await;
    let store = build(
        RedisStore::builder()
            .url(proxy.url())
            .multiplexed(multiplexed)
            .pool_size(pool_size),
    );
    warm_scripts(&store).await;
    Rig {
        store,
        proxy,
        _server: server,
    }
}

/// Runs every script once, so the server holds them all: the first `EVALSHA` of a script a
/// server does not know yet fails with `NOSCRIPT` (nothing ran) and redis-rs sends it again
/// after loading the script, which would count as two attempts on the wire.
async fn warm_scripts(store: &RedisStore) {
    let r = owned("warm-up");
    must("create", store.create(&r)).await;
    must("save", store.save(&r)).await;
    must("touch", store.touch(&r.key, r.expires_at)).await;
    let moved = SessionId::generate().key();
    must("rotate", store.rotate(&r.key, &moved)).await;
    must("list_by_owner", store.list_by_owner("warm-up")).await;
    must("delete_by_owner", store.delete_by_owner("warm-up")).await;
}

fn owned(owner: &str) -> Record {
    Record::new(
        SessionId::generate().key(),
        &b"payload"[..],
        Timestamp::now() + HOUR,
    )
    .with_owner(owner)
}

impl Rig {
    /// Runs `call` once normally and once with the reply to its request (the first request
    /// containing `needle`) lost; returns the second call's result and how many times that
    /// call sent its request.
    async fn with_lost_reply<T, F, Fut>(
        &self,
        needle: &[u8],
        call: F,
    ) -> (session_core::Result<T>, usize)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = session_core::Result<T>>,
    {
        let before = self.proxy.sent_count(needle);
        must("the call without a lost reply", call()).await;
        let per_attempt = self.proxy.sent_count(needle) - before;
        assert!(per_attempt > 0, "the needle is not in the call's request");
        self.lost_reply_attempts(needle, per_attempt, call).await
    }

    /// Runs `call` once with the reply to its request lost.
    async fn lost_reply_attempts<T, F, Fut>(
        &self,
        needle: &[u8],
        per_attempt: usize,
        call: F,
    ) -> (session_core::Result<T>, usize)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = session_core::Result<T>>,
    {
        let before = self.proxy.sent_count(needle);
        self.proxy.lose_reply_to(needle);
        let result = match tokio::time::timeout(Duration::from_secs(10), call()).await {
            Ok(result) => result,
            Err(_) => panic!("a call whose reply was lost hung"),
        };
        assert_eq!(self.proxy.traps_left(), 0, "the reply was never lost");
        let sent = self.proxy.sent_count(needle) - before;
        assert_eq!(sent % per_attempt, 0, "a request was sent in part");
        (result, sent / per_attempt)
    }
}

fn ok<T: std::fmt::Debug>(what: &str, (result, attempts): (session_core::Result<T>, usize)) -> T {
    assert_eq!(attempts, 2, "{what}: one attempt, then exactly one retry");
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what} failed although a retry was possible: {e:?}"),
    }
}

/// An idempotent call whose reply is lost with its connection succeeds, on its second and
/// last attempt, with the answer a single call would give (except `delete`'s and
/// `delete_by_owner`'s counts, which cannot see what the lost attempt removed).
async fn lost_replies_to_idempotent_calls_are_retried_once_in(multiplexed: usize) {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let rig = rig(multiplexed).await;
    let store = &rig.store;
    let r = owned("ann");
    must("create", store.create(&r)).await;
    let hex = r.key.to_hex();
    let key = hex.as_bytes();

    reads_are_retried(&rig, &r).await;
    assert!(ok(
        "exists",
        rig.with_lost_reply(key, || store.exists(&r.key)).await
    ));
    let later = r.expires_at + Duration::from_secs(60);
    ok(
        "touch",
        rig.with_lost_reply(key, || store.touch(&r.key, later))
            .await,
    );
    let listed = ok(
        "list_by_owner",
        rig.with_lost_reply(b"ann", || store.list_by_owner("ann"))
            .await,
    );
    assert_eq!(
        listed.iter().map(|x| x.key).collect::<Vec<_>>(),
        vec![r.key]
    );
    let unknown = [SessionId::generate().key()];
    let unknown_hex = unknown[0].to_hex();
    assert_eq!(
        ok(
            "delete_many",
            rig.with_lost_reply(unknown_hex.as_bytes(), || store.delete_many(&unknown))
                .await
        ),
        0
    );

    // Deletions: the lost attempt did the work, the retry finds nothing left to count.
    let removed = ok(
        "delete",
        rig.lost_reply_attempts(key, 1, || store.delete(&r.key))
            .await,
    );
    assert!(
        !removed,
        "the retry cannot see what the lost attempt deleted"
    );
    assert!(!must("exists", store.exists(&r.key)).await);
    for _ in 0..3 {
        must("create", store.create(&owned("bo"))).await;
    }
    ok(
        "delete_by_owner",
        rig.lost_reply_attempts(b"owner:bo", 1, || store.delete_by_owner("bo"))
            .await,
    );
    assert!(
        must("list_by_owner", store.list_by_owner("bo"))
            .await
            .is_empty()
    );
}

/// A save or rotate whose reply is lost is sent once only and fails with `Unavailable`,
/// although the server applied it: a failed commit may have been made.
async fn lost_replies_to_conditional_writes_are_not_retried_in(multiplexed: usize) {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let rig = rig(multiplexed).await;
    let store = &rig.store;
    for r in [owned("ann"), {
        let mut plain = owned("ann");
        plain.owner = None;
        plain
    }] {
        must("create", store.create(&r)).await;
        let key = format!("session:{}", r.key.to_hex());

        let mut changed = r.clone();
        let payload = format!("new data for {key}");
        changed.data = payload.clone().into_bytes().into();
        let (result, attempts) = rig
            .lost_reply_attempts(payload.as_bytes(), 1, || store.save(&changed))
            .await;
        assert_eq!(attempts, 1, "save must never be sent twice");
        assert_unavailable("save with a lost reply", result);
        let stored = must("load", store.load(&r.key)).await;
        assert_eq!(
            stored.map(|x| (x.version, x.data)),
            Some((2, changed.data.clone())),
            "the lost save was applied"
        );

        let new = SessionId::generate().key();
        let new_key = format!("session:{}", new.to_hex());
        let (result, attempts) = rig
            .lost_reply_attempts(new_key.as_bytes(), 1, || store.rotate(&r.key, &new))
            .await;
        assert_eq!(attempts, 1, "rotate must never be sent twice");
        assert_unavailable("rotate with a lost reply", result);
        assert!(
            must("exists", store.exists(&new)).await,
            "the lost rotate was applied"
        );
        assert!(!must("exists", store.exists(&r.key)).await);
    }
}

/// A create whose reply is lost is sent once more; the retry finds the key taken by exactly
/// the bytes it wrote, so the create succeeded and says so (no false `AlreadyExists`), and
/// the session is there once, index entry included. A create whose lost attempt met a key
/// another record holds still fails with `AlreadyExists`, and leaves that record alone.
async fn lost_replies_to_creates_are_retried_and_tell_their_own_write_in(multiplexed: usize) {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let rig = rig(multiplexed).await;
    let store = &rig.store;
    for r in [owned("cy"), {
        let mut plain = owned("cy");
        plain.owner = None;
        plain
    }] {
        // The key as written, once per request (scripts also get the bare hex as an argument).
        let key = format!("session:{}", r.key.to_hex());
        let before = rig.proxy.sent_count(key.as_bytes());
        let (result, _) = rig
            .lost_reply_attempts(key.as_bytes(), 1, || store.create(&r))
            .await;
        match result {
            Ok(()) => {}
            Err(e) => panic!("a create whose reply was lost failed although it was made: {e:?}"),
        }
        // The lost attempt, the retried create and its read of the key.
        assert_eq!(rig.proxy.sent_count(key.as_bytes()) - before, 3);
        assert_eq!(must("load", store.load(&r.key)).await, Some(r.clone()));

        let mut other = r.clone();
        other.data = b"another record's data"[..].into();
        let (result, _) = rig
            .lost_reply_attempts(key.as_bytes(), 1, || store.create(&other))
            .await;
        match result {
            Err(Error::AlreadyExists) => {}
            other => panic!("a create of a taken key with a lost reply: {other:?}"),
        }
        assert_eq!(
            must("load", store.load(&r.key)).await,
            Some(r.clone()),
            "the record that held the key is untouched"
        );
    }
    assert_eq!(
        must("list_by_owner", store.list_by_owner("cy")).await.len(),
        1
    );
}

/// Only one retry: when the retry's reply is lost as well, the call fails with `Unavailable`
/// after exactly two attempts.
async fn a_second_broken_connection_is_not_retried_in(multiplexed: usize) {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let rig = rig(multiplexed).await;
    let r = owned("ann");
    must("create", rig.store.create(&r)).await;
    let hex = r.key.to_hex();
    rig.proxy.lose_reply_to(hex.as_bytes());
    let (result, attempts) = rig
        .lost_reply_attempts(hex.as_bytes(), 1, || rig.store.load(&r.key))
        .await;
    assert_eq!(attempts, 2, "one attempt and one retry, no more");
    assert_unavailable("load with two lost replies", result);
    assert_eq!(must("load", rig.store.load(&r.key)).await, Some(r));
}

/// Kill waves this far apart: a retry (one round trip on a fresh connection) is far shorter,
/// so no retry is in flight when the next wave hits.
const WAVE_GAP: Duration = Duration::from_millis(700);
const WAVES: usize = 6;
const TASKS: usize = 32;

#[derive(Default)]
struct Tally {
    idempotent_calls: u64,
    idempotent_failures: Vec<(&'static str, Error)>,
    saves: u64,
    save_failures: Vec<Error>,
}

/// One client's loop: its own session, every idempotent operation in turn, and a save of
/// freshly loaded data with a payload unique to that save.
async fn client(store: RedisStore, task: usize, stop: Arc<AtomicBool>) -> Tally {
    let owner = format!("client-{task}");
    let r = owned(&owner);
    must("create", store.create(&r)).await;
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let missing = SessionId::generate().key();
        let (what, result): (&'static str, session_core::Result<()>) = match n % 9 {
            0 => (
                "load",
                store.load(&r.key).await.map(|found| {
                    assert_eq!(
                        found.map(|x| x.key),
                        Some(r.key),
                        "a live session loaded wrong"
                    );
                }),
            ),
            1 => (
                "exists",
                store.exists(&r.key).await.map(|live| assert!(live)),
            ),
            2 => ("touch", store.touch(&r.key, Timestamp::now() + HOUR).await),
            3 => ("count", store.count().await.map(|c| assert!(c >= 1))),
            4 => (
                "list",
                store
                    .list()
                    .await
                    .map(|keys| assert!(keys.contains(&r.key))),
            ),
            5 => (
                "list_by_owner",
                store.list_by_owner(&owner).await.map(|found| {
                    assert_eq!(found.len(), 1, "the client's one session");
                }),
            ),
            6 => (
                "delete",
                store.delete(&missing).await.map(|gone| assert!(!gone)),
            ),
            7 => (
                "delete_by_owner",
                store.delete_by_owner("nobody").await.map(|_| ()),
            ),
            _ => {
                let loaded = store.load(&r.key).await;
                tally.idempotent_calls += 1;
                let mut current = match loaded {
                    Ok(Some(current)) => current,
                    Ok(None) => panic!("the client's session vanished"),
                    Err(e) => {
                        tally.idempotent_failures.push(("load", e));
                        continue;
                    }
                };
                current.data = format!("save-attempt-{task}-{n}|").into_bytes().into();
                tally.saves += 1;
                match store.save(&current).await {
                    Ok(_) => {}
                    Err(e) => tally.save_failures.push(e),
                }
                continue;
            }
        };
        tally.idempotent_calls += 1;
        if let Err(e) = result {
            tally.idempotent_failures.push((what, e));
        }
    }
    tally
}

/// A retry gives its broken connection back before it checks out the next one: on a pool of
/// one, a retry that still held the broken connection would wait for itself until the pool's
/// wait timeout and fail with `Unavailable` (a `SCAN` step did, under load, in CI).
#[tokio::test]
async fn a_retry_on_a_pool_of_one_releases_the_broken_connection_first() {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let rig = rig_with_pool(0, 1).await;
    let r = owned("ann");
    must("create", rig.store.create(&r)).await;
    reads_are_retried(&rig, &r).await;
}

/// A `load` (one command) and a `count` and `list` (`SCAN` steps) of the store's only
/// session `r`, each with its reply lost once: each retries once and answers right.
async fn reads_are_retried(rig: &Rig, r: &Record) {
    let store = &rig.store;
    let hex = r.key.to_hex();
    let loaded = ok(
        "load",
        rig.with_lost_reply(hex.as_bytes(), || store.load(&r.key))
            .await,
    );
    assert_eq!(loaded.as_ref(), Some(r));
    assert_eq!(
        ok(
            "count",
            rig.with_lost_reply(b"SCAN", || store.count()).await
        ),
        1
    );
    assert_eq!(
        ok("list", rig.with_lost_reply(b"SCAN", || store.list()).await),
        vec![r.key]
    );
}

/// 32 clients on one store while the server kills every client connection in waves: no
/// idempotent call fails, retries did happen, saves fail only with `Unavailable`, and no
/// save was ever sent twice (each save's unique payload appears once on the wire).
async fn idempotent_calls_survive_client_kill_under_load_in(multiplexed: usize) {
    if service_url("REDIS_URL").is_none() {
        return;
    }
    let (logs, _guard) = Logs::capture();
    let server = Arc::new(Server::start());
    let proxy = Proxy::start(server.port).await;
    let store = build(
        RedisStore::builder()
            .url(proxy.url())
            .multiplexed(multiplexed)
            .pool_size(8),
    );
    warm_scripts(&store).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(client(store.clone(), task, Arc::clone(&stop))))
        .collect();
    let killer = std::thread::spawn({
        let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
        move || {
            let mut kills = 0;
            for _ in 0..WAVES {
                std::thread::sleep(WAVE_GAP);
                if let Some(mut conn) = server.admin() {
                    let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
                        .query(&mut conn);
                    kills += killed.unwrap_or(0);
                }
            }
            stop.store(true, Ordering::Relaxed);
            kills
        }
    });

    let mut total = Tally::default();
    for client in clients {
        match tokio::time::timeout(Duration::from_secs(60), client).await {
            Ok(Ok(tally)) => {
                total.idempotent_calls += tally.idempotent_calls;
                total.idempotent_failures.extend(tally.idempotent_failures);
                total.saves += tally.saves;
                total.save_failures.extend(tally.save_failures);
            }
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("a client hung while connections were killed"),
        }
    }
    let kills = match killer.join() {
        Ok(kills) => kills,
        Err(e) => std::panic::resume_unwind(e),
    };
    let retries = logs.lines("DEBUG", "retrying once").len();
    eprintln!(
        "multiplexed({multiplexed}): {kills} connections killed in {WAVES} waves, {} idempotent calls, {} failed, {retries} retries; {} saves, {} failed",
        total.idempotent_calls,
        total.idempotent_failures.len(),
        total.saves,
        total.save_failures.len()
    );
    assert!(
        kills > 0,
        "the server killed no connection, so this tested nothing"
    );
    assert!(
        total.idempotent_failures.is_empty(),
        "idempotent calls failed although a retry was possible: {:?}",
        total.idempotent_failures
    );
    assert!(
        retries > 0,
        "no call was retried, so the kills hit nothing in flight"
    );
    for e in &total.save_failures {
        assert!(
            matches!(e, Error::Unavailable { store: "redis", .. }),
            "a save on a killed connection must fail with Unavailable, got {e:?}"
        );
    }
    let mut sent: HashMap<Vec<u8>, usize> = HashMap::new();
    for stream in proxy.sent() {
        let mut rest = stream.as_slice();
        while let Some(at) = rest.windows(13).position(|w| w == b"save-attempt-") {
            let marker = &rest[at..];
            let end = marker
                .iter()
                .position(|&b| b == b'|')
                .unwrap_or(marker.len());
            *sent.entry(marker[..end].to_vec()).or_default() += 1;
            rest = &marker[end..];
        }
    }
    assert!(sent.len() as u64 <= total.saves);
    let twice: Vec<_> = sent
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(m, n)| (String::from_utf8_lossy(m).into_owned(), *n))
        .collect();
    assert!(twice.is_empty(), "saves sent more than once: {twice:?}");
    let r = owned("after");
    must("create after the kills", store.create(&r)).await;
    assert_eq!(
        must("load after the kills", store.load(&r.key)).await,
        Some(r)
    );
}

#[tokio::test]
async fn lost_replies_to_idempotent_calls_are_retried_once() {
    lost_replies_to_idempotent_calls_are_retried_once_in(0).await;
}

#[tokio::test]
async fn lost_replies_to_idempotent_calls_are_retried_once_multiplexed() {
    lost_replies_to_idempotent_calls_are_retried_once_in(2).await;
}

#[tokio::test]
async fn lost_replies_to_conditional_writes_are_not_retried() {
    lost_replies_to_conditional_writes_are_not_retried_in(0).await;
}

#[tokio::test]
async fn lost_replies_to_conditional_writes_are_not_retried_multiplexed() {
    lost_replies_to_conditional_writes_are_not_retried_in(2).await;
}

#[tokio::test]
async fn lost_replies_to_creates_are_retried_and_tell_their_own_write() {
    lost_replies_to_creates_are_retried_and_tell_their_own_write_in(0).await;
}

#[tokio::test]
async fn lost_replies_to_creates_are_retried_and_tell_their_own_write_multiplexed() {
    lost_replies_to_creates_are_retried_and_tell_their_own_write_in(2).await;
}

#[tokio::test]
async fn a_second_broken_connection_is_not_retried() {
    a_second_broken_connection_is_not_retried_in(0).await;
}

#[tokio::test]
async fn a_second_broken_connection_is_not_retried_multiplexed() {
    a_second_broken_connection_is_not_retried_in(2).await;
}

#[tokio::test]
async fn idempotent_calls_survive_client_kill_under_load() {
    idempotent_calls_survive_client_kill_under_load_in(0).await;
}

#[tokio::test]
async fn idempotent_calls_survive_client_kill_under_load_multiplexed() {
    idempotent_calls_survive_client_kill_under_load_in(2).await;
}
