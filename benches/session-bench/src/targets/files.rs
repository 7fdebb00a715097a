//! `session_files::FileStore` in a fresh directory, and its two limits: bare `std::fs` on the
//! same sharded layout with the same fsync discipline (what a durable file store pays at
//! least), and the same without any fsync (to show what durability costs).
//!
//! All three run their file calls through `tokio::task::spawn_blocking`, the minimum any async
//! file store pays; calling `std::fs` on the runtime's two workers instead would cap the bare
//! targets at two I/Os in flight and make them no limit at all. Each instance works in its own
//! directory under the system temp dir (`TMPDIR`) and removes it when its last handle goes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use session_core::{BoxError, SessionKey};
use session_files::FileStore;

use crate::keys::session_key;
use crate::runner::instance;
use crate::target::{BenchTarget, OpResult, Outcome, Role, StoreTarget, Target, TempDir};

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "files",
            short: "files",
            role: Role::Ours,
            in_process: false,
            about: "session_files::FileStore (default concurrency 64, cleanup off), sessions without an owner, in TMPDIR",
            build: |payload, keys| {
                Box::pin(async move {
                    let dir = Arc::new(TempDir::new("files")?);
                    let store = FileStore::builder(&dir.0)
                        .cleanup_interval(Duration::ZERO)
                        .open()?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(dir))))
                })
            },
        },
        Target {
            name: "std-fs-fsync",
            short: "fs+fsync",
            role: Role::Limit,
            in_process: false,
            about: "bare std::fs, same layout: read the file; write temp + fsync + rename (link for create) + fsync dir (and parents of new dirs); unlink + fsync dir",
            build: |payload, _keys| {
                Box::pin(
                    async move { Ok(Some(instance(Bare::new(payload.encoded.clone(), true)?))) },
                )
            },
        },
        Target {
            name: "std-fs-nosync",
            short: "fs nosync",
            role: Role::Limit,
            in_process: false,
            about: "bare std::fs as fs+fsync but with no fsync at all (not durable: what durability costs)",
            build: |payload, _keys| {
                Box::pin(
                    async move { Ok(Some(instance(Bare::new(payload.encoded.clone(), false)?))) },
                )
            },
        },
    ]
}

/// Bare files: no header, checksum, lock, version or owner; the same bytes at the same
/// `root/ab/cd/<64 hex>` paths.
#[derive(Clone)]
struct Bare {
    dir: Arc<TempDir>,
    data: Bytes,
    sync: bool,
    temp: Arc<AtomicU64>,
}

impl Bare {
    fn new(data: Bytes, sync: bool) -> Result<Self, BoxError> {
        let dir = Arc::new(TempDir::new(if sync { "fsync" } else { "nosync" })?);
        Ok(Self {
            dir,
            data,
            sync,
            temp: Arc::new(AtomicU64::new(0)),
        })
    }

    fn paths(&self, key: &SessionKey) -> (PathBuf, PathBuf, PathBuf) {
        let hex = key.to_hex();
        let shard = self.dir.0.join(&hex[0..2]).join(&hex[2..4]);
        let temp = shard.join(format!(
            ".tmp-{hex}-{}",
            self.temp.fetch_add(1, Ordering::Relaxed)
        ));
        (shard.join(hex), temp, shard)
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&Self) -> std::io::Result<Outcome> + Send + 'static,
    ) -> OpResult {
        let this = self.clone();
        Ok(tokio::task::spawn_blocking(move || f(&this)).await??)
    }

    /// Writes a temp file in `shard` (creating it if missing), fsynced if durable.
    fn write_temp(&self, temp: &Path, shard: &Path) -> std::io::Result<()> {
        let open = || OpenOptions::new().write(true).create_new(true).open(temp);
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // As the store does: a new directory's entry is durable only once its parent
                // is fsynced, so fsync the parent of each level that was created.
                let parent = shard.parent().unwrap_or(shard);
                let parent_was_there = parent.exists();
                fs::create_dir_all(shard)?;
                self.sync_dir(parent)?;
                if !parent_was_there {
                    self.sync_dir(&self.dir.0)?;
                }
                open()?
            }
            Err(e) => return Err(e),
        };
        file.write_all(&self.data)?;
        if self.sync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.sync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl BenchTarget for Bare {
    async fn create(&mut self, i: u64) -> OpResult {
        self.blocking(move |b| {
            let (path, temp, shard) = b.paths(&session_key(i));
            b.write_temp(&temp, &shard)?;
            let linked = fs::hard_link(&temp, &path);
            fs::remove_file(&temp)?;
            match linked {
                Ok(()) => {
                    b.sync_dir(&shard)?;
                    Ok(Outcome::Done)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Outcome::Conflict),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn load(&mut self, i: u64) -> OpResult {
        self.blocking(move |b| {
            let (path, _, _) = b.paths(&session_key(i));
            match fs::read(&path) {
                Ok(_) => Ok(Outcome::Done),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::Missing),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn save(&mut self, i: u64) -> OpResult {
        self.blocking(move |b| {
            let (path, temp, shard) = b.paths(&session_key(i));
            // Replace only a present session, as a store that never resurrects must.
            if !path.exists() {
                return Ok(Outcome::Missing);
            }
            b.write_temp(&temp, &shard)?;
            fs::rename(&temp, &path)?;
            b.sync_dir(&shard)?;
            Ok(Outcome::Done)
        })
        .await
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        self.blocking(move |b| {
            let (path, _, shard) = b.paths(&session_key(i));
            match fs::remove_file(&path) {
                Ok(()) => {
                    b.sync_dir(&shard)?;
                    Ok(Outcome::Done)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::Missing),
                Err(e) => Err(e),
            }
        })
        .await
    }
}
