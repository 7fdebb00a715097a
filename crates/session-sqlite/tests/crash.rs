//! A child process writes sessions from several tasks and is killed with SIGKILL at a random
//! moment, five times over. Every write the child saw acknowledged (and logged right after)
//! must be in the database afterwards: created sessions exist, saved versions are there
//! whole (or the one unacknowledged save after them), moved sessions sit at exactly one key.
//!
//! SIGKILL stops the process but not the kernel, so this shows that an acknowledged commit is
//! in the WAL and that a write cut short leaves the file consistent; surviving power loss
//! rests on `synchronous = FULL`'s fsync, which a test cannot cut the power on.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{HOUR, io, key, ok, runtime, tempdir};
use session_core::conformance::child::kill_9_after_ready;
use session_core::{Bytes, Record, SessionStore, Timestamp};

const CHILD_DIR: &str = "SESSION_SQLITE_CRASH_DIR";
const WRITERS: u32 = 4;
const ROUNDS: u32 = 5;
const SEED: u64 = 0x5e55_1017;

/// The data of `version`: one repeated byte, a length that changes each version.
fn data_for(version: u64) -> Bytes {
    let len = 1 + (version as usize * 7919) % 3000;
    Bytes::from(vec![(version % 251) as u8; len])
}

/// What the child acknowledged, from its log.
#[derive(Default)]
struct Acks {
    /// The last acknowledged version of each writer's saved session.
    saved: HashMap<u32, u64>,
    /// The created sessions, by writer: numbers 0..n were all acknowledged.
    created: HashMap<u32, u32>,
    moves: u32,
}

fn read_acks(path: &Path) -> Acks {
    let mut acks = Acks::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let parts: Vec<u64> = line
            .split(' ')
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect();
        match (line.split(' ').next(), parts.as_slice()) {
            (Some("save"), [w, v]) => {
                acks.saved.insert(*w as u32, *v);
            }
            (Some("create"), [w, n]) => {
                acks.created.insert(*w as u32, *n as u32 + 1);
            }
            (Some("move"), [_, _]) => acks.moves += 1,
            // A line the kill cut short.
            _ => {}
        }
    }
    acks
}

#[test]
fn kill_9_mid_write_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        write_forever(Path::new(&dir));
        return;
    }
    let dir = tempdir();
    let path = common::db_path(dir.path());
    let mut seed = common::seed();
    let mut checked = 0u64;
    for round in 0..ROUNDS {
        let ready = dir.path().join(format!("ready-{round}"));
        // SIGKILL: no destructor, no flush, no checkpoint runs.
        kill_9_after_ready(
            "kill_9_mid_write_loses_nothing_acknowledged",
            &[(CHILD_DIR, dir.path().display().to_string())],
            &ready,
            &mut seed,
            Duration::from_millis(100),
            Duration::from_millis(400),
        );
        checked += verify(&path, &read_acks(&dir.path().join("acks")));
    }
    assert!(
        checked > u64::from(ROUNDS) * 20,
        "the child barely wrote anything ({checked} acknowledged writes checked): the test proved nothing"
    );
}

/// Opens the database a killed writer left and checks every acknowledged write; returns how
/// many it checked.
fn verify(path: &Path, acks: &Acks) -> u64 {
    runtime().block_on(async {
        let store = common::open(path).await;
        let mut checked = 0;
        for w in 0..WRITERS {
            let acked = acks.saved.get(&w).copied().unwrap_or(0);
            let stored = ok("load", store.load(&key(SEED, 0, w)).await);
            if acked > 0 {
                let Some(r) = stored else {
                    panic!("writer {w}'s session is gone (version {acked} was acknowledged)");
                };
                assert!(
                    r.version == acked || r.version == acked + 1,
                    "writer {w}: version {acked} was acknowledged, {} is stored",
                    r.version
                );
                assert_eq!(
                    r.data,
                    data_for(r.version),
                    "writer {w}: data of another version"
                );
                checked += 1;
            }
            for n in 0..acks.created.get(&w).copied().unwrap_or(0) {
                assert!(
                    ok("exists", store.exists(&key(SEED, 5 + w as u8, n)).await),
                    "writer {w}'s acknowledged session {n} is gone"
                );
                checked += 1;
            }
            let (a, b) = (key(SEED, 1, w), key(SEED, 2, w));
            let (at_a, at_b) = (
                ok("load", store.load(&a).await),
                ok("load", store.load(&b).await),
            );
            match (at_a, at_b) {
                (Some(r), None) | (None, Some(r)) => {
                    assert_eq!(&r.data[..], b"moved back and forth");
                }
                (None, None) if acks.moves == 0 && acks.saved.is_empty() => {}
                (a, b) => panic!(
                    "writer {w}'s moved session is at {} keys",
                    usize::from(a.is_some()) + usize::from(b.is_some())
                ),
            }
        }
        checked + u64::from(acks.moves)
    })
}

/// The child: writers save, create and move until killed, logging each acknowledgement.
fn write_forever(dir: &Path) {
    let ready = std::env::var("CRASH_READY").unwrap_or_default();
    let log = Arc::new(Mutex::new(io(
        "opening the log",
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("acks")),
    )));
    let ack = move |line: String| {
        // One `write` per line, after the store returned: the kernel keeps it past SIGKILL.
        let mut file = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        io("logging an ack", file.write_all(line.as_bytes()));
    };
    let rt = runtime();
    rt.block_on(async {
        let store = common::open(&common::db_path(dir)).await;
        // Pick up where the last child was killed.
        let mut starts = Vec::new();
        for w in 0..WRITERS {
            let saved = key(SEED, 0, w);
            let current = match ok("load", store.load(&saved).await) {
                Some(r) => r,
                None => {
                    let r = Record::new(saved, data_for(1), Timestamp::now() + HOUR);
                    ok("create", store.create(&r).await);
                    ack(format!("save {w} 1\n"));
                    r
                }
            };
            let (a, b) = (key(SEED, 1, w), key(SEED, 2, w));
            let at_a = ok("exists", store.exists(&a).await);
            if !at_a && !ok("exists", store.exists(&b).await) {
                ok(
                    "create",
                    store
                        .create(&Record::new(
                            a,
                            &b"moved back and forth"[..],
                            Timestamp::now() + HOUR,
                        ))
                        .await,
                );
            }
            let mut n = 0;
            while ok("exists", store.exists(&key(SEED, 5 + w as u8, n)).await) {
                n += 1;
            }
            starts.push((current, at_a || !ok("exists", store.exists(&b).await), n));
        }
        io("writing the ready file", std::fs::write(&ready, b""));
        let tasks: Vec<_> = starts
            .into_iter()
            .enumerate()
            .map(|(w, (mut current, mut at_a, mut n))| {
                let (store, ack) = (store.clone(), ack.clone());
                let w = w as u32;
                tokio::spawn(async move {
                    let (a, b) = (key(SEED, 1, w), key(SEED, 2, w));
                    loop {
                        current.data = data_for(current.version + 1);
                        current.version = ok("save", store.save(&current).await);
                        ack(format!("save {w} {}\n", current.version));
                        let r = Record::new(
                            key(SEED, 5 + w as u8, n),
                            data_for(n.into()),
                            Timestamp::now() + HOUR,
                        );
                        ok("create", store.create(&r).await);
                        ack(format!("create {w} {n}\n"));
                        n += 1;
                        let (from, to) = if at_a { (a, b) } else { (b, a) };
                        ok("move", store.rotate(&from, &to).await);
                        at_a = !at_a;
                        ack(format!("move {w} {}\n", u8::from(at_a)));
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}
