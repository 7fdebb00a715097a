//! The contract of the session layer: what a session id is, what stores keep, the store trait,
//! errors, the background cleanup task every sweeping store shares, and (feature `conformance`)
//! the suite every store must pass.
//!
//! Applications depend on the `session-kit` facade instead, which holds the runtime (manager,
//! `Session`, codecs, framework adapters) and re-exports this crate and the backends chosen by
//! Cargo features. Implementors of a custom store depend on this crate alone and run
//! [`conformance_tests!`] against their store.
//!
//! Security properties that hold for every store:
//! - A [`SessionId`] has 192 bits from a CSPRNG seeded by the operating system (ChaCha12 per
//!   thread, reseeded from the OS every 64 KiB; not on `fork`: see [`SessionId::generate`]),
//!   parses strictly, and prints masked.
//! - Stores only ever see a [`SessionKey`], the SHA-256 of the id, so nothing at rest can be
//!   replayed as a cookie.
//! - Saves are conditional on the version loaded, and never bring back a session that was
//!   deleted or moved meanwhile.

mod cleanup;
mod error;
mod id;
mod record;
pub mod sql;
mod store;
mod time;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use cleanup::{CleanupHandle, CleanupTask};
pub use error::{BoxError, Error, Result};
pub use id::{ID_BYTES, ID_TEXT_LEN, InvalidId, KeyBuildHasher, KeyHasher, SessionId, SessionKey};
pub use record::{MAX_OWNER_LEN, Record};
pub use store::{SessionStore, check_data_len, shared_store};
pub use time::Timestamp;

#[cfg(test)]
mod send_sync {
    fn check<T: Send + Sync>() {}
    #[test]
    fn public_types_are_send_and_sync() {
        check::<super::SessionId>();
        check::<super::SessionKey>();
        check::<super::Record>();
        check::<super::Error>();
        check::<super::CleanupTask>();
        check::<super::CleanupHandle>();
        check::<std::sync::Arc<dyn super::SessionStore>>();
    }
}
