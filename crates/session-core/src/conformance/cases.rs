//! One function per behaviour of [`SessionStore`]. Each panics, naming the behaviour, when the
//! store under test breaks it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Fixture;
use crate::error::{Error, Result};
use crate::id::{SessionId, SessionKey};
use crate::record::Record;
use crate::store::SessionStore;
use crate::time::Timestamp;

const HOUR: Duration = Duration::from_secs(3600);

fn fresh_key() -> SessionKey {
    SessionId::generate().key()
}

fn live(data: impl Into<Bytes>) -> Record {
    Record::new(fresh_key(), data, Timestamp::now() + HOUR)
}

fn expired(data: impl Into<Bytes>) -> Record {
    let mut r = Record::new(fresh_key(), data, Timestamp::now() - Duration::from_secs(5));
    r.created_at = Timestamp::now() - HOUR;
    r
}

async fn must<T>(what: &str, op: impl Future<Output = Result<T>>) -> T {
    match op.await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed unexpectedly: {e:?}"),
    }
}

/// Awaits `op` and fails the case unless it returned an error matching `pattern`, naming
/// `what` and what came back instead.
macro_rules! assert_err {
    ($what:expr, $op:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match $op.await {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "{} must fail with {}, got {other:?}",
                $what,
                stringify!($pattern $(if $guard)?)
            ),
        }
    };
}

async fn load(store: &dyn SessionStore, key: &SessionKey) -> Option<Record> {
    must("load", store.load(key)).await
}

async fn create(store: &dyn SessionStore, record: &Record) {
    must("create", store.create(record)).await;
}

async fn round_trip(store: &dyn SessionStore, record: Record) {
    create(store, &record).await;
    let back = load(store, &record.key).await;
    assert_eq!(
        back.as_ref(),
        Some(&record),
        "a created record must load back exactly"
    );
}

pub(super) async fn round_trip_binary(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    round_trip(store, live(data)).await;
}

pub(super) async fn round_trip_unicode(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let text = "Grüße, 世界! 🦀 \u{0} zero-width:\u{200b} rtl:\u{202e}";
    round_trip(store, live(text.as_bytes().to_vec()).with_owner("Zoë 👩‍💻")).await;
}

pub(super) async fn round_trip_empty_data(store: Arc<dyn SessionStore>) {
    let store = &*store;
    round_trip(store, live(Vec::new())).await;
}

pub(super) async fn timestamps_are_exact(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let mut r = live(&b"t"[..]);
    r.created_at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 12_345);
    r.expires_at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 7_654_321);
    r.version = 41;
    round_trip(store, r).await;
}

pub(super) async fn missing_is_none(store: Arc<dyn SessionStore>) {
    let store = &*store;
    assert_eq!(
        load(store, &fresh_key()).await,
        None,
        "an unknown key must load as None"
    );
    assert!(!must("exists", store.exists(&fresh_key())).await);
}

pub(super) async fn loading_unknown_creates_nothing(store: Arc<dyn SessionStore>) {
    let store = &*store;
    for _ in 0..10 {
        let key = fresh_key();
        let _ = load(store, &key).await;
        assert!(!must("exists", store.exists(&key)).await);
    }
    assert_eq!(
        must("count", store.count()).await,
        0,
        "loads must not create sessions"
    );
    assert_eq!(must("count_expired", store.count_expired()).await, 0);
    assert!(must("list", store.list()).await.is_empty());
}

pub(super) async fn expired_is_none(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = expired(&b"old"[..]);
    create(store, &r).await;
    assert_eq!(
        load(store, &r.key).await,
        None,
        "an expired record must load as None"
    );
    assert!(!must("exists", store.exists(&r.key)).await);
    assert_eq!(
        must("count", store.count()).await,
        0,
        "expired records are not live"
    );
}

pub(super) async fn create_on_taken_key_fails_without_overwriting(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let first = live(&b"first"[..]);
    create(store, &first).await;
    let mut second = first.clone();
    second.data = Bytes::from_static(b"second");
    assert_err!(
        "create on a taken key",
        store.create(&second),
        Error::AlreadyExists
    );
    assert_eq!(
        load(store, &first.key).await,
        Some(first),
        "the first record must survive"
    );
}

