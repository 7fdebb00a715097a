//! The Redis store: key layout, configuration and the trait implementation.
//!
//! Keys, for a prefix `P` (default `session:`):
//! - `P<64 hex chars of the SessionKey>`: one string per session (layout in `codec.rs`), with
//!   a server-side expiry;
//! - `Powner:<owner>`: a sorted set per owner of the hex keys of that owner's sessions, scored by
//!   their deadlines (unix ms), trimmed of expired members when read and expiring with its
//!   longest-lived member.
//!
//! A record's key expires (`PXAT`) one millisecond before its `expires_at`: Redis keeps a key
//! through the millisecond of its deadline, the contract drops a record at it, and this makes
//! the two agree without a clock check on every read.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands, RedisError};
use deadpool_redis::{Config, Pool, PoolConfig, PoolError, Runtime, Timeouts};
use session_core::{
    Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait, check_data_len,
};

use crate::codec::{self, HEADER_LEN};
use crate::conn::{Conn, Pools, Shared};
use crate::scripts::Scripts;

const STORE: &str = "redis";

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "session:";

/// Default largest session payload: 64 KiB.
///
/// Redis serves every client from one thread and keeps everything in RAM, so a session should
/// be small; 64 KiB is far above a typical session (a few hundred bytes) and still cheap to
/// copy. Raise it with [`RedisStoreBuilder::max_data_len`].
pub const DEFAULT_MAX_DATA_LEN: usize = 64 * 1024;

/// Default number of keys Redis is asked to look at per `SCAN` call.
pub const DEFAULT_SCAN_COUNT: usize = 1000;

/// Multiplexed connections shared by all operations by default (see
/// [`RedisStoreBuilder::multiplexed`]).
pub const DEFAULT_MULTIPLEXED: usize = 2;

const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_PREFIX_LEN: usize = 256;

/// A [`SessionStore`] on Redis, through a [`deadpool_redis::Pool`]. Cloning gives another
/// handle to the same store.
///
/// Expiry is native: Redis drops a session at its deadline, so there is nothing to sweep,
/// [`count_expired`](SessionStore::count_expired) and
/// [`delete_expired`](SessionStore::delete_expired) always return 0, and
/// [`expiry_is_native`](SessionStore::expiry_is_native) is `true`.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Pools,
    /// The prefix as written in keys: in cluster mode wrapped in `{}` as the hash tag.
    prefix: String,
    /// `prefix` with glob metacharacters escaped, followed by 64 hex character classes: the
    /// `SCAN` pattern that matches session keys and never an owner index.
    scan_pattern: String,
    max_data_len: Option<usize>,
    command_timeout: Option<Duration>,
    scan_count: usize,
    shared: Option<Shared>,
    scripts: Scripts,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("RedisStore")
            .field("prefix", &inner.prefix)
            .field("max_data_len", &inner.max_data_len)
            .field("command_timeout", &inner.command_timeout)
            .field("pool", &inner.pools)
            .field("multiplexed", &inner.shared)
            .finish_non_exhaustive()
    }
}

enum Source {
    Url(String),
    Pool(Pool),
    #[cfg(feature = "cluster")]
    ClusterUrls(Vec<String>),
    #[cfg(feature = "cluster")]
    ClusterPool(deadpool_redis::cluster::Pool),
}

/// Configures a [`RedisStore`]: where to connect (a URL or your own pool), the key prefix, the
/// size limit and the timeouts.
#[must_use]
pub struct RedisStoreBuilder {
    source: Option<Source>,
    prefix: String,
    max_data_len: Option<usize>,
    pool_size: Option<usize>,
    wait_timeout: Duration,
    connect_timeout: Duration,
    command_timeout: Option<Duration>,
    scan_count: usize,
    multiplexed: usize,
}

impl fmt::Debug for RedisStoreBuilder {
    // The URL may carry a password: say only which kind of source is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            None => "none",
            Some(Source::Url(_)) => "url (hidden)",
            Some(Source::Pool(_)) => "pool",
            #[cfg(feature = "cluster")]
            Some(Source::ClusterUrls(_)) => "cluster urls (hidden)",
            #[cfg(feature = "cluster")]
            Some(Source::ClusterPool(_)) => "cluster pool",
        };
        f.debug_struct("RedisStoreBuilder")
            .field("source", &source)
            .field("prefix", &self.prefix)
            .field("max_data_len", &self.max_data_len)
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("scan_count", &self.scan_count)
            .field("multiplexed", &self.multiplexed)
            .finish()
    }
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        Self {
            source: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            pool_size: None,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: Some(DEFAULT_COMMAND_TIMEOUT),
            scan_count: DEFAULT_SCAN_COUNT,
            multiplexed: DEFAULT_MULTIPLEXED,
        }
    }
}

