#![doc = include_str!("../README.md")]

mod apply;
mod builder;
mod error;
mod format;
mod fsio;
mod health;
mod journal;
mod replay;
mod store;

pub use builder::{
    DEFAULT_CLEANUP_INTERVAL, DEFAULT_COMPACT_FACTOR, DEFAULT_COMPACT_LOG_BYTES,
    DEFAULT_COMPACT_MIN_BYTES, DEFAULT_FLUSH_BYTES, DEFAULT_MAX_UNFLUSHED_BYTES,
    HybridStoreBuilder,
};
pub use health::{BacklogFull, DiskError, Health};
pub use journal::{DEFAULT_FLUSH_INTERVAL, Durability};
pub use replay::ReplayReport;
// With `max_data_len` it bounds the size of every entry, so replay never reads a length from
// disk it cannot check first.
pub use session_core::MAX_OWNER_LEN;
pub use session_memory::{self, StoreFull};
pub use store::HybridStore;

// Stores are shared across tasks and threads; this fails to compile if that ever breaks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<HybridStore>();
    send_sync::<HybridStoreBuilder>();
    send_sync::<ReplayReport>();
    send_sync::<Health>();
    send_sync::<BacklogFull>();
    send_sync::<DiskError>();
};
