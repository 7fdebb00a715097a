//! Housekeeping: the owner index repairs itself, the sweep removes old temp files but not
//! young ones (another process may be writing them), the background task sweeps on its own,
//! and bad configurations are refused with `Error::Config`.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{io, ok, runtime, temp_files, tempdir};
use session_core::{Error, Record, SessionId, SessionKey, SessionStore, Timestamp};
use session_files::FileStore;
use sha2::{Digest, Sha256};

const HOUR: Duration = Duration::from_secs(3600);

fn marker(root: &Path, owner: &str, key: &SessionKey) -> PathBuf {
    let hash: String = Sha256::digest(owner.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    root.join("owners")
        .join(&hash[0..2])
        .join(&hash)
        .join(key.to_hex())
}

fn live(data: &[u8]) -> Record {
    Record::new(
        SessionId::generate().key(),
        data.to_vec(),
        Timestamp::now() + HOUR,
    )
}

/// A marker whose record is gone or belongs to someone else (left by a crash between the two
/// steps) is never listed, never counted by `delete_by_owner`, and is removed when seen.
#[test]
fn stale_owner_markers_are_ignored_and_removed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let store = ok(
            "open",
            FileStore::builder(&root)
                .cleanup_interval(Duration::ZERO)
                .open(),
        );
        let anns = live(b"ann's").with_owner("ann");
        let bobs = live(b"bob's").with_owner("bob");
        ok("create", store.create(&anns).await);
        ok("create", store.create(&bobs).await);
        assert!(
            marker(&root, "ann", &anns.key).exists(),
            "the index layout is not as documented"
        );
        let foreign = marker(&root, "ann", &bobs.key);
        let orphan_key = SessionId::generate().key();
        let orphan = marker(&root, "ann", &orphan_key);
        io("plant", File::create(&foreign));
        io("plant", File::create(&orphan));
        assert_eq!(
            ok("list_by_owner", store.list_by_owner("ann").await),
            vec![anns.clone()]
        );
        assert!(
            !foreign.exists() && !orphan.exists(),
            "stale markers were kept"
        );
        io("plant", File::create(&foreign));
        assert_eq!(ok("delete_by_owner", store.delete_by_owner("ann").await), 1);
        assert_eq!(
            ok("load", store.load(&bobs.key).await),
            Some(bobs.clone()),
            "bob's session was deleted through ann's index"
        );
        assert!(!foreign.exists());
    });
}

/// The sweep removes temp files older than the configured age and leaves younger ones.
#[test]
fn sweep_removes_old_temp_files_only() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let store = ok(
            "open",
            FileStore::builder(&root)
                .cleanup_interval(Duration::ZERO)
                .open(),
        );
        let r = live(b"x");
        ok("create", store.create(&r).await);
        let hex = r.key.to_hex();
        let shard = root.join(&hex[0..2]).join(&hex[2..4]);
        let old = shard.join(format!(".tmp-{hex}-old"));
        let young = shard.join(format!(".tmp-{hex}-young"));
        let file = io("create", File::create(&old));
        io(
            "age",
            file.set_modified(SystemTime::now() - Duration::from_secs(120)),
        );
        io("create", File::create(&young));
        assert_eq!(
            ok("delete_expired", store.delete_expired().await),
            0,
            "temp files are not sessions"
        );
        assert!(!old.exists(), "an old temp file was kept");
        assert!(
            young.exists(),
            "a young temp file (maybe a write in progress) was removed"
        );
        assert_eq!(temp_files(&root), vec![young]);
        assert_eq!(ok("load", store.load(&r.key).await), Some(r));
    });
}

/// The background task sweeps expired sessions by itself, spares live ones, and stops.
#[test]
fn background_cleanup_sweeps_and_stops() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let store = ok(
            "open",
            FileStore::builder(&root)
                .cleanup_interval(Duration::from_millis(50))
                .open(),
        );
        let keep = live(b"keep");
        ok("create", store.create(&keep).await);
        for _ in 0..3 {
            let r = Record::new(
                SessionId::generate().key(),
                &b"old"[..],
                Timestamp::now() - Duration::from_secs(1),
            );
            ok("create", store.create(&r).await);
        }
        let start = std::time::Instant::now();
        while ok("count_expired", store.count_expired().await) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the background sweep never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ok("count", store.count().await), 1);
        store.stop_cleanup().await;
        let r = Record::new(
            SessionId::generate().key(),
            &b"old"[..],
            Timestamp::now() - Duration::from_secs(1),
        );
        ok("create", store.create(&r).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            ok("count_expired", store.count_expired().await),
            1,
            "a sweep ran after stop_cleanup"
        );
    });
}

#[test]
fn bad_configurations_are_refused() {
    let dir = tempdir();
    let file = dir.path().join("a-file");
    io("create", File::create(&file));
    assert!(matches!(
        FileStore::builder(&file)
            .cleanup_interval(Duration::ZERO)
            .open(),
        Err(Error::Config(_))
    ));
    let root = dir.path().join("store");
    assert!(matches!(
        FileStore::builder(&root).concurrency(0).open(),
        Err(Error::Config(_))
    ));
    // Outside a runtime, a background task cannot start: refused, unless the interval is
    // zero. The default `open` is no exception: it must not quietly open a store that never
    // sweeps.
    assert!(matches!(
        FileStore::builder(&root).open(),
        Err(Error::Config(_))
    ));
    assert!(matches!(FileStore::open(&root), Err(Error::Config(_))));
    let store = ok(
        "open",
        FileStore::builder(&root)
            .cleanup_interval(Duration::ZERO)
            .open(),
    );
    assert_eq!(
        store.max_data_len(),
        Some(session_files::DEFAULT_MAX_DATA_LEN)
    );
    let small = ok(
        "open",
        FileStore::builder(&root)
            .max_data_len(Some(10))
            .cleanup_interval(Duration::ZERO)
            .open(),
    );
    runtime().block_on(async {
        match small.create(&live(&[0u8; 11])).await {
            Err(Error::TooLarge {
                size: 11,
                limit: 10,
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    });
}
