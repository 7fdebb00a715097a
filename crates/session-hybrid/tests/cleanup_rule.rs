//! The one cleanup rule: `cleanup_interval(Duration)` (zero = off) sweeps expired sessions in
//! the background, on by default; opening without a Tokio runtime to run it is a `Config`
//! error, refused before the directory is touched.

mod common;

use std::time::{Duration, Instant};

use common::{key, must, open, tempdir};
use session_core::{Error, Record, SessionStore, Timestamp};
use session_hybrid::HybridStore;

#[test]
fn opening_outside_a_runtime_with_cleanup_on_is_refused_untouched() {
    let tmp = tempdir();
    let dir = tmp.path().join("sessions");
    for builder in [
        HybridStore::builder(&dir),
        HybridStore::builder(&dir).cleanup_interval(Duration::from_secs(5)),
    ] {
        match builder.open() {
            Err(Error::Config(msg)) => assert!(msg.contains("runtime"), "{msg}"),
            other => panic!("expected a Config error, got {other:?}"),
        }
        assert!(!dir.exists(), "a refused open created the directory");
    }
    let store = open(HybridStore::builder(&dir).cleanup_interval(Duration::ZERO));
    drop(store);
}

#[tokio::test]
async fn the_background_sweep_removes_and_journals_expired_sessions() {
    let tmp = tempdir();
    let store = open(HybridStore::builder(tmp.path()).cleanup_interval(Duration::from_millis(20)));
    let r = Record::new(
        key(),
        &b"short"[..],
        Timestamp::now() + Duration::from_millis(10),
    );
    must("create", store.create(&r)).await;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let expired = Timestamp::now() > r.expires_at;
        let held = must("count_expired", store.count_expired()).await;
        if expired && held == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the background sweep never removed the expired session"
        );
    }
    must("close", store.close()).await;
    drop(store);
    let store = open(HybridStore::builder(tmp.path()).cleanup_interval(Duration::ZERO));
    let report = store.replay_report();
    assert_eq!(
        (report.entries_applied, report.expired_skipped),
        (2, 0),
        "the sweep journaled a delete, so replay has nothing expired to skip: {report:?}"
    );
}
