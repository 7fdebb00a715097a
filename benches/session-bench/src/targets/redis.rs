//! `session_redis::RedisStore` on the Redis at `REDIS_URL`, and its limit: bare redis-rs on an
//! identically configured deadpool pool, sending the one plain command each operation needs
//! (`SET NX PXAT`, `GET`, `SET XX PXAT`, `DEL`) with the same bytes under the same key names.
//!
//! The peer is `tower-sessions-redis-store` (0.16, on fred 10 and tower-sessions-core 0.14)
//! with a fred pool of as many clients as the deadpool pool has connections, through its own
//! trait, with the session as tower-sessions keeps it. It writes bare ids (no prefix), so its
//! instance remembers the ids it created and deletes exactly those keys.
//!
//! Each of our instances writes under its own random prefix and deletes it (`SCAN` + `UNLINK`)
//! when its last handle is dropped.
//!
//! Connections are counted, not assumed. Every deadpool pool here names each connection it
//! opens (`CLIENT SETNAME`, a tag of its own target instance), and each build warms its
//! target up and then asks the server (`CLIENT LIST`) how many connections carry that tag and
//! whether each served a command: the multiplexed targets must hold exactly [`MUX`] sockets,
//! all used, the pooled ones exactly [`POOL`] (all opened before the timed rounds). The bare
//! multiplexed target also checks that its handles answer `CLIENT ID` with [`MUX`] distinct
//! ids. A build that finds anything else fails, and so does the run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use session_core::{BoxError, SessionId, SessionStore as _, Timestamp};
use session_redis::RedisStore;
use session_redis::deadpool_redis::{
    Hook, HookError, Manager, Pool, PoolConfig, Runtime, Timeouts,
};
use session_redis::redis::aio::MultiplexedConnection;
use session_redis::redis::{self, AsyncCommands};

use time::OffsetDateTime;
use tower_sessions_core_014::SessionStore as _;
use tower_sessions_core_014::session::{Id, Record};
use tower_sessions_redis_store::fred::prelude::{
    ClientLike, Config as FredConfig, Pool as FredPool,
};

use crate::keys::{peer_id, session_key};
use crate::runner::instance;
use crate::session::{TTL, decode_bytes, decode_json};
use crate::target::{BenchTarget, OpResult, Outcome, Role, StoreTarget, Target};

