#![doc = include_str!("../../../README.md")]

pub use session_core::*;

/// The in-memory store (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use session_memory::*;
}

/// One checksummed file per session in a local directory (feature `files`).
#[cfg(feature = "files")]
pub mod files {
    pub use session_files::*;
}

/// RAM speed with a lazily flushed modification log on disk (feature `hybrid`).
#[cfg(feature = "hybrid")]
pub mod hybrid {
    pub use session_hybrid::*;
}

/// The Redis store (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use session_redis::*;
}

/// The PostgreSQL store (feature `postgres`).
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use session_postgres::*;
}
