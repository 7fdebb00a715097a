#![doc = include_str!("../README.md")]

mod limit;
mod store;

pub use limit::StoreFull;
pub use store::{Change, ChangeObserver, DEFAULT_MAX_DATA_LEN, MemoryStore, MemoryStoreBuilder};
