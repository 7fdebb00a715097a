//! Restarts, the directory lock, torn tails, expiry on replay, and compaction under load.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use session_core::{Bytes, Error, Record, SessionId, SessionKey, SessionStore, Timestamp};
use session_hybrid::{Durability, HybridStore, HybridStoreBuilder};

const HOUR: Duration = Duration::from_secs(3600);

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    }
}

fn open(builder: HybridStoreBuilder) -> HybridStore {
    match builder.open() {
        Ok(store) => store,
        Err(e) => panic!("opening the hybrid store failed: {e}"),
    }
}

async fn must<T>(what: &str, result: impl Future<Output = session_core::Result<T>>) -> T {
    match result.await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

fn key() -> SessionKey {
    SessionId::generate().key()
}

fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(e) => panic!("listing {} failed: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Every live record of `store`, by key.
async fn contents(store: &HybridStore) -> HashMap<SessionKey, Record> {
    let mut out = HashMap::new();
    for key in must("list", store.list()).await {
        if let Some(r) = must("load", store.load(&key)).await {
            out.insert(key, r);
        }
    }
    out
}

/// Applies a mixed history of every kind of change and returns what the store should hold.
async fn mixed_history(store: &HybridStore, sessions: usize) -> HashMap<SessionKey, Record> {
    let mut expected = HashMap::new();
    for i in 0..sessions {
        let mut r = Record::new(
            key(),
            Bytes::from(format!("session {i} v1")),
            Timestamp::now() + HOUR,
        );
        if i.is_multiple_of(3) {
            r = r.with_owner(format!("owner-{}", i % 7));
        }
        must("create", store.create(&r)).await;
        if i.is_multiple_of(2) {
            r.data = Bytes::from(format!("session {i} v2 {}", "x".repeat(i % 50)));
            r.version = must("save", store.save(&r)).await;
        }
        if i.is_multiple_of(5) {
            r.expires_at = Timestamp::now() + HOUR * 2;
            must("touch", store.touch(&r.key, r.expires_at)).await;
        }
        if i.is_multiple_of(7) {
            let new = key();
            must("rotate", store.rotate(&r.key, &new)).await;
            r.key = new;
        }
        if i.is_multiple_of(11) {
            must("delete", store.delete(&r.key)).await;
            continue;
        }
        expected.insert(r.key, r);
    }
    let removed = must("delete_by_owner", store.delete_by_owner("owner-3")).await;
    let before = expected.len();
    expected.retain(|_, r| r.owner.as_deref() != Some("owner-3"));
    assert_eq!(removed as usize, before - expected.len());
    expected
}

#[tokio::test]
async fn restart_after_clean_close_loses_nothing() {
    let tmp = tempdir();
    for durability in [Durability::default(), Durability::EveryWrite] {
        let dir = tmp.path().join(format!("{durability:?}"));
        let store = open(HybridStore::builder(&dir).durability(durability));
        let expected = mixed_history(&store, 300).await;
        assert_eq!(
            contents(&store).await,
            expected,
            "the live store matches the model"
        );
        must("close", store.close()).await;
        assert!(
            matches!(store.load(&key()).await, Err(Error::Backend { .. })),
            "a closed store refuses calls"
        );
        drop(store);

        let store = open(HybridStore::builder(&dir));
        let report = store.replay_report().clone();
        assert!(
            !report.lost_anything(),
            "a clean close leaves nothing to drop: {report:?}"
        );
        assert!(!report.torn_tail && !report.corrupt_entry, "{report:?}");
        assert_eq!(report.sessions_loaded as usize, expected.len());
        assert_eq!(
            contents(&store).await,
            expected,
            "{durability:?}: reopened store differs"
        );
        let owned = must("list_by_owner", store.list_by_owner("owner-0")).await;
        assert_eq!(
            owned.len(),
            expected
                .values()
                .filter(|r| r.owner.as_deref() == Some("owner-0"))
                .count()
        );
        // A conditional save still works on the replayed version.
        let Some(r) = expected.values().next().cloned() else {
            panic!("the model is empty")
        };
        let mut stale = r.clone();
        stale.version = r.version + 5;
        assert!(matches!(store.save(&stale).await, Err(Error::Conflict)));
        assert_eq!(must("save", store.save(&r)).await, r.version + 1);
    }
}

#[tokio::test]
async fn a_directory_has_one_owner_at_a_time() {
    let tmp = tempdir();
    let first = open(HybridStore::builder(tmp.path()));
    match HybridStore::open(tmp.path()) {
        Err(Error::Config(msg)) => assert!(msg.contains("in use"), "unexpected message: {msg}"),
        other => panic!("a second open of a locked directory must fail with Config, got {other:?}"),
    }
    must("close", first.close()).await;
    let second = open(HybridStore::builder(tmp.path()));
    drop(second);
    let third = open(HybridStore::builder(tmp.path()));
    assert!(must("count", third.count()).await == 0);
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    let tmp = tempdir();
    let bad = [
        HybridStore::builder(tmp.path()).flush_bytes(0),
        HybridStore::builder(tmp.path()).compact_factor(0),
        HybridStore::builder(tmp.path()).durability(Durability::Lazy(Duration::ZERO)),
    ];
    for builder in bad {
        assert!(
            matches!(builder.clone().open(), Err(Error::Config(_))),
            "{builder:?} must be refused"
        );
    }
}

#[tokio::test]
async fn drop_flushes_and_flush_makes_durable() {
    let tmp = tempdir();
    // A long interval: only flush() and Drop can have written these.
    let builder =
        HybridStore::builder(tmp.path()).durability(Durability::Lazy(Duration::from_secs(3600)));
    let store = open(builder.clone());
    let a = Record::new(key(), &b"flushed"[..], Timestamp::now() + HOUR);
    must("create", store.create(&a)).await;
    must("flush", store.flush()).await;
    let segments = files(tmp.path(), "log-");
    let Some(last) = segments.last() else {
        panic!("no log segment")
    };
    let len = std::fs::metadata(tmp.path().join(last))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        len > a.data.len() as u64,
        "flush() wrote the change ({len} bytes)"
    );
    let b = Record::new(key(), &b"dropped"[..], Timestamp::now() + HOUR);
    must("create", store.create(&b)).await;
    drop(store);
    let store = open(builder);
    assert_eq!(must("load", store.load(&a.key)).await, Some(a));
    assert_eq!(must("load", store.load(&b.key)).await, Some(b));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_reported() {
    let tmp = tempdir();
    let store = open(HybridStore::builder(tmp.path()));
    let r = Record::new(key(), &b"whole"[..], Timestamp::now() + HOUR);
    must("create", store.create(&r)).await;
    must("close", store.close()).await;
    drop(store);
    let segments = files(tmp.path(), "log-");
    let Some(last) = segments.last() else {
        panic!("no log segment")
    };
    let path = tmp.path().join(last);
    let whole = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // Half a frame header and a bit: what a write cut short leaves.
    let mut file = match std::fs::OpenOptions::new().append(true).open(&path) {
        Ok(f) => f,
        Err(e) => panic!("opening the log failed: {e}"),
    };
    if let Err(e) = std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 5]) {
        panic!("appending failed: {e}");
    }
    drop(file);
    let store = open(HybridStore::builder(tmp.path()));
    let report = store.replay_report();
    assert!(report.torn_tail && !report.corrupt_entry, "{report:?}");
    assert_eq!(report.bytes_dropped, 9);
    assert_eq!(
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        whole,
        "the tail was cut off the file"
    );
    assert_eq!(must("load", store.load(&r.key)).await, Some(r));
}

