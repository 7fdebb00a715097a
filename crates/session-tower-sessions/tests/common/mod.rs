//! Helpers shared by this crate's integration tests: a fresh store of each kind behind the
//! bridge (servers found the way every backend test finds them), removed again when the test
//! ends, and an HTTP server on a loopback socket.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses its own subset of these helpers"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use session_core::conformance::{Server, server_url};
use session_core::{SessionId, SessionStore};
use session_postgres::PostgresStore;
use session_redis::RedisStore;

/// The stores the bridge is tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Files,
    Hybrid,
    Redis,
    Postgres,
}

/// A fresh, empty store of one kind, and what removes it afterwards.
pub struct Backend {
    pub kind: Kind,
    pub store: Arc<dyn SessionStore>,
    /// The directory of the files and hybrid stores.
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL table to drop, and the pool to drop it on.
    table: Option<(session_postgres::sqlx::PgPool, String)>,
}

/// A random name part, unique per test.
pub fn unique() -> String {
    SessionId::generate().key().to_hex()[..16].to_owned()
}

/// The limit every test store is built with, so the size-limit cases mean the same on all.
pub const MAX_DATA_LEN: usize = 64 * 1024;

/// A fresh store of `kind`, or `None` after a visible skip (a failure under
/// `SESSION_REQUIRE_SERVICES=1`) when its server is not reachable.
pub async fn open(kind: Kind) -> Option<Backend> {
    let limit = Some(MAX_DATA_LEN);
    let mut table = None;
    let (store, dir): (Arc<dyn SessionStore>, _) = match kind {
        Kind::Memory => (
            Arc::new(
                session_memory::MemoryStore::builder()
                    .max_data_len(limit)
                    .build()
                    .expect("memory store"),
            ),
            None,
        ),
        Kind::Files => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = session_files::FileStore::builder(dir.path())
                .max_data_len(limit)
                .open()
                .expect("files store");
            (Arc::new(store), Some(dir))
        }
        Kind::Hybrid => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = session_hybrid::HybridStore::builder(dir.path())
                .max_data_len(limit)
                .open()
                .expect("hybrid store");
            (Arc::new(store), Some(dir))
        }
        Kind::Redis => {
            let url = server_url(Server::Redis)?;
            let store = RedisStore::builder()
                .url(&url)
                .prefix(format!("tower-bridge:{}:", unique()))
                .max_data_len(limit)
                .build()
                .expect("redis store");
            (Arc::new(store), None)
        }
        Kind::Postgres => {
            let url = server_url(Server::Postgres)?;
            let store = PostgresStore::builder()
                .table(format!("tower_bridge_{}", unique()))
                .max_data_len(Some(MAX_DATA_LEN))
                .max_connections(4)
                .connect(&url)
                .await
                .expect("connect to PostgreSQL");
            store.migrate().await.expect("migrate the test table");
            table = Some((
                store.pool().clone(),
                format!(
                    "DROP TABLE IF EXISTS \"{}\".\"{}\"",
                    store.schema(),
                    store.table()
                ),
            ));
            (Arc::new(store), None)
        }
    };
    Some(Backend {
        kind,
        store,
        dir,
        table,
    })
}

impl Backend {
    /// Removes what the test left: the Redis keys under its prefix, the PostgreSQL table.
    /// Memory, files and hybrid stores go with the process and the temp dir.
    pub async fn finish(self) {
        match self.kind {
            Kind::Redis => {
                let keys = self.store.list().await.expect("list the test's keys");
                self.store
                    .delete_many(&keys)
                    .await
                    .expect("delete the test's keys");
            }
            Kind::Postgres => {
                if let Some((pool, drop)) = self.table {
                    session_postgres::sqlx::query(&drop)
                        .execute(&pool)
                        .await
                        .expect("drop the test table");
                }
            }
            _ => {}
        }
    }
}

/// What a case gets: the store, and the directory it keeps its files in (files, hybrid).
#[derive(Debug, Clone)]
pub struct Env {
    pub store: Arc<dyn SessionStore>,
    pub dir: Option<PathBuf>,
}

impl Env {
    /// Every byte the store keeps on disk, file by file (nothing for server stores).
    pub fn files_at_rest(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo: Vec<PathBuf> = self.dir.iter().cloned().collect();
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).expect("read the store's directory") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    todo.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        out
    }
}

/// Runs `case` on a fresh store of `kind` and cleans up after it; skips visibly when the
/// store's server is missing.
pub async fn run<F, Fut>(kind: Kind, case: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(backend) = open(kind).await else {
        return;
    };
    let env = Env {
        store: Arc::clone(&backend.store),
        dir: backend.dir.as_ref().map(|d| d.path().to_owned()),
    };
    case(env).await;
    backend.finish().await;
}

/// One `#[tokio::test]` per case and store kind, each calling `super::<case>(env)`.
#[macro_export]
macro_rules! per_store {
    ($($case:ident),* $(,)?) => {
        mod memory { $crate::per_store!(@kind Memory; $($case),*); }
        mod files { $crate::per_store!(@kind Files; $($case),*); }
        mod hybrid { $crate::per_store!(@kind Hybrid; $($case),*); }
        mod redis { $crate::per_store!(@kind Redis; $($case),*); }
        mod postgres { $crate::per_store!(@kind Postgres; $($case),*); }
    };
    (@kind $kind:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::common::run($crate::common::Kind::$kind, super::$case).await;
            }
        )*
    };
}

/// Serves `app` on a free loopback port until the test's runtime ends.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

/// A client with its own cookie jar: one browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("http client")
}
