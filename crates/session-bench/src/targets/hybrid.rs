//! `session_hybrid::HybridStore` in a fresh directory under the system temp dir, in both
//! durability modes, through the generic [`StoreTarget`]. The directory is removed after the
//! store is dropped (which flushes it).

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use session_core::{BoxError, SessionId};
use session_hybrid::{Durability, HybridStore};

use crate::runner::instance;
use crate::target::{BenchTarget, OpResult, Role, StoreTarget, Target};

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
    let dir = Arc::new(TempDir::new()?);
    let store = HybridStore::builder(&dir.0)
        .durability(durability)
        .cleanup_interval(Duration::ZERO)
        .open()?;
    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
    Ok(Some(instance(Hybrid { inner, _dir: dir })))
}

/// A directory removed when the last handle of its instance goes (after the store, which is
/// declared first in [`Hybrid`] and so dropped first).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, BoxError> {
        let name = format!(
            "session-bench-hybrid-{}",
            &SessionId::generate().key().to_hex()[..16]
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone)]
struct Hybrid {
    inner: StoreTarget,
    _dir: Arc<TempDir>,
}

impl BenchTarget for Hybrid {
    async fn create(&mut self, i: u64) -> OpResult {
        self.inner.create(i).await
    }

    async fn load(&mut self, i: u64) -> OpResult {
        self.inner.load(i).await
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.inner.save(i).await
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        self.inner.delete(i).await
    }
}