#[tokio::test]
async fn expired_sessions_are_not_replayed() {
    let tmp = tempdir();
    let store = open(HybridStore::builder(tmp.path()));
    let short = Record::new(
        key(),
        &b"short"[..],
        Timestamp::now() + Duration::from_millis(50),
    );
    let long = Record::new(key(), &b"long"[..], Timestamp::now() + HOUR);
    must("create", store.create(&short)).await;
    must("create", store.create(&long)).await;
    drop(store);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let store = open(HybridStore::builder(tmp.path()));
    assert_eq!(store.replay_report().expired_skipped, 1);
    assert_eq!(store.replay_report().sessions_loaded, 1);
    assert_eq!(
        must("count_expired", store.count_expired()).await,
        0,
        "expired records are not even held"
    );
    assert_eq!(must("load", store.load(&long.key)).await, Some(long));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_under_concurrent_load_loses_nothing() {
    let tmp = tempdir();
    let builder = HybridStore::builder(tmp.path())
        .durability(Durability::Lazy(Duration::from_millis(5)))
        .flush_bytes(8 << 10)
        .compact_min_bytes(64 << 10)
        .compact_factor(1);
    let store = Arc::new(open(builder.clone()));
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut model: HashMap<SessionKey, Record> = HashMap::new();
            let mut round = 0u32;
            // Run until compaction has happened several times while this task writes.
            while store.compactions() < 3 || round < 50 {
                round += 1;
                assert!(round < 200_000, "compaction never ran");
                let mut r = Record::new(
                    key(),
                    Bytes::from(format!("t{t} r{round} {}", "d".repeat(200))),
                    Timestamp::now() + HOUR,
                )
                .with_owner(format!("t{t}"));
                must("create", store.create(&r)).await;
                r.data = Bytes::from(format!("t{t} r{round} saved"));
                r.version = must("save", store.save(&r)).await;
                if round.is_multiple_of(3) {
                    r.expires_at = Timestamp::now() + HOUR * 3;
                    must("touch", store.touch(&r.key, r.expires_at)).await;
                }
                if round.is_multiple_of(4) {
                    let new = key();
                    must("rotate", store.rotate(&r.key, &new)).await;
                    r.key = new;
                }
                if round.is_multiple_of(2) {
                    // Keep the live set bounded so the log outgrows the snapshots.
                    must("delete", store.delete(&r.key)).await;
                } else {
                    model.insert(r.key, r);
                }
                if round.is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
            }
            model
        }));
    }
    let mut expected = HashMap::new();
    for task in tasks {
        match task.await {
            Ok(model) => expected.extend(model),
            Err(e) => panic!("a writer task failed: {e}"),
        }
    }
    assert!(store.compactions() >= 3);
    assert_eq!(
        contents(&store).await,
        expected,
        "the live store matches the model"
    );
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the store is still shared")
    };
    must("close", store.close()).await;
    drop(store);
    let snapshots = files(tmp.path(), "snap-");
    assert!(
        !snapshots.is_empty() && snapshots.len() <= 2,
        "the newest snapshot and one fallback are kept: {snapshots:?}"
    );

    let store = open(builder);
    let report = store.replay_report().clone();
    assert!(
        report.snapshot.is_some() && !report.lost_anything(),
        "{report:?}"
    );
    assert_eq!(
        contents(&store).await,
        expected,
        "compaction lost or resurrected sessions"
    );
}

