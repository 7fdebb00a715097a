//! Hostile files in the store directory: symlinks planted at the lock file, a log segment, a
//! snapshot or the name of the next one, and entries whose length claims more than the size
//! limit allows. No link is ever followed, and no length read from disk sizes an allocation.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{files, io, key, must, open, segment, snapshot, snapshot_tmp, tempdir};
use session_core::{Error, Record, SessionKey, SessionStore, Timestamp};
use session_hybrid::{Durability, HybridStore, HybridStoreBuilder, MAX_OWNER_LEN};

const HOUR: Duration = Duration::from_secs(3600);
const VICTIM: &[u8] = b"a file outside the store that no link may make it touch\n";

/// A store directory and a file beside it, outside the store.
struct Scene {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    victim: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempdir();
    let dir = tmp.path().join("store");
    let victim = tmp.path().join("victim");
    io("write victim", std::fs::write(&victim, VICTIM));
    Scene {
        _tmp: tmp,
        dir,
        victim,
    }
}

impl Scene {
    fn builder(&self) -> HybridStoreBuilder {
        HybridStore::builder(&self.dir).cleanup_interval(Duration::ZERO)
    }

    fn assert_victim_untouched(&self) {
        assert_eq!(
            io("read victim", std::fs::read(&self.victim)),
            VICTIM,
            "the file a planted link points to was changed"
        );
    }
}

fn live(data: &[u8]) -> Record {
    Record::new(key(), data.to_vec(), Timestamp::now() + HOUR)
}

