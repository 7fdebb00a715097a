#![doc = include_str!("../README.md")]

mod store;

pub use store::{Change, ChangeObserver, MemoryStore, MemoryStoreBuilder, DEFAULT_MAX_DATA_LEN};
