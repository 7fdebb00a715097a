//! The registry: every target the harness knows, one file per family.
//!
//! To add a backend, write `targets/<family>.rs` with a function returning its [`Target`]s
//! and list them in [`all`]. See the crate README.

use crate::target::Target;

mod files;
mod hybrid;
mod limit;
mod memory;
mod mysql;
mod postgres;
mod redis;
mod sqlite;
mod tower_sessions;

/// Every target, in table order: ours, then the limit, then the peers.
pub(crate) fn all() -> Vec<Target> {
    let mut targets = Vec::new();
    targets.extend(memory::targets());
    targets.extend(limit::targets());
    targets.extend(tower_sessions::targets());
    targets.extend(redis::targets());
    targets.extend(postgres::targets());
    targets.extend(sqlite::targets());
    targets.extend(mysql::targets());
    targets.extend(files::targets());
    targets.extend(hybrid::targets());
    targets
}

/// The targets a run uses when `--targets` is not given.
pub(crate) fn default_names() -> &'static [&'static str] {
    &[
        "memory",
        "dashmap",
        "tower-sessions-memory-store",
        "tower-sessions-moka-store",
    ]
}

/// Targets whose loads stop at the bytes whatever `--decode-on-load` says (bare SQL and file
/// reads that do not hand the data out): a run with the option refuses them, so that no
/// comparison pairs a decoding target with one that does not decode.
pub(crate) fn never_decode(name: &str) -> bool {
    matches!(
        name,
        "std-fs-fsync" | "std-fs-nosync" | "postgres-bare" | "sqlite-bare" | "mysql-bare"
    )
}