/// Writes until the store has compacted once (or `limit` passes).
async fn until_compacted(store: &HybridStore, limit: Duration) -> bool {
    let started = Instant::now();
    while store.compactions() == 0 {
        if started.elapsed() > limit {
            return false;
        }
        must("create", store.create(&live(&[1u8; 64]))).await;
        must("flush", store.flush()).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

fn compacting(scene: &Scene) -> HybridStoreBuilder {
    scene
        .builder()
        .durability(Durability::Lazy(Duration::from_millis(5)))
        .compact_min_bytes(1)
        .compact_factor(1)
}

#[tokio::test]
async fn a_symlink_at_the_lock_file_is_refused() {
    let s = scene();
    io("mkdir", std::fs::create_dir(&s.dir));
    io("symlink", symlink(&s.victim, s.dir.join("LOCK")));
    match s.builder().open() {
        Err(Error::Backend { source, .. }) => assert!(
            source.to_string().contains("symbolic link"),
            "the error names the cause: {source}"
        ),
        other => panic!("opening through a symlinked LOCK must fail, got {other:?}"),
    }
    s.assert_victim_untouched();
}

#[tokio::test]
async fn a_symlinked_log_segment_is_neither_replayed_nor_cut() {
    let s = scene();
    let store = open(s.builder());
    let r = live(b"in the log");
    must("create", store.create(&r)).await;
    must("close", store.close()).await;
    drop(store);
    // The real segment moves out and a link to it takes its place: replaying it would load
    // a file from outside the directory, and cutting it would truncate that file.
    let log = segment(&s.dir, 0);
    io("move segment out", std::fs::rename(&log, &s.victim));
    let outside = io("read", std::fs::read(&s.victim));
    io("symlink", symlink(&s.victim, &log));

    let store = open(s.builder());
    let report = store.replay_report().clone();
    assert_eq!(
        must("load", store.load(&r.key)).await,
        None,
        "a session was loaded through a symlink"
    );
    assert!(report.lost_anything() && report.corrupt_entry, "{report:?}");
    assert_eq!(report.segments_replayed, 0, "{report:?}");
    assert_eq!(io("read", std::fs::read(&s.victim)), outside);
    assert!(
        !io("lstat", std::fs::symlink_metadata(&log)).is_symlink(),
        "the link was replaced by a segment of the store's own"
    );
    // The store goes on working in a file of its own.
    must("create", store.create(&live(b"after"))).await;
    must("flush", store.flush()).await;
    assert_eq!(io("read", std::fs::read(&s.victim)), outside);
}

#[tokio::test]
async fn a_symlinked_snapshot_is_set_aside_unread() {
    let s = scene();
    let store = open(compacting(&s));
    assert!(until_compacted(&store, Duration::from_secs(30)).await);
    must("close", store.close()).await;
    drop(store);
    let snap = snapshot(&s.dir, 1);
    io("move snapshot out", std::fs::rename(&snap, &s.victim));
    let outside = io("read", std::fs::read(&s.victim));
    io("symlink", symlink(&s.victim, &snap));

    let store = open(compacting(&s));
    let report = store.replay_report().clone();
    assert_eq!(report.snapshots_rejected, 1, "{report:?}");
    assert_eq!(report.snapshot, None, "{report:?}");
    assert_eq!(io("read", std::fs::read(&s.victim)), outside);
    assert!(
        io(
            "lstat",
            std::fs::symlink_metadata(snap.with_extension("corrupt"))
        )
        .is_symlink(),
        "the link itself was set aside"
    );
}

#[tokio::test]
async fn a_link_at_the_next_snapshot_temp_file_is_replaced_not_followed() {
    let s = scene();
    let store = open(compacting(&s));
    // The first compaction moves the log to segment 1 and writes snapshot 1 through its temp.
    io("symlink", symlink(&s.victim, snapshot_tmp(&s.dir, 1)));
    assert!(
        until_compacted(&store, Duration::from_secs(30)).await,
        "the snapshot was never written"
    );
    s.assert_victim_untouched();
    let snap = io("lstat", std::fs::symlink_metadata(snapshot(&s.dir, 1)));
    assert!(
        snap.is_file(),
        "the snapshot is a file of the store's own, not the planted link"
    );
    must("close", store.close()).await;
    let store = open(compacting(&s));
    // The last write may have made a second compaction due: either snapshot will do.
    assert!(store.replay_report().snapshot.is_some());
    s.assert_victim_untouched();
}

#[tokio::test]
async fn a_link_at_the_next_log_segment_is_never_written_through() {
    let s = scene();
    let store = open(compacting(&s));
    io("symlink", symlink(&s.victim, segment(&s.dir, 1)));
    let mut written = Vec::new();
    // Every flush makes a compaction due, and each one must refuse to rotate into the link.
    for _ in 0..30 {
        let r = live(&[2u8; 64]);
        must("create", store.create(&r)).await;
        must("flush", store.flush()).await;
        written.push(r);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.assert_victim_untouched();
    assert_eq!(store.compactions(), 0);
    assert!(
        store.compact_now().await.is_err(),
        "a compaction that cannot rotate the log fails"
    );
    assert!(store.health().compaction_error.is_some());
    s.assert_victim_untouched();
    must("close", store.close()).await;
    let store = open(s.builder());
    for r in written {
        assert_eq!(must("load", store.load(&r.key)).await, Some(r));
    }
    s.assert_victim_untouched();
}

// ---------------------------------------------------------------------------------------------
// Forged lengths. Frames are `len: u32 LE, crc: u32 LE, payload`, the CRC over the length
// bytes and the payload; a put's payload is tag 1, key, created, expires, version, owner
// length (0 for none) and the data.

/// Data longer than any entry of a store limited to 1 KiB can hold, even with the longest
/// owner: what a forged entry claims.
const OVERSIZED: usize = 1024 + MAX_OWNER_LEN + 1024;

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn put_payload(key: &SessionKey, data: &[u8]) -> Vec<u8> {
    let now = Timestamp::now();
    let mut p = vec![1u8];
    p.extend_from_slice(key.as_bytes());
    p.extend_from_slice(&now.unix_millis().to_le_bytes());
    p.extend_from_slice(&(now + HOUR).unix_millis().to_le_bytes());
    p.extend_from_slice(&1u64.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(data);
    p
}

fn append(path: &Path, bytes: &[u8]) {
    let mut file = io(
        "open for append",
        std::fs::OpenOptions::new().append(true).open(path),
    );
    io("append", std::io::Write::write_all(&mut file, bytes));
}

fn len(path: &Path) -> u64 {
    io("stat", std::fs::metadata(path)).len()
}

/// A store reopened with a smaller `max_data_len` than it wrote under: the entries above it
/// are checked but never read into memory whole, the sessions they set are dropped (an older
/// state of the same session must not come back), and replay goes on after them.
#[tokio::test]
async fn an_entry_above_the_limit_is_dropped_unread_and_replay_goes_on() {
    let s = scene();
    let limited = || s.builder().max_data_len(Some(1024));
    let store = open(limited());
    let kept = live(b"kept");
    let replaced = live(b"replaced later by an entry above the limit");
    must("create", store.create(&kept)).await;
    must("create", store.create(&replaced)).await;
    must("close", store.close()).await;
    drop(store);
    let log = segment(&s.dir, 0);
    let oversized = key();
    let after = key();
    append(
        &log,
        &frame(&put_payload(&oversized, &vec![9u8; OVERSIZED])),
    );
    append(
        &log,
        &frame(&put_payload(&replaced.key, &vec![8u8; OVERSIZED])),
    );
    append(&log, &frame(&put_payload(&after, b"after them")));
    let whole = len(&log);

    let store = open(limited());
    let report = store.replay_report().clone();
    assert_eq!(report.oversized_dropped, 2, "{report:?}");
    assert!(
        !report.corrupt_entry && !report.torn_tail && report.bytes_dropped == 0,
        "{report:?}"
    );
    assert_eq!(len(&log), whole, "nothing is cut");
    assert_eq!(must("load", store.load(&oversized)).await, None);
    assert_eq!(
        must("load", store.load(&replaced.key)).await,
        None,
        "the state before the dropped entry came back"
    );
    assert_eq!(must("load", store.load(&kept.key)).await, Some(kept));
    assert!(must("load", store.load(&after)).await.is_some());
}

/// A length above the limit whose checksum does not match is damage: cut there.
#[tokio::test]
async fn a_forged_length_above_the_limit_is_corrupt() {
    let s = scene();
    let limited = || s.builder().max_data_len(Some(1024));
    let store = open(limited());
    let r = live(b"kept");
    must("create", store.create(&r)).await;
    must("close", store.close()).await;
    drop(store);
    let log = segment(&s.dir, 0);
    let good = len(&log);
    let mut forged = frame(&put_payload(&key(), &vec![9u8; OVERSIZED]));
    forged[4] ^= 0xFF;
    append(&log, &forged);

    let store = open(limited());
    let report = store.replay_report().clone();
    assert!(report.corrupt_entry && !report.torn_tail, "{report:?}");
    assert_eq!(report.bytes_dropped, forged.len() as u64, "{report:?}");
    assert_eq!(len(&log), good, "the log is cut before the forged entry");
    assert_eq!(must("load", store.load(&r.key)).await, Some(r));
}

#[tokio::test]
async fn a_huge_length_is_reported_corrupt_not_taken_for_a_torn_write() {
    let s = scene();
    let store = open(s.builder());
    let r = live(b"kept");
    must("create", store.create(&r)).await;
    must("close", store.close()).await;
    drop(store);
    let log = segment(&s.dir, 0);
    let good = len(&log);
    let mut forged = 0xFFFF_FF00u32.to_le_bytes().to_vec();
    forged.extend_from_slice(&[0xAB; 64]);
    append(&log, &forged);

    let store = open(s.builder());
    let report = store.replay_report().clone();
    assert!(
        report.corrupt_entry && !report.torn_tail,
        "a length no entry can have is damage, not a write cut short: {report:?}"
    );
    assert_eq!(report.bytes_dropped, forged.len() as u64);
    assert_eq!(len(&log), good);
    assert_eq!(must("load", store.load(&r.key)).await, Some(r));
}

/// A snapshot written under a larger limit still loads; only its sessions above the limit are
/// dropped.
#[tokio::test]
async fn a_snapshot_entry_above_the_limit_is_dropped_unread() {
    let s = scene();
    io("mkdir", std::fs::create_dir(&s.dir));
    // A complete, checksummed snapshot 5 holding one small session and one above the limit.
    let mut header = vec![0x10u8];
    header.extend_from_slice(b"HYBSNAP\0");
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&5u64.to_le_bytes());
    let (small, oversized) = (key(), key());
    let mut end = vec![0x11u8];
    end.extend_from_slice(&2u64.to_le_bytes());
    let mut bytes = frame(&header);
    bytes.extend(frame(&put_payload(&small, b"small")));
    bytes.extend(frame(&put_payload(&oversized, &vec![3u8; OVERSIZED])));
    bytes.extend(frame(&end));
    io("write", std::fs::write(snapshot(&s.dir, 5), &bytes));

    // Without a limit the same file loads whole: it is well-formed.
    let unlimited = copy_dir(&s.dir, "unlimited");
    let store = open(HybridStore::builder(&unlimited.1).max_data_len(None));
    assert_eq!(store.replay_report().snapshot, Some(5));
    assert!(must("load", store.load(&oversized)).await.is_some());

    let store = open(s.builder().max_data_len(Some(1024)));
    let report = store.replay_report().clone();
    assert_eq!(report.snapshot, Some(5), "{report:?}");
    assert_eq!(report.oversized_dropped, 1, "{report:?}");
    assert_eq!(must("load", store.load(&oversized)).await, None);
    assert!(must("load", store.load(&small)).await.is_some());
}

fn copy_dir(from: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempdir();
    let to = tmp.path().join(name);
    io("mkdir", std::fs::create_dir(&to));
    for file in files(from, "") {
        io("copy", std::fs::copy(from.join(&file), to.join(&file)));
    }
    (tmp, to)
}

#[tokio::test]
async fn the_largest_entries_a_store_writes_replay_and_longer_owners_are_refused() {
    let s = scene();
    let limited = || s.builder().max_data_len(Some(1024));
    let store = open(limited());
    let owner = "o".repeat(MAX_OWNER_LEN);
    let mut r = Record::new(key(), vec![5u8; 1024], Timestamp::now() + HOUR).with_owner(&owner);
    must("create", store.create(&r)).await;
    r.version = must("save", store.save(&r)).await;
    // A move carries the record and both keys: the longest entry there is.
    let new = key();
    must("rotate", store.rotate(&r.key, &new)).await;
    r.key = new;

    let mut too_long = live(b"x");
    too_long.owner = Some("o".repeat(MAX_OWNER_LEN + 1));
    match store.create(&too_long).await {
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_OWNER_LEN + 1, MAX_OWNER_LEN));
        }
        other => panic!("an owner above MAX_OWNER_LEN must be TooLarge, got {other:?}"),
    }
    let mut renamed = r.clone();
    renamed.owner = too_long.owner.clone();
    assert!(matches!(
        store.save(&renamed).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(must("load", store.load(&too_long.key)).await, None);
    must("close", store.close()).await;
    drop(store);

    let store = open(limited());
    let report = store.replay_report().clone();
    assert!(
        !report.lost_anything() && !report.corrupt_entry,
        "{report:?}"
    );
    assert_eq!(must("load", store.load(&r.key)).await, Some(r));
}
