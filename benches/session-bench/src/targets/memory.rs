//! `session_memory::MemoryStore`, through the generic [`StoreTarget`].

use std::sync::Arc;
use std::time::Duration;

use session_memory::MemoryStore;

use session_core::BoxError;

use crate::runner::{Instance, instance};
use crate::session::Payload;
use crate::target::{Role, StoreTarget, Target};

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "memory",
            short: "memory",
            role: Role::Ours,
            in_process: true,
            about: "session_memory::MemoryStore (cleanup task off), sessions without an owner",
            build: |payload, keys| Box::pin(async move { target(&payload, keys, None, false) }),
        },
        Target {
            name: "memory-new-ids",
            short: "mem-new-ids",
            role: Role::Ours,
            in_process: true,
            about: "the memory target with every session a round creates under a newly generated id's key (SessionId::generate, ThreadRng, then SHA-256), as the manager creates sessions; the pre-populated sessions, loads and saves as `memory`. For the create workload: in mixed, a round's deletes address the sessions it created by number and miss",
            build: |payload, keys| Box::pin(async move { target(&payload, keys, None, true) }),
        },
        Target {
            name: "memory+owner",
            short: "memory+owner",
            role: Role::Ours,
            in_process: true,
            about: "session_memory::MemoryStore with every session owned by its user id (owner index on)",
            build: |payload, keys| {
                Box::pin(async move { target(&payload, keys, Some("4211907"), false) })
            },
        },
    ]
}

/// A memory store with its cleanup task off, as a target for `keys` sessions owned by
/// `owner`; with `fresh_ids`, every create generates a new session id.
fn target(
    payload: &Payload,
    keys: u64,
    owner: Option<&str>,
    fresh_ids: bool,
) -> Result<Option<Box<dyn Instance>>, BoxError> {
    let store = MemoryStore::builder()
        .cleanup_interval(Duration::ZERO)
        .build()?;
    let target = StoreTarget::new(Arc::new(store), payload, keys, owner);
    Ok(Some(instance(if fresh_ids {
        target.with_fresh_ids()
    } else {
        target
    })))
}