impl RedisStoreBuilder {
    /// Connect to this server (`redis://[user:password@]host:port[/db]`, `rediss://`, ...).
    /// The store builds its own pool, with the size and timeouts set on this builder.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.source = Some(Source::Url(url.into()));
        self
    }

    /// Use this pool. Its size and timeouts are yours: build it with a wait timeout and the
    /// Tokio runtime (`Config::create_pool(Some(Runtime::Tokio1))`), or an exhausted pool makes
    /// callers wait until the command timeout instead of failing fast.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.source = Some(Source::Pool(pool));
        self
    }

    /// Connect to a Redis Cluster through these seed nodes (feature `cluster`).
    ///
    /// In cluster mode every key of the store carries the prefix as its hash tag
    /// (`{session:}<hex>`), so all of one store's keys live in one slot: `change_id` between
    /// any two ids, the owner index and `delete_many` stay single-slot and atomic. The price is
    /// that one store's sessions live on one master (with its replicas for failover); spread
    /// load over masters by giving each application or tenant its own prefix.
    #[cfg(feature = "cluster")]
    pub fn cluster_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.source = Some(Source::ClusterUrls(
            urls.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Use this Redis Cluster pool (feature `cluster`); see
    /// [`cluster_urls`](Self::cluster_urls) for the key layout.
    #[cfg(feature = "cluster")]
    pub fn cluster_pool(mut self, pool: deadpool_redis::cluster::Pool) -> Self {
        self.source = Some(Source::ClusterPool(pool));
        self
    }

    /// The prefix of every key the store writes (default [`DEFAULT_PREFIX`]). Stores with
    /// different prefixes on one server are fully separate.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The largest payload accepted, in bytes (default [`DEFAULT_MAX_DATA_LEN`]); `None` for
    /// no limit. Checked before any I/O.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// Connections in the pool built from a URL (default: deadpool's, 4 × CPUs).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// How long an operation waits for a free pooled connection before failing with
    /// [`Error::Unavailable`] (default 2 s; pool built from a URL only).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long opening (and health-checking) a pooled connection may take (default 2 s;
    /// pool built from a URL only).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation (checkout plus its round trip) may take before it fails with
    /// [`Error::Unavailable`] (default 5 s); `None` waits forever. Redis connections have no
    /// response timeout of their own, so this is what turns a hung server into an error.
    pub fn command_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How many keys each `SCAN` call asks Redis to look at, for `count` and `list`
    /// (default [`DEFAULT_SCAN_COUNT`]). Smaller batches mean shorter pauses for other clients.
    pub fn scan_count(mut self, count: usize) -> Self {
        self.scan_count = count.max(1);
        self
    }

    /// Shares `connections` multiplexed connections among all operations instead of checking
    /// a connection out of the pool for each one (default [`DEFAULT_MULTIPLEXED`]; 0 checks a
    /// connection out per operation). The default because it is one round trip per operation
    /// where a checkout is two: on the 2-core bench machine, 64 tasks loading ran 2.8× the
    /// speed of tower-sessions-redis-store shared, and 0.27× with a checkout per operation.
    ///
    /// Every redis-rs connection is multiplexed: many tasks can send on one at once, and their
    /// commands are pipelined on its socket. Checking out per operation costs a round trip of
    /// its own (deadpool-redis sends `PING` to health-check every checkout) and caps the
    /// requests in flight at the pool size; shared connections cost neither, and serve more
    /// concurrent requests per connection. The pool still opens every connection (and its
    /// wait timeout still applies then), and the pool's size no longer limits concurrency.
    ///
    /// The price: no health check per operation. A connection the server closed while it was
    /// idle (a `CLIENT KILL`, a restart, an idle timeout) fails the next operation that uses it
    /// with [`Error::Unavailable`]; after any such failure every shared connection is dropped
    /// and the next operations take fresh ones from the pool.
    pub fn multiplexed(mut self, connections: usize) -> Self {
        self.multiplexed = connections;
        self
    }

    /// Builds the store. Connections are opened on first use.
    ///
    /// # Errors
    /// [`Error::Config`] when no URL or pool was given, the URL does not parse, or the prefix
    /// is empty or longer than 256 bytes.
    pub fn build(self) -> Result<RedisStore> {
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX_LEN {
            return Err(Error::Config(
                "the Redis key prefix must be 1 to 256 bytes".into(),
            ));
        }
        let mut pool_config = PoolConfig::default();
        if let Some(size) = self.pool_size {
            pool_config.max_size = size.max(1);
        }
        pool_config.timeouts = Timeouts {
            wait: Some(self.wait_timeout),
            create: Some(self.connect_timeout),
            recycle: Some(self.connect_timeout),
        };
        // Errors name the URL's problem, never the URL itself.
        let invalid = |e: &dyn fmt::Display| {
            Error::Config(format!("invalid Redis configuration: {e}").into())
        };
        let pools = match self.source {
            None => return Err(Error::Config("RedisStore needs a URL or a pool".into())),
            Some(Source::Pool(pool)) => Pools::Single(pool),
            Some(Source::Url(url)) => {
                let mut config = Config::from_url(url);
                config.pool = Some(pool_config);
                Pools::Single(
                    config
                        .create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| invalid(&e))?,
                )
            }
            #[cfg(feature = "cluster")]
            Some(Source::ClusterUrls(urls)) => {
                let mut config = deadpool_redis::cluster::Config::from_urls(urls);
                config.pool = Some(pool_config);
                Pools::Cluster(
                    config
                        .create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| invalid(&e))?,
                )
            }
            #[cfg(feature = "cluster")]
            Some(Source::ClusterPool(pool)) => Pools::Cluster(pool),
        };
        let prefix = if pools.is_cluster() {
            if self.prefix.contains(['{', '}']) {
                return Err(Error::Config(
                    "in cluster mode the prefix becomes the hash tag and must not contain { or }"
                        .into(),
                ));
            }
            format!("{{{}}}", self.prefix)
        } else {
            self.prefix
        };
        let scan_pattern = scan_pattern(&prefix);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                pools,
                prefix,
                scan_pattern,
                max_data_len: self.max_data_len,
                command_timeout: self.command_timeout,
                scan_count: self.scan_count,
                shared: (self.multiplexed > 0).then(|| Shared::new(self.multiplexed)),
                scripts: Scripts::new(),
            }),
        })
    }
}

