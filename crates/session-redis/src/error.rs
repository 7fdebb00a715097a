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

/// A Redis or pool failure on its way to the session layer's [`Error`]; `?` maps it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server or the connection failed.
    Redis(RedisError),
    /// No connection could be checked out of the pool.
    Pool(PoolError),
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Self::Redis(e)
    }
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Redis(e) | Failure::Pool(PoolError::Backend(e)) if is_unavailable(&e) => {
                Error::unavailable(STORE, e)
            }
            Failure::Redis(e) | Failure::Pool(PoolError::Backend(e)) => Error::backend(STORE, e),
            Failure::Pool(e @ (PoolError::Timeout(_) | PoolError::Closed)) => {
                Error::unavailable(STORE, e)
            }
            Failure::Pool(other) => Error::backend(STORE, other),
        }
    }
}
