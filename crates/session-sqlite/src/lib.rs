#![doc = include_str!("../README.md")]

mod builder;
mod error;
mod format;
mod sql;
mod store;

pub use builder::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CLEANUP_BATCH, DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_DATA_LEN,
    DEFAULT_READ_CONNECTIONS, DEFAULT_SYNCHRONOUS, DEFAULT_TABLE, DEFAULT_WRITE_CONNECTIONS,
    SqliteStoreBuilder,
};
pub use sqlx;
pub use sqlx::sqlite::SqliteSynchronous;
pub use store::SqliteStore;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<SqliteStore>();
    send_sync::<SqliteStoreBuilder>();
};
