//! How Redis and pool failures map onto the store contract's error categories.

use deadpool_redis::PoolError;
use deadpool_redis::redis::{self, RedisError};
use session_core::Error;

/// The store's name in errors.
pub(crate) const STORE: &str = "redis";

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

pub(crate) fn redis_error(e: RedisError) -> Error {
    if is_unavailable(&e) {
        Error::unavailable(STORE, e)
    } else {
        Error::backend(STORE, e)
    }
}

pub(crate) fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => redis_error(e),
        PoolError::Timeout(_) | PoolError::Closed => Error::unavailable(STORE, e),
        other => Error::backend(STORE, other),
    }
}
