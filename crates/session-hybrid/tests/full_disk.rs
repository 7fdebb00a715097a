//! A real full disk: the store lives on a 2 MiB tmpfs that the test fills up. A failed flush is
//! logged at error level, shown by `health()` and returned to whoever waits for the disk; the
//! backlog stays under `max_unflushed_bytes`, past which writes fail with `Unavailable`; once
//! space returns everything accepted meanwhile is written, and a reopen finds it all.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{has_errno, io, key, mount_tmpfs, must, open, tempdir};
use session_core::{Error, Record, SessionKey, SessionStore, Timestamp};
use session_hybrid::{BacklogFull, DiskError, Durability, HybridStore, HybridStoreBuilder};

const HOUR: Duration = Duration::from_secs(3600);
const ENOSPC: i32 = 28;
const MAX_UNFLUSHED: usize = 256 << 10;

/// Collects what the process logs.
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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

fn builder(dir: &std::path::Path) -> HybridStoreBuilder {
    HybridStore::builder(dir)
        .durability(Durability::Lazy(Duration::from_millis(50)))
        .flush_bytes(16 << 10)
        .max_unflushed_bytes(MAX_UNFLUSHED)
        .compact_min_bytes(1 << 30)
        .cleanup_interval(Duration::ZERO)
}

fn assert_disk_full(what: &str, err: &Error) {
    match err {
        Error::Backend { store, source } => {
            assert_eq!(*store, "hybrid");
            assert!(
                source.downcast_ref::<DiskError>().is_some(),
                "{what}: the source is a DiskError: {err:?}"
            );
            assert!(
                has_errno(source.as_ref(), ENOSPC),
                "{what}: the error does not carry ENOSPC: {err:?}"
            );
        }
        other => panic!("{what}: expected a Backend error, got {other:?}"),
    }
}

fn backlog_full(what: &str, result: session_core::Result<()>) -> BacklogFull {
    match result {
        Err(Error::Unavailable { store, source }) => {
            assert_eq!(store, "hybrid");
            match source.downcast_ref::<BacklogFull>() {
                Some(full) => full.clone(),
                None => panic!("{what}: the source is not BacklogFull: {source}"),
            }
        }
        other => panic!("{what}: expected Unavailable(BacklogFull), got {other:?}"),
    }
}

