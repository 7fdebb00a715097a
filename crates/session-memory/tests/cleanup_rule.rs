//! The one cleanup rule: `cleanup_interval(Duration)` (zero = off) runs the background sweep,
//! on by default; a store that cannot run it (no Tokio runtime) says so instead of silently
//! keeping expired sessions forever.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use session_core::{Error, Record, SessionId, SessionStore, Timestamp};
use session_memory::MemoryStore;

#[test]
fn building_outside_a_runtime_with_cleanup_on_is_a_config_error() {
    assert!(
        matches!(MemoryStore::builder().build(), Err(Error::Config(_))),
        "cleanup is on by default, and cannot run without a runtime"
    );
    assert!(matches!(
        MemoryStore::builder()
            .cleanup_interval(Duration::from_secs(5))
            .build(),
        Err(Error::Config(_))
    ));
    assert!(
        MemoryStore::builder()
            .cleanup_interval(Duration::ZERO)
            .build()
            .is_ok(),
        "zero turns cleanup off, which needs no runtime"
    );
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn new_outside_a_runtime_warns_that_no_cleanup_runs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let store = tracing::subscriber::with_default(subscriber, MemoryStore::new);
    drop(store);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(PoisonError::into_inner))
        .into_owned();
    assert!(
        log.contains("WARN") && log.contains("no background cleanup"),
        "MemoryStore::new() without a runtime must say that nothing sweeps: {log:?}"
    );
}

#[tokio::test]
async fn the_background_sweep_removes_expired_sessions() {
    let store = match MemoryStore::builder()
        .cleanup_interval(Duration::from_millis(20))
        .build()
    {
        Ok(store) => store,
        Err(e) => panic!("building the store failed: {e}"),
    };
    let r = Record::new(
        SessionId::generate().key(),
        &b"short"[..],
        Timestamp::now() + Duration::from_millis(10),
    );
    if let Err(e) = store.create(&r).await {
        panic!("create failed: {e}");
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Read the clock first: once past the deadline, an expired record that is still held
        // counts, so zero means the sweep removed it.
        let expired = Timestamp::now() > r.expires_at;
        match store.count_expired().await {
            Ok(0) if expired => break,
            Ok(_) if !expired => {}
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "the background sweep never removed the expired session"
            ),
            Err(e) => panic!("count_expired failed: {e}"),
        }
    }
    store.stop_cleanup().await;
}
