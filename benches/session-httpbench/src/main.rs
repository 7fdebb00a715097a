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
//! Then the same counter on actix-web (`actix-*`), one worker: with no session middleware
//! (the limit, `actix-none`), our `SessionMiddleware` on the memory store (`actix-ours`),
//! actix-session 0.11 with its cookie store (`actix-session-cookie`, the state in a private
//! cookie), and on Redis, when `REDIS_URL` is set: our middleware on our Redis store
//! (`actix-ours-redis`, one multiplexed connection) against actix-session's `RedisSessionStore`
//! (`actix-session-redis`, one redis-rs `ConnectionManager`), both idling out after 10 min and
//! both counted by `INFO clients` as above.
//!
//! Rounds run every variant once, in reverse order on odd rounds so that drift on a shared
//! machine does not always favour the same side. Every comparison is reported as paired
//! per-round ratios (the two variants of the same round), with their median and range.
//!
//! `cargo run --release -p session-httpbench -- [--seconds N] [--clients N] [--rounds N]
//! [--only VARIANT,VARIANT]`
//!
//! For instruction counts (callgrind), `--serve VARIANT` runs one server and prints its port,
//! and `--drive PORT --requests N [--clients N]` sends exactly N requests to it and exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Request, header};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Every variant, in the order a round runs them (reversed on odd rounds).
const VARIANTS: [&str; 11] = [
    "none",
    "ours",
    "tower-sessions",
    "bridge-memory",
    "bridge-redis",
    "ts-redis",
    "actix-none",
    "actix-ours",
    "actix-session-cookie",
    "actix-ours-redis",
    "actix-session-redis",
];

/// Variants that need the Redis at `REDIS_URL`.
const REDIS_VARIANTS: [&str; 4] = [
    "bridge-redis",
    "ts-redis",
    "actix-ours-redis",
    "actix-session-redis",
];

/// The comparisons reported, as (what, numerator, denominator, the target).
const PAIRS: [(&str, &str, &str, &str); 10] = [
    (
        "axum: our SessionLayer (memory) / no session layer",
        "ours",
        "none",
        "≥ 0.92× (#17)",
    ),
    (
        "axum: tower-sessions (its MemoryStore) / no session layer",
        "tower-sessions",
        "none",
        "-",
    ),
    (
        "axum: our SessionLayer / tower-sessions (memory stores)",
        "ours",
        "tower-sessions",
        "≥ 1.3× (#17)",
    ),
    (
        "tower-sessions 0.15: our MemoryStore via bridge / its MemoryStore",
        "bridge-memory",
        "tower-sessions",
        "≥ 1.1× (#15)",
    ),
    (
        "tower-sessions 0.14: our RedisStore via bridge / tower-sessions-redis-store",
        "bridge-redis",
        "ts-redis",
        "≥ 1.3× (#15)",
    ),
    (
        "actix-web: our SessionMiddleware (memory) / no session middleware",
        "actix-ours",
        "actix-none",
        "≥ 0.85× (#16)",
    ),
    (
        "actix-web: actix-session (cookie store) / no session middleware",
        "actix-session-cookie",
        "actix-none",
        "-",
    ),
    (
        "actix-web: our SessionMiddleware (memory) / actix-session (cookie store)",
        "actix-ours",
        "actix-session-cookie",
        "-",
    ),
    (
        "actix-web: ours on our RedisStore / actix-session on its RedisSessionStore",
        "actix-ours-redis",
        "actix-session-redis",
        "≥ 1.2× (#16)",
    ),
    (
        "actix-web: actix-session (Redis) / no session middleware",
        "actix-session-redis",
        "actix-none",
        "-",
    ),
];

/// Redis connections of each Redis variant: our store's shared connection, fred's pool of one
/// client, actix-session's one `ConnectionManager`. (With a pool of two and `multiplexed(2)`, our store was seen to share one socket
/// twice, so two would not have been two on both sides.)
const REDIS_CONNECTIONS: usize = 1;

/// Both Redis variants' sessions idle out after this, so a run leaves nothing for long.
const REDIS_IDLE_MINUTES: i64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--serve") {
        let variant = args.get(pos + 1).cloned().unwrap_or_default();
        return if variant.starts_with("actix-") {
            serve_actix(&variant)
        } else {
            serve(&variant)
        };
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
    if args.iter().any(|a| a == "--drive") {
        let port = u16::try_from(flag("--drive", 0))?;
        let requests = flag("--requests", 10_000);
        return runtime.block_on(drive_exactly(port, requests, clients));
    }
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    if let Some(unknown) = only
        .iter()
        .flatten()
        .find(|v| !VARIANTS.contains(&v.as_str()))
    {
        return Err(format!("unknown variant {unknown}; the variants are {VARIANTS:?}").into());
    }
    let variants: Vec<&str> = VARIANTS
        .into_iter()
        .filter(|v| only.as_ref().is_none_or(|o| o.iter().any(|x| x == v)))
        .collect();
    runtime.block_on(run(&variants, seconds, clients, rounds))
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
    use session_kit::SessionLayer;
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

