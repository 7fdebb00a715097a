//! How much a session layer costs per request.
//!
//! The same axum handler (read one value, write it back incremented) runs three ways, each in
//! its own server process: with no session layer (the limit: it keeps the counter in a shared
//! map keyed by a client header, so it does comparable work), with our `SessionLayer` on the
//! memory store, and with `tower-sessions` on its memory store (the peer). One client process
//! drives each in turn with 64 keep-alive connections, each holding its own session cookie,
//! and reports requests per second and the server's CPU time per request (from
//! `/proc/<pid>/stat`).
//!
//! Then tower-sessions on our stores through `session-tower-sessions` against tower-sessions on
//! its own stores, with the same layer, handler and expiry: 0.15 on our memory store against
//! its `MemoryStore` (`bridge-memory` vs `tower-sessions`), and, when `REDIS_URL` is set, 0.14
//! on our Redis store (1 multiplexed connection) against `tower-sessions-redis-store` on a
//! fred pool of 1 client (`bridge-redis` vs `ts-redis`). The harness counts the Redis
//! connections each server opened (`INFO clients`) and fails unless both opened as many.
//!
//! `cargo run --release -p session-httpbench -- [--seconds N] [--clients N] [--rounds N]`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Request, header};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const VARIANTS: [&str; 6] = [
    "none",
    "ours",
    "tower-sessions",
    "bridge-memory",
    "bridge-redis",
    "ts-redis",
];

/// Variants that need the Redis at `REDIS_URL`.
const REDIS_VARIANTS: [&str; 2] = ["bridge-redis", "ts-redis"];

/// Redis connections of each Redis variant: our store's shared connection, and fred's pool of one
/// client. (With a pool of two and `multiplexed(2)`, our store was seen to share one socket
/// twice, so two would not have been two on both sides.)
const REDIS_CONNECTIONS: usize = 1;

/// Both Redis variants' sessions idle out after this, so a run leaves nothing for long.
const REDIS_IDLE_MINUTES: i64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--serve") {
        let variant = args.get(pos + 1).cloned().unwrap_or_default();
        return serve(&variant);
    }
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = flag("--seconds", 5);
    let clients = flag("--clients", 64) as usize;
    let rounds = flag("--rounds", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(drive(seconds, clients, rounds))
}

/// Runs one server variant on a fixed port-0 listener, printing the port on stdout.
fn serve(variant: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let router = match variant {
            "none" => no_sessions(),
            "ours" => ours()?,
            "tower-sessions" => peer(),
            "bridge-memory" => bridge_memory(),
            "bridge-redis" => bridge_redis().await?,
            "ts-redis" => ts_redis().await?,
            other => return Err(format!("unknown variant {other}").into()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        // Every variant answers with Nagle off, so small responses are not held back.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn no_sessions() -> Router {
    let counters: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let counters = Arc::clone(&counters);
            async move {
                let client = headers
                    .get(header::COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let mut map = counters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = map.entry(client).or_insert(0);
                *n += 1;
                n.to_string()
            }
        }),
    )
}

fn ours() -> Result<Router, session_kit::Error> {
    use session_kit::layer::SessionLayer;
    use session_kit::{Session, SessionManager};
    let store = session_kit::memory::MemoryStore::new();
    let manager = SessionManager::builder(store).build()?;
    // Plain HTTP, so not Secure, which the default `__Host-` name would refuse.
    let layer = SessionLayer::builder(manager)
        .cookie_name("session")
        .secure(false)
        .build()?;
    Ok(Router::new()
        .route(
            "/",
            get(|session: Session| async move {
                match session
                    .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                {
                    Ok(n) => n.to_string(),
                    Err(e) => e.to_string(),
                }
            }),
        )
        .layer(layer))
}

/// The same counter handler under tower-sessions `$ts` with `$store`: every variant built on
/// tower-sessions runs exactly this, so only the store differs between a pair.
macro_rules! tower_counter {
    ($ts:ident, $store:expr, $expiry:expr) => {{
        use $ts::{Session, SessionManagerLayer};
        let mut layer = SessionManagerLayer::new($store).with_secure(false);
        if let Some(expiry) = $expiry {
            layer = layer.with_expiry(expiry);
        }
        Router::new()
            .route(
                "/",
                get(|session: Session| async move {
                    let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0) + 1;
                    match session.insert("n", n).await {
                        Ok(()) => n.to_string(),
                        Err(e) => e.to_string(),
                    }
                }),
            )
            .layer(layer)
    }};
}