fn scan_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() * 2 + 64 * 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    for _ in 0..64 {
        pattern.push_str("[0-9a-f]");
    }
    pattern
}

impl RedisStore {
    /// Starts configuring a store.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// A store with default settings on its own pool to `url`.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse.
    pub fn from_url(url: impl Into<String>) -> Result<Self> {
        Self::builder().url(url).build()
    }

    /// A store with default settings on `pool`.
    pub fn from_pool(pool: Pool) -> Self {
        match Self::builder().pool(pool).build() {
            Ok(store) => store,
            // Unreachable: the default prefix is valid and a pool was given.
            Err(e) => unreachable!("default RedisStore configuration refused: {e}"),
        }
    }

    /// The pool the store takes its connections from (`None` for a cluster store).
    pub fn pool(&self) -> Option<&Pool> {
        match &self.inner.pools {
            Pools::Single(pool) => Some(pool),
            #[cfg(feature = "cluster")]
            Pools::Cluster(_) => None,
        }
    }

    /// The cluster pool the store takes its connections from (`None` for a single server).
    #[cfg(feature = "cluster")]
    pub fn cluster_pool(&self) -> Option<&deadpool_redis::cluster::Pool> {
        match &self.inner.pools {
            Pools::Cluster(pool) => Some(pool),
            Pools::Single(_) => None,
        }
    }

