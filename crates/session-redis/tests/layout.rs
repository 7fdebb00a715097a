//! What the store leaves in Redis, read back with plain commands: server-side expiry one
//! millisecond before the deadline, the owner index scored by deadline, trimmed when read and
//! expiring by itself, and foreign values reported as errors rather than misread.

use std::time::Duration;

use session_core::conformance::{Server, server_url};
use session_core::{Error, Record, SessionId, SessionStore, Timestamp};
use session_redis::RedisStore;
use session_redis::redis;

struct Case {
    store: RedisStore,
    raw: redis::aio::MultiplexedConnection,
    prefix: String,
    _cleanup: Cleanup,
}

/// Deletes every key under the prefix when the case ends, even by a panic (on a thread of
/// its own, with a blocking connection, since this may run inside the case's runtime).
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let cleaner = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(url)?.get_connection()?;
            let keys: Vec<Vec<u8>> = redis::Commands::scan_match(&mut conn, &pattern)?.collect();
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<u64>(&mut conn)?;
            }
            Ok(())
        });
        let _ = cleaner.join();
    }
}

async fn case() -> Option<Case> {
    let url = server_url(Server::Redis)?;
    let prefix = format!("layout:{}:", &SessionId::generate().key().to_hex()[..16]);
    let store = match RedisStore::builder().url(&url).prefix(&prefix).build() {
        Ok(store) => store,
        Err(e) => panic!("building the store failed: {e}"),
    };
    let client = match redis::Client::open(url.as_str()) {
        Ok(client) => client,
        Err(e) => panic!("bad REDIS_URL: {e}"),
    };
    let raw = match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(e) => panic!("raw connection failed: {e}"),
    };
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    Some(Case {
        store,
        raw,
        prefix,
        _cleanup,
    })
}

impl Case {
    fn key(&self, record: &Record) -> String {
        format!("{}{}", self.prefix, record.key.to_hex())
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.prefix)
    }

    async fn raw<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        match cmd.query_async(&mut self.raw).await {
            Ok(v) => v,
            Err(e) => panic!("raw command failed: {e}"),
        }
    }
}

async fn must<T>(what: &str, fut: impl Future<Output = session_core::Result<T>>) -> T {
    match fut.await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

fn record_until(expires_at: Timestamp) -> Record {
    Record::new(SessionId::generate().key(), &b"data"[..], expires_at)
}

/// The key's Redis deadline is the record's minus one millisecond (Redis keeps a key through
/// its deadline's millisecond), touch moves it, and Redis removes the session with no sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_done_by_redis() {
    let Some(mut case) = case().await else { return };
    let deadline = Timestamp::now() + Duration::from_secs(100);
    let r = record_until(deadline);
    must("create", case.store.create(&r)).await;
    let key = case.key(&r);
    let at: i64 = case.raw(redis::cmd("PEXPIRETIME").arg(&key)).await;
    assert_eq!(at, deadline.unix_millis() - 1);

    let soon = Timestamp::now() + Duration::from_millis(1000);
    must("touch", case.store.touch(&r.key, soon)).await;
    let at: i64 = case.raw(redis::cmd("PEXPIRETIME").arg(&key)).await;
    assert_eq!(
        at,
        soon.unix_millis() - 1,
        "touch must move the key's expiry"
    );
    let loaded = must("load", case.store.load(&r.key)).await;
    assert_eq!(loaded.map(|x| (x.expires_at, x.version)), Some((soon, 1)));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let exists: bool = case.raw(redis::cmd("EXISTS").arg(&key)).await;
    assert!(!exists, "Redis must have dropped the key by itself");
    assert_eq!(must("load", case.store.load(&r.key)).await, None);
    assert_eq!(must("count", case.store.count()).await, 0);
    assert!(must("list", case.store.list()).await.is_empty());
    assert!(case.store.expiry_is_native());
    assert_eq!(must("count_expired", case.store.count_expired()).await, 0);
    assert_eq!(must("delete_expired", case.store.delete_expired()).await, 0);
}

/// The owner index is a sorted set of hex keys scored by deadline; reading it drops expired
/// and deleted members, and the set expires with its longest-lived member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_is_scored_trimmed_and_expires() {
    let Some(mut case) = case().await else { return };
    let short = record_until(Timestamp::now() + Duration::from_millis(300)).with_owner("ann");
    let long = record_until(Timestamp::now() + Duration::from_millis(2000)).with_owner("ann");
    let gone = record_until(Timestamp::now() + Duration::from_secs(60)).with_owner("ann");
    for r in [&short, &long, &gone] {
        must("create", case.store.create(r)).await;
    }
    let zset = case.owner_key("ann");
    let score: i64 = case
        .raw(redis::cmd("ZSCORE").arg(&zset).arg(long.key.to_hex()))
        .await;
    assert_eq!(score, long.expires_at.unix_millis());
    assert!(must("delete", case.store.delete(&gone.key)).await);
    let members: u64 = case.raw(redis::cmd("ZCARD").arg(&zset)).await;
    assert_eq!(
        members, 3,
        "delete leaves the member for the next read to drop"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = must("list_by_owner", case.store.list_by_owner("ann")).await;
    assert_eq!(listed, vec![long.clone()]);
    let members: Vec<String> = case
        .raw(redis::cmd("ZRANGE").arg(&zset).arg(0).arg(-1))
        .await;
    assert_eq!(
        members,
        vec![long.key.to_hex()],
        "expired and deleted members are trimmed"
    );

    tokio::time::sleep(Timestamp::now().until(long.expires_at) + Duration::from_millis(200)).await;
    let exists: bool = case.raw(redis::cmd("EXISTS").arg(&zset)).await;
    assert!(!exists, "the index must expire with its last session");
    assert!(
        must("list_by_owner", case.store.list_by_owner("ann"))
            .await
            .is_empty()
    );
}

