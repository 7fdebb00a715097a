//! A background task that sweeps expired sessions on an interval, shared by every store that
//! cannot expire records by itself.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A running cleanup task.
///
/// The task holds only a weak reference to its store, so it never keeps the store alive; it
/// ends by itself once the store is gone, when [`stop`](Self::stop) is called, or when this
/// handle is dropped (which aborts it). A failing sweep is logged and tried again on the next
/// tick: errors never end the task.
#[derive(Debug)]
pub struct CleanupTask {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl CleanupTask {
    /// Spawns a task that calls `sweep` on the target every `interval`, the first time one
    /// interval from now.
    ///
    /// Returns `Ok(None)` for a zero interval (cleanup disabled), and an
    /// [`Error::Config`] when called outside a Tokio runtime.
    pub fn spawn<T, F, Fut>(
        store: &'static str,
        interval: Duration,
        target: Weak<T>,
        sweep: F,
    ) -> Result<Option<Self>>
    where
        T: Send + Sync + 'static,
        F: Fn(std::sync::Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64>> + Send,
    {
        if interval.is_zero() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("background cleanup needs a Tokio runtime: build the store inside one, or set the cleanup interval to zero".into())
        })?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let handle = runtime.spawn(async move {
            let start = tokio::time::Instant::now() + interval;
            let mut ticker = tokio::time::interval_at(start, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = ticker.tick() => {
                        let Some(target) = target.upgrade() else { break };
                        match sweep(target).await {
                            Ok(0) => {}
                            Ok(n) => tracing::debug!(store, removed = n, "swept expired sessions"),
                            Err(error) => tracing::warn!(store, %error, "sweeping expired sessions failed; retrying next tick"),
                        }
                    }
                }
            }
        });
        Ok(Some(Self {
            stop: Some(stop_tx),
            handle: Some(handle),
        }))
    }

    /// Asks the task to finish and waits until it has. A sweep under way completes first.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// The one cleanup task of a store, shared by every clone of the store: what a store keeps in
/// its handle so that any clone can stop the task, and the last one to go ends it.
///
/// Cloning gives another handle to the same slot. Dropping the last handle drops the task,
/// which aborts it (see [`CleanupTask`]).
#[derive(Debug, Clone, Default)]
pub struct CleanupHandle {
    task: Arc<Mutex<Option<CleanupTask>>>,
}

impl CleanupHandle {
    /// A handle holding `task` (`None`: cleanup off).
    pub fn new(task: Option<CleanupTask>) -> Self {
        Self {
            task: Arc::new(Mutex::new(task)),
        }
    }

    /// Puts `task` in the slot, for a store that can spawn its task only once the handle
    /// exists (the task needs a weak reference to the store). A task already there is
    /// dropped, which aborts it.
    pub fn set(&self, task: Option<CleanupTask>) {
        let old = std::mem::replace(&mut *self.slot(), task);
        drop(old);
    }

    /// Stops the task, if there is one, and waits until it has ended (a sweep under way
    /// finishes first). Idempotent: later calls, from any clone, return at once.
    pub async fn stop(&self) {
        let task = self.slot().take();
        if let Some(task) = task {
            task.stop().await;
        }
    }

    /// Whether a task is in the slot and still running.
    pub fn is_running(&self) -> bool {
        self.slot().as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The slot. Nothing panics while holding it, so a poisoned lock still holds a sound
    /// value.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<CleanupTask>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn sweeps_on_interval_survives_errors_and_stops() {
        let calls = Arc::new(AtomicU64::new(0));
        let task = CleanupTask::spawn(
            "test",
            Duration::from_secs(1),
            Arc::downgrade(&calls),
            |c: Arc<AtomicU64>| async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                if n == 1 { Err(Error::Conflict) } else { Ok(n) }
            },
        );
        let task = task.ok().flatten();
        assert!(task.is_some());
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "three ticks, the failing one included"
        );
        if let Some(task) = task {
            task.stop().await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "no sweep after stop");
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_the_store_is_gone_and_zero_disables() {
        let target = Arc::new(());
        let task = CleanupTask::spawn(
            "test",
            Duration::from_secs(1),
            Arc::downgrade(&target),
            |_t: Arc<()>| async { Ok(0) },
        )
        .ok()
        .flatten();
        drop(target);
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(task.as_ref().is_some_and(CleanupTask::is_finished));
        let none = CleanupTask::spawn(
            "test",
            Duration::ZERO,
            Arc::downgrade(&Arc::new(())),
            |_t: Arc<()>| async { Ok(0) },
        );
        assert!(matches!(none, Ok(None)));
    }

    #[test]
    fn outside_a_runtime_is_a_config_error() {
        let r = CleanupTask::spawn(
            "test",
            Duration::from_secs(1),
            Arc::downgrade(&Arc::new(())),
            |_t: Arc<()>| async { Ok(0) },
        );
        assert!(matches!(r, Err(Error::Config(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_handle_stops_the_task_once_for_every_clone() {
        let calls = Arc::new(AtomicU64::new(0));
        let spawn = |calls: &Arc<AtomicU64>| {
            CleanupTask::spawn(
                "test",
                Duration::from_secs(1),
                Arc::downgrade(calls),
                |c: Arc<AtomicU64>| async move { Ok(c.fetch_add(1, Ordering::SeqCst)) },
            )
            .ok()
            .flatten()
        };
        let handle = CleanupHandle::new(spawn(&calls));
        let clone = handle.clone();
        assert!(handle.is_running() && clone.is_running());
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        clone.stop().await;
        assert!(!handle.is_running(), "a clone's stop stops the one task");
        handle.stop().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no sweep after stop");

        // `set` fills an empty handle; replacing a task aborts the old one.
        let late = CleanupHandle::default();
        assert!(!late.is_running());
        late.set(spawn(&calls));
        assert!(late.is_running());
        let second = Arc::new(AtomicU64::new(0));
        late.set(spawn(&second));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the replaced task was aborted"
        );
        assert_eq!(second.load(Ordering::SeqCst), 1);

        // Dropping the last handle ends the task.
        drop(late);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            second.load(Ordering::SeqCst),
            1,
            "no sweep after the last handle went"
        );
    }
}
