#![doc = include_str!("../README.md")]

mod store;

pub use store::{Change, ChangeObserver, DEFAULT_MAX_DATA_LEN, MemoryStore, MemoryStoreBuilder};
