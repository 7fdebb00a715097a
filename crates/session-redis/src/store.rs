//! The Redis store: key layout and the trait implementation.
//!
//! Keys, for a prefix `P` (default `session:`):
//! - `P<64 hex chars of the SessionKey>`: one string per session (layout in `format.rs`), with
//!   a server-side expiry;
//! - `Powner:<owner>`: a sorted set per owner of the hex keys of that owner's sessions, scored by
//!   their deadlines (unix ms), trimmed of expired members when read and expiring with its
//!   longest-lived member.
//!
//! A record's key expires (`PXAT`) one millisecond before its `expires_at`: Redis keeps a key
//! through the millisecond of its deadline, the contract drops a record at it, and this makes
//! the two agree without a clock check on every read.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use deadpool_redis::Pool;
use deadpool_redis::redis::{self, AsyncCommands};
use session_core::{
    Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait, check_data_len,
};

use crate::builder::RedisStoreBuilder;
use crate::conn::{Conn, Pools, Shared};
use crate::error::{Failure, STORE};
use crate::format::{self, HEADER_LEN};
use crate::scripts::Scripts;

/// What follows the prefix in an owner index's key (the scripts spell it out too). No prefix
/// may contain it, see [`RedisStoreBuilder::prefix`].
pub(crate) const OWNER_NAMESPACE: &str = "owner:";

