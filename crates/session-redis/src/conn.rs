//! One connection type over a single-server pool or (feature `cluster`) a cluster pool, so
//! the store's operations are written once; and the shared multiplexed handles of
//! [`RedisStoreBuilder::multiplexed`](crate::RedisStoreBuilder::multiplexed).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};
use deadpool_redis::{Connection, Pool, PoolError};

/// Where connections come from.
pub(crate) enum Pools {
    Single(Pool),
    #[cfg(feature = "cluster")]
    Cluster(deadpool_redis::cluster::Pool),
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(pool) => f.debug_tuple("Single").field(&pool.status()).finish(),
            #[cfg(feature = "cluster")]
            Self::Cluster(pool) => f.debug_tuple("Cluster").field(&pool.status()).finish(),
        }
    }
}

impl Pools {
    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            Self::Single(_) => false,
            #[cfg(feature = "cluster")]
            Self::Cluster(_) => true,
        }
    }

    /// A connection checked out for one operation.
    pub(crate) async fn get(&self) -> Result<Conn, PoolError> {
        match self {
            Self::Single(pool) => pool.get().await.map(Conn::Single),
            #[cfg(feature = "cluster")]
            Self::Cluster(pool) => pool.get().await.map(Conn::Cluster),
        }
    }

    /// The most connections the pool holds at once.
    pub(crate) fn max_size(&self) -> usize {
        match self {
            Self::Single(pool) => pool.status().max_size,
            #[cfg(feature = "cluster")]
            Self::Cluster(pool) => pool.status().max_size,
        }
    }
}

/// Multiplexed handles shared by every operation: `N` distinct connections of the pool,
/// taken together on first use, and again together after one of them failed.
pub(crate) struct Shared {
    slots: Box<[Mutex<Option<Conn>>]>,
    next: AtomicUsize,
    /// Held while the slots are filled, so that concurrent first uses wait for one fill
    /// instead of each taking connections of its own.
    filling: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.slots.len())
            .finish()
    }
}

impl Shared {
    pub(crate) fn new(connections: usize) -> Self {
        Self {
            slots: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            filling: tokio::sync::Mutex::new(()),
        }
    }

    /// A handle from the next slot (round robin); when that slot is empty, first fills every
    /// empty slot (see [`fill`](Self::fill)).
    pub(crate) async fn get(&self, pools: &Pools) -> Result<Conn, PoolError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        if let Some(conn) = self.cached(slot) {
            return Ok(conn);
        }
        // Boxed: the fill's pool checkouts make its future kilobytes, which every operation's
        // future would otherwise carry (and allocate and copy) for a path taken once.
        Box::pin(self.get_filled(slot, pools)).await
    }

    /// The handle in `slot` after filling the empty slots, unless another task filled them
    /// while this one waited for the fill lock.
    async fn get_filled(&self, slot: usize, pools: &Pools) -> Result<Conn, PoolError> {
        let _filling = self.filling.lock().await;
        // Another task may have filled the slots while this one waited.
        if let Some(conn) = self.cached(slot) {
            return Ok(conn);
        }
        self.fill(pools).await?;
        self.cached(slot).ok_or_else(|| {
            // Unreachable unless a `reset` ran between the fill and this read: a broken
            // connection, which is what the caller is told.
            PoolError::Backend(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into())
        })
    }

    /// Fills every empty slot with its own pooled connection. All of them are checked out
    /// before any goes back: a pooled connection returned before the next checkout would be
    /// handed out again, and two slots would share one socket (the store's connection count
    /// would then depend on how many tasks happened to start at once). They go back to the
    /// pool afterwards, idle, and nothing but this fill checks them out again.
    async fn fill(&self, pools: &Pools) -> Result<(), PoolError> {
        let empty: Vec<usize> = (0..self.slots.len())
            .filter(|&slot| self.lock(slot).is_none())
            .collect();
        let mut held = Vec::with_capacity(empty.len());
        for _ in &empty {
            held.push(pools.get().await?);
        }
        for (slot, pooled) in empty.into_iter().zip(&held) {
            *self.lock(slot) = Some(pooled.shared_clone());
        }
        Ok(())
    }

    /// Forgets every handle after one failed, so the next use takes fresh ones from the pool
    /// (whose checkout health check weeds out dead connections). Not only the failed one: a
    /// failure usually means the server dropped or lost them all.
    pub(crate) fn reset(&self) {
        for slot in 0..self.slots.len() {
            *self.lock(slot) = None;
        }
    }

    fn cached(&self, slot: usize) -> Option<Conn> {
        self.lock(slot).as_ref().map(Conn::shared_clone)
    }

    fn lock(&self, slot: usize) -> MutexGuard<'_, Option<Conn>> {
        self.slots[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pooled connection of either kind, or a shared multiplexed handle of either kind.
pub(crate) enum Conn {
    Single(Connection),
    Shared(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(deadpool_redis::cluster::Connection),
    #[cfg(feature = "cluster")]
    SharedCluster(deadpool_redis::cluster::ClusterConnection),
}

impl Conn {
    /// A multiplexed handle on this connection's socket, for sharing: a clone of the handle
    /// inside a pooled connection (which stays the pool's), or of a shared one.
    fn shared_clone(&self) -> Self {
        match self {
            Self::Single(pooled) => Self::Shared(MultiplexedConnection::clone(pooled)),
            Self::Shared(conn) => Self::Shared(conn.clone()),
            #[cfg(feature = "cluster")]
            Self::Cluster(pooled) => {
                Self::SharedCluster(deadpool_redis::cluster::ClusterConnection::clone(pooled))
            }
            #[cfg(feature = "cluster")]
            Self::SharedCluster(conn) => Self::SharedCluster(conn.clone()),
        }
    }

    /// Runs a command that names no key (`SCAN`, `CONFIG GET`). A cluster connection would
    /// send such a command to any node, or to all of them; it goes to the master of the slot
    /// of `prefix`'s hash tag, where all of the store's keys are.
    #[cfg_attr(
        not(feature = "cluster"),
        expect(unused_variables, reason = "cluster only")
    )]
    pub(crate) async fn query_routed<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        prefix: &str,
    ) -> RedisResult<T> {
        #[cfg(feature = "cluster")]
        let route = || {
            use deadpool_redis::redis::cluster_routing::{
                Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
            };
            let route = Route::new(slot(prefix.as_bytes()), SlotAddr::Master);
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route))
        };
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            Self::Shared(conn) => cmd.query_async(conn).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => {
                let reply = conn.route_command(cmd, route()).await?;
                deadpool_redis::redis::from_owned_redis_value(reply)
            }
            #[cfg(feature = "cluster")]
            Self::SharedCluster(conn) => {
                let reply = conn.route_command(cmd, route()).await?;
                deadpool_redis::redis::from_owned_redis_value(reply)
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Shared(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::SharedCluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Shared(conn) => conn.req_packed_commands(cmd, offset, count),
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
            #[cfg(feature = "cluster")]
            Self::SharedCluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Shared(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Self::SharedCluster(conn) => conn.get_db(),
        }
    }
}

/// The cluster slot of `key`: CRC16/XMODEM of its hash tag (or of the whole key without one),
/// modulo 16384, as Redis Cluster defines it.
#[cfg(feature = "cluster")]
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    use super::slot;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{session:}abc"), slot(b"session:"));
        // CRC16/XMODEM check value, below 16384 so it is its own slot.
        assert_eq!(slot(b"123456789"), 0x31C3);
    }
}
