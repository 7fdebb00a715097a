#![doc = include_str!("../README.md")]

mod format;
mod fsio;
mod layout;
mod store;

pub use format::MAX_OWNER_LEN;
pub use fsio::FileError;
pub use store::{
    DEFAULT_CLEANUP_INTERVAL, DEFAULT_CONCURRENCY, DEFAULT_MAX_DATA_LEN, DEFAULT_STALE_TEMP_AGE,
    FileStore, FileStoreBuilder,
};

#[cfg(test)]
mod send_sync {
    fn check<T: Send + Sync>() {}
    #[test]
    fn public_types_are_send_and_sync() {
        check::<super::FileStore>();
        check::<super::FileStoreBuilder>();
        check::<super::FileError>();
    }
}
