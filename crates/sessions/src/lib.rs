//! One dependency for server-side sessions: the contracts of [`session_core`] plus the
//! backends you enable by Cargo feature.
//!
//! | feature | module | store |
//! |---|---|---|
//! | `memory` (default) | [`memory`] | sharded RAM, background cleanup |
//! | `axum` | `layer` | the tower `SessionLayer` and the axum `Session` extractor |
//! | `redis` | `redis` | Redis through a deadpool pool, server-side expiry, Lua scripts |
//!
//! ```
//! use std::time::Duration;
//! use sessions::{Record, SessionId, SessionStore, Timestamp};
//! use sessions::memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessions::Result<()> {
//! let store = MemoryStore::new();
//! let id = SessionId::generate(); // goes in the cookie; printing it shows only `abcd…`
//! let record = Record::new(id.key(), &b"hello"[..], Timestamp::now() + Duration::from_secs(60));
//! store.create(&record).await?;
//! let loaded = store.load(&id.key()).await?;
//! assert_eq!(loaded.map(|r| r.data), Some(record.data));
//! # Ok(())
//! # }
//! ```

pub use session_core::*;

/// The in-memory store (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use session_memory::*;
}

/// The Redis store (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use session_redis::*;
}
