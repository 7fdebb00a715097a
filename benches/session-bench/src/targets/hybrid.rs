//! `session_hybrid::HybridStore` in a fresh directory under the system temp dir, in both
//! durability modes and with lazy deletions, through the generic [`StoreTarget`]. The directory is removed after the
//! store is dropped (which flushes it).

use std::sync::Arc;
use std::time::Duration;

use session_core::BoxError;
use session_hybrid::{Durability, HybridStore};

use crate::runner::instance;
use crate::target::{Role, StoreTarget, Target, TempDir};

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "hybrid",
            short: "hybrid",
            role: Role::Ours,
            in_process: true,
            about: "session_hybrid::HybridStore, lazy flush every 1 s with durable deletions (the defaults: a delete waits for its group-committed fsync), cleanup off, sessions without an owner, in TMPDIR",
            build: |payload, keys| {
                Box::pin(async move { build(payload, keys, Durability::default(), true) })
            },
        },
        Target {
            name: "hybrid-lazy-deletes",
            short: "hybrid lazy del",
            role: Role::Ours,
            in_process: true,
            about: "session_hybrid::HybridStore with durable_deletions(false): deletes as lazy as saves (the behaviour before durable deletions)",
            build: |payload, keys| {
                Box::pin(async move { build(payload, keys, Durability::default(), false) })
            },
        },
        Target {
            name: "hybrid-every-write",
            short: "hybrid sync",
            role: Role::Ours,
            in_process: true,
            about: "session_hybrid::HybridStore with Durability::EveryWrite (each write waits for its group-committed fsync)",
            build: |payload, keys| {
                Box::pin(async move { build(payload, keys, Durability::EveryWrite, true) })
            },
        },
    ]
}

fn build(
    payload: Arc<crate::session::Payload>,
    keys: u64,
    durability: Durability,
    durable_deletions: bool,
) -> Result<Option<Box<dyn crate::runner::Instance>>, BoxError> {
    let dir = Arc::new(TempDir::new("hybrid")?);
    let store = HybridStore::builder(&dir.0)
        .durability(durability)
        .durable_deletions(durable_deletions)
        .cleanup_interval(Duration::ZERO)
        .open()?;
    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
    Ok(Some(instance(inner.with_guard(dir))))
}