/// A [`SessionStore`] on Redis, through a [`deadpool_redis::Pool`]. Cloning gives another
/// handle to the same store.
///
/// Expiry is native: Redis drops a session at its deadline, so there is nothing to sweep,
/// [`count_expired`](SessionStore::count_expired) and
/// [`delete_expired`](SessionStore::delete_expired) always return 0, and
/// [`expiry_is_native`](SessionStore::expiry_is_native) is `true`.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pools: Pools,
    /// The prefix as written in keys: in cluster mode wrapped in `{}` as the hash tag.
    pub(crate) prefix: String,
    /// `prefix` with glob metacharacters escaped, followed by 64 hex character classes: the
    /// `SCAN` pattern that matches session keys and never an owner index.
    pub(crate) scan_pattern: String,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) command_timeout: Option<Duration>,
    pub(crate) scan_count: usize,
    pub(crate) owner_batch: usize,
    pub(crate) shared: Option<Shared>,
    pub(crate) scripts: Scripts,
    /// Whether the server's eviction policy was read (or is being read) already.
    pub(crate) policy_checked: AtomicBool,
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

    /// The Redis key of `key`: the prefix and the 64 hex digits, as bytes (Redis keys are byte
    /// strings), copied in two slices.
    fn key(&self, key: &SessionKey) -> Vec<u8> {
        let prefix = self.inner.prefix.as_bytes();
        let mut k = vec![0u8; prefix.len() + 64];
        k[..prefix.len()].copy_from_slice(prefix);
        // Written in place: `to_hex` would allocate a second string per operation.
        if hex::encode_to_slice(key.as_bytes(), &mut k[prefix.len()..]).is_err() {
            unreachable!("32 bytes are 64 hex digits");
        }
        k
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}{OWNER_NAMESPACE}{owner}", self.inner.prefix)
    }

    /// Runs one operation (checkout plus its commands) under the command timeout; with
    /// [`Retry::Once`], runs it a second time on a fresh connection when the first one broke
    /// under it (the timeout covers both).
    async fn run<T, F, Fut>(&self, retry: Retry, op: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // Built in place and pinned here, so the future is stored once (a future moved into
        // `timed` would be stored twice), and not boxed: with the cold paths of a checkout
        // boxed where they are, it is a few hundred bytes, held in the caller's box.
        let work = pin!(async {
            // A statement of its own, so the first attempt (and the connection it holds) is
            // gone before the retry checks out another: a pool of one must not wait on itself.
            let first = op(self.checkout().await?).await;
            match first {
                Err(e) if retry == Retry::Once && self.may_retry(&e) => {
                    self.before_retry(&e);
                    op(self.checkout().await?)
                        .await
                        .map_err(|e| Failure::from(e).into())
                }
                other => other.map_err(|e| Failure::from(e).into()),
            }
        });
        let result = self.timed(work).await;
        self.after(&result);
        result
    }

    /// Whether `e`, from a command sent on an open connection, means that connection broke
    /// (reset, closed, a failed write), so that the command may or may not have run and a
    /// fresh connection will most likely work. Not a timeout: the server may be busy rather
    /// than gone, and a second attempt would double the wait. Never in cluster mode, where
    /// redis-rs already reconnects and resends by itself.
    fn may_retry(&self, e: &redis::RedisError) -> bool {
        e.is_io_error() && !e.is_timeout() && !self.inner.pools.is_cluster()
    }

    /// Drops the shared connections (the one that broke and those likely broken with it), so
    /// the retry's checkout takes one from the pool, which health-checks it first.
    fn before_retry(&self, e: &redis::RedisError) {
        tracing::debug!(
            store = STORE,
            error = %e,
            "Redis connection broke under an idempotent operation; retrying once on a fresh connection"
        );
        if let Some(shared) = &self.inner.shared {
            shared.reset();
        }
    }

    /// A connection for one operation: shared, or checked out of the pool.
    async fn checkout(&self) -> Result<Conn> {
        let inner = &*self.inner;
        let mut conn = match &inner.shared {
            // Boxed: a pool checkout's future (deadpool's, with its health check) is kilobytes,
            // which the shared handles' operations would otherwise carry unused. Checking out
            // per call, this box is the one allocation of that size, as the whole operation's
            // box was before.
            None => Box::pin(inner.pools.get()).await.map_err(Failure::from)?,
            Some(shared) => shared.get(&inner.pools).await.map_err(Failure::from)?,
        };
        // A load first: a swap on every operation would write the flag's cache line from
        // both cores all the time.
        if !inner.policy_checked.load(Ordering::Relaxed)
            && !inner.policy_checked.swap(true, Ordering::Relaxed)
        {
            // Boxed, as a path taken once: its command's future would otherwise be part of
            // every operation's.
            Box::pin(self.check_eviction_policy(&mut conn)).await;
        }
        Ok(conn)
    }

    /// Reads the server's `maxmemory-policy` and warns unless it is `noeviction`; runs once,
    /// on the store's first connection, since the store is built without I/O.
    ///
    /// Why any other policy: every key the store writes carries an expiry, so `volatile-*`
    /// policies may evict them just as `allkeys-*` do. An evicted session only signs its user
    /// out early, but an evicted owner index makes `delete_by_owner` (sign out everywhere)
    /// miss that owner's live sessions without an error.
    async fn check_eviction_policy(&self, conn: &mut Conn) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let reply: redis::RedisResult<HashMap<String, String>> =
            conn.query_routed(&cmd, &self.inner.prefix).await;
        match reply {
            Ok(config) => match config.get("maxmemory-policy") {
                Some(policy) if policy == "noeviction" => {
                    tracing::debug!(store = STORE, policy, "Redis maxmemory-policy checked");
                }
                Some(policy) => tracing::warn!(
                    store = STORE,
                    policy,
                    "Redis maxmemory-policy is {policy}: under memory pressure Redis may evict \
                     an owner index while its sessions live on, and delete_by_owner would then \
                     miss them silently; set maxmemory-policy to noeviction"
                ),
                None => tracing::info!(
                    store = STORE,
                    "Redis did not report its maxmemory-policy; make sure it is noeviction"
                ),
            },
            // The connection is in trouble, not the check: the next connection tries again.
            Err(e) if e.is_io_error() || e.is_timeout() => {
                self.inner.policy_checked.store(false, Ordering::Relaxed);
            }
            // Managed services often rename or forbid CONFIG.
            Err(error) => tracing::info!(
                store = STORE,
                %error,
                "could not read Redis's maxmemory-policy; make sure it is noeviction"
            ),
        }
    }

    /// Drops the shared connections after a failure, so the next operations get fresh ones
    /// from the pool. (Pooled connections need nothing: the pool checks them on checkout.)
    fn after<T>(&self, result: &Result<T>) {
        if let (Some(shared), Err(Error::Unavailable { .. })) = (&self.inner.shared, result) {
            shared.reset();
        }
    }

    /// Fails `work` with [`Error::Unavailable`] when it outlasts the command timeout. Takes
    /// `work` pinned where the caller built it: this future then holds a pointer to it, not
    /// a second copy.
    async fn timed<T>(&self, work: Pin<&mut impl Future<Output = Result<T>>>) -> Result<T> {
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
    /// twice while Redis resizes its table). The timeout applies to each batch, not the walk;
    /// a batch whose connection broke is retried once, as in [`run`](Self::run).
    async fn scan(&self) -> Result<HashSet<SessionKey>> {
        let inner = &*self.inner;
        // Checked out by the first step, inside its timeout, and kept for the next steps.
        let mut conn = None;
        let mut found = HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&inner.scan_pattern)
                .arg("COUNT")
                .arg(inner.scan_count);
            // A `SCAN` cursor is not tied to a connection, so a broken step is asked again of
            // a fresh one. The broken one goes back first: held through the next checkout, it
            // would keep a pool of one waiting on itself.
            let step = pin!(async {
                let mut held = match conn.take() {
                    Some(held) => held,
                    None => self.checkout().await?,
                };
                let reply = match held.query_routed(&cmd, &inner.prefix).await {
                    Err(e) if self.may_retry(&e) => {
                        self.before_retry(&e);
                        drop(held);
                        held = self.checkout().await?;
                        held.query_routed(&cmd, &inner.prefix).await
                    }
                    other => other,
                };
                conn = Some(held);
                reply.map_err(|e| Failure::from(e).into())
            });
            let result = self.timed(step).await;
            self.after(&result);
            let (next, keys): (u64, Vec<Vec<u8>>) = result?;
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

/// Whether an operation may be sent again after its connection broke under it, when the
/// caller cannot know whether the server ran it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Retry {
    /// Idempotent: running it twice leaves what running it once leaves (a `GET`, a `DEL`, a
    /// `touch` to the same deadline), so it is sent once more on a fresh connection. Also
    /// `create`, whose retry tells its own lost attempt from another record (see there).
    Once,
    /// Conditional writes (`save`, `rotate`): the first attempt may have been
    /// applied with only its reply lost, and a second would then fail against the first
    /// (`Conflict`, `NotFound`), or make the caller apply its change twice.
    /// The caller gets `Unavailable` and must not assume the write was not made.
    Never,
}

