#![doc = include_str!("../README.md")]

mod builder;
mod change;
mod clock;
mod limit;
mod owners;
mod restore;
mod shard;
mod shared;
mod store;

pub use builder::{DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_DATA_LEN, MemoryStoreBuilder};
pub use change::{Change, ChangeObserver};
pub use limit::StoreFull;
pub use store::MemoryStore;

// Stores are shared across tasks and threads; this fails to compile if that ever breaks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<MemoryStore>();
    send_sync::<MemoryStoreBuilder>();
    send_sync::<StoreFull>();
};
