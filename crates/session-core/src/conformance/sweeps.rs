//! Harnesses for a store's background sweep, shared by the backends that run one. Unlike the
//! cases, they need what the trait does not give: a way to plant expired rows behind the
//! store's back (faster than `create`), to stop the sweep, and to build another handle; the
//! caller passes those in.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{Record, SessionId, SessionKey, SessionStore, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

/// Waits until the store counts no expired session, polling every 20 ms; fails after 30 s
/// with `what`.
async fn until_no_expired(store: &impl SessionStore, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.count_expired().await.expect("count_expired") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A background sweep removes exactly the expired sessions while loads go on, ends when
/// stopped, and ends when the last handle of a store is dropped.
///
/// `store` sweeps every 50 ms or so, on an empty table; `seed_expired` plants many expired
/// rows when awaited (after 50 live sessions are created); `stop_cleanup` stops `store`'s sweep
/// when awaited; `another_sweeping_handle` builds a second store on the same table whose sweep
/// runs every 100 ms or so (it is dropped at once, and must sweep no more).
pub async fn background_sweep_removes_only_expired_sessions<S>(
    store: &S,
    seed_expired: impl Future<Output = ()>,
    stop_cleanup: impl Future<Output = ()>,
    another_sweeping_handle: impl FnOnce() -> S,
) where
    S: SessionStore + Clone + 'static,
{
    let lives: Vec<Record> = (0..50)
        .map(|_| {
            Record::new(
                SessionId::generate().key(),
                &b"live"[..],
                Timestamp::now() + HOUR,
            )
        })
        .collect();
    for r in &lives {
        store.create(r).await.expect("create live");
    }
    seed_expired.await;

    let stop = Arc::new(AtomicBool::new(false));
    let loads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, stop, loads, lives) =
            (store.clone(), stop.clone(), loads.clone(), lives.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for r in &lives {
                    let back = store
                        .load(&r.key)
                        .await
                        .expect("a load during cleanup failed");
                    assert_eq!(
                        back.as_ref(),
                        Some(r),
                        "a live session vanished during cleanup"
                    );
                    loads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    until_no_expired(store, "cleanup did not finish").await;
    stop_cleanup.await;
    stop.store(true, Ordering::Relaxed);
    reader
        .await
        .expect("the reader saw every live session throughout");
    assert!(
        loads.load(Ordering::Relaxed) > 0,
        "loads ran during the cleanup"
    );
    assert_eq!(
        store.count().await.expect("count"),
        50,
        "cleanup must spare live rows"
    );
    let mut listed = store.list().await.expect("list");
    listed.sort();
    let mut expected: Vec<SessionKey> = lives.iter().map(|r| r.key).collect();
    expected.sort();
    assert_eq!(listed, expected);

    // A stopped task sweeps no more.
    let late = Record::new(
        SessionId::generate().key(),
        &b"late"[..],
        Timestamp::now() - Duration::from_secs(5),
    );
    store.create(&late).await.expect("create expired");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.count_expired().await.expect("count_expired"),
        1,
        "no sweep after stop"
    );

    // Dropping the last handle of a store stops its task too.
    let other = another_sweeping_handle();
    drop(other.clone());
    drop(other);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.count_expired().await.expect("count_expired"),
        1,
        "no sweep after drop"
    );
}

/// A store sweeps by itself: building it starts the task, and expired rows disappear without
/// any other call.
///
/// `setup` is a store on the table with its sweep stopped; `seed_expired` plants `seeded`
/// expired rows when awaited; `sweeping` builds, when awaited, a store on the same table whose
/// sweep runs every 100 ms or so.
pub async fn sweeps_without_being_asked<S, Fut>(
    setup: &S,
    seed_expired: impl Future<Output = ()>,
    seeded: u64,
    sweeping: Fut,
) where
    S: SessionStore,
    Fut: Future<Output = S>,
{
    seed_expired.await;
    let keep = Record::new(
        SessionId::generate().key(),
        &b"keep"[..],
        Timestamp::now() + HOUR,
    );
    setup.create(&keep).await.expect("create");
    assert_eq!(setup.count_expired().await.expect("count_expired"), seeded);

    let store = sweeping.await;
    until_no_expired(&store, "no background sweep ran").await;
    assert_eq!(store.load(&keep.key).await.expect("load"), Some(keep));
}