fn session(data: usize) -> Record {
    Record::new(key(), vec![b'd'; data], Timestamp::now() + HOUR)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_bounded_and_recovered_from() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The flusher logs from its own thread: only a global subscriber sees it.
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        panic!("this test binary must set the only global subscriber");
    }

    let tmp = tempdir();
    let mnt = tmp.path().join("mnt");
    io("mkdir", std::fs::create_dir(&mnt));
    let _mount = match mount_tmpfs(&mnt, "2m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_is_reported_bounded_and_recovered_from: {why}");
            return;
        }
    };
    let dir = mnt.join("store");
    let store = open(builder(&dir));
    let mut model: HashMap<SessionKey, Record> = HashMap::new();
    for _ in 0..5 {
        let r = session(1000);
        must("create", store.create(&r)).await;
        model.insert(r.key, r);
    }
    must("flush", store.flush()).await;
    assert!(store.health().is_healthy(), "{:?}", store.health());

    // Fill the disk.
    let filler_path = mnt.join("filler");
    let mut filler = io("create filler", std::fs::File::create(&filler_path));
    let chunk = vec![0u8; 4096];
    let full = loop {
        if let Err(e) = filler.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(
        full.raw_os_error(),
        Some(ENOSPC),
        "filling stopped with {full}"
    );
    let _ = filler.sync_all();

    // A lazy save is accepted in memory; a flush says why it is not on disk.
    let Some(mut first) = model.values().next().cloned() else {
        panic!("empty model")
    };
    first.data = vec![b'e'; 8000].into();
    first.version = must("save", store.save(&first)).await;
    model.insert(first.key, first.clone());
    match store.flush().await {
        Ok(()) => panic!("a flush on a full disk succeeded"),
        Err(e) => assert_disk_full("flush", &e),
    }
    let health = store.health();
    assert!(!health.is_healthy(), "{health:?}");
    assert!(
        health.failed_flushes >= 1 && health.failing_since.is_some(),
        "{health:?}"
    );
    assert!(health.unflushed_bytes > 8000, "{health:?}");
    match &health.flush_error {
        Some(e) => assert_eq!(e.io_error().raw_os_error(), Some(ENOSPC), "{e}"),
        None => panic!("health shows no flush error: {health:?}"),
    }
    assert!(
        captured.text().contains("ERROR")
            && captured.text().contains("writing the session log failed"),
        "the failure is logged at error level: {}",
        captured.text()
    );

    // A durable deletion cannot be durable: it says so (it is applied in memory, and written
    // once the disk has room).
    let Some(gone) = model.keys().nth(1).copied() else {
        panic!("model too small")
    };
    match store.delete(&gone).await {
        Ok(deleted) => panic!("a durable delete on a full disk returned Ok({deleted})"),
        Err(e) => assert_disk_full("delete", &e),
    }
    model.remove(&gone);
    assert_eq!(must("load", store.load(&gone)).await, None);

    // Writes are accepted until the backlog reaches its bound, then refused.
    let refused = loop {
        let r = session(4000);
        match store.create(&r).await {
            Ok(()) => {
                model.insert(r.key, r);
            }
            Err(e) => break (r, Err(e)),
        }
        assert!(
            store.health().unflushed_bytes < (MAX_UNFLUSHED + (64 << 10)) as u64,
            "the backlog grew past its bound: {:?}",
            store.health()
        );
    };
    let full = backlog_full("create", refused.1);
    assert_eq!(full.limit, MAX_UNFLUSHED as u64);
    assert!(full.unflushed >= MAX_UNFLUSHED as u64, "{full:?}");
    assert!(
        full.flush_error
            .as_ref()
            .is_some_and(|e| e.io_error().raw_os_error() == Some(ENOSPC)),
        "the refusal carries the flush error: {full:?}"
    );
    assert!(store.health().backlog_full);
    assert_eq!(must("load", store.load(&refused.0.key)).await, None);
    let mut stale = first.clone();
    stale.data = b"refused".to_vec().into();
    backlog_full("save", store.save(&stale).await.map(|_| ()));
    backlog_full(
        "touch",
        store.touch(&first.key, first.expires_at + HOUR).await,
    );
    backlog_full("rotate", store.rotate(&first.key, &key()).await);
    assert_eq!(
        must("load", store.load(&first.key)).await,
        Some(first.clone()),
        "a refused write changed nothing"
    );
    match store.compact_now().await {
        Ok(()) => panic!("a compaction on a full disk succeeded"),
        Err(e) => assert_disk_full("compact_now", &e),
    }

    // Space returns: the backlog is written by itself, and writes are accepted again.
    drop(filler);
    io("remove filler", std::fs::remove_file(&filler_path));
    let started = Instant::now();
    while !store.health().is_healthy() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the store did not recover: {:?}",
            store.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.health().unflushed_bytes, 0, "{:?}", store.health());
    must("create after recovery", store.create(&refused.0)).await;
    model.insert(refused.0.key, refused.0.clone());
    must("compact_now after recovery", store.compact_now()).await;
    must("close", store.close()).await;
    drop(store);

    let store = open(builder(&dir));
    let report = store.replay_report().clone();
    assert!(
        !report.lost_anything() && !report.corrupt_entry,
        "{report:?}"
    );
    assert_eq!(report.sessions_loaded as usize, model.len(), "{report:?}");
    for (k, r) in &model {
        assert_eq!(must("load", store.load(k)).await.as_ref(), Some(r));
    }
    assert_eq!(
        must("load", store.load(&gone)).await,
        None,
        "the deletion was lost"
    );
}
