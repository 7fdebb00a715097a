#![doc = include_str!("../README.md")]

mod builder;
mod conn;
mod error;
mod format;
mod scripts;
mod store;
#[cfg(feature = "tls")]
mod tls;

pub use builder::{
    DEFAULT_MAX_DATA_LEN, DEFAULT_MULTIPLEXED, DEFAULT_OWNER_BATCH, DEFAULT_PREFIX,
    DEFAULT_SCAN_COUNT, RedisStoreBuilder,
};
pub use deadpool_redis;
pub use deadpool_redis::redis;
pub use store::RedisStore;

// Stores are shared across tasks and threads; this fails to compile if that ever breaks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<RedisStore>();
    send_sync::<RedisStoreBuilder>();
};
