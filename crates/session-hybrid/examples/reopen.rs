//! How long reopening a directory takes: fills a store with `N` sessions of about 0.5 KiB
//! (default 1,000,000; every fourth one owned), closes it, and times `HybridStore::open`.
//! The fill also reports its slowest write, which includes any wait on a shard that a
//! concurrent compaction was copying out.
//!
//! ```text
//! cargo run --release -p session-hybrid --example reopen -- [N] [DIR] [SAVES] [snapshot-first]
//! ```
//!
//! `SAVES` (default 0) saves of random sessions follow the fill, so the log holds more than
//! the live sessions, as in a store that has run for a while. With `snapshot-first`, a
//! compaction (`compact_now`) runs between the fill and the saves: about 440,000 saves then
//! leave a log just below the default `compact_log_bytes` after the snapshot, the longest a
//! reopen has to replay. Without `DIR` a temp directory
//! is used and removed afterwards. A `DIR` that already holds
//! files is not filled again, only reopened, so repeated runs time the reopen alone.

use std::path::Path;
use std::time::{Duration, Instant};

use session_core::{Bytes, Record, SessionKey, SessionStore, Timestamp};
use session_hybrid::HybridStore;

/// A uniform key for session `i`, the same on every run (seeded by `i`), so a reopen finds
/// the keys an earlier fill wrote.
fn key(i: u64) -> SessionKey {
    let mut bytes = [0u8; 32];
    fastrand::Rng::with_seed(i).fill(&mut bytes);
    SessionKey::from_bytes(bytes)
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn fill(
    dir: &Path,
    n: u64,
    saves: u64,
    snapshot_first: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = HybridStore::builder(dir)
        .cleanup_interval(Duration::ZERO)
        .open()?;
    let data = Bytes::from(vec![b's'; 480]);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let expires = Timestamp::now() + Duration::from_secs(86_400);
        let mut r = Record::new(key(i), data.clone(), expires);
        if i % 4 == 0 {
            r.owner = Some(format!("user-{}", i / 4));
        }
        let one = Instant::now();
        store.create(&r).await?;
        slowest = slowest.max(one.elapsed());
    }
    if snapshot_first {
        store.compact_now().await?;
    }
    for s in 0..saves {
        let i = key(s ^ 0x5EED).as_bytes()[0] as u64 * n / 256 + s % (n / 256).max(1);
        let Some(mut r) = store.load(&key(i % n)).await? else {
            continue;
        };
        r.expires_at = Timestamp::now() + Duration::from_secs(86_400);
        let one = Instant::now();
        store.save(&r).await?;
        slowest = slowest.max(one.elapsed());
    }
    store.close().await?;
    let took = started.elapsed();
    let compactions = store.compactions();
    println!(
        "filled {n} sessions and saved {saves} in {took:.2?} ({compactions} compactions meanwhile, slowest write \
         {slowest:.2?}); directory holds {} MiB",
        size(dir) >> 20
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_owned(), Into::into);
    let saves: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let snapshot_first = args.next().as_deref() == Some("snapshot-first");
    let filled_before = std::fs::read_dir(&dir).is_ok_and(|mut e| e.next().is_some());
    if filled_before {
        println!(
            "{} already holds sessions: timing the reopen only",
            dir.display()
        );
    } else {
        fill(&dir, n, saves, snapshot_first).await?;
    }

    let started = Instant::now();
    let store = HybridStore::builder(&dir)
        .cleanup_interval(Duration::ZERO)
        .open()?;
    let opened = started.elapsed();
    println!("reopened in {opened:.2?}: {:?}", store.replay_report());
    if !filled_before {
        assert_eq!(store.count().await?, n);
    }
    Ok(())
}
