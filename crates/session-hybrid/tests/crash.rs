//! A child process writes sessions and prints each change once it is durable; the parent
//! `kill -9`s it mid-load and reopens the directory: every acknowledged change must be there,
//! nothing that was never written may load, and the replay report must account for every
//! byte it cut.
//!
//! Three modes: `EveryWrite`; `Lazy` acknowledging after a `flush()`; and `Lazy` with an hour's
//! interval, where a session deleted, moved or ended by `delete_by_owner` is acknowledged the
//! moment the call returns (durable deletions), along with every change made before the call
//! began (they shared its group commit). Nothing else flushes in that mode, so a kill right
//! after an acknowledgement catches deletions that would be lost if they were lazy.
//!
//! The child is this test binary run again with [`CHILD_VAR`] set, selecting the write loop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::{Bytes, Record, SessionId, SessionKey, SessionStore, Timestamp};
use session_hybrid::{Durability, HybridStore};

const CHILD_VAR: &str = "SESSION_HYBRID_CRASH_CHILD";
const HOUR: Duration = Duration::from_secs(3600);
/// Acknowledgements to see before the kill.
const ACKS_BEFORE_KILL: usize = 1500;

fn data(origin: &str, version: u64) -> Bytes {
    Bytes::from(format!("{origin} v{version} ").repeat(4))
}

/// Parses data written by [`data`]: its origin key and version, or `None` if it is not
/// exactly such data.
fn parse(bytes: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let unit = text.get(..text.len() / 4)?;
    let (origin, version) = unit.strip_suffix(' ')?.split_once(" v")?;
    let version: u64 = version.parse().ok()?;
    (data(origin, version) == bytes).then(|| (origin.to_owned(), version))
}

// ---------------------------------------------------------------------------------------------
// The child: writes until killed.

type Acks = Arc<Mutex<Vec<String>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    EveryWrite,
    Lazy,
    LazyLogout,
}

impl Mode {
    fn parse(s: &str) -> Self {
        match s {
            "every-write" => Self::EveryWrite,
            "lazy" => Self::Lazy,
            "lazy-logout" => Self::LazyLogout,
            _ => panic!("unknown mode {s}"),
        }
    }
}

