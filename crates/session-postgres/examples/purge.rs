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
//!
//! With `compare` first, it times the sweep against one bare `DELETE ... WHERE expires_at <=
//! now()` of the same rows instead, in paired rounds on one table (each round refills the
//! expired rows, then runs each contestant in turn, the order alternating), and prints each
//! round's times and ratios:
//!
//! ```text
//! cargo run --release -p session-postgres --example purge -- compare [LIVE] [EXPIRED] [ROUNDS] [BATCH]
//! ```
//!
//! Defaults there: 90,000 live rows, 10,000 expired, 9 rounds, the store's default
//! `cleanup_batch`. Two more contestants run earlier sweeps' statements, one per batch of
//! 1,000 in a loop as the sweep runs them: `rowlocks`, the batch of the first round of issue 17
//! (`ctid`s of the oldest expired rows locked `FOR UPDATE SKIP LOCKED`, then deleted, with an
//! asynchronous commit), and `autocommit`, the sweep as it was before issue 17 (no `ORDER BY`,
//! each commit waiting for the WAL flush).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_core::{BoxError, SessionId, SessionKey, SessionStore};
use session_postgres::PostgresStore;
use session_postgres::sqlx;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let mut args = std::env::args().skip(1).peekable();
    let compare = args.next_if(|a| a == "compare").is_some();
    let mut args = args.map(|a| a.parse::<i64>());
    let (live, expired, third) = if compare {
        (90_000, 10_000, 9)
    } else {
        (1_000_000, 100_000, 8)
    };
    let live = args.next().transpose()?.unwrap_or(live);
    let expired = args.next().transpose()?.unwrap_or(expired);
    let third = args.next().transpose()?.unwrap_or(third);
    let batch = args
        .next()
        .transpose()?
        .map_or(Ok(session_postgres::DEFAULT_CLEANUP_BATCH), usize::try_from)?;

    let table = format!("purge_{}", &SessionId::generate().key().to_hex()[..12]);
    let store = PostgresStore::builder()
        .schema("session_bench")
        .table(&table)
        // The sweep measured here is the explicit one; a background sweep must not race it.
        .cleanup_interval(Duration::ZERO)
        .cleanup_batch(batch)
        .connect(&url)
        .await?;
    store.migrate().await?;
    let result = if compare {
        versus_bare(&store, live, expired, third).await
    } else {
        run(&store, live, expired, third).await
    };
    sqlx::query(&format!("DROP TABLE \"session_bench\".\"{table}\""))
        .execute(store.pool())
        .await?;
    result
}

fn quoted_table(store: &PostgresStore) -> String {
    format!("\"{}\".\"{}\"", store.schema(), store.table())
}

