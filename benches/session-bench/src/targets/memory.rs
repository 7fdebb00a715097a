//! `session_memory::MemoryStore`, through the generic [`StoreTarget`].

use std::sync::Arc;
use std::time::Duration;

use session_memory::MemoryStore;

use crate::runner::instance;
use crate::target::{Role, StoreTarget, Target};

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "memory",
            short: "memory",
            role: Role::Ours,
            in_process: true,
            about: "session_memory::MemoryStore (cleanup task off), sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let store = MemoryStore::builder()
                        .cleanup_interval(Duration::ZERO)
                        .build()?;
                    Ok(Some(instance(StoreTarget::new(
                        Arc::new(store),
                        &payload,
                        keys,
                        None,
                    ))))
                })
            },
        },
        Target {
            name: "memory-new-ids",
            short: "mem-new-ids",
            role: Role::Ours,
            in_process: true,
            about: "the memory target with every create under a newly generated id's key (SessionId::generate, ThreadRng, then SHA-256), as the manager creates sessions; loads and saves as `memory`",
            build: |payload, keys| {
                Box::pin(async move {
                    let store = MemoryStore::builder()
                        .cleanup_interval(Duration::ZERO)
                        .build()?;
                    Ok(Some(instance(
                        StoreTarget::new(Arc::new(store), &payload, keys, None).with_fresh_ids(),
                    )))
                })
            },
        },
        Target {
            name: "memory+owner",
            short: "memory+owner",
            role: Role::Ours,
            in_process: true,
            about: "session_memory::MemoryStore with every session owned by its user id (owner index on)",
            build: |payload, keys| {
                Box::pin(async move {
                    let store = MemoryStore::builder()
                        .cleanup_interval(Duration::ZERO)
                        .build()?;
                    Ok(Some(instance(StoreTarget::new(
                        Arc::new(store),
                        &payload,
                        keys,
                        Some("4211907"),
                    ))))
                })
            },
        },
    ]
}
