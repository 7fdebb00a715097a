//! Configuration of a [`RedisStore`](crate::RedisStore): where to connect, the key prefix, the
//! limits and the timeouts, and the `DEFAULT_*` values.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use deadpool_redis::redis::IntoConnectionInfo;
use deadpool_redis::{Manager, Pool, PoolConfig, Runtime, Timeouts};
use session_core::{Error, Result};

use crate::conn::{Pools, Shared};
use crate::scripts::Scripts;
use crate::store::{Inner, OWNER_NAMESPACE, RedisStore};

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

/// Default number of owner index members one script call of `list_by_owner` or
/// `delete_by_owner` handles (see [`RedisStoreBuilder::owner_batch`]).
pub const DEFAULT_OWNER_BATCH: usize = 256;

/// Multiplexed connections shared by all operations by default (see
/// [`RedisStoreBuilder::multiplexed`]).
pub const DEFAULT_MULTIPLEXED: usize = 2;

const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_PREFIX_LEN: usize = 256;

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
///
/// There is no `cleanup_interval`, unlike the stores that sweep: Redis drops every session at
/// its deadline by itself (`PXAT`), so the store starts no background task, needs no runtime
/// for one, and its `delete_expired` is a no-op that returns 0.
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
    owner_batch: usize,
    multiplexed: usize,
    #[cfg(feature = "tls")]
    tls: crate::tls::TlsSettings,
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
        let mut debug = f.debug_struct("RedisStoreBuilder");
        debug
            .field("source", &source)
            .field("prefix", &self.prefix)
            .field("max_data_len", &self.max_data_len)
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("scan_count", &self.scan_count)
            .field("owner_batch", &self.owner_batch)
            .field("multiplexed", &self.multiplexed);
        #[cfg(feature = "tls")]
        debug
            .field("tls_root_certificates", &self.tls.roots.is_some())
            .field(
                "tls_client_certificate",
                &self.tls.client.as_ref().map(|_| "(hidden)"),
            );
        debug.finish()
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
            owner_batch: DEFAULT_OWNER_BATCH,
            multiplexed: DEFAULT_MULTIPLEXED,
            #[cfg(feature = "tls")]
            tls: crate::tls::TlsSettings::default(),
        }
    }
}

impl RedisStoreBuilder {
    /// Connect to this server (`redis://[user:password@]host:port[/db]`, `rediss://`, ...).
    /// The store builds its own pool, with the size and timeouts set on this builder.
    ///
    /// `rediss://` (TLS) needs the `tls` feature; the server's certificate is checked against
    /// the system's roots, or those given to `tls_root_certificates` (also feature `tls`), and
    /// must name the URL's host.
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
    /// (`{session:}<hex>`), so all of one store's keys live in one slot: `rotate` between
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
    ///
    /// 1 to 256 bytes, not containing `owner:`: the owner indexes live under
    /// `<prefix>owner:`, and a prefix containing it (`Powner:` next to `P`) would put its
    /// sessions under another store's index keys. [`build`](Self::build) refuses one.
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

    /// How many members of an owner's index one script call of `list_by_owner` or
    /// `delete_by_owner` handles (default [`DEFAULT_OWNER_BATCH`]); the call repeats until the
    /// index is done.
    ///
    /// Redis runs one script at a time for all its clients, so this bounds how long one
    /// owner's listing or sign-out-everywhere can hold everyone else up, however many
    /// sessions the owner has; a larger batch means fewer round trips for large owners.
    pub fn owner_batch(mut self, members: usize) -> Self {
        self.owner_batch = members.max(1);
        self
    }

    /// Shares `connections` multiplexed connections among all operations instead of checking
    /// a connection out of the pool for each one (default [`DEFAULT_MULTIPLEXED`]; 0 checks a
    /// connection out per operation). The default because it is one round trip per operation
    /// where a checkout is two (the project's BENCHMARKS.md measures both modes).
    ///
    /// Every redis-rs connection is multiplexed: many tasks can send on one at once, and their
    /// commands are pipelined on its socket. Checking out per operation costs a round trip of
    /// its own (deadpool-redis sends `PING` to health-check every checkout) and caps the
    /// requests in flight at the pool size; shared connections cost neither, and serve more
    /// concurrent requests per connection. The pool still opens every connection (and its
    /// wait timeout still applies then), and the pool's size no longer limits concurrency.
    ///
    /// The store uses exactly `connections` sockets, or the pool's size if that is smaller:
    /// the first operation takes all of them from the pool at once, each a distinct pooled
    /// connection, and operations use them in turn. If one cannot be had, that operation
    /// fails with [`Error::Unavailable`] and the next one tries again.
    ///
    /// The price: no health check per operation. A connection the server closed while it was
    /// idle (a `CLIENT KILL`, a restart, an idle timeout) is found broken by the next
    /// operation that uses it; every shared connection is then dropped, the next operations
    /// take fresh ones from the pool, and that operation is retried once if it is idempotent
    /// or a `create`, or fails with [`Error::Unavailable`] if it is a `save` or `rotate` (see
    /// the crate docs on dropped connections).
    pub fn multiplexed(mut self, connections: usize) -> Self {
        self.multiplexed = connections;
        self
    }