pub(super) async fn create_over_expired_key_succeeds(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let old = expired(&b"old"[..]);
    create(store, &old).await;
    let mut new = live(&b"new"[..]);
    new.key = old.key;
    create(store, &new).await;
    assert_eq!(load(store, &new.key).await, Some(new));
}

pub(super) async fn concurrent_creates_one_winner(store: Arc<dyn SessionStore>) {
    let key = fresh_key();
    let expires = Timestamp::now() + HOUR;
    let results = on_tasks(&store, 0..16u8, move |store, i| async move {
        let r = Record::new(key, vec![i; 64], expires);
        (i, store.create(&r).await)
    })
    .await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent create must win: {results:?}"
    );
    for (_, r) in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::AlreadyExists),
                "losers must get AlreadyExists, got {e:?}"
            );
        }
    }
    let stored = load(&*store, &key).await.map(|r| r.data);
    assert_eq!(stored, Some(Bytes::from(vec![winners[0]; 64])));
}

pub(super) async fn save_overwrites(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"before"[..]);
    create(store, &r).await;
    let mut changed = r.clone();
    changed.data = Bytes::from_static(b"after");
    changed.expires_at = r.expires_at + HOUR;
    changed.owner = Some("ann".into());
    let v = must("save", store.save(&changed)).await;
    assert_eq!(v, r.version + 1, "save must return the bumped version");
    let back = load(store, &r.key).await;
    let expected = Record {
        version: v,
        ..changed
    };
    assert_eq!(back, Some(expected));
}

pub(super) async fn save_bumps_version(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let mut r = live(&b"0"[..]);
    create(store, &r).await;
    for i in 1..=5u64 {
        r.data = Bytes::from(i.to_string());
        r.version = must("save", store.save(&r)).await;
        assert_eq!(r.version, 1 + i);
    }
    assert_eq!(load(store, &r.key).await, Some(r));
}

pub(super) async fn save_keeps_created_at(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let mut r = live(&b"x"[..]);
    r.created_at = Timestamp::now() - HOUR;
    create(store, &r).await;
    let mut changed = r.clone();
    changed.created_at = Timestamp::now();
    must("save", store.save(&changed)).await;
    let back = load(store, &r.key).await.map(|b| b.created_at);
    assert_eq!(back, Some(r.created_at), "save must not move created_at");
}

pub(super) async fn stale_save_conflicts_and_changes_nothing(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"v1"[..]);
    create(store, &r).await;
    let mut a = r.clone();
    a.data = Bytes::from_static(b"from a");
    let v2 = must("first save", store.save(&a)).await;
    let mut b = r.clone();
    b.data = Bytes::from_static(b"from b");
    b.expires_at = r.expires_at + HOUR;
    assert_err!("save with a stale version", store.save(&b), Error::Conflict);
    let back = load(store, &r.key).await;
    assert_eq!(
        back,
        Some(Record { version: v2, ..a }),
        "a refused save must change nothing"
    );
}

pub(super) async fn save_after_delete_does_not_resurrect(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"logged in"[..]);
    create(store, &r).await;
    let loaded = load(store, &r.key).await;
    assert!(must("delete", store.delete(&r.key)).await);
    let mut stale = loaded.unwrap_or(r.clone());
    stale.data = Bytes::from_static(b"written after logout");
    assert_err!("save after delete", store.save(&stale), Error::NotFound);
    assert_eq!(
        load(store, &r.key).await,
        None,
        "a deleted session must stay deleted"
    );
    assert_eq!(must("count", store.count()).await, 0);
}

pub(super) async fn save_after_rotate_does_not_resurrect(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"data"[..]);
    create(store, &r).await;
    let new_key = fresh_key();
    must("rotate", store.rotate(&r.key, &new_key)).await;
    let mut stale = r.clone();
    stale.data = Bytes::from_static(b"stale writer");
    assert_err!("save to a moved key", store.save(&stale), Error::NotFound);
    assert_eq!(
        load(store, &r.key).await,
        None,
        "the old key must stay gone"
    );
    let moved = load(store, &new_key).await.map(|m| m.data);
    assert_eq!(moved, Some(r.data), "the moved record must keep its data");
}