/// Copies the store's files as a crash would leave them (the store still open), to open the
/// copy elsewhere.
fn crash_copy(dir: &Path) -> tempfile::TempDir {
    let copy = tempdir();
    for name in files(dir, "") {
        if let Err(e) = std::fs::copy(dir.join(&name), copy.path().join(&name)) {
            panic!("copying {name} failed: {e}");
        }
    }
    copy
}

/// Under `Lazy` with an hour's interval, `delete`, `rotate` and `delete_by_owner` are on
/// disk when they return (a copy of the directory taken then, as a crash would leave it,
/// does not bring the sessions back); with `durable_deletions(false)` they are as lazy as
/// saves, and the copy revives them.
#[tokio::test]
async fn deletions_are_on_disk_when_they_return_unless_configured_lazy() {
    for durable in [true, false] {
        let tmp = tempdir();
        // An hour's interval: nothing but flush() and the deletions themselves writes.
        let store = open(
            HybridStore::builder(tmp.path())
                .durability(Durability::Lazy(HOUR))
                .durable_deletions(durable)
                .cleanup_interval(Duration::ZERO),
        );
        let deleted = Record::new(key(), &b"logged out"[..], Timestamp::now() + HOUR);
        let rotated = Record::new(key(), &b"rotated"[..], Timestamp::now() + HOUR);
        let owned = Record::new(
            key(),
            &b"signed out everywhere"[..],
            Timestamp::now() + HOUR,
        )
        .with_owner("ann");
        for r in [&deleted, &rotated, &owned] {
            must("create", store.create(r)).await;
        }
        must("flush", store.flush()).await;
        let late = Record::new(key(), &b"made just before"[..], Timestamp::now() + HOUR);
        must("create", store.create(&late)).await;
        assert!(must("delete", store.delete(&deleted.key)).await);
        let new = key();
        must("rotate", store.rotate(&rotated.key, &new)).await;
        assert_eq!(
            must("delete_by_owner", store.delete_by_owner("ann")).await,
            1
        );
        let copy = crash_copy(tmp.path());
        drop(store);

        let crashed = open(HybridStore::builder(copy.path()).cleanup_interval(Duration::ZERO));
        let mut revived = Vec::new();
        for k in [deleted.key, rotated.key, owned.key] {
            revived.push(must("load", crashed.load(&k)).await.is_some());
        }
        let late_kept = must("load", crashed.load(&late.key)).await.is_some();
        if durable {
            assert_eq!(
                revived, [false; 3],
                "a deletion that returned was not on disk"
            );
            assert_eq!(
                must("load", crashed.load(&new)).await.map(|r| r.data),
                Some(rotated.data.clone()),
                "the moved session is on disk under its new id"
            );
            assert!(
                late_kept,
                "the create before them shared their group commit"
            );
        } else {
            assert_eq!(revived, [true; 3], "lazy deletions were on disk anyway");
            assert!(!late_kept);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_now_snapshots_every_change_made_before_it() {
    let tmp = tempdir();
    // Thresholds far away: only compact_now compacts.
    let builder = HybridStore::builder(tmp.path()).cleanup_interval(Duration::ZERO);
    let store = Arc::new(open(builder.clone()));
    let mut expected = mixed_history(&store, 200).await;
    must("compact_now", store.compact_now()).await;
    assert_eq!(store.compactions(), 1);
    assert_eq!(
        files(tmp.path(), "snap-"),
        ["snap-00000000000000000001.snap"]
    );

    // A second one while a writer keeps going: both see the other's work through.
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { mixed_history(&store, 300).await })
    };
    must("compact_now", store.compact_now()).await;
    match writer.await {
        Ok(model) => expected.extend(model),
        Err(e) => panic!("the writer failed: {e}"),
    }
    must("compact_now", store.compact_now()).await;
    assert_eq!(store.compactions(), 3);
    assert!(store.health().is_healthy(), "{:?}", store.health());
    assert_eq!(
        files(tmp.path(), "snap-"),
        [
            "snap-00000000000000000002.snap",
            "snap-00000000000000000003.snap"
        ],
        "the newest snapshot and one fallback are kept"
    );
    assert_eq!(
        files(tmp.path(), "log-"),
        [
            "log-00000000000000000002.log",
            "log-00000000000000000003.log"
        ],
        "segments older than the fallback are removed"
    );
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the store is still shared")
    };
    must("close", store.close()).await;
    assert!(matches!(
        store.compact_now().await,
        Err(Error::Backend { .. })
    ));
    drop(store);

    let store = open(builder);
    let report = store.replay_report().clone();
    assert_eq!(report.snapshot, Some(3), "{report:?}");
    assert!(!report.lost_anything(), "{report:?}");
    assert_eq!(contents(&store).await, expected);
}

