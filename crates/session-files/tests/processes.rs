//! Several processes share one root: creates of one key have exactly one winner, a move of one
//! session has exactly one winner, and conditional saves from every process to one counter
//! lose no increment. Children are this test binary run again.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{key, ok, reexec, runtime, tempdir, wait_exit, wait_for_file};
use session_core::{Bytes, Error, Record, SessionStore, Timestamp};
use session_files::FileStore;

const RACE_DIR: &str = "SESSION_FILES_RACE_DIR";
const CHILDREN: u32 = 4;
const KEYS: u32 = 48;
const INCREMENTS: u64 = 15;
const HOUR: Duration = Duration::from_secs(3600);

fn open(root: &Path) -> FileStore {
    ok(
        "open",
        FileStore::builder(root)
            .cleanup_interval(Duration::ZERO)
            .open(),
    )
}

#[test]
fn processes_racing_on_one_root_have_one_winner_each() {
    if let Ok(dir) = std::env::var(RACE_DIR) {
        race_child(Path::new(&dir));
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("store");
    let seed = common::seed();
    runtime().block_on(async {
        let store = open(&root);
        for k in 0..KEYS {
            ok(
                "create",
                store
                    .create(&Record::new(
                        key(seed, 1, k),
                        format!("source {k}").into_bytes(),
                        Timestamp::now() + HOUR,
                    ))
                    .await,
            );
        }
        ok(
            "create",
            store
                .create(&Record::new(
                    key(seed, 3, 0),
                    0u64.to_le_bytes().to_vec(),
                    Timestamp::now() + HOUR,
                ))
                .await,
        );
    });
    let mut children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            let child = reexec(
                "processes_racing_on_one_root_have_one_winner_each",
                &[
                    (RACE_DIR, dir.path().display().to_string()),
                    ("RACE_CHILD", i.to_string()),
                    ("RACE_SEED", seed.to_string()),
                ],
            );
            (i, child)
        })
        .collect();
    for (i, child) in &mut children {
        wait_for_file(
            &dir.path().join(format!("ready-{i}")),
            child,
            Duration::from_secs(60),
        );
    }
    common::io(
        "starting the race",
        std::fs::write(dir.path().join("go"), b"go"),
    );
    for (i, child) in &mut children {
        let status = wait_exit(child, Duration::from_secs(240));
        assert!(status.success(), "child {i} failed: {status}");
    }
    let mut creates: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut moves: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in 0..CHILDREN {
        let text = common::io(
            "reading a child's results",
            std::fs::read_to_string(dir.path().join(format!("result-{i}"))),
        );
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let k: u32 = parts
                .get(1)
                .and_then(|k| k.parse().ok())
                .unwrap_or(u32::MAX);
            match (parts.first().copied(), parts.get(2).copied()) {
                (Some("create"), Some("won")) => creates.entry(k).or_default().push(i),
                (Some("move"), Some("won")) => moves.entry(k).or_default().push(i),
                (_, Some("lost")) => {}
                _ => panic!("child {i} reported an unexpected outcome: {line}"),
            }
        }
    }
    runtime().block_on(async {
        let store = open(&root);
        for k in 0..KEYS {
            let winners = creates.get(&k).cloned().unwrap_or_default();
            assert_eq!(
                winners.len(),
                1,
                "key {k}: {} processes won the create: {winners:?}",
                winners.len()
            );
            let stored = ok("load", store.load(&key(seed, 0, k)).await).map(|r| r.data);
            assert_eq!(
                stored,
                Some(Bytes::from(vec![winners[0] as u8; 32])),
                "key {k} holds data of a process that lost"
            );
            let movers = moves.get(&k).cloned().unwrap_or_default();
            assert_eq!(
                movers.len(),
                1,
                "key {k}: {} processes won the move: {movers:?}",
                movers.len()
            );
            assert_eq!(
                ok("load", store.load(&key(seed, 1, k)).await),
                None,
                "the moved session is still at its old key"
            );
            let moved = ok("load", store.load(&key(seed, 2, k)).await).map(|r| r.data);
            assert_eq!(moved, Some(Bytes::from(format!("source {k}"))));
        }
        let Some(counter) = ok("load", store.load(&key(seed, 3, 0)).await) else {
            panic!("the shared counter vanished");
        };
        let total = u64::from(CHILDREN) * INCREMENTS;
        assert_eq!(
            &counter.data[..],
            &total.to_le_bytes()[..],
            "conditional saves from several processes lost increments"
        );
        assert_eq!(counter.version, 1 + total);
    });
}