    /// Trust these certificate authorities (PEM, one certificate or more) for a `rediss://`
    /// URL instead of the system's roots (feature `tls`): for a server whose certificate a
    /// private CA signed.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.roots = Some(pem.into());
        self
    }

    /// Present this certificate chain and private key (both PEM) to a server that asks for
    /// a client certificate (`tls-auth-clients yes`) (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some(deadpool_redis::redis::ClientTlsConfig {
            client_cert: certificate_pem.into(),
            client_key: key_pem.into(),
        });
        self
    }

    /// Builds the store. Connections are opened on first use.
    ///
    /// # Errors
    /// [`Error::Config`] when no URL or pool was given, the URL does not parse, the prefix
    /// is empty, longer than 256 bytes or contains `owner:`, a `rediss://` URL is given
    /// without the `tls` feature, or TLS certificates are given with anything but a
    /// `rediss://` URL or do not parse.
    pub fn build(self) -> Result<RedisStore> {
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX_LEN {
            return Err(Error::Config(
                "the Redis key prefix must be 1 to 256 bytes".into(),
            ));
        }
        // Two stores' keys can only meet when one prefix is another followed by `owner:`
        // (`P` and `Powner:...`): session keys end in 64 hex digits, owner indexes in
        // `owner:<owner>`. Refusing the marker in every prefix rules that out for good.
        if self.prefix.contains(OWNER_NAMESPACE) {
            return Err(Error::Config(
                "the Redis key prefix must not contain `owner:`: owner indexes live under \
                 `<prefix>owner:`, so such a prefix could share keys with another store's"
                    .into(),
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
        #[cfg(feature = "tls")]
        if self.tls.is_set() && !matches!(self.source, Some(Source::Url(_))) {
            return Err(Error::Config(
                "TLS certificates apply to a single server's rediss:// URL; give a pool of your \
                 own (or cluster URLs, which trust the system's roots) its TLS settings yourself"
                    .into(),
            ));
        }
        let pools = match self.source {
            None => return Err(Error::Config("RedisStore needs a URL or a pool".into())),
            Some(Source::Pool(pool)) => Pools::Single(pool),
            Some(Source::Url(url)) => {
                refuse_tls_without_feature(&url)?;
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| invalid(&e))?;
                #[cfg(feature = "tls")]
                let info = self.tls.apply(info)?;
                let manager = Manager::new(info).map_err(|e| invalid(&e))?;
                Pools::Single(
                    Pool::builder(manager)
                        .config(pool_config)
                        .runtime(Runtime::Tokio1)
                        .build()
                        .map_err(|e| invalid(&e))?,
                )
            }
            #[cfg(feature = "cluster")]
            Some(Source::ClusterUrls(urls)) => {
                for url in &urls {
                    refuse_tls_without_feature(url)?;
                    #[cfg(feature = "tls")]
                    if is_tls_url(url) {
                        crate::tls::ensure_crypto_provider();
                    }
                }
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
        // Never more slots than the pool holds: a fill takes every slot's connection at once.
        let shared =
            (self.multiplexed > 0).then(|| Shared::new(self.multiplexed.min(pools.max_size())));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                pools,
                prefix,
                scan_pattern,
                max_data_len: self.max_data_len,
                command_timeout: self.command_timeout,
                scan_count: self.scan_count,
                owner_batch: self.owner_batch,
                shared,
                scripts: Scripts::new(),
                policy_checked: AtomicBool::new(false),
            }),
        })
    }
}

/// Whether `url` asks for TLS (`rediss://`, or `valkeys://`, which redis-rs also reads).
fn is_tls_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| matches!(scheme, "rediss" | "valkeys"))
}

/// A TLS URL without the `tls` feature would fail with redis-rs's "feature is not enabled";
/// name the feature to turn on instead.
fn refuse_tls_without_feature(url: &str) -> Result<()> {
    if is_tls_url(url) && !cfg!(feature = "tls") {
        return Err(Error::Config(
            "a rediss:// URL needs TLS: enable the `tls` feature of session-redis \
             (`redis-tls` of sessions)"
                .into(),
        ));
    }
    Ok(())
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
