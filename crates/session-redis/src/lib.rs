#![doc = include_str!("../README.md")]

mod codec;
mod conn;
mod scripts;
mod store;

pub use deadpool_redis;
pub use deadpool_redis::redis;
pub use store::{
    DEFAULT_MAX_DATA_LEN, DEFAULT_MULTIPLEXED, DEFAULT_PREFIX, DEFAULT_SCAN_COUNT, RedisStore,
    RedisStoreBuilder,
};
