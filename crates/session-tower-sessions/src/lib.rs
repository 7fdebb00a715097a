#![doc = include_str!("../README.md")]

mod builder;
mod error;
mod format;
mod hints;
mod store;
mod versions;

pub use builder::{AXUM_LOGIN_DATA_KEY, TowerSessionStoreBuilder, axum_login_owner};
pub use format::Data;
pub use store::{OwnerFn, TowerSessionStore};
#[cfg(feature = "v0_14")]
pub use tower_sessions_core_014;
#[cfg(feature = "v0_15")]
pub use tower_sessions_core_015;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<TowerSessionStore>();
    send_sync::<TowerSessionStoreBuilder>();
};
