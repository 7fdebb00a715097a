//! One connection type over a single-server pool or (feature `cluster`) a cluster pool, so
//! the store's operations are written once.

use std::fmt;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
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

    pub(crate) async fn get(&self) -> Result<Conn, PoolError> {
        match self {
            Self::Single(pool) => pool.get().await.map(Conn::Single),
            #[cfg(feature = "cluster")]
            Self::Cluster(pool) => pool.get().await.map(Conn::Cluster),
        }
    }
}

/// A pooled connection of either kind.
pub(crate) enum Conn {
    Single(Connection),
    #[cfg(feature = "cluster")]
    Cluster(deadpool_redis::cluster::Connection),
}

impl Conn {
    /// One `SCAN` step. `SCAN` names no key, so a cluster connection would send it to any
    /// node; it goes to the master of the slot of `prefix`'s hash tag, where all of the
    /// store's keys are.
    #[cfg_attr(
        not(feature = "cluster"),
        expect(unused_variables, reason = "cluster only")
    )]
    pub(crate) async fn scan_step(
        &mut self,
        cmd: &Cmd,
        prefix: &str,
    ) -> RedisResult<(u64, Vec<Vec<u8>>)> {
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => {
                use cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                use deadpool_redis::redis::{self, cluster_routing};
                let route = Route::new(slot(prefix.as_bytes()), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let reply = conn.route_command(cmd, routing).await?;
                redis::from_owned_redis_value(reply)
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => conn.req_packed_command(cmd),
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
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(conn) => conn.get_db(),
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