pub(super) fn targets() -> [Target; 6] {
    [
        Target {
            name: "redis",
            short: "redis",
            role: Role::Ours,
            in_process: false,
            about: "session_redis::RedisStore on REDIS_URL with .multiplexed(0): a deadpool checkout (with its PING) per operation, pool of 8 connections, all 8 opened before the rounds (checked); stores the MessagePack bytes, sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-store"));
                    let pool = pool(&url, &cleanup.tag)?;
                    let store = RedisStore::builder()
                        .pool(pool.clone())
                        .prefix(&cleanup.prefix)
                        .multiplexed(0)
                        .build()?;
                    open_all(&pool).await?;
                    warm_up(&store).await?;
                    check_sockets(&url, &cleanup.tag, POOL, false).await?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(cleanup))))
                })
            },
        },
        Target {
            name: "redis-multiplexed",
            short: "redis-mux",
            role: Role::Ours,
            in_process: false,
            about: "session_redis::RedisStore on REDIS_URL with .multiplexed(2): 2 distinct sockets (checked: CLIENT LIST, both used), taken from a pool of 8 and shared round robin; stores the MessagePack bytes, sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-mux"));
                    let store = RedisStore::builder()
                        .pool(pool(&url, &cleanup.tag)?)
                        .prefix(&cleanup.prefix)
                        .multiplexed(MUX)
                        .build()?;
                    warm_up(&store).await?;
                    check_sockets(&url, &cleanup.tag, MUX, true).await?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(cleanup))))
                })
            },
        },
        Target {
            name: "redis-multiplexed-no-timeout",
            short: "redis-mux-nt",
            role: Role::Ours,
            in_process: false,
            about: "redis-multiplexed with .command_timeout(None): no timer per operation, to show what the default 5 s timeout costs",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-mux-nt"));
                    let store = RedisStore::builder()
                        .pool(pool(&url, &cleanup.tag)?)
                        .prefix(&cleanup.prefix)
                        .multiplexed(MUX)
                        .command_timeout(None)
                        .build()?;
                    warm_up(&store).await?;
                    check_sockets(&url, &cleanup.tag, MUX, true).await?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(cleanup))))
                })
            },
        },
        Target {
            name: "redis-bare",
            short: "bare redis",
            role: Role::Limit,
            in_process: false,
            about: "bare redis-rs on the same pool configuration (a checkout with its PING per operation, pool of 8, all 8 opened before the rounds, checked): SET NX PXAT / GET / SET XX PXAT / DEL of the same MessagePack bytes",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-bare"));
                    let pool = pool(&url, &cleanup.tag)?;
                    open_all(&pool).await?;
                    let bare = Bare {
                        pool,
                        prefix: cleanup.prefix.clone(),
                        data: payload.encoded.clone(),
                        decode: payload.decode,
                        _cleanup: Arc::clone(&cleanup),
                    };
                    warm_up_target(&bare).await?;
                    check_sockets(&url, &cleanup.tag, POOL, false).await?;
                    Ok(Some(instance(bare)))
                })
            },
        },
        Target {
            name: "redis-bare-multiplexed",
            short: "bare mux",
            role: Role::Limit,
            in_process: false,
            about: "bare redis-rs on 2 distinct multiplexed sockets (checked: 2 distinct CLIENT IDs, both used) taken together from the same pool configuration, round robin per operation: the same commands as redis-bare",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-bare-mux"));
                    let pool = pool(&url, &cleanup.tag)?;
                    // All checked out before any goes back: a pooled connection returned
                    // before the next checkout is handed out again (the bug of issue #17).
                    let mut held = Vec::with_capacity(MUX);
                    for _ in 0..MUX {
                        held.push(pool.get().await?);
                    }
                    let conns: Arc<[MultiplexedConnection]> = held
                        .iter()
                        .map(|pooled| MultiplexedConnection::clone(pooled))
                        .collect();
                    drop(held);
                    let mut ids = Vec::with_capacity(MUX);
                    for conn in conns.iter() {
                        let id: i64 = redis::cmd("CLIENT")
                            .arg("ID")
                            .query_async(&mut conn.clone())
                            .await?;
                        ids.push(id);
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    if ids.len() != MUX {
                        return Err(format!(
                            "redis-bare-multiplexed: its {MUX} handles answer CLIENT ID with {} distinct ids ({ids:?}); refusing to run on fewer sockets than it claims",
                            ids.len()
                        )
                        .into());
                    }
                    let bare = BareMux {
                        conns,
                        next: Arc::new(AtomicUsize::new(0)),
                        prefix: cleanup.prefix.clone(),
                        data: payload.encoded.clone(),
                        decode: payload.decode,
                        _cleanup: Arc::clone(&cleanup),
                    };
                    warm_up_target(&bare).await?;
                    check_sockets(&url, &cleanup.tag, MUX, true).await?;
                    Ok(Some(instance(bare)))
                })
            },
        },
        Target {
            name: "tower-sessions-redis-store",
            short: "ts-redis",
            role: Role::Peer,
            in_process: false,
            about: "tower-sessions-redis-store 0.16 on REDIS_URL: a fred 10 pool of 8 clients (one socket each, not checked), data as a JSON value map",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let pool = FredPool::new(FredConfig::from_url(&url)?, None, None, None, POOL)?;
                    pool.init().await?;
                    let keys = Arc::new(PeerKeys {
                        url,
                        created: Mutex::new(Vec::new()),
                    });
                    Ok(Some(instance(Peer {
                        store: Arc::new(tower_sessions_redis_store::RedisStore::new(pool)),
                        record: Record {
                            id: Id(0),
                            data: payload.json.clone(),
                            expiry_date: OffsetDateTime::now_utc() + peer_ttl(),
                        },
                        created: Vec::new(),
                        keys,
                        decode: payload.decode,
                    })))
                })
            },
        },
    ]
}

/// Sockets of the multiplexed targets, ours and bare: one per runtime worker.
const MUX: usize = 2;

/// Connections per pool for every target: deadpool's default on the 2-core machine the
/// figures come from (4 × CPUs), fixed so that it means the same everywhere.
const POOL: usize = 8;

/// `REDIS_URL`, or `None` after saying why the target is skipped.
fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipping the redis targets: REDIS_URL is not set");
            None
        }
    }
}

/// The pool every deadpool target uses: [`POOL`] connections, a wait timeout so a stuck run
/// fails, and each new connection named `tag`, so that the server can say which are this
/// target's.
fn pool(url: &str, tag: &str) -> Result<Pool, BoxError> {
    let timeout = Some(Duration::from_secs(5));
    let config = PoolConfig {
        max_size: POOL,
        timeouts: Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        },
        ..PoolConfig::default()
    };
    let tag = tag.to_owned();
    let name = Hook::async_fn(move |conn, _| {
        let tag = tag.clone();
        Box::pin(async move {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&tag)
                .query_async::<()>(conn)
                .await
                .map_err(HookError::Backend)
        })
    });
    Ok(Pool::builder(Manager::new(url)?)
        .config(config)
        .runtime(Runtime::Tokio1)
        .post_create(name)
        .build()?)
}

