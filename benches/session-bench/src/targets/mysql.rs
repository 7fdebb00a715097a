//! `session_mysql::MySqlStore` on the server at `MYSQL_URL`, and its limit: bare sqlx on the
//! store's own pool and table (made by the store's `migrate`), sending the very statements the
//! store sends for `create`, `load`, `save` and `delete`, with the same binds. The texts are
//! copied here; [`Bare::check`] proves at build time that they match by running each once on
//! a probe row and comparing what the store then sees.
//!
//! The peer is `tower-sessions-sqlx-store`'s `MySqlStore` (0.15, on tower-sessions-core 0.14)
//! on a pool of the same size, through its own trait, with the session as tower-sessions keeps
//! it. Each instance works on its own random table and drops it when its last handle goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use session_core::{BoxError, Record, SessionId, SessionStore, Timestamp};
use session_mysql::MySqlStore;
use session_mysql::sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use session_mysql::sqlx::{self, Connection as _};

use crate::keys::session_key;
use crate::runner::instance;
use crate::session::TTL;
use crate::target::{BenchTarget, OpResult, Outcome, Role, StoreTarget, Target};
use crate::targets::tower_sessions::Peer014;

/// Both targets get pools of this size: the store's own default.
const POOL_SIZE: u32 = 10;
/// The store's "now" (session-mysql's `sql::NOW_MS`).
const NOW_MS: &str =
    "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(3)) DIV 1000)";

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "mysql",
            short: "mysql",
            role: Role::Ours,
            in_process: false,
            about: "session_mysql::MySqlStore on MYSQL_URL (sqlx pool of 10), sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = mysql_url() else {
                        return Ok(None);
                    };
                    let (store, table) = migrated(&url).await?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(table))))
                })
            },
        },
        Target {
            name: "mysql-bare",
            short: "bare sqlx",
            role: Role::Limit,
            in_process: false,
            about: "bare sqlx on the store's own pool and table, sending the store's own INSERT / SELECT / conditional UPDATE / DELETE",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = mysql_url() else {
                        return Ok(None);
                    };
                    let (store, table) = migrated(&url).await?;
                    let t = format!("`{}`", table.table);
                    let cols = "`key`, `data`, `created_at`, `expires_at`, `version`, `owner`";
                    let bare = Bare {
                        pool: store.pool().clone(),
                        data: payload.encoded.clone(),
                        insert: format!("INSERT INTO {t} ({cols}) VALUES (?, ?, ?, ?, ?, ?)"),
                        load: format!(
                            "SELECT {cols} FROM {t} WHERE `key` = ? AND `expires_at` > {NOW_MS}"
                        ),
                        save: format!(
                            "UPDATE {t} SET `data` = ?, `expires_at` = ?, `owner` = ?, `version` = `version` + 1
                 WHERE `key` = ? AND `version` = ? AND `expires_at` > {NOW_MS}"
                        ),
                        delete_live: format!(
                            "DELETE FROM {t} WHERE `key` = ? AND `expires_at` > {NOW_MS}"
                        ),
                        versions: (0..keys).map(|_| AtomicU64::new(0)).collect(),
                        _table: table,
                    };
                    bare.check(&store).await?;
                    Ok(Some(instance(bare)))
                })
            },
        },
        Target {
            name: "tower-sessions-sqlx-store-mysql",
            short: "ts-sqlx-mysql",
            role: Role::Peer,
            in_process: false,
            about: "tower-sessions-sqlx-store 0.15 MySqlStore on MYSQL_URL (sqlx pool of 10), data as a JSON value map",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = mysql_url() else {
                        return Ok(None);
                    };
                    let table = format!("peer_{}", &SessionId::generate().key().to_hex()[..16]);
                    let pool = MySqlPoolOptions::new()
                        .max_connections(POOL_SIZE)
                        .connect(&url)
                        .await?;
                    let schema: String = sqlx::query_scalar("SELECT DATABASE()")
                        .fetch_one(&pool)
                        .await?;
                    let store = tower_sessions_sqlx_store::MySqlStore::new(pool)
                        .with_schema_name(&schema)?
                        .with_table_name(&table)?;
                    store.migrate().await?;
                    let guard = Arc::new(DropTable { url, table });
                    Ok(Some(instance(
                        Peer014::new(store, &payload).with_guard(guard),
                    )))
                })
            },
        },
    ]
}

/// `MYSQL_URL`, or `None` after saying why the targets are skipped.
fn mysql_url() -> Option<String> {
    match std::env::var("MYSQL_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipping the mysql targets: MYSQL_URL is not set");
            None
        }
    }
}

/// A store on a fresh table in the URL's database, migrated, with the guard that drops it.
/// The sweep is off: the benchmark creates no expired rows, and a sweep would only add noise.
async fn migrated(url: &str) -> Result<(MySqlStore, Arc<DropTable>), BoxError> {
    let table = format!("bench_{}", &SessionId::generate().key().to_hex()[..16]);
    let pool = MySqlPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(url)
        .await?;
    let store = MySqlStore::builder()
        .table(&table)
        .cleanup_interval(std::time::Duration::ZERO)
        .build(pool)?;
    store.migrate().await?;
    Ok((
        store,
        Arc::new(DropTable {
            url: url.to_owned(),
            table,
        }),
    ))
}