/// However many saves come after a snapshot, a compaction is due once the log reaches
/// `compact_log_bytes`, even when `factor` times the snapshot is far larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_is_due_at_compact_log_bytes_whatever_the_factor() {
    const LOG_BYTES: u64 = 64 << 10;
    let tmp = tempdir();
    let builder = HybridStore::builder(tmp.path())
        .durability(Durability::Lazy(Duration::from_millis(5)))
        .flush_bytes(8 << 10)
        .compact_min_bytes(16 << 10)
        // A thousand times a snapshot of a few KiB: more than this test ever writes, so the
        // factor alone would compact no more after the first snapshot.
        .compact_factor(1000)
        .compact_log_bytes(LOG_BYTES)
        .cleanup_interval(Duration::ZERO);
    let store = open(builder.clone());
    let mut sessions = Vec::new();
    for i in 0..40 {
        let r = Record::new(
            key(),
            Bytes::from(format!("session {i}")),
            Timestamp::now() + HOUR,
        );
        must("create", store.create(&r)).await;
        sessions.push(r);
    }
    must("compact_now", store.compact_now()).await;
    let mut written = 0u64;
    for round in 0..4000u64 {
        let r = &mut sessions[(round % 40) as usize];
        r.data = Bytes::from(format!("round {round} {}", "x".repeat(400)));
        r.version = must("save", store.save(r)).await;
        written += 450;
        if round % 64 == 0 {
            must("flush", store.flush()).await;
        }
    }
    assert!(written > 20 * LOG_BYTES);
    must("close", store.close()).await;
    // Each compaction takes a few fsyncs, while the log keeps growing into the new segment:
    // how many fit depends on the disk, but well more than the one asked for.
    assert!(store.compactions() >= 4, "{}", store.compactions());
    drop(store);

    let store = open(builder);
    let report = store.replay_report().clone();
    assert!(report.snapshot >= Some(4), "{report:?}");
    for r in &sessions {
        assert_eq!(must("load", store.load(&r.key)).await.as_ref(), Some(r));
    }
}

