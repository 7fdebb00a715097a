#![doc = include_str!("../README.md")]

mod blocking;
mod builder;
mod error;
mod format;
mod fsio;
mod layout;
mod owners;
mod peek;
mod store;
mod upkeep;

pub use builder::{
    DEFAULT_CLEANUP_INTERVAL, DEFAULT_CONCURRENCY, DEFAULT_MAX_DATA_LEN, DEFAULT_STALE_TEMP_AGE,
    FileStoreBuilder,
};
pub use error::FileError;
pub use format::MAX_OWNER_LEN;
pub use store::FileStore;

// Stores are shared across tasks and threads; this fails to compile if that ever breaks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<FileStore>();
    send_sync::<FileStoreBuilder>();
    send_sync::<FileError>();
};
