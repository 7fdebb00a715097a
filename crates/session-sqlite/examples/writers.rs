//! Measures the writer design: 64 tasks of one process on one database file, three ways.
//!
//! - `queue`: the store as shipped, one write connection; writes wait in the pool's queue.
//! - `busy`: the store with 8 write connections; writes contend for SQLite's lock and wait in
//!   its `busy_timeout` handler (5 s).
//! - `immediate`: bare sqlx on 8 connections with `busy_timeout` 0, each write in
//!   `BEGIN IMMEDIATE … COMMIT`, retried by the application on `SQLITE_BUSY` after a short
//!   random sleep.
//!
//! Each round runs every design for the same time on a fresh file, in a rotating order, and
//! prints operations per second, the ratio to `queue` in that round, and how many
//! `SQLITE_BUSY` errors each design met (surfaced to the caller for `queue` and `busy`;
//! absorbed by retries for `immediate`).
//!
//! ```text
//! cargo run --release -p session-sqlite --example writers -- [rounds] [seconds] [full|normal] [write%]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::{Error, SessionKey, SessionStore, Timestamp};
use session_sqlite::sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use session_sqlite::{SqliteStore, SqliteSynchronous, sqlx};

const TASKS: usize = 64;
const KEYS: u32 = 10_000;
const HOUR: Duration = Duration::from_secs(3600);

fn key(i: u32) -> SessionKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    SessionKey::from_bytes(b)
}

/// A small xorshift, so each task picks keys and operations without a shared RNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    busy: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let sync = match args.get(3).map(String::as_str) {
        Some("normal") => SqliteSynchronous::Normal,
        _ => SqliteSynchronous::Full,
    };
    let write_pct: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(50);
    println!(
        "{TASKS} tasks, {KEYS} sessions, {write_pct}% conditional saves (rest loads), synchronous {sync:?}, {secs} s per design per round"
    );
    let designs = ["queue", "busy", "immediate"];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); designs.len()];
    for round in 0..rounds {
        let mut rates = [0f64; 3];
        let mut line = format!("round {round}:");
        for step in 0..designs.len() {
            let d = (round + step) % designs.len();
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("s.db");
            let (rate, busy, errors) = run(designs[d], &path, sync, write_pct, secs).await?;
            rates[d] = rate;
            line.push_str(&format!(
                " {}={rate:.0}/s busy={busy} errors={errors};",
                designs[d]
            ));
        }
        for d in 0..designs.len() {
            ratios[d].push(rates[d] / rates[0]);
        }
        println!("{line}");
    }
    for (d, r) in ratios.iter().enumerate() {
        let mut s = r.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "{:>9} / queue per round: median {:.2}, min {:.2}, max {:.2}",
            designs[d],
            s[s.len() / 2],
            s[0],
            s[s.len() - 1]
        );
    }
    Ok(())
}

async fn run(
    design: &str,
    path: &std::path::Path,
    sync: SqliteSynchronous,
    write_pct: u64,
    secs: u64,
) -> Result<(f64, u64, u64), Box<dyn std::error::Error>> {
    let store = SqliteStore::builder()
        .synchronous(sync)
        .cleanup_interval(Duration::ZERO)
        .write_connections(if design == "busy" { 8 } else { 1 })
        .open(path)
        .await?;
    store.migrate().await?;
    // Seed in one transaction: fast, and the same for every design.
    let mut tx = store.write_pool().begin().await?;
    let now = Timestamp::now().unix_millis();
    for i in 0..KEYS {
        sqlx::query("INSERT INTO sessions (key, data, created_at, expires_at, version) VALUES (?1, ?2, ?3, ?4, 1)")
            .bind(key(i).as_bytes().as_slice())
            .bind(vec![7u8; 200])
            .bind(now)
            .bind(now + 3_600_000)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let bare = if design == "immediate" {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::ZERO)
            .synchronous(sync);
        Some(
            SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .connect_with(options)
                .await?,
        )
    } else {
        None
    };
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, bare, tally, stop) =
                (store.clone(), bare.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                while !stop.load(Ordering::Relaxed) {
                    let k = key((rng.next() % u64::from(KEYS)) as u32);
                    let write = rng.next() % 100 < write_pct;
                    let result = match (&bare, write) {
                        (Some(pool), true) => immediate_save(pool, &k, &tally).await,
                        (Some(pool), false) => bare_load(pool, &k).await,
                        (None, true) => store_save(&store, &k).await,
                        (None, false) => store.load(&k).await.map(drop),
                    };
                    match result {
                        Ok(()) | Err(Error::Conflict) => {
                            tally.ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Unavailable { .. }) => {
                            tally.busy.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok((
        tally.ops.load(Ordering::Relaxed) as f64 / elapsed,
        tally.busy.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    ))
}

/// A request's save: load, then the conditional save of what it loaded.
async fn store_save(store: &SqliteStore, k: &SessionKey) -> session_core::Result<()> {
    let Some(mut r) = store.load(k).await? else {
        return Err(Error::NotFound);
    };
    r.expires_at = Timestamp::now() + HOUR;
    store.save(&r).await.map(drop)
}

async fn bare_load(pool: &SqlitePool, k: &SessionKey) -> session_core::Result<()> {
    sqlx::query("SELECT key, data, created_at, expires_at, version, owner FROM sessions WHERE key = ?1 AND expires_at > ?2")
        .bind(k.as_bytes().as_slice())
        .bind(Timestamp::now().unix_millis())
        .fetch_optional(pool)
        .await
        .map(drop)
        .map_err(|e| Error::backend("bench", e))
}

/// The same load and conditional save, the save in `BEGIN IMMEDIATE`, retried on BUSY.
async fn immediate_save(
    pool: &SqlitePool,
    k: &SessionKey,
    tally: &Tally,
) -> session_core::Result<()> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM sessions WHERE key = ?1 AND expires_at > ?2")
            .bind(k.as_bytes().as_slice())
            .bind(Timestamp::now().unix_millis())
            .fetch_optional(pool)
            .await
            .map_err(|e| Error::backend("bench", e))?;
    let Some(version) = version else {
        return Err(Error::NotFound);
    };
    let mut backoff = 1u64;
    loop {
        match immediate_once(pool, k, version).await {
            Ok(true) => return Ok(()),
            Ok(false) => return Err(Error::Conflict),
            Err(e) if is_busy(&e) => {
                tally.busy.fetch_add(1, Ordering::Relaxed);
                // The retry absorbs it; sleep a little, longer each time.
                tokio::time::sleep(Duration::from_micros(backoff * 100)).await;
                backoff = (backoff * 2).min(20);
            }
            Err(e) => return Err(Error::backend("bench", e)),
        }
    }
}

async fn immediate_once(
    pool: &SqlitePool,
    k: &SessionKey,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let done = sqlx::query(
        "UPDATE sessions SET data = data, expires_at = ?3, version = version + 1
         WHERE key = ?1 AND version = ?2 AND expires_at > ?4",
    )
    .bind(k.as_bytes().as_slice())
    .bind(version)
    .bind((Timestamp::now() + HOUR).unix_millis())
    .bind(Timestamp::now().unix_millis())
    .execute(&mut *conn)
    .await;
    match done {
        Ok(r) => match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(r.rows_affected() > 0),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e)
            }
        },
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.parse::<i32>().is_ok_and(|c| c & 0xff == 5)))
}