/// Opens every connection of `pool` now, so that pooled targets all run on [`POOL`] sockets
/// from the first round (none opened while timed).
async fn open_all(pool: &Pool) -> Result<(), BoxError> {
    let mut held = Vec::with_capacity(POOL);
    for _ in 0..POOL {
        held.push(pool.get().await?);
    }
    Ok(())
}

/// Operations one at a time, then 64 at once, so that every socket a target will use has
/// served a command before [`check_sockets`] looks.
async fn warm_up(store: &RedisStore) -> Result<(), BoxError> {
    let missing = SessionId::generate().key();
    for _ in 0..4 * MUX {
        store.load(&missing).await?;
    }
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.load(&missing).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// [`warm_up`] for a bare target.
async fn warm_up_target<T: BenchTarget>(target: &T) -> Result<(), BoxError> {
    const MISSING: u64 = u64::MAX;
    let mut one = target.clone();
    for _ in 0..4 * MUX {
        one.load(MISSING).await?;
    }
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut target = target.clone();
            tokio::spawn(async move { target.load(MISSING).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Asks the server how many connections are named `tag`: exactly `expected`, and with
/// `all_used` each must have run a `GET` last (a pooled connection may last have run the
/// pool's `PING`). Anything else fails the build, so no figure comes from a target on another
/// number of sockets than it claims.
async fn check_sockets(
    url: &str,
    tag: &str,
    expected: usize,
    all_used: bool,
) -> Result<(), BoxError> {
    let mut admin = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await?;
    let needle = format!(" name={tag} ");
    let ours: Vec<&str> = list.lines().filter(|l| l.contains(&needle)).collect();
    let unused = ours.iter().filter(|l| !l.contains(" cmd=get ")).count();
    if ours.len() != expected || (all_used && unused > 0) {
        return Err(format!(
            "{tag}: the server shows {} connections of this target ({unused} of them not used by its GETs), expected {expected}{}; refusing to run:\n{}",
            ours.len(),
            if all_used { ", all used" } else { "" },
            ours.join("\n")
        )
        .into());
    }
    Ok(())
}

/// Deletes everything under `prefix` when dropped.
struct Cleanup {
    url: String,
    prefix: String,
    /// The name of this instance's connections (`CLIENT SETNAME`).
    tag: String,
}

impl Cleanup {
    fn new(url: &str, what: &str) -> Self {
        let tag = format!("{what}-{}", &SessionId::generate().key().to_hex()[..12]);
        Self {
            url: url.to_owned(),
            prefix: format!("{tag}:"),
            tag,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Blocking I/O on a thread of its own: this may run inside the benchmark's runtime.
        let (url, pattern) = (self.url.clone(), format!("{}*", self.prefix));
        let cleaner = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(url)?.get_connection()?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK").arg(keys).query::<u64>(&mut conn)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        });
        if let Ok(Err(e)) = cleaner.join() {
            eprintln!(
                "could not remove the benchmark's Redis keys under {}: {e}",
                self.prefix
            );
        }
    }
}

/// The limit: one plain command per operation, no version, no owner index.
#[derive(Clone)]
struct Bare {
    pool: Pool,
    prefix: String,
    data: Bytes,
    decode: bool,
    _cleanup: Arc<Cleanup>,
}

impl Bare {
    fn key(&self, i: u64) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        key.push_str(&session_key(i).to_hex());
        key
    }

    async fn set(&mut self, i: u64, mode: &str) -> OpResult {
        let key = self.key(i);
        let mut conn = self.pool.get().await?;
        set_pxat(&mut conn, key, &self.data, mode).await
    }
}

impl BenchTarget for Bare {
    async fn create(&mut self, i: u64) -> OpResult {
        self.set(i, "NX").await
    }

    async fn load(&mut self, i: u64) -> OpResult {
        let key = self.key(i);
        let mut conn = self.pool.get().await?;
        let value: Option<Vec<u8>> = conn.get(key).await?;
        loaded(value, self.decode)
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.set(i, "XX").await
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        let key = self.key(i);
        let mut conn = self.pool.get().await?;
        let removed: u64 = conn.del(key).await?;
        Ok(if removed > 0 {
            Outcome::Done
        } else {
            Outcome::Missing
        })
    }
}

/// The limit of the multiplexed mode: the same plain commands on shared connections.
#[derive(Clone)]
struct BareMux {
    conns: Arc<[MultiplexedConnection]>,
    next: Arc<AtomicUsize>,
    prefix: String,
    data: Bytes,
    decode: bool,
    _cleanup: Arc<Cleanup>,
}

impl BareMux {
    fn conn(&self) -> MultiplexedConnection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    fn key(&self, i: u64) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        key.push_str(&session_key(i).to_hex());
        key
    }

    async fn set(&mut self, i: u64, mode: &str) -> OpResult {
        let key = self.key(i);
        let mut conn = self.conn();
        set_pxat(&mut conn, key, &self.data, mode).await
    }
}

impl BenchTarget for BareMux {
    async fn create(&mut self, i: u64) -> OpResult {
        self.set(i, "NX").await
    }

    async fn load(&mut self, i: u64) -> OpResult {
        let key = self.key(i);
        let value: Option<Vec<u8>> = self.conn().get(key).await?;
        loaded(value, self.decode)
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.set(i, "XX").await
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        let key = self.key(i);
        let removed: u64 = self.conn().del(key).await?;
        Ok(if removed > 0 {
            Outcome::Done
        } else {
            Outcome::Missing
        })
    }
}

/// A bare load's outcome, after decoding the bytes under `--decode-on-load`.
fn loaded(value: Option<Vec<u8>>, decode: bool) -> OpResult {
    match value {
        Some(bytes) => {
            if decode {
                decode_bytes(&bytes)?;
            }
            Ok(Outcome::Done)
        }
        None => Ok(Outcome::Missing),
    }
}

fn peer_ttl() -> time::Duration {
    time::Duration::milliseconds(i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX))
}

/// Every id the peer created, deleted when the last handle is gone.
struct PeerKeys {
    url: String,
    created: Mutex<Vec<i128>>,
}

impl Drop for PeerKeys {
    fn drop(&mut self) {
        let url = self.url.clone();
        let ids = std::mem::take(
            self.created
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let cleaner = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(url)?.get_connection()?;
            for chunk in ids.chunks(1000) {
                let keys: Vec<String> = chunk.iter().map(|&id| Id(id).to_string()).collect();
                redis::cmd("UNLINK").arg(keys).query::<u64>(&mut conn)?;
            }
            Ok(())
        });
        if let Ok(Err(e)) = cleaner.join() {
            eprintln!("could not remove the peer's Redis keys: {e}");
        }
    }
}

/// The peer, driven the way tower-sessions drives it: the whole record on every call. Each
/// handle notes the ids it created in a list of its own (no lock per operation) and hands
/// them to the shared cleanup list when dropped.
struct Peer {
    store: Arc<tower_sessions_redis_store::RedisStore<FredPool>>,
    record: Record,
    created: Vec<i128>,
    keys: Arc<PeerKeys>,
    decode: bool,
}

impl Clone for Peer {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            record: self.record.clone(),
            created: Vec::new(),
            keys: Arc::clone(&self.keys),
            decode: self.decode,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let mut all = self
            .keys
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.append(&mut self.created);
    }
}

