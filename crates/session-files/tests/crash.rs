//! A child process writes sessions in a loop and is killed with SIGKILL at a random moment;
//! afterwards every session file must load whole (old or new, never a mix), moves must have
//! happened entirely or not at all, the owner index must still find every session, and the
//! temp files the kill left behind must be swept.
//!
//! SIGKILL stops the process but not the kernel, so this shows atomicity against a crashed
//! writer; surviving power loss rests on the fsyncs, which a test cannot cut the power on.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::{key, ok, runtime, temp_files, tempdir};
use session_core::conformance::child::kill_9_after_ready;
use session_core::{Bytes, Error, Record, SessionKey, SessionStore, Timestamp};
use session_files::FileStore;

const CHILD_DIR: &str = "SESSION_FILES_CRASH_DIR";
const KEYS: u32 = 16;
const WRITERS: u32 = 4;
const ROUNDS: u32 = 5;
const SEED: u64 = 0x5e55_10f1;
const HOUR: Duration = Duration::from_secs(3600);

/// The data written with `version`: one repeated byte, with a length that changes each
/// version, so a file mixing two writes cannot pass the check.
fn data_for(version: u64) -> Bytes {
    let len = 1 + (version as usize * 7919) % 150_000;
    Bytes::from(vec![(version % 251) as u8; len])
}

fn owner_for(version: u64) -> Option<String> {
    match version % 3 {
        0 => None,
        1 => Some("ann".to_owned()),
        _ => Some("bob".to_owned()),
    }
}

fn record_for(key: SessionKey, version: u64) -> Record {
    let mut r = Record::new(key, data_for(version), Timestamp::now() + HOUR);
    r.version = version;
    r.owner = owner_for(version);
    r
}

/// The two keys a writer moves one session between with `rotate`.
fn pair(writer: u32) -> (SessionKey, SessionKey) {
    (key(SEED, 1, writer), key(SEED, 2, writer))
}

const PAIR_DATA: &[u8] = b"moved back and forth";

fn open(root: &Path) -> FileStore {
    ok(
        "open",
        FileStore::builder(root)
            .cleanup_interval(Duration::ZERO)
            .stale_temp_age(Duration::ZERO)
            .open(),
    )
}

#[test]
fn kill_9_mid_write_leaves_every_file_old_or_new() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        write_forever(Path::new(&dir));
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("store");
    let mut leftovers = 0;
    let mut seed = common::seed();
    for round in 0..ROUNDS {
        let ready = dir.path().join(format!("ready-{round}"));
        // SIGKILL: no destructor, no flush, no cleanup runs.
        kill_9_after_ready(
            "kill_9_mid_write_leaves_every_file_old_or_new",
            &[(CHILD_DIR, dir.path().display().to_string())],
            &ready,
            &mut seed,
            Duration::from_millis(50),
            Duration::from_millis(400),
        );
        leftovers += temp_files(&root).len();
        verify(&root);
    }
    eprintln!(
        "crash test: {ROUNDS} kills, {leftovers} temp files left by interrupted writes (all swept)"
    );
    let total: u64 = runtime().block_on(async {
        let store = open(&root);
        let mut total = 0;
        for i in 0..KEYS {
            total += ok("load", store.load(&key(SEED, 0, i)).await).map_or(0, |r| r.version);
        }
        total
    });
    assert!(
        total > u64::from(KEYS) * 2,
        "the child barely wrote anything ({total} versions in all): the test proved nothing"
    );
}

/// Opens the store left by a killed writer and checks everything in it.
fn verify(root: &Path) {
    runtime().block_on(async {
        let store = open(root);
        let mut by_owner: [HashSet<SessionKey>; 2] = Default::default();
        for i in 0..KEYS {
            let k = key(SEED, 0, i);
            let Some(r) = ok("load", store.load(&k).await) else {
                panic!("session {i} is gone or was corrupt after the kill");
            };
            assert_eq!(
                r.data,
                data_for(r.version),
                "session {i} holds a mix of two writes (version {})",
                r.version
            );
            assert_eq!(
                r.owner,
                owner_for(r.version),
                "session {i}'s owner does not match its version"
            );
            match r.owner.as_deref() {
                Some("ann") => by_owner[0].insert(k),
                Some("bob") => by_owner[1].insert(k),
                _ => false,
            };
        }
        for w in 0..WRITERS {
            let (a, b) = pair(w);
            let (ra, rb) = (
                ok("load", store.load(&a).await),
                ok("load", store.load(&b).await),
            );
            match (ra, rb) {
                (Some(r), None) | (None, Some(r)) => assert_eq!(&r.data[..], PAIR_DATA),
                (a, b) => panic!("a rotate was cut in half: old={a:?} new={b:?}"),
            }
        }
        for (owner, expected) in ["ann", "bob"].iter().zip(&by_owner) {
            let listed: HashSet<SessionKey> = ok("list_by_owner", store.list_by_owner(owner).await)
                .iter()
                .map(|r| r.key)
                .collect();
            assert_eq!(
                &listed, expected,
                "the owner index of {owner} lost or kept a session across the kill"
            );
        }
        assert_eq!(ok("count", store.count().await), u64::from(KEYS + WRITERS));
        ok("sweep", store.delete_expired().await);
        assert!(
            temp_files(root).is_empty(),
            "the sweep left temp files: {:?}",
            temp_files(root)
        );
    });
}

/// The child's part: make sure every session exists, say so, then write until killed.
fn write_forever(dir: &Path) {
    let root = dir.join("store");
    let ready = std::env::var("CRASH_READY").unwrap_or_default();
    runtime().block_on(async move {
        let store = ok(
            "open",
            FileStore::builder(&root)
                .cleanup_interval(Duration::ZERO)
                .open(),
        );
        for i in 0..KEYS {
            match store.create(&record_for(key(SEED, 0, i), 1)).await {
                Ok(()) | Err(Error::AlreadyExists) => {}
                Err(e) => panic!("create failed: {e:?}"),
            }
        }
        for w in 0..WRITERS {
            let (a, b) = pair(w);
            let r = Record::new(a, PAIR_DATA, Timestamp::now() + HOUR);
            if !ok("exists", store.exists(&b).await) {
                match store.create(&r).await {
                    Ok(()) | Err(Error::AlreadyExists) => {}
                    Err(e) => panic!("create failed: {e:?}"),
                }
            }
        }
        common::io("writing the ready file", std::fs::write(&ready, b"ready"));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let (a, b) = pair(w);
                    for n in 0u64.. {
                        for i in (0..KEYS).filter(|i| i % WRITERS == w) {
                            let k = key(SEED, 0, i);
                            let Some(current) = ok("load", store.load(&k).await) else {
                                panic!("a session vanished while the child wrote");
                            };
                            let next = record_for(k, current.version);
                            let mut next = Record {
                                data: data_for(current.version + 1),
                                ..next
                            };
                            next.owner = owner_for(current.version + 1);
                            ok("save", store.save(&next).await);
                            if n % 4 == 0 {
                                ok("touch", store.touch(&k, Timestamp::now() + HOUR * 2).await);
                            }
                        }
                        let (from, to) = if ok("exists", store.exists(&a).await) {
                            (a, b)
                        } else {
                            (b, a)
                        };
                        ok("rotate", store.rotate(&from, &to).await);
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}
