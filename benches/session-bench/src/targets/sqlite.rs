//! `session_sqlite::SqliteStore` on a temp file, and its limit: bare sqlx on the *same* store's
//! pools (its one write connection and its four readers) and table, sending the statements
//! the store itself sends (taken from `SqliteStore::statement` and asserted equal at build
//! time) with the same binds, but without the store's work around them (size check, record
//! decoding, the probe after a failed conditional write).
//!
//! The peer is `tower-sessions-sqlx-store`'s `SqliteStore` (0.15, on tower-sessions-core 0.14)
//! on a pool of five connections (as many as ours: one writer and four readers) on its own
//! file, in WAL mode with `synchronous = FULL` like ours, through its own trait.
//!
//! All three use SQLite's default busy timeout (5 s); a `SQLITE_BUSY` that outlasts it is an
//! error, and the harness fails a run on any error, so a finished run met none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use session_core::{BoxError, Timestamp};
use session_sqlite::SqliteStore;
use session_sqlite::sqlx;
use session_sqlite::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::keys::session_key;
use crate::runner::instance;
use crate::session::TTL;
use crate::target::{BenchTarget, OpResult, Outcome, Role, StoreTarget, Target, TempDir};
use crate::targets::tower_sessions::Peer014;

/// Connections of the peer's pool: as many as our store opens (1 writer + 4 readers).
const PEER_POOL: u32 = 5;

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "sqlite",
            short: "sqlite",
            role: Role::Ours,
            in_process: false,
            about: "session_sqlite::SqliteStore on a temp file: WAL, synchronous FULL, 1 write connection + 4 readers, sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let (store, dir) = open().await?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(Arc::new(dir)))))
                })
            },
        },
        Target {
            name: "sqlite-bare",
            short: "bare sqlx",
            role: Role::Limit,
            in_process: false,
            about: "bare sqlx on the same store's pools and table, running the store's own statements (asserted equal) without its checks and decoding",
            build: |payload, keys| {
                Box::pin(async move {
                    let (store, dir) = open().await?;
                    let bare = Bare::new(&store, payload.encoded.clone(), keys, dir)?;
                    Ok(Some(instance(bare)))
                })
            },
        },
        Target {
            name: "tower-sessions-sqlx-store-sqlite",
            short: "ts-sqlite",
            role: Role::Peer,
            in_process: false,
            about: "tower-sessions-sqlx-store 0.15 SqliteStore on a temp file (pool of 5, WAL, synchronous FULL), data as a JSON value map",
            build: |payload, _keys| {
                Box::pin(async move {
                    let dir = TempDir::new("sqlite-peer")?;
                    let options = SqliteConnectOptions::new()
                        .filename(dir.0.join("peer.db"))
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Full)
                        .busy_timeout(Duration::from_secs(5));
                    let pool = SqlitePoolOptions::new()
                        .max_connections(PEER_POOL)
                        .connect_with(options)
                        .await?;
                    let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
                    store.migrate().await?;
                    Ok(Some(instance(
                        Peer014::new(store, &payload).with_guard(Arc::new(dir)),
                    )))
                })
            },
        },
    ]
}

/// Our store with its defaults (sweep off) on a fresh file, migrated.
async fn open() -> Result<(SqliteStore, TempDir), BoxError> {
    let dir = TempDir::new("sqlite")?;
    let store = SqliteStore::builder()
        .cleanup_interval(Duration::ZERO)
        .open(dir.0.join("sessions.db"))
        .await?;
    store.migrate().await?;
    Ok((store, dir))
}

/// The limit: the store's statements on the store's pools, nothing else.
#[derive(Clone)]
struct Bare {
    writer: SqlitePool,
    reader: SqlitePool,
    data: Bytes,
    create: Arc<str>,
    load: Arc<str>,
    save: Arc<str>,
    delete: Arc<str>,
    /// Version minus one of session `i`, as `StoreTarget` keeps it, so a save is one
    /// statement.
    versions: Arc<[AtomicU64]>,
    _store: Arc<SqliteStore>,
    _dir: Arc<TempDir>,
}

