//! The builder of a [`FileStore`] and its defaults.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use session_core::{Error, Result};
use tokio::sync::Semaphore;

use crate::blocking::Inner;
use crate::error::Context;
use crate::fsio::{Locks, make_dir_all};
use crate::layout::Layout;
use crate::store::FileStore;

/// Default largest session payload: 1 MiB, the same as the memory store, so moving between
/// the two never changes what is accepted. Every load reads the whole file into memory, so
/// some bound is needed; sessions near it are almost always a bug (a cache kept in the
/// session), and a smaller limit can be set with [`FileStoreBuilder::max_data_len`].
pub const DEFAULT_MAX_DATA_LEN: usize = 1 << 20;

/// Default number of file operations running at once (see [`FileStoreBuilder::concurrency`]).
///
/// Most of a write's time is waiting on `fsync`, not CPU, and a journaling filesystem commits
/// concurrent `fsync`s together, so more writes in flight means more writes per second (the
/// project's BENCHMARKS.md compares bounds). Each operation in flight holds one thread of
/// Tokio's blocking pool (512 by default).
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Default interval of the background sweep: 5 minutes, longer than the memory store's
/// minute because a sweep here reads the header of every session file.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// Default age after which a temp file is taken to be left by a crash and swept: one minute,
/// far above the time any single write takes.
pub const DEFAULT_STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Configures a [`FileStore`]; made by [`FileStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct FileStoreBuilder {
    root: PathBuf,
    max_data_len: Option<usize>,
    concurrency: usize,
    cleanup_interval: Duration,
    stale_temp_age: Duration,
}

impl FileStoreBuilder {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            concurrency: DEFAULT_CONCURRENCY,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            stale_temp_age: DEFAULT_STALE_TEMP_AGE,
        }
    }

    /// The largest payload accepted, in bytes (default [`DEFAULT_MAX_DATA_LEN`]); `None` for
    /// no limit.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// How many file operations may run at once on Tokio's blocking pool (default
    /// [`DEFAULT_CONCURRENCY`]); further calls wait for a slot. Must be at least 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How often the background task sweeps expired sessions and stale temp files (default
    /// [`DEFAULT_CLEANUP_INTERVAL`]). Zero disables the task; expired sessions are still never
    /// returned, only kept until
    /// [`SessionStore::delete_expired`](session_core::SessionStore::delete_expired) runs.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Age after which a sweep removes a temp file as left behind by a crash (default
    /// [`DEFAULT_STALE_TEMP_AGE`]). It must be longer than any write takes, since another
    /// process sharing the root may be writing that file right now.
    pub fn stale_temp_age(mut self, age: Duration) -> Self {
        self.stale_temp_age = age;
        self
    }

    /// Creates the root (mode 0700) if missing and opens the store on it, starting the
    /// cleanup task.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero concurrency, a root that is not a directory, a `locks` or
    /// `owners` directory that is a symlink, or a non-zero cleanup interval outside a Tokio
    /// runtime (a store opened there would never sweep); [`Error::Backend`] if the
    /// directories cannot be created.
    pub fn open(self) -> Result<FileStore> {
        if self.concurrency == 0 {
            return Err(Error::Config(
                "session-files: concurrency must be at least 1".into(),
            ));
        }
        let root = self.root;
        make_dir_all(&root)?;
        let meta = fs::metadata(&root).ctx("stat", &root)?;
        if !meta.is_dir() {
            return Err(Error::Config(
                format!("session-files: root {} is not a directory", root.display()).into(),
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(root = %root.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "session directory is readable by other users; 0700 is recommended");
        }
        let layout = Layout::new(root);
        for dir in [layout.owners_dir(), layout.locks_dir()] {
            make_dir_all(&dir)?;
            // A symlink here would send every lock file or owner marker wherever it points.
            if fs::symlink_metadata(&dir).ctx("stat", &dir)?.is_symlink() {
                return Err(Error::Config(
                    format!(
                        "session-files: {} is a symlink; the store's own directories must be real ones",
                        dir.display()
                    )
                    .into(),
                ));
            }
        }
        FileStore::start(
            Inner {
                locks: Locks::new(layout.locks_dir()),
                layout,
                max_data_len: self.max_data_len,
                permits: Arc::new(Semaphore::new(self.concurrency)),
                concurrency: self.concurrency,
                stale_temp_age: self.stale_temp_age,
            },
            self.cleanup_interval,
        )
    }
}
