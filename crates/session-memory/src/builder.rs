//! The builder of a [`MemoryStore`] and its `DEFAULT_*` values.

use std::sync::Arc;
use std::time::Duration;

use session_core::{CleanupTask, Result, Timestamp};

use crate::change::ChangeObserver;
use crate::shared::Shared;
use crate::store::MemoryStore;

/// Default largest session payload: 1 MiB.
pub const DEFAULT_MAX_DATA_LEN: usize = 1 << 20;
/// Default interval of the background sweep of expired sessions: 60 s.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// Default name of the backend in errors.
const DEFAULT_NAME: &str = "memory";

/// Configures a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    cleanup_interval: Duration,
    max_data_len: Option<usize>,
    max_sessions: Option<u64>,
    name: &'static str,
    observer: Option<Arc<dyn ChangeObserver>>,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        Self {
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            max_sessions: None,
            name: DEFAULT_NAME,
            observer: None,
        }
    }
}

impl MemoryStoreBuilder {
    /// How often the background task sweeps expired sessions (default
    /// [`DEFAULT_CLEANUP_INTERVAL`]). Zero disables the task; expired sessions are still never
    /// returned, only kept until a sweep.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// The largest payload accepted, in bytes (default [`DEFAULT_MAX_DATA_LEN`]); `None` for
    /// no limit.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// The most sessions the store holds (default `None`: no limit). Past it, `create` fails
    /// with [`Error::Unavailable`](session_core::Error::Unavailable) whose source is a
    /// [`StoreFull`](crate::StoreFull); every other call goes on working, and the sessions
    /// already stored are untouched. Sessions that have expired but were not swept yet do not
    /// count: a `create` that finds the store full sweeps first. Each session costs its data
    /// plus a fixed overhead in memory (see the README to size the limit).
    pub fn max_sessions(mut self, limit: Option<u64>) -> Self {
        self.max_sessions = limit;
        self
    }

    /// The backend named in this store's errors (default `"memory"`); a store built on this
    /// one (such as `session-hybrid`) gives its own.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Reports every change to `observer` (see [`ChangeObserver`]).
    pub fn observer(mut self, observer: Arc<dyn ChangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds the store and starts its cleanup task.
    ///
    /// # Errors
    /// [`Error::Config`](session_core::Error::Config) when the cleanup interval is not zero
    /// and there is no Tokio runtime.
    pub fn build(self) -> Result<MemoryStore> {
        let interval = self.cleanup_interval;
        let store = self.build_without_cleanup();
        let cleanup = CleanupTask::spawn(
            DEFAULT_NAME,
            interval,
            Arc::downgrade(&store.shared),
            |shared: Arc<Shared>| async move { Ok(shared.sweep(Timestamp::now())) },
        )?;
        store.cleanup.set(cleanup);
        Ok(store)
    }

    /// The store without its background sweep, which cannot fail.
    pub(crate) fn build_without_cleanup(self) -> MemoryStore {
        MemoryStore::from_shared(Shared::new(
            self.max_data_len,
            self.max_sessions,
            self.name,
            self.observer,
        ))
    }
}
