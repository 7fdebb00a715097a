//! Several processes on one database file: creates of one key have exactly one winner, a
//! move of one session has exactly one winner, conditional saves from every process to one
//! counter lose no increment, and no process sees an error (cross-process lock waits are
//! `busy_timeout`'s). Children are this test binary run again.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{HOUR, io, key, ok, runtime, tempdir};
use session_core::conformance::child::{reexec, wait_exit, wait_for_file};
use session_core::{Bytes, Error, Record, SessionStore, Timestamp};

const RACE_DIR: &str = "SESSION_SQLITE_RACE_DIR";
const CHILDREN: u32 = 4;
const KEYS: u32 = 32;
const INCREMENTS: u64 = 20;

#[test]
fn processes_racing_on_one_file_have_one_winner_each() {
    if let Ok(dir) = std::env::var(RACE_DIR) {
        race_child(Path::new(&dir));
        return;
    }
    let dir = tempdir();
    let path = common::db_path(dir.path());
    let seed = common::seed();
    runtime().block_on(async {
        let store = common::open(&path).await;
        for k in 0..KEYS {
            let r = Record::new(
                key(seed, 1, k),
                format!("source {k}").into_bytes(),
                Timestamp::now() + HOUR,
            );
            ok("create", store.create(&r).await);
        }
        let counter = Record::new(
            key(seed, 3, 0),
            0u64.to_le_bytes().to_vec(),
            Timestamp::now() + HOUR,
        );
        ok("create", store.create(&counter).await);
    });
    let mut children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            let child = reexec(
                "processes_racing_on_one_file_have_one_winner_each",
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
    io(
        "starting the race",
        std::fs::write(dir.path().join("go"), b"go"),
    );
    for (i, child) in &mut children {
        let status = wait_exit(child, Duration::from_secs(120));
        assert!(status.success(), "child {i} failed: {status}");
    }
    let mut creates: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut moves: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in 0..CHILDREN {
        let text = io(
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
        let store = common::open(&path).await;
        for k in 0..KEYS {
            let winners = creates.get(&k).cloned().unwrap_or_default();
            assert_eq!(
                winners.len(),
                1,
                "key {k}: processes {winners:?} won the create"
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
                "key {k}: processes {movers:?} won the move"
            );
            assert_eq!(ok("load", store.load(&key(seed, 1, k)).await), None);
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
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let me = var("RACE_CHILD") as u32;
    let seed = var("RACE_SEED");
    let rt = runtime();
    let store = rt.block_on(common::open(&common::db_path(dir)));
    io(
        "writing the ready file",
        std::fs::write(dir.join(format!("ready-{me}")), b""),
    );
    let start = Instant::now();
    while !dir.join("go").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no start signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut log = String::new();
    rt.block_on(async {
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
            let r = match store.load(&counter).await {
                Ok(Some(r)) => r,
                other => {
                    log.push_str(&format!("counter load error {other:?}\n"));
                    break;
                }
            };
            let mut n = [0u8; 8];
            n.copy_from_slice(&r.data[..8]);
            let next = Record {
                data: Bytes::from((u64::from_le_bytes(n) + 1).to_le_bytes().to_vec()),
                ..r
            };
            match store.save(&next).await {
                Ok(_) => done += 1,
                Err(Error::Conflict) => {}
                Err(e) => {
                    log.push_str(&format!("counter save error {e:?}\n"));
                    break;
                }
            }
        }
    });
    io(
        "writing results",
        std::fs::write(dir.join(format!("result-{me}")), log),
    );
}
