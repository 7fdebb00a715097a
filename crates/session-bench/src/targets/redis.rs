//! `session_redis::RedisStore` on the Redis at `REDIS_URL`, and its limit: bare redis-rs on an
//! identically configured deadpool pool, sending the one plain command each operation needs
//! (`SET NX PXAT`, `GET`, `SET XX PXAT`, `DEL`) with the same bytes under the same key names.
//!
//! Each instance writes under its own random prefix and deletes it (`SCAN` + `DEL`) when its
//! last handle is dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use session_core::{BoxError, SessionId, Timestamp};
use session_redis::RedisStore;
use session_redis::deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use session_redis::redis::{self, AsyncCommands};

use crate::keys::session_key;
use crate::runner::instance;
use crate::session::TTL;
use crate::target::{BenchTarget, OpResult, Outcome, Role, StoreTarget, Target};

pub(super) fn targets() -> [Target; 2] {
    [
        Target {
            name: "redis",
            short: "redis",
            role: Role::Ours,
            in_process: false,
            about: "session_redis::RedisStore on REDIS_URL (deadpool pool of 4 × CPUs connections), sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-store"));
                    let store = RedisStore::builder()
                        .pool(pool(&url)?)
                        .prefix(&cleanup.prefix)
                        .build()?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(Ours {
                        inner,
                        _cleanup: cleanup,
                    })))
                })
            },
        },
        Target {
            name: "redis-bare",
            short: "bare redis",
            role: Role::Limit,
            in_process: false,
            about: "bare redis-rs on the same pool configuration: SET NX PXAT / GET / SET XX PXAT / DEL of the same MessagePack bytes",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = redis_url() else {
                        return Ok(None);
                    };
                    let cleanup = Arc::new(Cleanup::new(&url, "bench-bare"));
                    Ok(Some(instance(Bare {
                        pool: pool(&url)?,
                        prefix: cleanup.prefix.clone(),
                        data: payload.encoded.clone(),
                        _cleanup: cleanup,
                    })))
                })
            },
        },
    ]
}

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

/// The pool both targets use: deadpool's default size, a wait timeout so a stuck run fails.
fn pool(url: &str) -> Result<Pool, BoxError> {
    let mut config = Config::from_url(url);
    let timeout = Some(Duration::from_secs(5));
    let pool = PoolConfig {
        timeouts: Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        },
        ..PoolConfig::default()
    };
    config.pool = Some(pool);
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

/// Deletes everything under `prefix` when dropped.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Cleanup {
    fn new(url: &str, what: &str) -> Self {
        let prefix = format!("{what}:{}:", &SessionId::generate().key().to_hex()[..12]);
        Self {
            url: url.to_owned(),
            prefix,
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

/// Our store, through the generic target, holding the cleanup guard.
#[derive(Clone)]
struct Ours {
    inner: StoreTarget,
    _cleanup: Arc<Cleanup>,
}

impl BenchTarget for Ours {
    async fn create(&mut self, i: u64) -> OpResult {
        self.inner.create(i).await
    }

    async fn load(&mut self, i: u64) -> OpResult {
        self.inner.load(i).await
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.inner.save(i).await
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        self.inner.delete(i).await
    }
}

/// The limit: one plain command per operation, no version, no owner index.
#[derive(Clone)]
struct Bare {
    pool: Pool,
    prefix: String,
    data: Bytes,
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
        let at = (Timestamp::now() + TTL).unix_millis();
        let mut conn = self.pool.get().await?;
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&self.data[..])
            .arg(mode)
            .arg("PXAT")
            .arg(at)
            .query_async(&mut conn)
            .await?;
        Ok(if reply.is_some() {
            Outcome::Done
        } else if mode == "NX" {
            Outcome::Conflict
        } else {
            Outcome::Missing
        })
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
        Ok(if value.is_some() {
            Outcome::Done
        } else {
            Outcome::Missing
        })
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