    /// The prefix of every key the store writes (in cluster mode, with its `{}`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn key(&self, key: &SessionKey) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut k = String::with_capacity(self.inner.prefix.len() + 64);
        k.push_str(&self.inner.prefix);
        // Written in place: `to_hex` would allocate a second string per operation.
        for b in key.as_bytes() {
            k.push(char::from(HEX[usize::from(b >> 4)]));
            k.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        k
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.inner.prefix)
    }

    /// Runs one operation (checkout plus its commands) under the command timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // Boxed: the operation's future (redis-rs's included) is kilobytes, and every await
        // point between here and the caller's `async_trait` box would otherwise copy it.
        let work = Box::pin(async { op(self.checkout().await?).await });
        let result = self.timed(work).await;
        self.after(&result);
        result
    }

    /// A connection for one operation: shared, or checked out of the pool.
    async fn checkout(&self) -> Result<Conn> {
        let inner = &*self.inner;
        match &inner.shared {
            None => inner.pools.get().await.map_err(pool_error),
            Some(shared) => shared.get(&inner.pools).await.map_err(pool_error),
        }
    }

    /// Drops the shared connections after a failure, so the next operations get fresh ones
    /// from the pool. (Pooled connections need nothing: the pool checks them on checkout.)
    fn after<T>(&self, result: &Result<T>) {
        if let (Some(shared), Err(Error::Unavailable { .. })) = (&self.inner.shared, result) {
            shared.reset();
        }
    }

    /// Fails `work` with [`Error::Unavailable`] when it outlasts the command timeout.
    async fn timed<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let Some(limit) = self.inner.command_timeout else {
            return work.await;
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(
                STORE,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from Redis within {limit:?}"),
                ),
            )),
        }
    }

    /// Every live session key, by `SCAN` in batches, deduplicated (a `SCAN` may return a key
    /// twice while Redis resizes its table). The timeout applies to each batch, not the walk.
    async fn scan(&self) -> Result<HashSet<SessionKey>> {
        let inner = &*self.inner;
        let mut conn = self.timed(self.checkout()).await?;
        let mut found = HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&inner.scan_pattern)
                .arg("COUNT")
                .arg(inner.scan_count);
            let step = async {
                conn.scan_step(&cmd, &inner.prefix)
                    .await
                    .map_err(redis_error)
            };
            let result = self.timed(step).await;
            self.after(&result);
            let (next, keys) = result?;
            for k in keys {
                let hex = k
                    .get(inner.prefix.len()..)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(key) = hex.and_then(SessionKey::from_hex) {
                    found.insert(key);
                }
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }
}

/// The `PXAT` for a deadline: one millisecond early (see the module docs), and at least 1,
/// since Redis refuses non-positive times (such a record is long expired anyway).
fn pxat(expires_at: Timestamp) -> i64 {
    expires_at.unix_millis().saturating_sub(1).max(1)
}

/// Whether a Redis error means the server could not be reached or could not serve right now.
fn is_unavailable(e: &RedisError) -> bool {
    use redis::ErrorKind as K;
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            K::BusyLoadingError
                | K::TryAgain
                | K::ClusterDown
                | K::MasterDown
                | K::ClusterConnectionNotFound
                | K::ReadOnly
        )
}

fn redis_error(e: RedisError) -> Error {
    if is_unavailable(&e) {
        Error::unavailable(STORE, e)
    } else {
        Error::backend(STORE, e)
    }
}

fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => redis_error(e),
        PoolError::Timeout(_) | PoolError::Closed => Error::unavailable(STORE, e),
        other => Error::backend(STORE, other),
    }
}