/// Runs one actix-web variant on its own actix system (one worker, Nagle off, as for axum),
/// printing the port on stdout.
fn serve_actix(variant: &str) -> Result<(), Box<dyn std::error::Error>> {
    let variant = variant.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let server = match variant.as_str() {
            "actix-none" => actix_none(listener)?,
            "actix-ours" => {
                let manager =
                    session_kit::SessionManager::builder(session_kit::memory::MemoryStore::new())
                        .build()?;
                actix_ours(listener, manager)?
            }
            "actix-ours-redis" => actix_ours(listener, actix_ours_redis_manager().await?)?,
            "actix-session-cookie" => actix_session(
                listener,
                actix_session::storage::CookieSessionStore::default,
                None,
            )?,
            "actix-session-redis" => {
                let prefix = format!("httpbench:{}:", std::process::id());
                let store = actix_session::storage::RedisSessionStore::builder(redis_url()?)
                    .cache_keygen(move |key| format!("{prefix}{key}"))
                    .build()
                    .await
                    .map_err(|e| e.to_string())?;
                actix_session(
                    listener,
                    move || store.clone(),
                    Some(actix_web::cookie::time::Duration::minutes(
                        REDIS_IDLE_MINUTES,
                    )),
                )?
            }
            other => return Err(format!("unknown variant {other}").into()),
        };
        println!("{port}");
        server.await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// actix-web's server settings for every actix variant.
macro_rules! actix_server {
    ($listener:expr, $app:expr) => {
        actix_web::HttpServer::new($app)
            .workers(1)
            .tcp_nodelay(true)
            .disable_signals()
            .listen($listener)
            .map(|server| server.run())
    };
}

/// The limit on actix-web: the no-session axum handler's shared map, keyed by the cookie.
fn actix_none(listener: std::net::TcpListener) -> std::io::Result<actix_web::dev::Server> {
    use actix_web::{HttpRequest, web};
    let counters: web::Data<Mutex<HashMap<String, u64>>> = web::Data::default();
    async fn count(req: HttpRequest, counters: web::Data<Mutex<HashMap<String, u64>>>) -> String {
        let client = req
            .headers()
            .get(header::COOKIE.as_str())
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
    actix_server!(listener, move || {
        actix_web::App::new()
            .app_data(counters.clone())
            .route("/", web::get().to(count))
    })
}

/// Our middleware on actix-web over `manager`, with the axum variant's handler.
fn actix_ours(
    listener: std::net::TcpListener,
    manager: session_kit::SessionManager,
) -> Result<actix_web::dev::Server, Box<dyn std::error::Error>> {
    use actix_web::web;
    use session_kit::{Session, SessionMiddleware};
    let middleware = SessionMiddleware::builder(manager)
        .cookie_name("session")
        .secure(false)
        .build()?;
    async fn count(session: Session) -> String {
        match session
            .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
        {
            Ok(n) => n.to_string(),
            Err(e) => e.to_string(),
        }
    }
    Ok(actix_server!(listener, move || {
        actix_web::App::new()
            .wrap(middleware.clone())
            .route("/", web::get().to(count))
    })?)
}

/// Our manager on our Redis store with one multiplexed connection, sessions idling out after
/// [`REDIS_IDLE_MINUTES`] as actix-session's do.
async fn actix_ours_redis_manager()
-> Result<session_kit::SessionManager, Box<dyn std::error::Error>> {
    let store = session_redis::RedisStore::builder()
        .url(redis_url()?)
        .prefix(format!("httpbench:{}:", std::process::id()))
        .pool_size(REDIS_CONNECTIONS)
        .multiplexed(REDIS_CONNECTIONS)
        .build()?;
    // One round trip before serving, so the connection is open when the harness counts.
    let probe = session_kit::SessionId::generate().key();
    session_kit::SessionStore::load(&store, &probe).await?;
    Ok(session_kit::SessionManager::builder(store)
        .idle_timeout(Duration::from_secs(60 * REDIS_IDLE_MINUTES as u64))
        .build()?)
}

/// actix-session on `store` with the same counter (get, then insert), a plain-HTTP cookie
/// and its defaults otherwise (a private cookie; a browser-session cookie unless `ttl` makes
/// it persistent, whose state then idles out after `ttl`, extended on every change).
fn actix_session<S: actix_session::storage::SessionStore + 'static>(
    listener: std::net::TcpListener,
    store: impl Fn() -> S + Clone + Send + 'static,
    ttl: Option<actix_web::cookie::time::Duration>,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_session::config::PersistentSession;
    use actix_session::{Session, SessionMiddleware};
    use actix_web::web;
    let key = actix_web::cookie::Key::generate();
    async fn count(session: Session) -> String {
        let n: u64 = session.get("n").ok().flatten().unwrap_or(0) + 1;
        match session.insert("n", n) {
            Ok(()) => n.to_string(),
            Err(e) => e.to_string(),
        }
    }
    actix_server!(listener, move || {
        let mut middleware = SessionMiddleware::builder(store(), key.clone())
            .cookie_name("session".to_owned())
            .cookie_secure(false);
        if let Some(ttl) = ttl {
            middleware =
                middleware.session_lifecycle(PersistentSession::default().session_ttl(ttl));
        }
        actix_web::App::new()
            .wrap(middleware.build())
            .route("/", web::get().to(count))
    })
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

async fn run(
    variants: &[&str],
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
    let load_average = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    eprintln!("load average before: {}", load_average());
    // Rounds interleave the variants so drift on the machine hits all of them alike; odd
    // rounds run them in reverse, so neither side of a pair always runs first.
    for round in 0..rounds {
        let mut order = variants.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for variant in order {
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
            let port: u16 = line
                .trim()
                .parse()
                .map_err(|_| format!("{variant} did not start"))?;
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
                "round {round} {variant:>20}: {:>9.0} req/s  {:>6.1} µs server CPU/req{}  load {}",
                m.rps,
                m.cpu_us_per_req,
                m.redis_connections
                    .map(|n| format!("  {n} Redis connections"))
                    .unwrap_or_default(),
                load_average()
            );
            results.entry(variant).or_default().push(m);
            child.kill().await?;
        }
    }
    eprintln!("load average after: {}", load_average());
    // The middle value, or the mean of the two middle values for an even count.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    println!(
        "\n{clients} keep-alive clients, {seconds} s per run, {rounds} rounds; medians over rounds"
    );
    println!("\n| variant | req/s (median) | server CPU µs/req (median) | Redis connections |");
    println!("|---|---:|---:|---:|");
    for variant in variants {
        let Some(runs) = results.get(variant) else {
            continue;
        };
        println!(
            "| {variant} | {:.0} | {:.1} | {} |",
            median(runs.iter().map(|m| m.rps).collect()),
            median(runs.iter().map(|m| m.cpu_us_per_req).collect()),
            runs[0]
                .redis_connections
                .map_or("-".to_owned(), |n| n.to_string()),
        );
    }
    // Each ratio divides two runs of the same round; the median and range are over rounds.
    println!(
        "\n| pair | target | per-round req/s ratios | median | range | server CPU µs/req, each side (median) |"
    );
    println!("|---|---|---|---:|---|---|");
    for (name, ours, theirs, target) in PAIRS {
        let (Some(a), Some(b)) = (results.get(ours), results.get(theirs)) else {
            continue;
        };
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "| {name} | {target} | {} | {:.2}× | {lo:.2}–{hi:.2} | {:.1} / {:.1} |",
            shown.join(", "),
            median(ratios.clone()),
            median(a.iter().map(|m| m.cpu_us_per_req).collect()),
            median(b.iter().map(|m| m.cpu_us_per_req).collect()),
        );
    }
    Ok(())
}