/// The child's part: wait for the start signal, then race on every key.
fn race_child(dir: &Path) {
    let me: u32 = std::env::var("RACE_CHILD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let seed: u64 = std::env::var("RACE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let store = open(&dir.join("store"));
    common::io(
        "writing the ready file",
        std::fs::write(dir.join(format!("ready-{me}")), b""),
    );
    let start = Instant::now();
    while !dir.join("go").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no start signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut log = String::new();
    runtime().block_on(async {
        for k in 0..KEYS {
            let r = Record::new(key(seed, 0, k), vec![me as u8; 32], Timestamp::now() + HOUR);
            let outcome = match store.create(&r).await {
                Ok(()) => "won".to_owned(),
                Err(Error::AlreadyExists) => "lost".to_owned(),
                Err(e) => format!("error {e:?}"),
            };
            log.push_str(&format!("create {k} {outcome}\n"));
            let outcome = match store.rotate(&key(seed, 1, k), &key(seed, 2, k)).await {
                Ok(()) => "won".to_owned(),
                Err(Error::NotFound | Error::AlreadyExists) => "lost".to_owned(),
                Err(e) => format!("error {e:?}"),
            };
            log.push_str(&format!("move {k} {outcome}\n"));
        }
        let counter = key(seed, 3, 0);
        let mut done = 0;
        while done < INCREMENTS {
            let Some(mut r) = ok("load", store.load(&counter).await) else {
                log.push_str("counter missing error\n");
                break;
            };
            let mut n = [0u8; 8];
            n.copy_from_slice(&r.data[..8]);
            r.data = Bytes::from((u64::from_le_bytes(n) + 1).to_le_bytes().to_vec());
            match store.save(&r).await {
                Ok(_) => done += 1,
                Err(Error::Conflict) => {}
                Err(e) => {
                    log.push_str(&format!("counter save error {e:?}\n"));
                    break;
                }
            }
        }
    });
    common::io(
        "writing results",
        std::fs::write(dir.join(format!("result-{me}")), log),
    );
}

/// Two stores on one root in one process (each with its own lock files open), from many
/// tasks: `flock` locks belong to the open file, so they exclude each other like processes.
#[test]
fn two_stores_on_one_root_have_one_create_winner() {
    let dir = tempdir();
    let root = dir.path().join("store");
    runtime().block_on(async {
        let stores = [Arc::new(open(&root)), Arc::new(open(&root))];
        for round in 0..20u32 {
            let k = key(common::seed(), 4, round);
            let handles: Vec<_> = (0..16u8)
                .map(|i| {
                    let store = Arc::clone(&stores[usize::from(i % 2)]);
                    tokio::spawn(async move {
                        (
                            i,
                            store
                                .create(&Record::new(k, vec![i; 16], Timestamp::now() + HOUR))
                                .await,
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for h in handles {
                match h.await {
                    Ok((i, Ok(()))) => winners.push(i),
                    Ok((_, Err(Error::AlreadyExists))) => {}
                    Ok((_, Err(e))) => panic!("a create failed with {e:?}"),
                    Err(e) => panic!("a task failed: {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let stored = ok("load", stores[1].load(&k).await).map(|r| r.data);
            assert_eq!(stored, Some(Bytes::from(vec![winners[0]; 16])));
        }
    });
}