fn take(acks: &Acks) -> Vec<String> {
    std::mem::take(
        &mut *acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Prints `line` now under `EveryWrite`, else once a later flush has made it durable.
fn ack(mode: Mode, acks: &Acks, line: String) {
    match mode {
        Mode::EveryWrite => println!("ACK {line}"),
        Mode::Lazy | Mode::LazyLogout => acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line),
    }
}

/// Runs a deletion or move and acknowledges it. Under `LazyLogout` it is acknowledged as soon
/// as it returns, with every change acknowledged-to-be before it began: its flush covered them.
async fn ack_removal<T>(
    mode: Mode,
    acks: &Acks,
    line: String,
    call: impl Future<Output = session_core::Result<T>>,
) -> T {
    let earlier = (mode == Mode::LazyLogout).then(|| take(acks));
    let value = must(&line, call).await;
    match earlier {
        Some(earlier) => {
            for done in earlier {
                println!("ACK {done}");
            }
            println!("ACK {line}");
        }
        None => ack(mode, acks, line),
    }
    value
}

async fn must<T>(what: &str, result: impl Future<Output = session_core::Result<T>>) -> T {
    match result.await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// One session's life: create, two saves, a move, a save, and for one in four a delete, for
/// another one in four a `delete_by_owner` (each session is its own owner).
async fn session_life(store: &HybridStore, mode: Mode, acks: &Acks, n: u64) {
    let mut r = Record::new(
        SessionId::generate().key(),
        Bytes::new(),
        Timestamp::now() + HOUR,
    );
    let origin = r.key.to_hex();
    r.owner = Some(origin.clone());
    r.data = data(&origin, 1);
    must("create", store.create(&r)).await;
    ack(mode, acks, format!("PUT {origin} 1"));
    for _ in 0..2 {
        r.data = data(&origin, r.version + 1);
        r.version = must("save", store.save(&r)).await;
        ack(mode, acks, format!("PUT {} {}", r.key.to_hex(), r.version));
    }
    let new = SessionId::generate().key();
    println!("ACK WILL_MOVE {origin} {}", new.to_hex());
    let moved = format!("MOVED {origin} {}", new.to_hex());
    ack_removal(mode, acks, moved, store.rotate(&r.key, &new)).await;
    r.key = new;
    r.data = data(&origin, r.version + 1);
    r.version = must("save", store.save(&r)).await;
    ack(mode, acks, format!("PUT {} {}", new.to_hex(), r.version));
    match n % 4 {
        0 => {
            println!("ACK WILL_DEL {}", new.to_hex());
            let line = format!("DEL {}", new.to_hex());
            ack_removal(mode, acks, line, store.delete(&new)).await;
        }
        2 => {
            println!("ACK WILL_DEL {}", new.to_hex());
            let line = format!("DEL {}", new.to_hex());
            let ended = ack_removal(mode, acks, line, store.delete_by_owner(&origin)).await;
            assert_eq!(ended, 1, "the session is its owner's only one");
        }
        _ => {}
    }
}

fn child(spec: &str) {
    let Some((mode, dir)) = spec.split_once(':') else {
        panic!("bad {CHILD_VAR}: {spec}")
    };
    let mode = Mode::parse(mode);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("building a runtime failed: {e}"),
    };
    runtime.block_on(async move {
        let (durability, flush_bytes) = match mode {
            Mode::EveryWrite => (Durability::EveryWrite, 16 << 10),
            Mode::Lazy => (Durability::Lazy(Duration::from_millis(20)), 16 << 10),
            // Only deletions (and a full megabyte) flush.
            Mode::LazyLogout => (Durability::Lazy(Duration::from_secs(3600)), 1 << 20),
        };
        let store = match HybridStore::builder(dir)
            .durability(durability)
            .flush_bytes(flush_bytes)
            .compact_min_bytes(128 << 10)
            .compact_factor(2)
            .open()
        {
            Ok(store) => Arc::new(store),
            Err(e) => panic!("the child could not open the store: {e}"),
        };
        let acks: Acks = Arc::default();
        if mode == Mode::Lazy {
            // Acknowledge in batches: everything done before a flush() began is durable once
            // it returns.
            let (store, acks) = (Arc::clone(&store), Arc::clone(&acks));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let batch = take(&acks);
                    must("flush", store.flush()).await;
                    for line in batch {
                        println!("ACK {line}");
                    }
                }
            });
        }
        let writers: Vec<_> = (0..8u64)
            .map(|w| {
                let (store, acks) = (Arc::clone(&store), Arc::clone(&acks));
                tokio::spawn(async move {
                    let mut n = w;
                    loop {
                        session_life(&store, mode, &acks, n).await;
                        // A lazy store call never waits, so without this the writers would keep both
                        // workers and starve the task that flushes and acknowledges.
                        tokio::task::yield_now().await;
                        n += 8;
                    }
                })
            })
            .collect();
        for w in writers {
            let _ = w.await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The parent: starts the child, kills it, checks the directory.

#[derive(Debug, Default)]
struct KeyState {
    acked_version: u64,
    will_move: bool,
    moved_away: bool,
    will_delete: bool,
    deleted: bool,
}

fn log_bytes(dir: &Path) -> u64 {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("log-"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum(),
        Err(e) => panic!("listing {} failed: {e}", dir.display()),
    }
}

fn run_parent(test_name: &str, mode: &str) {
    let tmp = match tempfile::tempdir() {
        Ok(tmp) => tmp,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("finding the test binary failed: {e}"),
    };
    let mut child = match Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, format!("{mode}:{}", tmp.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("starting the child failed: {e}"),
    };
    let Some(stdout) = child.stdout.take() else {
        panic!("no child stdout")
    };
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("ACK ") {
                    lines
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(line[at + 4..].to_owned());
                }
            }
        })
    };
    let started = Instant::now();
    loop {
        let seen = lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        if seen >= ACKS_BEFORE_KILL {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended by itself ({status}) after {seen} acknowledgements");
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the child acknowledged only {seen} changes in 90 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The directory belongs to the running child: this process must not get it.
    match HybridStore::builder(tmp.path())
        .cleanup_interval(Duration::ZERO)
        .open()
    {
        Err(session_core::Error::Config(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("opening a directory another process holds must fail, got {other:?}"),
    }
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the child must still be writing when killed"
    );
    if let Err(e) = child.kill() {
        panic!("kill -9 failed: {e}");
    }
    let _ = child.wait();
    let _ = reader.join();
    let lines = std::mem::take(
        &mut *lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );

    let mut keys: HashMap<String, KeyState> = HashMap::new();
    let mut origin_of: HashMap<String, String> = HashMap::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["PUT", key, version] => {
                let version: u64 = version
                    .parse()
                    .unwrap_or_else(|_| panic!("bad line {line}"));
                let state = keys.entry((*key).to_owned()).or_default();
                state.acked_version = state.acked_version.max(version);
            }
            ["WILL_MOVE", old, new] => {
                keys.entry((*old).to_owned()).or_default().will_move = true;
                origin_of.insert((*new).to_owned(), (*old).to_owned());
            }
            ["MOVED", old, new] => {
                let acked = keys.get(*old).map_or(0, |s| s.acked_version);
                keys.entry((*old).to_owned()).or_default().moved_away = true;
                let state = keys.entry((*new).to_owned()).or_default();
                state.acked_version = state.acked_version.max(acked);
            }
            ["WILL_DEL", key] => keys.entry((*key).to_owned()).or_default().will_delete = true,
            ["DEL", key] => keys.entry((*key).to_owned()).or_default().deleted = true,
            _ => panic!("unexpected child line: {line}"),
        }
    }

    let before = log_bytes(tmp.path());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("building a runtime failed: {e}"),
    };
    runtime.block_on(async {
        let store = match HybridStore::open(tmp.path()) {
            Ok(store) => store,
            Err(e) => panic!("reopening after kill -9 failed: {e}"),
        };
        let report = store.replay_report().clone();
        assert_eq!(
            before - log_bytes(tmp.path()),
            report.bytes_dropped,
            "the report accounts for every byte cut: {report:?}"
        );
        assert!(
            !report.corrupt_entry,
            "a killed process leaves at most a torn tail, not corruption: {report:?}"
        );
        eprintln!(
            "{mode}: {} acknowledgements, {} sessions loaded, report {report:?}",
            lines.len(),
            report.sessions_loaded
        );

        let mut checked = 0;
        for (hex, state) in &keys {
            let Some(key) = SessionKey::from_hex(hex) else {
                panic!("bad key {hex}")
            };
            let loaded = must("load", store.load(&key)).await;
            if state.deleted || state.moved_away {
                assert_eq!(
                    loaded, None,
                    "{hex}: an acknowledged delete or move came back ({state:?})"
                );
                continue;
            }
            match loaded {
                Some(r) => {
                    assert!(
                        r.version >= state.acked_version,
                        "{hex}: version {} is older than the acknowledged {}",
                        r.version,
                        state.acked_version
                    );
                    checked += 1;
                }
                None => assert!(
                    state.acked_version == 0 || state.will_delete || state.will_move,
                    "{hex}: acknowledged at version {} but missing ({state:?})",
                    state.acked_version
                ),
            }
        }
        assert!(checked > 0, "no acknowledged session was live to check");

        for key in must("list", store.list()).await {
            let Some(r) = must("load", store.load(&key)).await else {
                continue;
            };
            let hex = key.to_hex();
            let Some((origin, version)) = parse(&r.data) else {
                panic!("{hex}: loaded data was never written")
            };
            assert_eq!(
                version, r.version,
                "{hex}: data of version {version} under version {}",
                r.version
            );
            assert!(
                origin == hex || origin_of.get(&hex) == Some(&origin),
                "{hex}: holds data of {origin}, which never moved here"
            );
        }
    });
}

fn dispatch(test_name: &str, mode: &str) {
    match std::env::var(CHILD_VAR) {
        Ok(spec) => child(&spec),
        Err(_) => run_parent(test_name, mode),
    }
}

#[test]
fn kill_9_every_write_loses_no_acknowledged_change() {
    dispatch(
        "kill_9_every_write_loses_no_acknowledged_change",
        "every-write",
    );
}

#[test]
fn kill_9_lazy_never_revives_a_deletion_that_returned() {
    dispatch(
        "kill_9_lazy_never_revives_a_deletion_that_returned",
        "lazy-logout",
    );
}

#[test]
fn kill_9_lazy_loses_nothing_acknowledged_after_a_flush() {
    dispatch(
        "kill_9_lazy_loses_nothing_acknowledged_after_a_flush",
        "lazy",
    );
}