fn peer() -> Router {
    tower_counter!(
        tower_sessions,
        tower_sessions::MemoryStore::default(),
        None::<tower_sessions::Expiry>
    )
}

/// tower-sessions 0.15 on our memory store through the bridge.
fn bridge_memory() -> Router {
    let store = session_tower_sessions::TowerSessionStore::new(session_memory::MemoryStore::new());
    tower_counter!(tower_sessions, store, None::<tower_sessions::Expiry>)
}

fn redis_url() -> Result<String, Box<dyn std::error::Error>> {
    std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is not set".into())
}

fn redis_expiry() -> Option<tower_sessions_014::Expiry> {
    Some(tower_sessions_014::Expiry::OnInactivity(
        time::Duration::minutes(REDIS_IDLE_MINUTES),
    ))
}

/// tower-sessions 0.14 on our Redis store (shared multiplexed connections) through the bridge.
async fn bridge_redis() -> Result<Router, Box<dyn std::error::Error>> {
    let store = session_redis::RedisStore::builder()
        .url(redis_url()?)
        .prefix(format!("httpbench:{}:", std::process::id()))
        // A pool of as many connections as it shares, so no idle pooled connection adds to
        // the count.
        .pool_size(REDIS_CONNECTIONS)
        .multiplexed(REDIS_CONNECTIONS)
        .build()?;
    let store = session_tower_sessions::TowerSessionStore::new(store);
    // One round trip before serving, so the connections are open when the harness counts.
    let _ = session_tower_sessions::tower_sessions_core_014::SessionStore::load(
        &store,
        &tower_sessions_014::session::Id::default(),
    )
    .await?;
    Ok(tower_counter!(tower_sessions_014, store, redis_expiry()))
}

/// tower-sessions 0.14 on tower-sessions-redis-store 0.16, a fred pool of as many clients.
async fn ts_redis() -> Result<Router, Box<dyn std::error::Error>> {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let pool = Pool::new(
        Config::from_url(&redis_url()?)?,
        None,
        None,
        None,
        REDIS_CONNECTIONS,
    )?;
    pool.init().await?;
    let store = tower_sessions_redis_store::RedisStore::new(pool);
    Ok(tower_counter!(tower_sessions_014, store, redis_expiry()))
}

/// Clients connected to the Redis at `REDIS_URL` (`INFO clients`), the asker included.
fn redis_clients(
    conn: &mut session_redis::redis::Connection,
) -> Result<usize, Box<dyn std::error::Error>> {
    let info: String = session_redis::redis::cmd("INFO")
        .arg("clients")
        .query(conn)?;
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "INFO clients has no connected_clients".into())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

struct Measured {
    rps: f64,
    cpu_us_per_req: f64,
    redis_connections: Option<usize>,
}

