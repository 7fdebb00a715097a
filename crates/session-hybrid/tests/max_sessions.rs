//! `max_sessions` on the hybrid store: a `create` past it fails with `Unavailable` whose source
//! is `StoreFull`, writes nothing to the log, and a directory holding more than a lowered limit
//! still loads whole.

mod common;

use std::time::Duration;

use common::{key, must, open, tempdir};
use session_core::{Error, Record, SessionStore, Timestamp};
use session_hybrid::{HybridStore, StoreFull};

const HOUR: Duration = Duration::from_secs(3600);

fn live() -> Record {
    Record::new(key(), &b"x"[..], Timestamp::now() + HOUR)
}

fn full_limit(result: session_core::Result<()>) -> Option<u64> {
    match result {
        Err(Error::Unavailable { store, source }) => {
            assert_eq!(store, "hybrid");
            source.downcast_ref::<StoreFull>().map(|f| f.limit)
        }
        other => panic!("expected Unavailable(StoreFull), got {other:?}"),
    }
}

#[tokio::test]
async fn create_past_the_limit_is_refused_and_journals_nothing() {
    let tmp = tempdir();
    let builder = || {
        HybridStore::builder(tmp.path())
            .cleanup_interval(Duration::ZERO)
            .max_sessions(Some(2))
    };
    let store = open(builder());
    let (a, b, c) = (live(), live(), live());
    must("create", store.create(&a)).await;
    must("create", store.create(&b)).await;
    assert_eq!(full_limit(store.create(&c).await), Some(2));
    must("close", store.close()).await;
    drop(store);

    let store = open(builder());
    assert_eq!(
        store.replay_report().entries_applied,
        2,
        "the refused create left no entry"
    );
    assert_eq!(must("load", store.load(&c.key)).await, None);
    assert!(must("delete", store.delete(&a.key)).await);
    must("create after a delete", store.create(&c)).await;
    must("close", store.close()).await;
    drop(store);

    // Lowered below what is stored: everything loads, creates wait for room.
    let store = open(
        HybridStore::builder(tmp.path())
            .cleanup_interval(Duration::ZERO)
            .max_sessions(Some(1)),
    );
    assert_eq!(store.replay_report().sessions_loaded, 2);
    assert_eq!(
        must("load", store.load(&b.key)).await.map(|r| r.key),
        Some(b.key)
    );
    assert_eq!(full_limit(store.create(&live()).await), Some(1));
    assert!(must("delete", store.delete(&b.key)).await);
    assert_eq!(full_limit(store.create(&live()).await), Some(1));
    assert!(must("delete", store.delete(&c.key)).await);
    must("create with room again", store.create(&live())).await;
}
