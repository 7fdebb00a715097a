#![doc = include_str!("../README.md")]

mod builder;
mod error;
mod format;
mod sql;
mod store;

pub use builder::{
    DEFAULT_CLEANUP_BATCH, DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_DATA_LEN, DEFAULT_SCHEMA,
    DEFAULT_TABLE, PostgresStoreBuilder,
};
pub use sqlx;
pub use store::PostgresStore;

// Stores are shared across tasks and threads; this fails to compile if that ever breaks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<PostgresStore>();
    send_sync::<PostgresStoreBuilder>();
};