async fn drive(
    seconds: u64,
    clients: usize,
    rounds: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe()?;
    let mut results: HashMap<&str, Vec<Measured>> = HashMap::new();
    let mut redis = match std::env::var("REDIS_URL") {
        Ok(url) => Some(session_redis::redis::Client::open(url)?.get_connection()?),
        Err(_) => {
            eprintln!("REDIS_URL is not set: the Redis variants do not run");
            None
        }
    };
    // Rounds interleave the variants so drift on the machine hits all of them alike.
    for round in 0..rounds {
        for variant in VARIANTS {
            let is_redis = REDIS_VARIANTS.contains(&variant);
            if is_redis && redis.is_none() {
                continue;
            }
            let clients_before = match (&mut redis, is_redis) {
                (Some(conn), true) => Some(redis_clients(conn)?),
                _ => None,
            };
            let mut child = tokio::process::Command::new(&exe)
                .args(["--serve", variant])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let pid = child.id().ok_or("server exited")?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let mut line = String::new();
            tokio::io::BufReader::new(stdout)
                .read_line(&mut line)
                .await?;
            let port: u16 = line.trim().parse()?;
            let mut m = load(port, pid, seconds, clients).await?;
            if let (Some(conn), Some(before)) = (&mut redis, clients_before) {
                let opened = redis_clients(conn)?.saturating_sub(before);
                if opened != REDIS_CONNECTIONS {
                    return Err(format!(
                        "{variant} opened {opened} Redis connections, not {REDIS_CONNECTIONS}: the pair would not compare like with like"
                    )
                    .into());
                }
                m.redis_connections = Some(opened);
            }
            eprintln!(
                "round {round} {variant:>15}: {:>9.0} req/s  {:>6.1} µs server CPU/req{}",
                m.rps,
                m.cpu_us_per_req,
                m.redis_connections
                    .map(|n| format!("  {n} Redis connections"))
                    .unwrap_or_default()
            );
            results.entry(variant).or_default().push(m);
            child.kill().await?;
        }
    }
    let best = |v: &str| -> (f64, f64) {
        let runs = &results[v];
        let rps = runs.iter().map(|m| m.rps).fold(0.0, f64::max);
        let mut cpu: Vec<f64> = runs.iter().map(|m| m.cpu_us_per_req).collect();
        cpu.sort_by(f64::total_cmp);
        (rps, cpu[cpu.len() / 2])
    };
    let (none_rps, none_cpu) = best("none");
    let (ours_rps, ours_cpu) = best("ours");
    let (peer_rps, peer_cpu) = best("tower-sessions");
    println!(
        "\n| server | req/s (best of {rounds}) | × no-session limit | server CPU µs/req (median) | CPU over limit |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, rps, cpu) in [
        ("no session layer (limit)", none_rps, none_cpu),
        ("sessions SessionLayer + MemoryStore", ours_rps, ours_cpu),
        ("tower-sessions + MemoryStore (peer)", peer_rps, peer_cpu),
    ] {
        println!(
            "| {name} | {rps:.0} | {:.2} | {cpu:.1} | {:+.1} |",
            rps / none_rps,
            cpu - none_cpu
        );
    }
    println!(
        "\nours / peer: {:.2}× requests per second; {clients} keep-alive clients, {seconds} s per run",
        ours_rps / peer_rps
    );
    // The bridge against the peer's own store, paired round by round (each pair ran back to
    // back in the same round, under the same layer, handler and expiry).
    println!(
        "\n| pair | per-round req/s ratios | median | bridge req/s (median) | peer req/s (median) | server CPU µs/req bridge / peer (median) |"
    );
    println!("|---|---|---:|---:|---:|---|");
    for (name, ours, theirs) in [
        (
            "tower-sessions 0.15: our MemoryStore via bridge / its MemoryStore",
            "bridge-memory",
            "tower-sessions",
        ),
        (
            "tower-sessions 0.14: our RedisStore via bridge / tower-sessions-redis-store",
            "bridge-redis",
            "ts-redis",
        ),
    ] {
        let (Some(a), Some(b)) = (results.get(ours), results.get(theirs)) else {
            continue;
        };
        let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        ratios.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {:.2}× | {:.0} | {:.0} | {:.1} / {:.1} |",
            shown.join(", "),
            ratios[ratios.len() / 2],
            median(a.iter().map(|m| m.rps).collect()),
            median(b.iter().map(|m| m.rps).collect()),
            median(a.iter().map(|m| m.cpu_us_per_req).collect()),
            median(b.iter().map(|m| m.cpu_us_per_req).collect()),
        );
    }
    Ok(())
}

async fn load(
    port: u16,
    pid: u32,
    seconds: u64,
    clients: usize,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (stop, counting) = (Arc::clone(&stop), Arc::clone(&counting));
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            // The no-session server keys its counter by this header; the session servers
            // replace it with their own cookie after the first response.
            let mut cookie = format!("client={i}");
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = Request::get("/")
                    .header(header::HOST, "127.0.0.1")
                    .header(header::COOKIE, cookie.as_str())
                    .body(Empty::<Bytes>::new())?;
                let res = sender.send_request(req).await?;
                if let Some(pair) = res
                    .headers()
                    .get(header::SET_COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|set| set.split(';').next())
                {
                    cookie = pair.to_owned();
                }
                res.into_body().collect().await?;
                if counting.load(std::sync::atomic::Ordering::Relaxed) {
                    done += 1;
                }
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(done)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_start = cpu_ticks(pid).ok_or("cannot read server CPU")?;
    let start = Instant::now();
    counting.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, std::sync::atomic::Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu_end = cpu_ticks(pid).ok_or("cannot read server CPU")?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0u64;
    for t in tasks {
        total += t.await?.map_err(|e| e.to_string())?;
    }
    // Linux reports CPU time in clock ticks of 10 ms (USER_HZ = 100).
    let cpu_secs = (cpu_end - cpu_start) as f64 / 100.0;
    Ok(Measured {
        rps: total as f64 / elapsed.as_secs_f64(),
        cpu_us_per_req: cpu_secs * 1e6 / total.max(1) as f64,
        redis_connections: None,
    })
}