/// Sends exactly `requests` requests to a server started with `--serve`, over `clients`
/// keep-alive connections, each keeping its session cookie; for instruction counts.
async fn drive_exactly(
    port: u16,
    requests: u64,
    clients: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let clients = clients.max(1);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let share = requests / clients as u64 + u64::from((i as u64) < requests % clients as u64);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(port, i).await?;
            for _ in 0..share {
                client.request().await?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One keep-alive client connection with its session cookie.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    cookie: String,
}

impl Client {
    async fn connect(
        port: u16,
        i: usize,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        // The no-session servers key their counter by this header; the session servers
        // replace it with their own cookie after the first response.
        Ok(Self {
            sender,
            cookie: format!("client={i}"),
        })
    }

    /// One `GET /`, keeping the cookie the response sets; fails on any status but 200.
    async fn request(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let req = Request::get("/")
            .header(header::HOST, "127.0.0.1")
            .header(header::COOKIE, self.cookie.as_str())
            .body(Empty::<Bytes>::new())?;
        let res = self.sender.send_request(req).await?;
        if res.status() != hyper::StatusCode::OK {
            return Err(format!("the server answered {}", res.status()).into());
        }
        if let Some(pair) = res
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|set| set.split(';').next())
        {
            self.cookie = pair.to_owned();
        }
        res.into_body().collect().await?;
        Ok(())
    }
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
            let mut client = Client::connect(port, i).await?;
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.request().await?;
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
