//! Sweeping expired sessions out of a full `MemoryStore`, alone and under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use session_core::{BoxError, Record, SessionKey, SessionStore, Timestamp};
use session_memory::MemoryStore;

use crate::keys::{Rng, session_key};
use crate::session::TTL;

const EXPIRED_BASE: u64 = 1 << 41;

/// What the sweep measurements found.
#[derive(Debug, Clone)]
pub(crate) struct SweepReport {
    pub(crate) live: u64,
    pub(crate) expired: u64,
    /// Each sweep of `expired` expired among `live` live, with nothing else running.
    pub(crate) alone: Vec<Duration>,
    /// CPU time of the sweeping thread for each of those (unskewed by waiting for a CPU).
    pub(crate) alone_cpu: Vec<Duration>,
    pub(crate) under_load: UnderLoad,
    /// `DashMap::retain` over the same number of entries: the bare scan the store's sweep is
    /// measured against.
    pub(crate) full_scan: Duration,
}

/// A sweep while tasks keep loading.
#[derive(Debug, Clone)]
pub(crate) struct UnderLoad {
    pub(crate) loaders: usize,
    pub(crate) sweep: Duration,
    pub(crate) rate_before: f64,
    pub(crate) rate_during: f64,
    pub(crate) max_latency_before: Duration,
    pub(crate) max_latency_during: Duration,
    pub(crate) loads_during: u64,
}

async fn fill(
    store: &Arc<MemoryStore>,
    keys: std::ops::Range<u64>,
    data: &Bytes,
    expires_at: Timestamp,
    tasks: u64,
) -> Result<(), BoxError> {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let store = Arc::clone(store);
            let data = data.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                let mut record = Record::new(session_key(0), data, expires_at);
                record.created_at = expires_at - TTL;
                let mut i = keys.start + task;
                while i < keys.end {
                    record.key = session_key(i);
                    store.create(&record).await?;
                    i += tasks;
                }
                Ok::<_, session_core::Error>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

fn check(removed: u64, expected: u64) -> Result<(), BoxError> {
    if removed == expected {
        Ok(())
    } else {
        Err(format!("sweep removed {removed}, expected {expected}").into())
    }
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}

#[derive(Default)]
struct LoaderStats {
    count: [u64; 3],
    max: [Duration; 3],
}

/// Fills `live` live and `expired` expired sessions, then times `MemoryStore::sweep` `reps`
/// times (refilling the expired ones each time), then once more while `loaders` tasks load.
pub(crate) async fn run(
    data: &Bytes,
    live: u64,
    expired: u64,
    reps: usize,
    loaders: usize,
) -> Result<SweepReport, BoxError> {
    let store = Arc::new(
        MemoryStore::builder()
            .cleanup_interval(Duration::ZERO)
            .build()?,
    );
    let tasks = loaders.max(1) as u64;
    fill(
        &store,
        0..live,
        data,
        Timestamp::now() + Duration::from_secs(3600),
        tasks,
    )
    .await?;
    let mut batch = 0u64;
    let mut add_expired = || {
        let start = EXPIRED_BASE + batch * expired;
        batch += 1;
        start..start + expired
    };
    let past = || Timestamp::now() - Duration::from_secs(60);

    let (mut alone, mut alone_cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        fill(&store, add_expired(), data, past(), tasks).await?;
        let cpu = thread_cpu();
        let start = Instant::now();
        let removed = store.sweep(Timestamp::now());
        alone.push(start.elapsed());
        if let (Some(before), Some(after)) = (cpu, thread_cpu()) {
            alone_cpu.push(after.saturating_sub(before));
        }
        check(removed, expired)?;
    }

    fill(&store, add_expired(), data, past(), tasks).await?;
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loader_handles: Vec<_> = (0..loaders)
        .map(|n| {
            let (store, phase, stop) = (Arc::clone(&store), Arc::clone(&phase), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut rng = Rng::new(n as u64 + 99);
                let mut stats = LoaderStats::default();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let p = usize::from(phase.load(Ordering::Relaxed));
                        let t = Instant::now();
                        let found = store.load(&session_key(rng.below(live))).await?;
                        let latency = t.elapsed();
                        if found.is_none() {
                            return Err(session_core::Error::NotFound);
                        }
                        stats.count[p] += 1;
                        stats.max[p] = stats.max[p].max(latency);
                    }
                    tokio::task::yield_now().await;
                }
                Ok(stats)
            })
        })
        .collect();
    let loading_since = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sweeper = {
        let (store, phase) = (Arc::clone(&store), Arc::clone(&phase));
        tokio::task::spawn_blocking(move || {
            let before = loading_since.elapsed();
            phase.store(1, Ordering::Relaxed);
            let start = Instant::now();
            let removed = store.sweep(Timestamp::now());
            let took = start.elapsed();
            phase.store(2, Ordering::Relaxed);
            (removed, took, before)
        })
    };
    let (removed, sweep, before) = sweeper.await?;
    check(removed, expired)?;
    stop.store(true, Ordering::Relaxed);
    let mut total = LoaderStats::default();
    for handle in loader_handles {
        let stats = handle.await??;
        for p in 0..3 {
            total.count[p] += stats.count[p];
            total.max[p] = total.max[p].max(stats.max[p]);
        }
    }
    let count = store.count().await?;
    if count != live || store.count_expired().await? != 0 {
        return Err(format!("after the sweeps {count} live, expected {live}").into());
    }
    drop(store);

    // The same entries in a bare map with the deadline beside the bytes (each its own copy, as
    // in the store, so the scan frees what the sweep frees), swept by a full scan.
    let map: DashMap<SessionKey, (Bytes, Timestamp)> = DashMap::new();
    let (far, gone) = (Timestamp::now() + Duration::from_secs(3600), past());
    for i in 0..live {
        map.insert(session_key(i), (Bytes::copy_from_slice(data), far));
    }
    for i in EXPIRED_BASE..EXPIRED_BASE + expired {
        map.insert(session_key(i), (Bytes::copy_from_slice(data), gone));
    }
    let now = Timestamp::now();
    let start = Instant::now();
    map.retain(|_, (_, expires_at)| *expires_at > now);
    let full_scan = start.elapsed();
    check((live + expired) - map.len() as u64, expired)?;

    Ok(SweepReport {
        live,
        expired,
        alone,
        alone_cpu,
        under_load: UnderLoad {
            loaders,
            sweep,
            rate_before: total.count[0] as f64 / before.as_secs_f64(),
            rate_during: total.count[1] as f64 / sweep.as_secs_f64().max(1e-9),
            max_latency_before: total.max[0],
            max_latency_during: total.max[1],
            loads_during: total.count[1],
        },
        full_scan,
    })
}