/// Drops the instance's table when the last handle goes.
struct DropTable {
    url: String,
    table: String,
}

impl Drop for DropTable {
    fn drop(&mut self) {
        // Blocking I/O on a thread of its own: this may run inside the benchmark's runtime.
        let url = self.url.clone();
        let statement = format!("DROP TABLE IF EXISTS `{}`", self.table);
        let dropper = std::thread::spawn(move || -> Result<(), BoxError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::MySqlConnection::connect(&url).await?;
                sqlx::query(&statement).execute(&mut conn).await?;
                conn.close().await?;
                Ok(())
            })
        });
        if let Ok(Err(e)) = dropper.join() {
            eprintln!("could not drop the benchmark table {}: {e}", self.table);
        }
    }
}

/// The limit: the store's statements on the store's pool, without the store around them (no
/// size or owner checks, no record decoding, no follow-up statement on a miss).
#[derive(Clone)]
struct Bare {
    pool: MySqlPool,
    data: Bytes,
    insert: String,
    load: String,
    save: String,
    delete_live: String,
    /// Per pre-populated key, the last version saved minus one, as [`StoreTarget`] keeps it.
    versions: Arc<[AtomicU64]>,
    _table: Arc<DropTable>,
}

fn affected(n: u64, otherwise: Outcome) -> Outcome {
    if n > 0 { Outcome::Done } else { otherwise }
}

impl Bare {
    /// Proves the statements are the store's: a row the bare `insert` wrote loads through
    /// the store exactly; the bare `save` bumps its version as the store's `save` would; a
    /// record the store wrote loads through the bare `load` with the same columns; the bare
    /// `delete` removes it for the store too. A difference fails the build of the target.
    async fn check(&self, store: &MySqlStore) -> Result<(), BoxError> {
        let now = Timestamp::now();
        let probe = Record {
            key: SessionId::generate().key(),
            data: self.data.clone(),
            created_at: now,
            expires_at: now + TTL,
            version: 1,
            owner: None,
        };
        sqlx::query(&self.insert)
            .bind(probe.key.as_bytes().as_slice())
            .bind(&probe.data[..])
            .bind(probe.created_at.unix_millis())
            .bind(probe.expires_at.unix_millis())
            .bind(1u64)
            .bind(None::<&str>)
            .execute(&self.pool)
            .await?;
        if store.load(&probe.key).await? != Some(probe.clone()) {
            return Err("the bare insert does not write what the store reads".into());
        }
        let n = sqlx::query(&self.save)
            .bind(&probe.data[..])
            .bind(probe.expires_at.unix_millis())
            .bind(None::<&str>)
            .bind(probe.key.as_bytes().as_slice())
            .bind(1u64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let saved = store.load(&probe.key).await?.map(|r| r.version);
        if n != 1 || saved != Some(2) || store.save(&probe).await.is_ok() {
            return Err("the bare save is not the store's conditional save".into());
        }
        let row = sqlx::query(&self.load)
            .bind(probe.key.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await?;
        if row.map(|r| sqlx::Row::len(&r)) != Some(6) {
            return Err("the bare load does not read the store's row".into());
        }
        let n = sqlx::query(&self.delete_live)
            .bind(probe.key.as_bytes().as_slice())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n != 1 || store.exists(&probe.key).await? {
            return Err("the bare delete is not the store's".into());
        }
        Ok(())
    }
}

impl BenchTarget for Bare {
    async fn create(&mut self, i: u64) -> OpResult {
        let now = Timestamp::now();
        let done = sqlx::query(&self.insert)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(&self.data[..])
            .bind(now.unix_millis())
            .bind((now + TTL).unix_millis())
            .bind(1u64)
            .bind(None::<&str>)
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => Ok(Outcome::Done),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(Outcome::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    async fn load(&mut self, i: u64) -> OpResult {
        let row = sqlx::query(&self.load)
            .bind(session_key(i).as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await?;
        Ok(if row.is_some() {
            Outcome::Done
        } else {
            Outcome::Missing
        })
    }

    /// The store's conditional save, with the version known as [`StoreTarget`] knows it (the
    /// request loaded the session; here the harness remembers it per key), and on a miss the
    /// same follow-up as the store: read the live version to tell a conflict from a miss.
    async fn save(&mut self, i: u64) -> OpResult {
        let key = session_key(i);
        let Some(slot) = usize::try_from(i).ok().and_then(|i| self.versions.get(i)) else {
            return Ok(Outcome::Missing);
        };
        let version = slot.load(Ordering::Relaxed) + 1;
        let n = sqlx::query(&self.save)
            .bind(&self.data[..])
            .bind((Timestamp::now() + TTL).unix_millis())
            .bind(None::<&str>)
            .bind(key.as_bytes().as_slice())
            .bind(version)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n > 0 {
            slot.fetch_max(version, Ordering::Relaxed);
            return Ok(Outcome::Done);
        }
        let row = sqlx::query(&self.load)
            .bind(key.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let stored: u64 = sqlx::Row::try_get(&row, 4)?;
                slot.fetch_max(stored - 1, Ordering::Relaxed);
                Ok(Outcome::Conflict)
            }
            None => Ok(Outcome::Missing),
        }
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        let n = sqlx::query(&self.delete_live)
            .bind(session_key(i).as_bytes().as_slice())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected(n, Outcome::Missing))
    }
}
