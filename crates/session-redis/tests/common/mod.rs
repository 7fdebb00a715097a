//! Helpers shared by the test files: a `redis-server` of the test's own, captured log output,
//! and small assertion helpers.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different part"
)]

pub mod proxy;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use session_core::{Error, Record, SessionId, Timestamp};
use session_redis::{RedisStore, RedisStoreBuilder, redis};

pub const HOUR: Duration = Duration::from_secs(3600);

/// Whether the binaries the tests that start their own servers need (`redis-server`, and
/// `redis-cli` for the cluster) are on `PATH`. When one is missing the test skips visibly
/// ([`skip_test`](session_core::conformance::skip_test)), or fails under
/// `SESSION_REQUIRE_SERVICES=1`; the shared server at `REDIS_URL` is not what they need.
pub fn redis_installed(binaries: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for binary in binaries {
        if !std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()) {
            session_core::conformance::skip_test(&format!(
                "{binary} is not installed, so this test cannot start a Redis server of its own"
            ));
            return false;
        }
    }
    true
}

/// A free port on 127.0.0.1 (free when asked; the server that takes it binds it soon after).
pub fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("no free port: {e}"),
    }
}

/// A `redis-server` of this test's own on a free port, killed when dropped.
pub struct Server {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server started with these extra arguments (`--maxmemory-policy allkeys-lru`, ...).
    pub fn start_with(args: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        self.child = Some(match child {
            Ok(child) => child,
            Err(e) => panic!("could not start redis-server (is it installed?): {e}"),
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.admin().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else {
            panic!("server not running")
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} failed");
    }

    /// A plain connection for commands from "the server side", if the server answers.
    pub fn admin(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }

    pub fn run(&self, cmd: &mut redis::Cmd) -> redis::Value {
        let Some(mut conn) = self.admin() else {
            panic!("own redis-server is not answering")
        };
        match cmd.query(&mut conn) {
            Ok(v) => v,
            Err(e) => panic!("admin command failed: {e}"),
        }
    }

    /// How many times the server ran `command` (lower case) since its start or the last
    /// `CONFIG RESETSTAT`, from `INFO commandstats`; commands run by scripts included.
    pub fn calls(&self, command: &str) -> u64 {
        let info = match self.run(redis::cmd("INFO").arg("commandstats")) {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            other => panic!("unexpected INFO reply {other:?}"),
        };
        let tag = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&tag))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap_or(0))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Log lines written while installed as the thread's default subscriber (at every level down
/// to `DEBUG`). Tasks spawned on a current-thread runtime log through it too.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }

    /// The captured lines at `level` (`"WARN"`, `"DEBUG"`, ...) that contain `needle`.
    pub fn lines(&self, level: &str, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(level) && line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn build(builder: RedisStoreBuilder) -> RedisStore {
    match builder.build() {
        Ok(store) => store,
        Err(e) => panic!("building the store failed: {e}"),
    }
}

pub fn record() -> Record {
    Record::new(
        SessionId::generate().key(),
        &b"payload"[..],
        Timestamp::now() + HOUR,
    )
}

pub fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: session_core::Result<T>) {
    match result {
        Err(Error::Unavailable { store: "redis", .. }) => {}
        other => panic!("{what}: expected Error::Unavailable from redis, got {other:?}"),
    }
}

pub async fn must<T>(what: &str, fut: impl Future<Output = session_core::Result<T>>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what} failed: {e:?}"),
        Err(_) => panic!("{what} hung"),
    }
}