/// The `PXAT` for a deadline: one millisecond early (see the module docs), and at least 1,
/// since Redis refuses non-positive times (such a record is long expired anyway).
fn pxat(expires_at: Timestamp) -> i64 {
    expires_at.unix_millis().saturating_sub(1).max(1)
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
    /// Retried once after a broken connection. A retry that finds the key taken reads it: if
    /// it holds exactly the bytes this call wrote, the lost attempt made the session and the
    /// create succeeded; anything else is `AlreadyExists`. (Bytes equal to ours under a
    /// random 256-bit key can only come from this record; the value carries its creation
    /// time, deadline and data.)
    async fn create(&self, record: &Record) -> Result<()> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        let value = &format::encode(record, record.version)?;
        let key = &self.key(&record.key);
        let at = pxat(record.expires_at);
        let owned = record
            .owner
            .as_ref()
            .map(|owner| (self.owner_key(owner), record.key.to_hex()));
        let owned = &owned;
        let score = record.expires_at.unix_millis();
        let attempts = &AtomicU8::new(0);
        let created = self
            .run(Retry::Once, |mut conn| async move {
                let retry = attempts.fetch_add(1, Ordering::Relaxed) > 0;
                let created = match owned {
                    // No owner, no index: a plain `SET NX` is the whole operation.
                    None => {
                        let reply: Option<String> = redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("NX")
                            .arg("PXAT")
                            .arg(at)
                            .query_async(&mut conn)
                            .await?;
                        reply.is_some()
                    }
                    Some((zset, member)) => {
                        let reply: i64 = self
                            .inner
                            .scripts
                            .create
                            .key(key)
                            .key(zset)
                            .arg(value)
                            .arg(at)
                            .arg(score)
                            .arg(member)
                            .invoke_async(&mut conn)
                            .await?;
                        reply == 1
                    }
                };
                if created || !retry {
                    return Ok(created);
                }
                let stored: Option<Vec<u8>> = conn.get(key).await?;
                Ok(stored.as_deref() == Some(value.as_slice()))
            })
            .await?;
        if created {
            Ok(())
        } else {
            Err(Error::AlreadyExists)
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let redis_key = &self.key(key);
        let value: Option<Vec<u8>> = self
            .run(
                Retry::Once,
                |mut conn| async move { conn.get(redis_key).await },
            )
            .await?;
        match value {
            None => Ok(None),
            Some(value) => format::decode(*key, value).map(Some),
        }
    }

    /// Never retried after a broken connection: the lost attempt may have been applied, so
    /// the caller gets `Unavailable` and must not assume nothing was written.
    async fn save(&self, record: &Record) -> Result<u64> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        let version = record.version.checked_add(1).ok_or_else(|| {
            Error::backend(STORE, "the session version cannot be bumped past u64::MAX")
        })?;
        let value = &format::encode(record, version)?;
        let key = &self.key(&record.key);
        let zset = &record.owner.as_deref().map(|o| self.owner_key(o));
        let reply: i64 = self
            .run(Retry::Never, |mut conn| async move {
                let inner = &*self.inner;
                let mut call = inner.scripts.save.key(key);
                if let Some(zset) = zset {
                    call.key(zset);
                }
                call.arg(&record.version.to_be_bytes()[..])
                    .arg(value)
                    .arg(pxat(record.expires_at))
                    .arg(record.expires_at.unix_millis())
                    .arg(&inner.prefix)
                    .arg(record.key.to_hex());
                call.invoke_async(&mut conn).await
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

    /// Retried once after a broken connection; if the first attempt had deleted the record
    /// and only its reply was lost, the retry finds nothing and returns `false`.
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        // The owner index is not touched: a member whose record is gone is dropped when the
        // index is next read, or when the index expires with its last member.
        let redis_key = &self.key(key);
        let removed: u64 = self
            .run(
                Retry::Once,
                |mut conn| async move { conn.del(redis_key).await },
            )
            .await?;
        Ok(removed > 0)
    }

    /// Retried once after a broken connection, with the count caveat of `delete`.
    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let redis_keys = &keys.iter().map(|k| self.key(k)).collect::<Vec<_>>();
        self.run(
            Retry::Once,
            |mut conn| async move { conn.del(redis_keys).await },
        )
        .await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let redis_key = &self.key(key);
        self.run(Retry::Once, |mut conn| async move {
            conn.exists(redis_key).await
        })
        .await
    }

    /// Never retried after a broken connection: the lost attempt may have been applied, so
    /// the caller gets `Unavailable` and must not assume nothing was written.
    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let (old_key, new_key) = (&self.key(old), &self.key(new));
        let reply: i64 = self
            .run(Retry::Never, |mut conn| async move {
                let inner = &*self.inner;
                inner
                    .scripts
                    .rotate
                    .key(old_key)
                    .key(new_key)
                    .arg(&inner.prefix)
                    .arg(old.to_hex())
                    .arg(new.to_hex())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        status(reply)
    }

    /// Retried once after a broken connection: a second touch to the same deadline changes
    /// nothing more.
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let redis_key = &self.key(key);
        let reply: i64 = self
            .run(Retry::Once, |mut conn| async move {
                let inner = &*self.inner;
                inner
                    .scripts
                    .touch
                    .key(redis_key)
                    .arg(pxat(expires_at))
                    .arg(expires_at.unix_millis())
                    .arg(&expires_at.unix_millis().to_be_bytes()[..])
                    .arg(&inner.prefix)
                    .arg(key.to_hex())
                    .invoke_async(&mut conn)
                    .await
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

    /// In batches of [`RedisStoreBuilder::owner_batch`] index members, one script call each
    /// (see `scripts.rs`), deduplicated; a batch whose connection broke is retried once (a
    /// batch only drops dead members from the index).
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let zset = &self.owner_key(owner);
        let mut seen = HashSet::new();
        let mut records = Vec::new();
        let mut cursor = String::from("0");
        loop {
            let at = &cursor;
            let reply: Vec<Vec<u8>> = self
                .run(Retry::Once, |mut conn| async move {
                    let inner = &*self.inner;
                    inner
                        .scripts
                        .list_by_owner
                        .key(zset)
                        .arg(&inner.prefix)
                        .arg(owner)
                        .arg(at)
                        .arg(inner.owner_batch)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            let mut reply = reply.into_iter();
            let next = reply
                .next()
                .and_then(|c| String::from_utf8(c).ok())
                .ok_or_else(|| Error::backend(STORE, "an owner listing step returned no cursor"))?;
            while let (Some(member), Some(value)) = (reply.next(), reply.next()) {
                let key = std::str::from_utf8(&member)
                    .ok()
                    .and_then(SessionKey::from_hex)
                    .ok_or_else(|| Error::corrupt("an owner index member is not a session key"))?;
                if seen.insert(key) {
                    records.push(format::decode(key, value)?);
                }
            }
            if next == "0" {
                return Ok(records);
            }
            cursor = next;
        }
    }

    /// In batches of [`RedisStoreBuilder::owner_batch`] index members, one script call each,
    /// until the index is empty; sessions added to it meanwhile are deleted too. An error may
    /// come after some batches were deleted: calling again finishes the job. A batch whose
    /// connection broke is retried once; if the lost attempt had deleted, the count misses
    /// those sessions.
    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let zset = &self.owner_key(owner);
        let mut total = 0;
        loop {
            let (deleted, left): (u64, u64) = self
                .run(Retry::Once, |mut conn| async move {
                    let inner = &*self.inner;
                    inner
                        .scripts
                        .delete_by_owner
                        .key(zset)
                        .arg(&inner.prefix)
                        .arg(owner)
                        .arg(inner.owner_batch)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            total += deleted;
            if left == 0 {
                return Ok(total);
            }
        }
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

#[cfg(test)]
mod tests {
    use session_core::SessionId;

    use super::*;

    /// Every call allocates its operation's future (inside the `async_trait` box) and
    /// initialises it, so its size is paid per call: the cold paths of a checkout (the fill
    /// of the shared handles, a pool checkout with its health check, the one-time eviction
    /// policy check) are boxed where they are taken, and the timeout holds the work by
    /// pointer. Unboxed, the checkout's future was 6.8 KB and a load's work 7.1 KB: a large
    /// allocation (glibc consolidates its fast bins for every request of 1 KB or more) and a
    /// 7 KB copy per call. Now a load's whole operation is 704 bytes.
    #[test]
    fn an_operation_future_stays_small() {
        for multiplexed in [0, 2] {
            let store = RedisStore::builder()
                .url("redis://127.0.0.1:1")
                .multiplexed(multiplexed)
                .build()
                .expect("a store builds without connecting");
            let key = &store.key(&SessionId::generate().key());
            let load = store.run(Retry::Once, |mut conn| async move {
                conn.get::<_, Option<Vec<u8>>>(key).await
            });
            let size = std::mem::size_of_val(&load);
            assert!(
                size <= 896,
                "a load's operation future is {size} bytes with multiplexed({multiplexed})"
            );
            let size = std::mem::size_of_val(&store.checkout());
            assert!(
                size <= 256,
                "a checkout's future is {size} bytes with multiplexed({multiplexed})"
            );
        }
    }
}
