//! `max_sessions`: past the limit `create` fails with `Unavailable` whose source is
//! `StoreFull`, nothing stored is disturbed, and a slot freed by a delete, a move or an expiry
//! is usable again.

use std::sync::Arc;
use std::time::Duration;

use session_core::{Error, Record, SessionId, SessionStore, Timestamp};
use session_memory::{MemoryStore, StoreFull};

const HOUR: Duration = Duration::from_secs(3600);

fn store(limit: u64) -> MemoryStore {
    match MemoryStore::builder()
        .cleanup_interval(Duration::ZERO)
        .max_sessions(Some(limit))
        .build()
    {
        Ok(store) => store,
        Err(e) => panic!("building the store failed: {e}"),
    }
}

async fn must<T>(what: &str, result: impl Future<Output = session_core::Result<T>>) -> T {
    match result.await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

fn live(data: &str) -> Record {
    Record::new(
        SessionId::generate().key(),
        data.as_bytes().to_vec(),
        Timestamp::now() + HOUR,
    )
}

fn assert_full(what: &str, result: session_core::Result<()>, limit: u64) {
    match &result {
        Err(error @ Error::Unavailable { store, source }) => {
            assert!(
                error.is_transient(),
                "{what}: a full store may accept later"
            );
            assert_eq!(*store, "memory");
            assert_eq!(
                source.downcast_ref::<StoreFull>().map(|f| f.limit),
                Some(limit),
                "{what}: the source is a StoreFull naming the limit: {source}"
            );
        }
        other => panic!("{what}: expected Unavailable(StoreFull), got {other:?}"),
    }
}

#[tokio::test]
async fn create_past_the_limit_fails_typed_and_disturbs_nothing() {
    let s = store(3);
    let mut stored = Vec::new();
    for i in 0..3 {
        let r = live(&format!("session {i}")).with_owner("ann");
        must("create", s.create(&r)).await;
        stored.push(r);
    }
    let extra = live("one too many");
    assert_full("a fourth create", s.create(&extra).await, 3);
    assert_eq!(must("load", s.load(&extra.key)).await, None);

    // Everything else goes on at the limit.
    for r in &stored {
        assert_eq!(must("load", s.load(&r.key)).await.as_ref(), Some(r));
    }
    let mut first = stored[0].clone();
    first.data = b"saved at the limit".to_vec().into();
    first.version = must("save", s.save(&first)).await;
    must("touch", s.touch(&first.key, first.expires_at + HOUR)).await;
    first.expires_at = first.expires_at + HOUR;
    let moved = SessionId::generate().key();
    must("rotate", s.rotate(&first.key, &moved)).await;
    first.key = moved;
    assert_eq!(must("load", s.load(&moved)).await, Some(first.clone()));
    assert_eq!(must("count", s.count()).await, 3);
    assert_eq!(must("list_by_owner", s.list_by_owner("ann")).await.len(), 3);
    assert_full("still full after a move", s.create(&extra).await, 3);

    // A delete frees a slot, once.
    assert!(must("delete", s.delete(&moved)).await);
    must("create after a delete", s.create(&extra)).await;
    assert_full("full again", s.create(&live("and another")).await, 3);
    assert_eq!(must("delete_by_owner", s.delete_by_owner("ann")).await, 2);
    must("create", s.create(&live("a"))).await;
    must("create", s.create(&live("b"))).await;
    assert_full("full again", s.create(&live("c")).await, 3);
}

#[tokio::test]
async fn expired_sessions_do_not_hold_slots() {
    let s = store(2);
    let short = Record::new(
        SessionId::generate().key(),
        &b"short"[..],
        Timestamp::now() + Duration::from_millis(30),
    );
    must("create", s.create(&short)).await;
    must("create", s.create(&live("long"))).await;
    assert_full("full", s.create(&live("x")).await, 2);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // No sweep has run (cleanup is off): the full store sweeps before refusing.
    must("create once one has expired", s.create(&live("x"))).await;
    assert_eq!(must("count", s.count()).await, 2);
}

#[tokio::test]
async fn a_duplicate_key_at_the_limit_takes_no_slot() {
    let s = store(2);
    let r = live("one");
    must("create", s.create(&r)).await;
    assert!(matches!(s.create(&r).await, Err(Error::AlreadyExists)));
    assert!(matches!(s.create(&r).await, Err(Error::AlreadyExists)));
    must("the second slot is still free", s.create(&live("two"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_pass_the_limit() {
    let s = Arc::new(store(250));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut created = 0u64;
                for _ in 0..100 {
                    match s.create(&live("racing")).await {
                        Ok(()) => created += 1,
                        Err(Error::Unavailable { .. }) => {}
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                }
                created
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        created += match task.await {
            Ok(n) => n,
            Err(e) => panic!("a task failed: {e}"),
        };
    }
    assert_eq!(created, 250);
    assert_eq!(must("count", s.count()).await, 250);
}

#[tokio::test]
async fn no_limit_by_default() {
    let s = match MemoryStore::builder()
        .cleanup_interval(Duration::ZERO)
        .build()
    {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    for _ in 0..10_000 {
        must("create", s.create(&live("x"))).await;
    }
    assert_eq!(must("count", s.count()).await, 10_000);
}