/// The statements as the baseline writes them. They must equal the store's, byte for byte,
/// or the baseline would measure something else: [`Bare::new`] checks.
const CREATE: &str = "INSERT INTO \"sessions\" AS s (key, data, created_at, expires_at, version, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key) DO UPDATE SET
                    data = excluded.data, created_at = excluded.created_at,
                    expires_at = excluded.expires_at, version = excluded.version,
                    owner = excluded.owner
                 WHERE s.expires_at <= ?7";
const LOAD: &str = "SELECT key, data, created_at, expires_at, version, owner FROM \"sessions\" WHERE key = ?1 AND expires_at > ?2";
const SAVE: &str =
    "UPDATE \"sessions\" SET data = ?3, expires_at = ?4, owner = ?5, version = version + 1
                 WHERE key = ?1 AND version = ?2 AND expires_at > ?6
                 RETURNING version";
const DELETE: &str = "DELETE FROM \"sessions\" WHERE key = ?1 RETURNING expires_at > ?2";

impl Bare {
    fn new(store: &SqliteStore, data: Bytes, keys: u64, dir: TempDir) -> Result<Self, BoxError> {
        for (op, ours) in [
            ("create", CREATE),
            ("load", LOAD),
            ("save", SAVE),
            ("delete", DELETE),
        ] {
            let theirs = store.statement(op);
            if theirs != Some(ours) {
                return Err(format!(
                    "the baseline's {op} statement is not the store's: {ours:?} vs {theirs:?}"
                )
                .into());
            }
        }
        Ok(Self {
            writer: store.write_pool().clone(),
            reader: store.read_pool().clone(),
            data,
            create: CREATE.into(),
            load: LOAD.into(),
            save: SAVE.into(),
            delete: DELETE.into(),
            versions: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            _store: Arc::new(store.clone()),
            _dir: Arc::new(dir),
        })
    }
}

fn now() -> i64 {
    Timestamp::now().unix_millis()
}

impl BenchTarget for Bare {
    async fn create(&mut self, i: u64) -> OpResult {
        let now = now();
        let n = sqlx::query(&self.create)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(&self.data[..])
            .bind(now)
            .bind(now + TTL.as_millis() as i64)
            .bind(1i64)
            .bind(None::<&str>)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(if n > 0 {
            Outcome::Done
        } else {
            Outcome::Conflict
        })
    }

    async fn load(&mut self, i: u64) -> OpResult {
        let row = sqlx::query(&self.load)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(now())
            .fetch_optional(&self.reader)
            .await?;
        Ok(if row.is_some() {
            Outcome::Done
        } else {
            Outcome::Missing
        })
    }

    async fn save(&mut self, i: u64) -> OpResult {
        let slot = usize::try_from(i).ok().and_then(|i| self.versions.get(i));
        let Some(slot) = slot else {
            return Ok(Outcome::Missing);
        };
        let version = slot.load(Ordering::Relaxed) + 1;
        let now = now();
        let saved: Option<i64> = sqlx::query_scalar(&self.save)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(i64::try_from(version)?)
            .bind(&self.data[..])
            .bind(now + TTL.as_millis() as i64)
            .bind(None::<&str>)
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
        Ok(match saved {
            Some(v) => {
                slot.fetch_max(u64::try_from(v)? - 1, Ordering::Relaxed);
                Outcome::Done
            }
            None => {
                // Another task saved first: re-read the version, as a request would reload.
                let stored: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM \"sessions\" WHERE key = ?1")
                        .bind(session_key(i).as_bytes().as_slice())
                        .fetch_optional(&self.reader)
                        .await?;
                if let Some(v) = stored {
                    slot.fetch_max(u64::try_from(v)? - 1, Ordering::Relaxed);
                }
                Outcome::Conflict
            }
        })
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        let live: Option<bool> = sqlx::query_scalar(&self.delete)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(now())
            .fetch_optional(&self.writer)
            .await?;
        Ok(if live == Some(true) {
            Outcome::Done
        } else {
            Outcome::Missing
        })
    }
}
