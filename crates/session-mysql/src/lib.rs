#![doc = include_str!("../README.md")]

mod builder;
mod error;
mod format;
mod sql;
mod store;

pub use builder::{
    DEFAULT_CLEANUP_BATCH, DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_DATA_LEN, DEFAULT_TABLE,
    MySqlStoreBuilder,
};
pub use sqlx;
pub use store::MySqlStore;

// Stores are shared across tasks and threads; this fails to compile if that ever breaks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<MySqlStore>();
    send_sync::<MySqlStoreBuilder>();
};