/// Every save and touch leaves the owner indexes exact at once, on both of the scripts' paths
/// (the one without an owner, which returns before the prelude, and the one with): a member
/// leaves its old owner's index on the save that changes or drops the owner, joins the new
/// one's, and a touch moves its score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_and_touches_keep_the_owner_index_exact() {
    let Some(mut case) = case().await else { return };
    let mut r = record_until(Timestamp::now() + Duration::from_secs(60)).with_owner("ann");
    must("create", case.store.create(&r)).await;
    let member = r.key.to_hex();
    let score = |zset: String| redis::cmd("ZSCORE").arg(zset).arg(&member).clone();

    let later = Timestamp::now() + Duration::from_secs(120);
    must("touch", case.store.touch(&r.key, later)).await;
    let s: Option<i64> = case.raw(&score(case.owner_key("ann"))).await;
    assert_eq!(
        s,
        Some(later.unix_millis()),
        "touch moves the member's score"
    );
    r = match must("load", case.store.load(&r.key)).await {
        Some(stored) => stored,
        None => panic!("the touched session is gone"),
    };

    r.owner = Some("bob".into());
    r.version = must("save", case.store.save(&r)).await;
    let (ann, bob): (Option<i64>, Option<i64>) = (
        case.raw(&score(case.owner_key("ann"))).await,
        case.raw(&score(case.owner_key("bob"))).await,
    );
    assert_eq!(
        (ann, bob),
        (None, Some(later.unix_millis())),
        "a new owner moves the member"
    );

    r.owner = None;
    r.version = must("save", case.store.save(&r)).await;
    let bob: Option<i64> = case.raw(&score(case.owner_key("bob"))).await;
    assert_eq!(bob, None, "dropping the owner removes the member");

    r.data = session_core::Bytes::from_static(b"no owner either side");
    r.version = must("save", case.store.save(&r)).await;
    let loaded = must("load", case.store.load(&r.key)).await;
    assert_eq!(
        loaded.as_ref().map(|x| (&x.data, x.version, &x.owner)),
        Some((&r.data, r.version, &None))
    );

    r.owner = Some("carl".into());
    r.version = must("save", case.store.save(&r)).await;
    let carl: Option<i64> = case.raw(&score(case.owner_key("carl"))).await;
    assert_eq!(
        carl,
        Some(later.unix_millis()),
        "an owner given to an ownerless session is indexed"
    );
    must("touch", case.store.touch(&r.key, r.expires_at)).await;
    let keys: Vec<String> = case
        .raw(redis::cmd("KEYS").arg(format!("{}owner:*", case.prefix)))
        .await;
    assert_eq!(
        keys,
        vec![case.owner_key("carl")],
        "no other owner index is left"
    );
}

/// `rotate` renames the key, keeping the exact Redis expiry, and moves the index member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keeps_the_redis_expiry() {
    let Some(mut case) = case().await else { return };
    let r = record_until(Timestamp::now() + Duration::from_secs(90)).with_owner("bo");
    must("create", case.store.create(&r)).await;
    let new = SessionId::generate().key();
    must("rotate", case.store.rotate(&r.key, &new)).await;
    let moved = Record {
        key: new,
        ..r.clone()
    };
    let at: i64 = case
        .raw(redis::cmd("PEXPIRETIME").arg(case.key(&moved)))
        .await;
    assert_eq!(at, r.expires_at.unix_millis() - 1);
    let members: Vec<String> = case
        .raw(
            redis::cmd("ZRANGE")
                .arg(case.owner_key("bo"))
                .arg(0)
                .arg(-1),
        )
        .await;
    assert_eq!(members, vec![new.to_hex()]);
}

/// A value under a session key that this store did not write is an error, never a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_are_errors() {
    let Some(mut case) = case().await else { return };
    let r = record_until(Timestamp::now() + Duration::from_secs(60));
    let key = case.key(&r);
    let _: () = case
        .raw(
            redis::cmd("SET")
                .arg(&key)
                .arg("not a session, but long enough to pass"),
        )
        .await;
    assert!(matches!(
        case.store.load(&r.key).await,
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        case.store.save(&r).await,
        Err(Error::Backend { store: "redis", .. })
    ));
    assert!(matches!(
        case.store.touch(&r.key, r.expires_at).await,
        Err(Error::Backend { .. })
    ));
    let _: u64 = case.raw(redis::cmd("DEL").arg(&key)).await;
    let _: u64 = case
        .raw(redis::cmd("HSET").arg(&key).arg("f").arg("v"))
        .await;
    assert!(matches!(
        case.store.load(&r.key).await,
        Err(Error::Backend { store: "redis", .. })
    ));
}