impl Peer {
    fn stamp(&mut self, i: u64) {
        self.record.id = Id(peer_id(i));
        self.record.expiry_date = OffsetDateTime::now_utc() + peer_ttl();
    }
}

impl BenchTarget for Peer {
    async fn create(&mut self, i: u64) -> OpResult {
        self.stamp(i);
        self.store.create(&mut self.record).await?;
        self.created.push(self.record.id.0);
        // Its create picks a new random id instead of failing on a taken one.
        Ok(if self.record.id.0 == peer_id(i) {
            Outcome::Done
        } else {
            Outcome::Conflict
        })
    }
    async fn load(&mut self, i: u64) -> OpResult {
        Ok(match self.store.load(&Id(peer_id(i))).await? {
            Some(record) => {
                if self.decode {
                    decode_json(&record.data)?;
                }
                Outcome::Done
            }
            None => Outcome::Missing,
        })
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.stamp(i);
        self.store.save(&self.record).await?;
        Ok(Outcome::Done)
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        self.store.delete(&Id(peer_id(i))).await?;
        Ok(Outcome::Done)
    }
}

/// The baselines' write: `SET key data NX|XX PXAT deadline`, on any connection.
async fn set_pxat<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    key: impl redis::ToRedisArgs + Send + Sync,
    data: &[u8],
    mode: &str,
) -> OpResult {
    let at = (Timestamp::now() + TTL).unix_millis();
    let reply: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(data)
        .arg(mode)
        .arg("PXAT")
        .arg(at)
        .query_async(conn)
        .await?;
    Ok(if reply.is_some() {
        Outcome::Done
    } else if mode == "NX" {
        Outcome::Conflict
    } else {
        Outcome::Missing
    })
}
