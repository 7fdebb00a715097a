//! `session_hybrid::HybridStore` in a fresh directory under the system temp dir, in both
//! durability modes, through the generic [`StoreTarget`]. The directory is removed after the
//! store is dropped (which flushes it).

use std::sync::Arc;
use std::time::Duration;

use session_core::BoxError;
use session_hybrid::{Durability, HybridStore};

use crate::runner::instance;
use crate::target::{Role, StoreTarget, Target, TempDir};

pub(super) fn targets() -> [Target; 2] {
    [
        Target {
            name: "hybrid",
            short: "hybrid",
            role: Role::Ours,
            in_process: true,
            about: "session_hybrid::HybridStore, lazy flush every 1 s (default), cleanup off, sessions without an owner, in TMPDIR",
            build: |payload, keys| {
                Box::pin(async move { build(payload, keys, Durability::default()) })
            },
        },
        Target {
            name: "hybrid-every-write",
            short: "hybrid sync",
            role: Role::Ours,
            in_process: true,
            about: "session_hybrid::HybridStore with Durability::EveryWrite (each write waits for its group-committed fsync)",
            build: |payload, keys| {
                Box::pin(async move { build(payload, keys, Durability::EveryWrite) })
            },
        },
    ]
}

fn build(
    payload: Arc<crate::session::Payload>,
    keys: u64,
    durability: Durability,
) -> Result<Option<Box<dyn crate::runner::Instance>>, BoxError> {
    let dir = Arc::new(TempDir::new("hybrid")?);
    let store = HybridStore::builder(&dir.0)
        .durability(durability)
        .cleanup_interval(Duration::ZERO)
        .open()?;
    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
    Ok(Some(instance(inner.with_guard(dir))))
}
