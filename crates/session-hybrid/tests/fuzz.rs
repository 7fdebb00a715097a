//! Random damage to a store directory: flipped bytes, cut files, appended garbage, overwritten
//! ranges and missing files, in log segments and snapshots, over many seeds. Opening must
//! never panic or fail, and every session it loads must be a state some session really had.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use session_core::{Bytes, Record, SessionKey, SessionStore, Timestamp};
use session_hybrid::{Durability, HybridStore, HybridStoreBuilder};

const SEEDS: u64 = 400;
const HOUR: Duration = Duration::from_secs(3600);

/// A seeded generator (fastrand's wyrand: deterministic per seed, so a failing seed replays),
/// with the two draws the fuzzer needs.
struct Rng(fastrand::Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.u64(..n) }
    }

    fn key(&mut self) -> SessionKey {
        let mut bytes = [0u8; 32];
        self.0.fill(&mut bytes);
        SessionKey::from_bytes(bytes)
    }
}

async fn must<T>(what: &str, result: impl Future<Output = session_core::Result<T>>) -> T {
    match result.await {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

fn builder(dir: &Path) -> HybridStoreBuilder {
    HybridStore::builder(dir)
        .durability(Durability::Lazy(Duration::from_millis(2)))
        .flush_bytes(2 << 10)
        .compact_min_bytes(16 << 10)
        .compact_factor(1)
        .cleanup_interval(Duration::ZERO)
}

/// Every state any key ever had.
type Written = HashMap<SessionKey, Vec<Record>>;

async fn remember(store: &HybridStore, written: &mut Written, key: &SessionKey) {
    if let Some(r) = must("load", store.load(key)).await {
        let states = written.entry(*key).or_default();
        if !states.contains(&r) {
            states.push(r);
        }
    }
}

/// Writes a random history until the store has compacted a few times.
async fn write_history(dir: &Path) -> Written {
    let store = match builder(dir).open() {
        Ok(store) => store,
        Err(e) => panic!("opening the store failed: {e}"),
    };
    let mut rng = Rng::new(7);
    let mut written = Written::new();
    let mut live: Vec<Record> = Vec::new();
    let mut ops = 0u32;
    while store.compactions() < 3 || ops < 3000 {
        ops += 1;
        assert!(ops < 1_000_000, "the store never compacted");
        let pick = usize::try_from(rng.below(live.len() as u64)).unwrap_or(0);
        match (rng.below(10), live.is_empty()) {
            (0..=3, _) | (_, true) => {
                let mut r = Record::new(
                    rng.key(),
                    Bytes::from(vec![b'a' + (ops % 26) as u8; rng.below(300) as usize]),
                    Timestamp::now() + HOUR,
                );
                if rng.below(3) == 0 {
                    r = r.with_owner(format!("o{}", rng.below(5)));
                }
                must("create", store.create(&r)).await;
                remember(&store, &mut written, &r.key).await;
                live.push(r);
            }
            (4..=5, false) => {
                let r = &mut live[pick];
                r.data = Bytes::from(format!("saved {ops}"));
                r.version = must("save", store.save(r)).await;
                let key = r.key;
                remember(&store, &mut written, &key).await;
            }
            (6, false) => {
                let r = &mut live[pick];
                r.expires_at = Timestamp::now() + HOUR + Duration::from_millis(rng.below(100_000));
                must("touch", store.touch(&r.key, r.expires_at)).await;
                let key = r.key;
                remember(&store, &mut written, &key).await;
            }
            (7, false) => {
                let new = rng.key();
                let r = &mut live[pick];
                must("rotate", store.rotate(&r.key, &new)).await;
                r.key = new;
                remember(&store, &mut written, &new).await;
            }
            _ => {
                let r = live.swap_remove(pick);
                must("delete", store.delete(&r.key)).await;
            }
        }
        if ops.is_multiple_of(200) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    must("close", store.close()).await;
    written
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
        Err(e) => panic!("listing {} failed: {e}", dir.display()),
    };
    paths.sort();
    paths
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) {
    if let Err(e) = std::fs::create_dir_all(to) {
        panic!("creating {} failed: {e}", to.display());
    }
    for path in read_dir(from) {
        if name(&path) == "LOCK" {
            continue;
        }
        if let Err(e) = std::fs::copy(&path, to.join(name(&path))) {
            panic!("copying {} failed: {e}", path.display());
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {} failed: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        panic!("writing {} failed: {e}", path.display());
    }
}

/// Damages one random file; returns what it did, for failure messages.
fn damage(rng: &mut Rng, dir: &Path, only_flip: bool) -> (String, PathBuf, &'static str) {
    let files: Vec<PathBuf> = read_dir(dir)
        .into_iter()
        .filter(|p| {
            let n = name(p);
            (n.starts_with("log-") || n.starts_with("snap-"))
                && (!only_flip || std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        })
        .collect();
    let path = files[usize::try_from(rng.below(files.len() as u64)).unwrap_or(0)].clone();
    let mut bytes = read(&path);
    let len = bytes.len() as u64;
    let kind = if only_flip { 0 } else { rng.below(5) };
    let what = match kind {
        0 if len > 0 => {
            let at = rng.below(len) as usize;
            bytes[at] ^= 1 << rng.below(8);
            write(&path, &bytes);
            "flip"
        }
        1 => {
            bytes.truncate(rng.below(len + 1) as usize);
            write(&path, &bytes);
            "truncate"
        }
        2 => {
            let extra = 1 + rng.below(64);
            bytes.extend((0..extra).map(|_| rng.next() as u8));
            write(&path, &bytes);
            "append garbage"
        }
        3 if len > 0 => {
            let at = rng.below(len) as usize;
            let end = (at + 1 + rng.below(40) as usize).min(bytes.len());
            for b in &mut bytes[at..end] {
                *b = rng.next() as u8;
            }
            write(&path, &bytes);
            "overwrite"
        }
        _ => {
            if let Err(e) = std::fs::remove_file(&path) {
                panic!("removing {} failed: {e}", path.display());
            }
            "delete"
        }
    };
    (format!("{what} {}", name(&path)), path, what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_damage_never_panics_and_never_invents_sessions() {
    let tmp = match tempfile::tempdir() {
        Ok(tmp) => tmp,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    };
    let original = tmp.path().join("original");
    let written = write_history(&original).await;
    let names: Vec<String> = read_dir(&original).iter().map(|p| name(p)).collect();
    let snapshots: Vec<&String> = names.iter().filter(|n| n.starts_with("snap-")).collect();
    let segments: Vec<&String> = names.iter().filter(|n| n.starts_with("log-")).collect();
    assert!(
        !snapshots.is_empty() && segments.len() >= 2,
        "the history must leave snapshots and several segments: {names:?}"
    );
    let (Some(newest_snapshot), Some(last_segment)) = (
        snapshots.last().map(|s| s.to_string()),
        segments.last().map(|s| s.to_string()),
    ) else {
        panic!("no files")
    };

    let mut detected = 0;
    let mut damaged_sessions_seen = 0u64;
    for seed in 0..SEEDS {
        let mut rng = Rng::new(seed);
        let dir = tmp.path().join(format!("seed-{seed}"));
        copy_dir(&original, &dir);
        let single_flip = seed.is_multiple_of(2);
        let mut done = Vec::new();
        let mut flipped = None;
        if single_flip {
            let (what, path, _) = damage(&mut rng, &dir, true);
            flipped = Some(name(&path));
            done.push(what);
        } else {
            for _ in 0..1 + rng.below(3) {
                done.push(damage(&mut rng, &dir, false).0);
            }
        }
        let store = match builder(&dir).open() {
            Ok(store) => store,
            Err(e) => panic!("seed {seed} ({done:?}): opening a damaged directory failed: {e}"),
        };
        let report = store.replay_report().clone();
        if let Some(flipped) = &flipped {
            if *flipped == newest_snapshot {
                assert!(
                    report.snapshots_rejected >= 1,
                    "seed {seed}: a flipped snapshot was loaded: {report:?}"
                );
                detected += 1;
            } else if *flipped == last_segment {
                assert!(
                    report.corrupt_entry || report.torn_tail,
                    "seed {seed}: a flipped log byte went unnoticed: {report:?}"
                );
                assert!(report.bytes_dropped > 0, "seed {seed}: {report:?}");
                detected += 1;
            }
        }
        for key in must("list", store.list()).await {
            let Some(r) = must("load", store.load(&key)).await else {
                continue;
            };
            let known = written.get(&key).is_some_and(|states| states.contains(&r));
            assert!(
                known,
                "seed {seed} ({done:?}): loaded a session state that was never written: {r:?}\nreport {report:?}"
            );
            damaged_sessions_seen += 1;
        }
        drop(store);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            panic!("removing {} failed: {e}", dir.display());
        }
    }
    assert!(
        detected > 0,
        "no seed flipped the newest snapshot or the last segment"
    );
    assert!(
        damaged_sessions_seen > 0,
        "no session survived any damage: the check above checked nothing"
    );
}