/// Inserts `n` rows named `prefix` and a number, expiring `secs` from now (one millisecond
/// apart, as sessions created over time do); 328 bytes of data each, the size of the benchmark
/// harness's signed-in session. Then vacuums, so every round starts from the same state.
async fn fill(store: &PostgresStore, prefix: &str, secs: i64, n: i64) -> Result<(), BoxError> {
    let t = quoted_table(store);
    sqlx::query(&format!(
        "INSERT INTO {t} (key, data, created_at, expires_at, version)
         SELECT sha256(convert_to($1 || i::text, 'UTF8')), decode(repeat('ab', 328), 'hex'),
                now(), now() + $2 * interval '1 second' - i * interval '1 millisecond', 1
         FROM generate_series(1, $3) AS i"
    ))
    .bind(prefix)
    .bind(secs)
    .bind(n)
    .execute(store.pool())
    .await?;
    sqlx::query(&format!("VACUUM ANALYZE {t}"))
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The store's sweep, two earlier sweeps' batch statements, and one bare `DELETE`, in paired
/// rounds.
async fn versus_bare(
    store: &PostgresStore,
    live: i64,
    expired: i64,
    rounds: i64,
) -> Result<(), BoxError> {
    let t = quoted_table(store);
    fill(store, "live", 3600, live).await?;
    // The store's batch statement as it was before issue 17 (no `ORDER BY`, so the planner
    // chose a sequential or bitmap scan per batch; a commit that waits for the WAL flush), one
    // statement per batch of 1,000 as the sweep ran it.
    let autocommit = format!(
        "DELETE FROM {t} WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {t} WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED
         )) AND expires_at <= now()"
    );
    // The batch statement of issue 17's first round: row locks on the batch, then a delete by
    // physical row id, with the asynchronous commit the store keeps.
    let rowlocks = format!(
        "DELETE FROM {t} WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {t} WHERE expires_at <= now()
            ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
         )) AND expires_at <= now()
         AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
    );
    let bare = format!("DELETE FROM {t} WHERE expires_at <= now()");
    let names = ["store", "rowlocks", "autocommit", "bare"];
    let bare_at = names.len() - 1;
    let mut times = vec![Vec::new(); names.len()];
    println!(
        "{live} live + {expired} expired rows, {rounds} rounds, store batches of {}; times in ms",
        store_batch(store)
    );
    for round in 0..rounds {
        let mut order = [0, 1, 2, 3];
        let turn = usize::try_from(round).unwrap_or(0) % order.len();
        order.rotate_left(turn);
        for &which in &order {
            fill(store, &format!("expired{round}-{which}-"), -3600, expired).await?;
            let started = Instant::now();
            let removed = match which {
                0 => store.delete_expired().await?,
                1 => in_batches(store, &rowlocks).await?,
                2 => in_batches(store, &autocommit).await?,
                _ => sqlx::query(&bare)
                    .execute(store.pool())
                    .await?
                    .rows_affected(),
            };
            times[which].push(started.elapsed().as_secs_f64() * 1000.0);
            if u64::try_from(expired).ok() != Some(removed) {
                return Err(format!("{}: swept {removed} of {expired}", names[which]).into());
            }
        }
        let [s, l, a, b] = [0, 1, 2, 3].map(|i| times[i][times[i].len() - 1]);
        println!(
            "round {round}: store {s:.1}, rowlocks {l:.1}, autocommit {a:.1}, bare {b:.1}; \
             store/bare {:.2}x, rowlocks/bare {:.2}x, autocommit/bare {:.2}x",
            s / b,
            l / b,
            a / b
        );
    }
    let ratios = |i: usize| -> Vec<f64> {
        (0..times[i].len())
            .map(|r| times[i][r] / times[bare_at][r])
            .collect()
    };
    for (i, name) in names.iter().enumerate().take(bare_at) {
        println!(
            "{name}/bare per round: median {:.2}x (min {:.2}x, max {:.2}x); {name} median {:.1} ms, bare median {:.1} ms",
            median(ratios(i)),
            ratios(i).iter().copied().fold(f64::INFINITY, f64::min),
            ratios(i).iter().copied().fold(0.0, f64::max),
            median(times[i].clone()),
            median(times[bare_at].clone())
        );
    }
    Ok(())
}

/// Runs a batch statement (`$1` = 1,000 rows) until a batch comes back short, as the sweep
/// does; returns the rows removed.
async fn in_batches(store: &PostgresStore, statement: &str) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(statement)
            .bind(1000_i64)
            .execute(store.pool())
            .await?
            .rows_affected();
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

/// The batch size the store was built with, as its `Debug` shows it.
fn store_batch(store: &PostgresStore) -> String {
    let debug = format!("{store:?}");
    debug
        .split("cleanup_batch: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("?")
        .to_owned()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn run(store: &PostgresStore, live: i64, expired: i64, tasks: i64) -> Result<(), BoxError> {
    let t = quoted_table(store);
    let started = Instant::now();
    fill(store, "live", 3600, live).await?;
    fill(store, "expired", -3600, expired).await?;
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
