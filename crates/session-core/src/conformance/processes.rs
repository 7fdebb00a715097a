//! Several processes on one store's data (a directory, a database file): creates of one key
//! have exactly one winner, a move of one session has exactly one winner, conditional saves
//! from every process to one counter lose no increment, and no process sees any other error.
//! The children are the test binary run again ([`child::reexec`](super::child::reexec)).
//!
//! A backend's test names the race and how to open its store on a directory:
//!
//! ```text
//! #[test]
//! fn processes_racing_on_one_root_have_one_winner_each() {
//!     let dir = tempfile::tempdir().unwrap();
//!     processes::race(
//!         &Race::new("processes_racing_on_one_root_have_one_winner_each", "MY_RACE_DIR"),
//!         dir.path(),
//!         |dir| async move { MyStore::open(&dir.join("store")).unwrap() },
//!     );
//! }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::child::{reexec, runtime, wait_exit, wait_for_file};
use super::{io, ok};
use crate::{Bytes, Error, Record, SessionId, SessionKey, SessionStore, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

/// A key from small numbers, the same in every process of a test: `tag` says what the key is
/// for, `i` which one, and `seed` keeps runs apart. The first byte varies with both, so keys
/// spread over whatever a store shards or stripes by first byte.
pub fn key(seed: u64, tag: u8, i: u32) -> SessionKey {
    let mut b = [0u8; 32];
    // Truncation intended: only the low bits pick a stripe.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low bits spread keys"
    )]
    let low = i as u8;
    b[0] = low.wrapping_mul(37).wrapping_add(tag);
    b[1] = tag;
    b[2..6].copy_from_slice(&i.to_le_bytes());
    b[8..16].copy_from_slice(&seed.to_le_bytes());
    SessionKey::from_bytes(b)
}

/// A seed that differs between runs, for [`key`].
pub fn seed() -> u64 {
    let key = SessionId::generate().key();
    let mut b = [0u8; 8];
    b.copy_from_slice(&key.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// What a race runs: its test's name (the children run exactly that test), the environment
/// variable that tells a child its directory, and its sizes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Race {
    /// The `#[test]` function that calls [`race`], by its exact name.
    pub test: &'static str,
    /// The variable a child finds its directory in; set only in children.
    pub dir_var: &'static str,
    /// How many processes race (default 4).
    pub children: u32,
    /// How many keys each create race and move race runs on (default 32).
    pub keys: u32,
    /// How many increments of the counter each process makes (default 20).
    pub increments: u64,
    /// How long a child may run (default 120 s).
    pub child_limit: Duration,
}

impl Race {
    /// A race of the default size.
    pub fn new(test: &'static str, dir_var: &'static str) -> Self {
        Self {
            test,
            dir_var,
            children: 4,
            keys: 32,
            increments: 20,
            child_limit: Duration::from_secs(120),
        }
    }

    /// Sets the sizes.
    pub fn sized(mut self, keys: u32, increments: u64, child_limit: Duration) -> Self {
        self.keys = keys;
        self.increments = increments;
        self.child_limit = child_limit;
        self
    }
}

/// Runs the race: in the parent (the test as `cargo test` runs it) it seeds `dir`, a fresh
/// empty directory, starts the children, and checks what they did; in a child (the same test,
/// run again with `race.dir_var` set) it plays one process's part on the parent's directory
/// and ignores `dir`. `open` opens the store on the directory, the same way in every process.
///
/// # Panics
/// When a create or a move has no winner or more than one, a counter increment is lost, a
/// process sees any other error, or a child fails or hangs.
pub fn race<S, F, Fut>(race: &Race, dir: &Path, open: F)
where
    S: SessionStore,
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = S>,
{
    if let Ok(dir) = std::env::var(race.dir_var) {
        race_child(race, Path::new(&dir), &open);
        return;
    }
    let seed = seed();
    runtime().block_on(async {
        let store = open(dir.to_owned()).await;
        for k in 0..race.keys {
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
    let mut children: Vec<_> = (0..race.children)
        .map(|i| {
            let child = reexec(
                race.test,
                &[
                    (race.dir_var, dir.display().to_string()),
                    ("RACE_CHILD", i.to_string()),
                    ("RACE_SEED", seed.to_string()),
                ],
            );
            (i, child)
        })
        .collect();
    for (i, child) in &mut children {
        wait_for_file(
            &dir.join(format!("ready-{i}")),
            child,
            Duration::from_secs(60),
        );
    }
    io("starting the race", std::fs::write(dir.join("go"), b"go"));
    for (i, child) in &mut children {
        let status = wait_exit(child, race.child_limit);
        assert!(status.success(), "child {i} failed: {status}");
    }
    let mut creates: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut moves: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in 0..race.children {
        let text = io(
            "reading a child's results",
            std::fs::read_to_string(dir.join(format!("result-{i}"))),
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
        let store = open(dir.to_owned()).await;
        for k in 0..race.keys {
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
                Some(Bytes::from(vec![child_byte(winners[0]); 32])),
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
        let total = u64::from(race.children) * race.increments;
        assert_eq!(
            &counter.data[..],
            &total.to_le_bytes()[..],
            "conditional saves from several processes lost increments"
        );
        assert_eq!(counter.version, 1 + total);
    });
}

/// The byte a child writes as its create's data.
fn child_byte(child: u32) -> u8 {
    u8::try_from(child).unwrap_or(u8::MAX)
}

/// The child's part: wait for the start signal, then race on every key and the counter,
/// logging each outcome (`won`, `lost`, or `error …`) for the parent.
fn race_child<S, F, Fut>(race: &Race, dir: &Path, open: &F)
where
    S: SessionStore,
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = S>,
{
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let me = u32::try_from(var("RACE_CHILD")).unwrap_or(u32::MAX);
    let seed = var("RACE_SEED");
    let rt = runtime();
    let store = rt.block_on(open(dir.to_owned()));
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
        for k in 0..race.keys {
            let r = Record::new(
                key(seed, 0, k),
                vec![child_byte(me); 32],
                Timestamp::now() + HOUR,
            );
            let outcome = match store.create(&r).await {
                Ok(()) => "won".to_owned(),
                Err(Error::AlreadyExists) => "lost".to_owned(),
                Err(e) => format!("error {e:?}"),
            };
            let _ = writeln!(log, "create {k} {outcome}");
            let outcome = match store.rotate(&key(seed, 1, k), &key(seed, 2, k)).await {
                Ok(()) => "won".to_owned(),
                Err(Error::NotFound | Error::AlreadyExists) => "lost".to_owned(),
                Err(e) => format!("error {e:?}"),
            };
            let _ = writeln!(log, "move {k} {outcome}");
        }
        let counter = key(seed, 3, 0);
        let mut done = 0;
        while done < race.increments {
            let r = match store.load(&counter).await {
                Ok(Some(r)) => r,
                other => {
                    let _ = writeln!(log, "counter load error {other:?}");
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
                    let _ = writeln!(log, "counter save error {e:?}");
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
