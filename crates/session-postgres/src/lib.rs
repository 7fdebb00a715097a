#![doc = include_str!("../README.md")]

mod error;
mod format;
mod sql;
mod store;

pub use sqlx;
pub use store::{
    DEFAULT_CLEANUP_BATCH, DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_DATA_LEN, DEFAULT_SCHEMA,
    DEFAULT_TABLE, PostgresStore, PostgresStoreBuilder,
};