pub(super) async fn save_of_expired_is_not_found(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = expired(&b"old"[..]);
    create(store, &r).await;
    let mut revived = r.clone();
    revived.expires_at = Timestamp::now() + HOUR;
    assert_err!(
        "save of an expired record",
        store.save(&revived),
        Error::NotFound
    );
    assert_eq!(load(store, &r.key).await, None);
}

pub(super) async fn touch_extends_without_changing_data(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"keep me"[..]);
    create(store, &r).await;
    let later = r.expires_at + HOUR;
    must("touch", store.touch(&r.key, later)).await;
    let back = load(store, &r.key).await;
    assert_eq!(
        back,
        Some(Record {
            expires_at: later,
            ..r
        })
    );
}

pub(super) async fn touch_after_delete_does_not_resurrect(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"x"[..]);
    create(store, &r).await;
    must("delete", store.delete(&r.key)).await;
    assert_err!(
        "touch after delete",
        store.touch(&r.key, Timestamp::now() + HOUR),
        Error::NotFound
    );
    assert_eq!(load(store, &r.key).await, None);
    assert_err!(
        "touch of an unknown key",
        store.touch(&fresh_key(), Timestamp::now() + HOUR),
        Error::NotFound
    );
    assert_eq!(must("count", store.count()).await, 0);
}

pub(super) async fn touch_of_expired_does_not_revive(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = expired(&b"x"[..]);
    create(store, &r).await;
    assert_err!(
        "touch of an expired record",
        store.touch(&r.key, Timestamp::now() + HOUR),
        Error::NotFound
    );
    assert_eq!(load(store, &r.key).await, None);
}

pub(super) async fn delete_removes(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"x"[..]);
    let other = live(&b"y"[..]);
    create(store, &r).await;
    create(store, &other).await;
    assert!(
        must("delete", store.delete(&r.key)).await,
        "delete of a live record returns true"
    );
    assert_eq!(load(store, &r.key).await, None);
    assert_eq!(
        load(store, &other.key).await,
        Some(other),
        "delete must touch one record"
    );
}

pub(super) async fn delete_missing_is_false(store: Arc<dyn SessionStore>) {
    let store = &*store;
    assert!(!must("delete of a missing key", store.delete(&fresh_key())).await);
    let r = live(&b"x"[..]);
    create(store, &r).await;
    assert!(must("delete", store.delete(&r.key)).await);
    assert!(!must("second delete", store.delete(&r.key)).await);
}

pub(super) async fn delete_many_removes_listed_only(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let records: Vec<Record> = (0..6u8).map(|i| live(vec![i])).collect();
    for r in &records {
        create(store, r).await;
    }
    let doomed = [records[0].key, records[2].key, records[4].key, fresh_key()];
    assert_eq!(must("delete_many", store.delete_many(&doomed)).await, 3);
    for (i, r) in records.iter().enumerate() {
        let present = load(store, &r.key).await.is_some();
        assert_eq!(present, i % 2 == 1, "record {i} present={present}");
    }
}

pub(super) async fn delete_many_empty_is_noop(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"x"[..]);
    create(store, &r).await;
    assert_eq!(must("delete_many([])", store.delete_many(&[])).await, 0);
    assert_eq!(must("count", store.count()).await, 1);
}

pub(super) async fn exists_sees_live_only(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"x"[..]);
    let e = expired(&b"y"[..]);
    create(store, &r).await;
    create(store, &e).await;
    assert!(must("exists", store.exists(&r.key)).await);
    assert!(!must("exists", store.exists(&e.key)).await);
    assert!(!must("exists", store.exists(&fresh_key())).await);
}

pub(super) async fn rotate_keeps_everything(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let mut r = live(&b"payload"[..]).with_owner("ann");
    create(store, &r).await;
    r.version = must("save", store.save(&r)).await;
    let new_key = fresh_key();
    must("rotate", store.rotate(&r.key, &new_key)).await;
    assert_eq!(load(store, &r.key).await, None, "the old key must be gone");
    assert!(!must("exists", store.exists(&r.key)).await);
    let moved = load(store, &new_key).await;
    assert_eq!(moved, Some(Record { key: new_key, ..r }));
    assert_eq!(
        must("count", store.count()).await,
        1,
        "rotate must not copy"
    );
}