/// Writers faster than the flusher, on a healthy disk: past `max_unflushed_bytes` they wait
/// for it instead of failing, and the backlog stays near its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_at_the_backlog_bound_wait_for_a_healthy_disk() {
    const BOUND: usize = 32 << 10;
    let tmp = tempdir();
    let store = Arc::new(open(
        HybridStore::builder(tmp.path())
            // Only the buffer size starts a flush: the writers outrun it at once.
            .durability(Durability::Lazy(HOUR))
            .flush_bytes(BOUND)
            .max_unflushed_bytes(BOUND)
            .cleanup_interval(Duration::ZERO),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut keys = Vec::new();
                let mut most = 0;
                for _ in 0..300 {
                    let r = Record::new(key(), vec![7u8; 1024], Timestamp::now() + HOUR);
                    must("create under backpressure", store.create(&r)).await;
                    most = most.max(store.health().unflushed_bytes);
                    keys.push(r.key);
                }
                (keys, most)
            })
        })
        .collect();
    let mut keys = Vec::new();
    for task in tasks {
        match task.await {
            Ok((k, most)) => {
                // One entry per racing writer past the bound at most, plus the one in flight.
                assert!(
                    most <= (2 * BOUND + 16 * 1100) as u64,
                    "backlog reached {most}"
                );
                keys.extend(k);
            }
            Err(e) => panic!("a writer failed: {e}"),
        }
    }
    assert!(store.health().is_healthy() || store.health().flush_error.is_none());
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the store is still shared")
    };
    must("close", store.close()).await;
    drop(store);
    let store = open(HybridStore::builder(tmp.path()).cleanup_interval(Duration::ZERO));
    assert_eq!(store.replay_report().sessions_loaded as usize, keys.len());
}