/// Reads a script's status reply.
fn status(code: i64) -> Result<()> {
    match code {
        1 => Ok(()),
        0 => Err(Error::NotFound),
        -1 => Err(Error::AlreadyExists),
        other => Err(Error::backend(
            STORE,
            format!("unexpected script reply {other}"),
        )),
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, record: &Record) -> Result<()> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        let value = codec::encode(record, record.version)?;
        let key = self.key(&record.key);
        let at = pxat(record.expires_at);
        let created = match &record.owner {
            // No owner, no index: a plain `SET NX` is the whole operation.
            None => {
                self.run(|mut conn| async move {
                    let reply: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("NX")
                        .arg("PXAT")
                        .arg(at)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_error)?;
                    Ok(reply.is_some())
                })
                .await?
            }
            Some(owner) => {
                let zset = self.owner_key(owner);
                let member = record.key.to_hex();
                let score = record.expires_at.unix_millis();
                self.run(|mut conn| async move {
                    let reply: i64 = self
                        .inner
                        .scripts
                        .create
                        .key(&key)
                        .key(&zset)
                        .arg(value)
                        .arg(at)
                        .arg(score)
                        .arg(member)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_error)?;
                    Ok(reply == 1)
                })
                .await?
            }
        };
        if created {
            Ok(())
        } else {
            Err(Error::AlreadyExists)
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let redis_key = self.key(key);
        let value: Option<Vec<u8>> = self
            .run(|mut conn| async move { conn.get(&redis_key).await.map_err(redis_error) })
            .await?;
        match value {
            None => Ok(None),
            Some(value) => codec::decode(*key, value).map(Some),
        }
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        let version = record.version.checked_add(1).ok_or_else(|| {
            Error::backend(STORE, "the session version cannot be bumped past u64::MAX")
        })?;
        let value = codec::encode(record, version)?;
        let key = self.key(&record.key);
        let zset = record.owner.as_deref().map(|o| self.owner_key(o));
        let reply: i64 = self
            .run(|mut conn| async move {
                let inner = &*self.inner;
                let mut call = inner.scripts.save.key(&key);
                if let Some(zset) = &zset {
                    call.key(zset);
                }
                call.arg(&record.version.to_be_bytes()[..])
                    .arg(value)
                    .arg(pxat(record.expires_at))
                    .arg(record.expires_at.unix_millis())
                    .arg(&inner.prefix)
                    .arg(record.key.to_hex());
                call.invoke_async(&mut conn).await.map_err(redis_error)
            })
            .await?;
        match reply {
            1 => Ok(version),
            0 => Err(Error::NotFound),
            -1 => Err(Error::Conflict),
            other => Err(Error::backend(
                STORE,
                format!("unexpected save reply {other}"),
            )),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        // The owner index is not touched: a member whose record is gone is dropped when the
        // index is next read, or when the index expires with its last member.
        let redis_key = self.key(key);
        let removed: u64 = self
            .run(|mut conn| async move { conn.del(&redis_key).await.map_err(redis_error) })
            .await?;
        Ok(removed > 0)
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let redis_keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.run(|mut conn| async move { conn.del(&redis_keys).await.map_err(redis_error) })
            .await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let redis_key = self.key(key);
        self.run(|mut conn| async move { conn.exists(&redis_key).await.map_err(redis_error) })
            .await
    }

    async fn change_id(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let (old_key, new_key) = (self.key(old), self.key(new));
        let reply: i64 = self
            .run(|mut conn| async move {
                let inner = &*self.inner;
                inner
                    .scripts
                    .change_id
                    .key(&old_key)
                    .key(&new_key)
                    .arg(&inner.prefix)
                    .arg(old.to_hex())
                    .arg(new.to_hex())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)
            })
            .await?;
        status(reply)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let redis_key = self.key(key);
        let reply: i64 = self
            .run(|mut conn| async move {
                let inner = &*self.inner;
                inner
                    .scripts
                    .touch
                    .key(&redis_key)
                    .arg(pxat(expires_at))
                    .arg(expires_at.unix_millis())
                    .arg(&expires_at.unix_millis().to_be_bytes()[..])
                    .arg(&inner.prefix)
                    .arg(key.to_hex())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)
            })
            .await?;
        status(reply)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.scan().await?.len() as u64)
    }

    /// Always 0: Redis removes a session at its deadline, so no expired session is ever held.
    async fn count_expired(&self) -> Result<u64> {
        Ok(0)
    }

    /// Always 0 and no I/O: Redis already removed every expired session.
    async fn delete_expired(&self) -> Result<u64> {
        Ok(0)
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        Ok(self.scan().await?.into_iter().collect())
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let zset = self.owner_key(owner);
        let pairs: Vec<Vec<u8>> = self
            .run(|mut conn| async move {
                let inner = &*self.inner;
                inner
                    .scripts
                    .list_by_owner
                    .key(&zset)
                    .arg(&inner.prefix)
                    .arg(owner)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)
            })
            .await?;
        let mut records = Vec::with_capacity(pairs.len() / 2);
        let mut pairs = pairs.into_iter();
        while let (Some(member), Some(value)) = (pairs.next(), pairs.next()) {
            let key = std::str::from_utf8(&member)
                .ok()
                .and_then(SessionKey::from_hex)
                .ok_or_else(|| Error::corrupt("an owner index member is not a session key"))?;
            records.push(codec::decode(key, value)?);
        }
        Ok(records)
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let zset = self.owner_key(owner);
        self.run(|mut conn| async move {
            let inner = &*self.inner;
            inner
                .scripts
                .delete_by_owner
                .key(&zset)
                .arg(&inner.prefix)
                .arg(owner)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)
        })
        .await
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }

    fn expiry_is_native(&self) -> bool {
        true
    }
}

// The header length is part of the scripts' offsets.
const _: () = assert!(HEADER_LEN == 30);

// Public types must be shareable across tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RedisStore>();
    assert_send_sync::<RedisStoreBuilder>();
};
