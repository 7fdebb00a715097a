//! Measures a cleanup sweep under load: fills a fresh table with live and expired sessions,
//! then runs `delete_expired` while tasks keep loading live sessions, and prints how long the
//! sweep took and the load latencies during it (p50, p99, max).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p session-postgres --example purge -- [LIVE] [EXPIRED] [TASKS]
//! ```
//!
//! Defaults: 1,000,000 live rows, 100,000 expired, 8 loading tasks. The table is created in
//! the schema `session_bench` and dropped at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_core::{BoxError, SessionId, SessionKey, SessionStore};
use session_postgres::PostgresStore;
use session_postgres::sqlx;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let mut args = std::env::args().skip(1).map(|a| a.parse::<i64>());
    let live = args.next().transpose()?.unwrap_or(1_000_000);
    let expired = args.next().transpose()?.unwrap_or(100_000);
    let tasks = args.next().transpose()?.unwrap_or(8);

    let table = format!("purge_{}", &SessionId::generate().key().to_hex()[..12]);
    let store = PostgresStore::builder()
        .schema("session_bench")
        .table(&table)
        // The sweep measured here is the explicit one; a background sweep must not race it.
        .cleanup_interval(Duration::ZERO)
        .connect(&url)
        .await?;
    store.migrate().await?;
    let result = run(&store, live, expired, tasks).await;
    sqlx::query(&format!("DROP TABLE \"session_bench\".\"{table}\""))
        .execute(store.pool())
        .await?;
    result
}

async fn run(store: &PostgresStore, live: i64, expired: i64, tasks: i64) -> Result<(), BoxError> {
    let t = format!("\"{}\".\"{}\"", store.schema(), store.table());
    // 328 bytes of data, the size of the benchmark harness's signed-in session.
    let fill = format!(
        "INSERT INTO {t} (key, data, created_at, expires_at, version)
         SELECT sha256(convert_to($1 || i::text, 'UTF8')), decode(repeat('ab', 328), 'hex'),
                now(), now() + $2 * interval '1 second', 1
         FROM generate_series(1, $3) AS i"
    );
    let started = Instant::now();
    sqlx::query(&fill)
        .bind("live")
        .bind(3600)
        .bind(live)
        .execute(store.pool())
        .await?;
    sqlx::query(&fill)
        .bind("expired")
        .bind(-3600)
        .bind(expired)
        .execute(store.pool())
        .await?;
    sqlx::query(&format!("VACUUM ANALYZE {t}"))
        .execute(store.pool())
        .await?;
    println!(
        "filled {live} live + {expired} expired rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let sample: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT key FROM {t} WHERE expires_at > now() LIMIT 20000"
    ))
    .fetch_all(store.pool())
    .await?;
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        sample
            .iter()
            .filter_map(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .map(SessionKey::from_bytes)
            .collect(),
    );

    // Latencies of loads alone first, then during the sweep.
    let (before, _) = loads_while(store, &keys, tasks, async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(0)
    })
    .await?;
    report("loads alone", &before);
    let sweep_started = Instant::now();
    let (during, removed) = loads_while(store, &keys, tasks, store.delete_expired()).await?;
    let sweep = sweep_started.elapsed();
    println!(
        "swept {removed} expired rows in {:.2} s ({:.0} rows/s) while {tasks} tasks loaded",
        sweep.as_secs_f64(),
        removed as f64 / sweep.as_secs_f64()
    );
    report("loads during the sweep", &during);
    if u64::try_from(expired).ok() != Some(removed) {
        return Err(format!("expected to sweep {expired} rows, swept {removed}").into());
    }
    Ok(())
}

/// Runs `tasks` loading tasks until `work` finishes; returns every load latency and the
/// result of `work`.
async fn loads_while(
    store: &PostgresStore,
    keys: &Arc<Vec<SessionKey>>,
    tasks: i64,
    work: impl Future<Output = session_core::Result<u64>>,
) -> Result<(Vec<Duration>, u64), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (store, keys, stop) = (store.clone(), Arc::clone(keys), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = usize::try_from(task).unwrap_or(0) * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 104_729) % keys.len().max(1);
                    let started = Instant::now();
                    match store.load(&keys[i]).await {
                        Ok(Some(_)) => latencies.push(started.elapsed()),
                        Ok(None) => return Err("a live session was missing".to_owned()),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    let result = work.await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await??);
    }
    Ok((all, result?))
}

fn report(what: &str, latencies: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{what}: {} loads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
