#![doc = include_str!("../../../README.md")]

mod codec;
mod manager;

#[cfg(feature = "axum")]
pub mod layer;

pub use codec::{Codec, Json, MAX_DEPTH, MessagePack, Values};
#[cfg(feature = "axum")]
pub use layer::{
    CookieSameSite, DEFAULT_COOKIE_NAME, MissingSessionLayer, SessionLayer, SessionLayerBuilder,
    SessionService, SigningKey,
};
pub use manager::{
    CommitOutcome, DEFAULT_CONFLICT_RETRIES, DEFAULT_LIFETIME, MAX_INCOMING_IDS, Session,
    SessionEvent, SessionListener, SessionManager, SessionManagerBuilder, Status,
};

/// The storage contract: ids, keys, records, the store trait and errors (`session-core`).
pub use session_core as core;
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

/// The SQLite store: one database file, WAL mode, no server (feature `sqlite`).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use session_sqlite::*;
}

/// The MySQL 8 / MariaDB store (feature `mysql`).
#[cfg(feature = "mysql")]
pub mod mysql {
    pub use session_mysql::*;
}

#[cfg(test)]
mod send_sync {
    fn check<T: Send + Sync>() {}
    #[test]
    fn runtime_types_are_send_and_sync() {
        check::<super::SessionManager>();
        check::<super::Session>();
    }
}