pub(super) async fn rotate_is_atomic(store: Arc<dyn SessionStore>) {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

    const ROTATIONS: usize = 24;
    let first = live(&b"moving"[..]);
    create(&*store, &first).await;
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        std::iter::once(first.key)
            .chain((0..ROTATIONS).map(|_| fresh_key()))
            .collect(),
    );
    // `started` is the number of rotations begun: rotation `i` moves `keys[i]` to
    // `keys[i + 1]`. A probe of that pair counts only if no later rotation began before it
    // ended, so it saw the pair before or after rotation `i` (or, if the move is not atomic,
    // in between).
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicU64::new(0));
    // Reading the new key first can only see both live if the move is not atomic; reading
    // the old key first can only see neither if it is not.
    let readers: Vec<_> = [true, false]
        .into_iter()
        .map(|new_first| {
            let (store, keys) = (Arc::clone(&store), Arc::clone(&keys));
            let (started, done, probes) =
                (Arc::clone(&started), Arc::clone(&done), Arc::clone(&probes));
            tokio::spawn(async move {
                while !done.load(SeqCst) {
                    tokio::task::yield_now().await;
                    let s = started.load(SeqCst);
                    let Some(i) = s.checked_sub(1) else { continue };
                    let (old, new) = (keys[i], keys[i + 1]);
                    let (old_live, new_live) = if new_first {
                        let new_live = store.load(&new).await?.is_some();
                        (store.load(&old).await?.is_some(), new_live)
                    } else {
                        let old_live = store.load(&old).await?.is_some();
                        (old_live, store.load(&new).await?.is_some())
                    };
                    if started.load(SeqCst) != s {
                        continue;
                    }
                    if new_first {
                        assert!(
                            !(old_live && new_live),
                            "a reader saw both the old and the new key live during rotate"
                        );
                    } else {
                        assert!(
                            old_live || new_live,
                            "a reader saw neither the old nor the new key live during rotate"
                        );
                    }
                    probes.fetch_add(1, SeqCst);
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    let mut writer_result = Ok(());
    for i in 0..ROTATIONS {
        let before = probes.load(SeqCst);
        started.store(i + 1, SeqCst);
        if let Err(e) = store.rotate(&keys[i], &keys[i + 1]).await {
            writer_result = Err(e);
            break;
        }
        // Let both readers look at this pair before moving on, so every rotation is probed.
        while probes.load(SeqCst) < before + 2 && !readers.iter().any(|r| r.is_finished()) {
            tokio::task::yield_now().await;
        }
    }
    done.store(true, SeqCst);
    for reader in readers {
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("a load during rotate failed: {e:?}"),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    if let Err(e) = writer_result {
        panic!("rotate failed unexpectedly: {e:?}");
    }
    let last = keys[ROTATIONS];
    assert_eq!(
        load(&*store, &last).await.map(|r| r.data),
        Some(first.data),
        "the record must arrive whole after every rotation"
    );
    assert_eq!(
        must("count", store.count()).await,
        1,
        "rotate must not copy"
    );
}

pub(super) async fn rotate_to_taken_key_fails(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let a = live(&b"a"[..]);
    let b = live(&b"b"[..]);
    create(store, &a).await;
    create(store, &b).await;
    assert_err!(
        "rotate onto a taken key",
        store.rotate(&a.key, &b.key),
        Error::AlreadyExists
    );
    assert_eq!(load(store, &a.key).await, Some(a));
    assert_eq!(load(store, &b.key).await, Some(b));
}

pub(super) async fn rotate_onto_expired_key_replaces_it(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"mine"[..]).with_owner("ann");
    let stale = expired(&b"stale"[..]).with_owner("bob");
    create(store, &r).await;
    create(store, &stale).await;
    must(
        "rotate onto a key whose record has expired",
        store.rotate(&r.key, &stale.key),
    )
    .await;
    assert_eq!(load(store, &r.key).await, None, "the old key is gone");
    let moved = Record {
        key: stale.key,
        ..r.clone()
    };
    assert_eq!(
        load(store, &stale.key).await,
        Some(moved.clone()),
        "the moved session replaced the expired one"
    );
    assert_eq!(
        must("list_by_owner", store.list_by_owner("ann")).await,
        vec![moved],
        "the owner index follows the move"
    );
    assert!(
        must("list_by_owner", store.list_by_owner("bob"))
            .await
            .is_empty(),
        "the replaced record's owner lists nothing"
    );
}

pub(super) async fn rotate_of_missing_fails(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let target = fresh_key();
    assert_err!(
        "rotate of a missing key",
        store.rotate(&fresh_key(), &target),
        Error::NotFound
    );
    let e = expired(&b"e"[..]);
    create(store, &e).await;
    assert_err!(
        "rotate of an expired key",
        store.rotate(&e.key, &target),
        Error::NotFound
    );
    assert_eq!(load(store, &target).await, None);
}

pub(super) async fn counts_and_sweep_agree(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let lives: Vec<Record> = (0..4u8).map(|i| live(vec![i])).collect();
    let deads: Vec<Record> = (0..3u8).map(|i| expired(vec![i])).collect();
    for r in lives.iter().chain(&deads) {
        create(store, r).await;
    }
    assert_eq!(must("count", store.count()).await, 4);
    let expired_now = must("count_expired", store.count_expired()).await;
    if store.expiry_is_native() {
        assert!(expired_now <= 3, "count_expired saw {expired_now} of 3");
    } else {
        assert_eq!(
            expired_now, 3,
            "count_expired must see every expired record"
        );
    }
    let swept = must("delete_expired", store.delete_expired()).await;
    assert_eq!(
        swept, expired_now,
        "delete_expired must remove what count_expired counted"
    );
    assert_eq!(must("count_expired", store.count_expired()).await, 0);
    assert_eq!(
        must("count", store.count()).await,
        4,
        "a sweep must spare live records"
    );
    for r in &lives {
        assert_eq!(load(store, &r.key).await.as_ref(), Some(r));
    }
    assert_eq!(must("second sweep", store.delete_expired()).await, 0);
}

pub(super) async fn list_shows_only_live(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let lives: Vec<Record> = (0..5u8).map(|i| live(vec![i])).collect();
    for r in &lives {
        create(store, r).await;
    }
    create(store, &expired(&b"gone"[..])).await;
    must("delete", store.delete(&lives[0].key)).await;
    let listed: HashSet<SessionKey> = must("list", store.list()).await.into_iter().collect();
    let expected: HashSet<SessionKey> = lives[1..].iter().map(|r| r.key).collect();
    assert_eq!(listed, expected);
}

/// Walks every page of [`SessionStore::list_page`] from the start with `limit`, checking each
/// page's shape (at most `limit` keys, at least 1; keys ascending; the cursor is the last key),
/// and returns all keys in the order returned. Panics if the walk does not end.
async fn walk_pages(store: &dyn SessionStore, limit: usize, max_pages: usize) -> Vec<SessionKey> {
    let mut all = Vec::new();
    let mut after: Option<SessionKey> = None;
    for _ in 0..max_pages {
        let (page, next) = must("list_page", store.list_page(after.as_ref(), limit)).await;
        assert!(
            page.len() <= limit.max(1),
            "a page of limit {limit} held {} keys",
            page.len()
        );
        assert!(
            page.windows(2).all(|w| w[0] < w[1]),
            "a page's keys must ascend"
        );
        if let (Some(first), Some(after)) = (page.first(), &after) {
            assert!(first > after, "a page returned a key not after its cursor");
        }
        if let Some(next) = &next {
            assert_eq!(
                page.last(),
                Some(next),
                "the cursor must be the page's last key"
            );
        }
        all.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
    panic!("list_page did not finish within {max_pages} pages");
}

pub(super) async fn list_page_walks_every_live_key_once(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let lives: Vec<Record> = (0..23u8).map(|i| live(vec![i])).collect();
    for r in &lives {
        create(store, r).await;
    }
    for i in 0..4u8 {
        create(store, &expired(vec![i])).await;
    }
    must("delete", store.delete(&lives[0].key)).await;
    let mut expected: Vec<SessionKey> = lives[1..].iter().map(|r| r.key).collect();
    expected.sort();
    for limit in [1, 5, 22, 23, 1000] {
        assert_eq!(
            walk_pages(store, limit, 100).await,
            expected,
            "a walk with pages of {limit} must return each live key once, ascending"
        );
    }
    let (page, next) = must("list_page", store.list_page(None, 0)).await;
    assert_eq!(
        (page.as_slice(), next.as_ref()),
        (&expected[..1], expected.first()),
        "a limit of 0 must be taken as 1"
    );
    let last = expected.last().copied();
    let (page, next) = must("list_page", store.list_page(last.as_ref(), 10)).await;
    assert!(
        page.is_empty() && next.is_none(),
        "nothing follows the last key"
    );
}

pub(super) async fn list_page_is_stable_under_concurrent_writes(store: Arc<dyn SessionStore>) {
    let steady: Vec<Record> = (0..40u8).map(|i| live(vec![i])).collect();
    let doomed: Vec<Record> = (0..20u8).map(|i| live(vec![i])).collect();
    for r in steady.iter().chain(&doomed) {
        create(&*store, r).await;
    }
    let writer = {
        let store = Arc::clone(&store);
        let doomed: Vec<SessionKey> = doomed.iter().map(|r| r.key).collect();
        tokio::spawn(async move {
            let mut created = Vec::new();
            for (i, key) in doomed.iter().enumerate() {
                let r = live(vec![1, i as u8]);
                store.create(&r).await?;
                created.push(r.key);
                store.create(&expired(vec![2, i as u8])).await?;
                store.delete(key).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(created)
        })
    };
    let walked = walk_pages(&*store, 3, 1000).await;
    let created = match writer.await {
        Ok(Ok(created)) => created,
        Ok(Err(e)) => panic!("a concurrent write failed: {e:?}"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    assert!(
        walked.windows(2).all(|w| w[0] < w[1]),
        "a walk must never return a key twice or go back"
    );
    let walked: HashSet<SessionKey> = walked.into_iter().collect();
    for r in &steady {
        assert!(
            walked.contains(&r.key),
            "a key live throughout the walk was missed"
        );
    }
    let allowed: HashSet<SessionKey> = steady
        .iter()
        .chain(&doomed)
        .map(|r| r.key)
        .chain(created)
        .collect();
    assert!(
        walked.is_subset(&allowed),
        "a walk returned a key that was never live"
    );
}

pub(super) async fn concurrent_distinct_sessions_lose_nothing(store: Arc<dyn SessionStore>) {
    let results = on_tasks(&store, 0..64u32, |store, i| async move {
        let mut r = live(format!("task {i} v1").into_bytes());
        store.create(&r).await?;
        r.data = Bytes::from(format!("task {i} v2"));
        r.version = store.save(&r).await?;
        let back = store.load(&r.key).await?;
        Ok::<_, Error>((r, back))
    })
    .await;
    for result in results {
        let (written, back) = match result {
            Ok(pair) => pair,
            Err(e) => panic!("a concurrent operation failed: {e:?}"),
        };
        assert_eq!(back, Some(written), "a concurrent write was lost");
    }
    assert_eq!(must("count", store.count()).await, 64);
}

pub(super) async fn concurrent_saves_leave_one_whole_value(store: Arc<dyn SessionStore>) {
    // Layout: an 8-byte big-endian counter, then `1000 + writer` copies of the writer's byte.
    fn payload(counter: u64, fill: u8) -> Bytes {
        let mut data = counter.to_be_bytes().to_vec();
        data.extend(std::iter::repeat_n(fill, 1000 + usize::from(fill)));
        Bytes::from(data)
    }
    let base = live(payload(0, 0));
    create(&*store, &base).await;
    let key = base.key;
    let results = on_tasks(&store, 1..=16u8, move |store, i| async move {
        let mut wins = 0u64;
        for _ in 0..4 {
            let Some(mut r) = store.load(&key).await? else {
                return Err(Error::NotFound);
            };
            let mut counter = [0u8; 8];
            counter.copy_from_slice(&r.data[..8]);
            r.data = payload(u64::from_be_bytes(counter) + 1, i);
            tokio::task::yield_now().await;
            match store.save(&r).await {
                Ok(_) => wins += 1,
                Err(Error::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(wins)
    })
    .await;
    let mut total = 0;
    for result in results {
        match result {
            Ok(w) => total += w,
            Err(e) => panic!("a concurrent save failed with something other than Conflict: {e:?}"),
        }
    }
    assert!(total >= 1, "at least one save must succeed");
    let Some(last) = load(&*store, &key).await else {
        panic!("the session vanished under concurrent saves")
    };
    assert!(last.data.len() > 8, "the stored value was truncated");
    let fill = last.data[8];
    assert!(
        last.data.len() == 8 + 1000 + usize::from(fill)
            && last.data[8..].iter().all(|b| *b == fill),
        "the stored value is a mix of concurrent writes"
    );
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&last.data[..8]);
    assert_eq!(
        u64::from_be_bytes(counter),
        total,
        "an increment was lost: saves overwrote each other"
    );
    assert_eq!(
        last.version,
        1 + total,
        "every successful save bumps the version once"
    );
}

async fn owned_population(store: &dyn SessionStore) -> (Vec<Record>, Vec<Record>, Record) {
    let ann: Vec<Record> = (0..3u8).map(|i| live(vec![i]).with_owner("ann")).collect();
    let bob: Vec<Record> = (0..2u8).map(|i| live(vec![i]).with_owner("bob")).collect();
    let anon = live(&b"anon"[..]);
    for r in ann.iter().chain(&bob).chain([&anon]) {
        create(store, r).await;
    }
    // An expired session of ann's, and one of a prefix-sharing name, must never be listed.
    create(store, &expired(&b"old"[..]).with_owner("ann")).await;
    create(store, &live(&b"lookalike"[..]).with_owner("anna")).await;
    (ann, bob, anon)
}

fn keys_of(records: &[Record]) -> HashSet<SessionKey> {
    records.iter().map(|r| r.key).collect()
}

pub(super) async fn owner_listing_is_exact(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let (ann, bob, _) = owned_population(store).await;
    let listed = must("list_by_owner", store.list_by_owner("ann")).await;
    assert_eq!(keys_of(&listed), keys_of(&ann));
    for r in &listed {
        assert!(ann.contains(r), "listed records must be whole and current");
    }
    assert_eq!(
        keys_of(&must("list_by_owner", store.list_by_owner("bob")).await),
        keys_of(&bob)
    );
    assert!(
        must("list_by_owner", store.list_by_owner("nobody"))
            .await
            .is_empty()
    );
}

pub(super) async fn owner_deletion_is_exact(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let (ann, bob, anon) = owned_population(store).await;
    assert_eq!(
        must("delete_by_owner", store.delete_by_owner("ann")).await,
        3
    );
    for r in &ann {
        assert_eq!(load(store, &r.key).await, None);
    }
    for r in bob.iter().chain([&anon]) {
        assert_eq!(
            load(store, &r.key).await.as_ref(),
            Some(r),
            "other sessions must survive"
        );
    }
    assert_eq!(
        must("list_by_owner", store.list_by_owner("anna"))
            .await
            .len(),
        1
    );
    assert!(
        must("list_by_owner", store.list_by_owner("ann"))
            .await
            .is_empty()
    );
    assert_eq!(
        must("delete_by_owner", store.delete_by_owner("ann")).await,
        0
    );
}

pub(super) async fn owner_moves_with_save(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let mut r = live(&b"x"[..]).with_owner("ann");
    create(store, &r).await;
    r.owner = Some("bob".into());
    r.version = must("save", store.save(&r)).await;
    assert!(
        must("list_by_owner", store.list_by_owner("ann"))
            .await
            .is_empty()
    );
    assert_eq!(
        keys_of(&must("list_by_owner", store.list_by_owner("bob")).await),
        keys_of(&[r.clone()])
    );
    r.owner = None;
    must("save", store.save(&r)).await;
    assert!(
        must("list_by_owner", store.list_by_owner("bob"))
            .await
            .is_empty()
    );
    assert_eq!(
        must("delete_by_owner", store.delete_by_owner("bob")).await,
        0
    );
    assert!(load(store, &r.key).await.is_some());
}

pub(super) async fn owner_follows_rotate(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"x"[..]).with_owner("ann");
    create(store, &r).await;
    let new_key = fresh_key();
    must("rotate", store.rotate(&r.key, &new_key)).await;
    let listed = must("list_by_owner", store.list_by_owner("ann")).await;
    assert_eq!(keys_of(&listed), HashSet::from([new_key]));
    assert_eq!(
        must("delete_by_owner", store.delete_by_owner("ann")).await,
        1
    );
    assert_eq!(load(store, &new_key).await, None);
}

pub(super) async fn size_limit_is_exact(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let Some(limit) = store.max_data_len() else {
        round_trip(store, live(vec![7u8; 1 << 20])).await;
        return;
    };
    let fits = live(vec![1u8; limit]);
    round_trip(store, fits.clone()).await;
    let big = live(vec![2u8; limit + 1]);
    assert_err!("create one byte over the limit", store.create(&big), Error::TooLarge { size, limit: l } if size == limit + 1 && l == limit);
    assert_eq!(
        load(store, &big.key).await,
        None,
        "a refused create must write nothing"
    );
    let mut grown = fits.clone();
    grown.data = Bytes::from(vec![3u8; limit + 1]);
    assert_err!(
        "save one byte over the limit",
        store.save(&grown),
        Error::TooLarge { .. }
    );
    assert_eq!(
        load(store, &fits.key).await,
        Some(fits),
        "a refused save must change nothing"
    );
}

pub(super) async fn delete_then_create_again(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let r = live(&b"first life"[..]).with_owner("ann");
    create(store, &r).await;
    must("delete", store.delete(&r.key)).await;
    let mut again = live(&b"second life"[..]);
    again.key = r.key;
    create(store, &again).await;
    assert_eq!(load(store, &r.key).await, Some(again));
    assert!(
        must("list_by_owner", store.list_by_owner("ann"))
            .await
            .is_empty()
    );
}

/// A durable store, dropped and opened again on the same data, still has every live record
/// with its version and owner, and still forgets deleted ones.
pub async fn survives_reopen(mut fixture: Fixture) {
    let kept = live(&b"kept"[..]).with_owner("ann");
    let mut saved = live(&b"v1"[..]);
    let deleted = live(&b"deleted"[..]);
    let moved = live(&b"moved"[..]);
    let new_key = fresh_key();
    {
        let store = fixture.store();
        let store = &*store;
        create(store, &kept).await;
        create(store, &saved).await;
        saved.data = Bytes::from_static(b"v2");
        saved.version = must("save", store.save(&saved)).await;
        create(store, &deleted).await;
        must("delete", store.delete(&deleted.key)).await;
        create(store, &moved).await;
        must("rotate", store.rotate(&moved.key, &new_key)).await;
    }
    let store = fixture.take_store();
    drop(store);
    let Some(store) = fixture.open_again().await else {
        panic!("`durable` was given but the fixture has no reopen function")
    };
    assert_eq!(load(&*store, &kept.key).await, Some(kept));
    assert_eq!(load(&*store, &saved.key).await, Some(saved));
    assert_eq!(load(&*store, &deleted.key).await, None);
    assert_eq!(load(&*store, &moved.key).await, None);
    assert_eq!(
        load(&*store, &new_key).await.map(|r| r.data),
        Some(moved.data)
    );
    assert_eq!(
        keys_of(&must("list_by_owner", store.list_by_owner("ann")).await).len(),
        1
    );
}

/// Runs `work` for each input on its own Tokio task, in parallel, and returns the outputs in
/// input order. A panicking task fails the case with its message.
async fn on_tasks<I, T, F, Fut>(
    store: &Arc<dyn SessionStore>,
    inputs: impl IntoIterator<Item = I>,
    work: F,
) -> Vec<T>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(Arc<dyn SessionStore>, I) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = inputs
        .into_iter()
        .map(|i| tokio::spawn(work(store.clone(), i)))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}
