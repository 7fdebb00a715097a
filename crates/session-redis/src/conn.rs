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

    /// A clone of a pooled connection's multiplexed handle. The pooled object goes straight
    /// back to the pool (after the pool's health check on checkout); the handle shares its
    /// socket, which redis-rs multiplexes safely across tasks.
    async fn share(&self) -> Result<Conn, PoolError> {
        match self {
            Self::Single(pool) => {
                let pooled = pool.get().await?;
                Ok(Conn::Shared(MultiplexedConnection::clone(&pooled)))
            }
            #[cfg(feature = "cluster")]
            Self::Cluster(pool) => {
                let pooled = pool.get().await?;
                Ok(Conn::SharedCluster(
                    deadpool_redis::cluster::ClusterConnection::clone(&pooled),
                ))
            }
        }
    }
}

/// Multiplexed handles shared by every operation, taken from the pool once, and again only
/// after one of them failed.
pub(crate) struct Shared {
    slots: Box<[Mutex<Option<Conn>>]>,
    next: AtomicUsize,
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
        }
    }

    /// A handle from the next slot (round robin), filling the slot from the pool if empty.
    pub(crate) async fn get(&self, pools: &Pools) -> Result<Conn, PoolError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let cached = self.lock(slot).as_ref().and_then(Conn::shared_clone);
        if let Some(conn) = cached {
            return Ok(conn);
        }
        let conn = pools.share().await?;
        *self.lock(slot) = conn.shared_clone();
        Ok(conn)
    }

    /// Forgets every handle after one failed, so the next uses take fresh ones from the pool
    /// (whose checkout health check weeds out dead connections). Not only the failed one:
    /// slots may hold clones of one pooled connection, and a failure usually means the server
    /// dropped or lost them all.
    pub(crate) fn reset(&self) {
        for slot in 0..self.slots.len() {
            *self.lock(slot) = None;
        }
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
    fn shared_clone(&self) -> Option<Self> {
        match self {
            Self::Shared(conn) => Some(Self::Shared(conn.clone())),
            #[cfg(feature = "cluster")]
            Self::SharedCluster(conn) => Some(Self::SharedCluster(conn.clone())),
            _ => None,
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
