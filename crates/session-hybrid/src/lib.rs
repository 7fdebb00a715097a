#![doc = include_str!("../README.md")]

mod apply;
mod config;
mod format;
mod fsio;
mod health;
mod journal;
mod replay;
mod store;

pub use config::{
    DEFAULT_COMPACT_FACTOR, DEFAULT_COMPACT_LOG_BYTES, DEFAULT_COMPACT_MIN_BYTES,
    DEFAULT_FLUSH_BYTES, DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_UNFLUSHED_BYTES, Durability,
    HybridStoreBuilder, MAX_OWNER_LEN, ReplayReport,
};
pub use health::{BacklogFull, DiskError, Health};
pub use session_memory::{self, StoreFull};
pub use store::HybridStore;

#[cfg(test)]
mod send_sync {
    fn check<T: Send + Sync>() {}
    #[test]
    fn public_types_are_send_and_sync() {
        check::<super::HybridStore>();
        check::<super::HybridStoreBuilder>();
        check::<super::ReplayReport>();
        check::<super::Health>();
        check::<super::BacklogFull>();
    }
}
