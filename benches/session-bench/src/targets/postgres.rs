//! `session_postgres::PostgresStore` on the PostgreSQL at `DATABASE_URL`, and its limit: bare
//! sqlx on an identical pool and an identical table (same columns and indexes, made by the
//! store's own `migrate`), sending the one plain statement each operation needs with the same
//! binds in the same binary format.
//!
//! The peer is `tower-sessions-sqlx-store`'s `PostgresStore` (0.15, on tower-sessions-core 0.14)
//! on the same pool size, through its own trait, with the session as tower-sessions keeps it.
//!
//! Each instance works on its own random table in the schema `session_bench` and drops it when
//! its last handle is dropped.

use std::sync::Arc;

use bytes::Bytes;
use session_core::{BoxError, SessionId, Timestamp};
use session_postgres::PostgresStore;
use session_postgres::sqlx::encode::IsNull;
use session_postgres::sqlx::error::BoxDynError;
use session_postgres::sqlx::postgres::types::Oid;
use session_postgres::sqlx::postgres::{
    PgArgumentBuffer, PgPool, PgPoolOptions, PgTypeInfo, Postgres,
};
use session_postgres::sqlx::{self, Connection as _, Encode, Type};

use crate::keys::session_key;
use crate::runner::instance;
use crate::session::TTL;
use crate::target::{BenchTarget, OpResult, Outcome, Role, StoreTarget, Target};
use crate::targets::tower_sessions::Peer014;

const SCHEMA: &str = "session_bench";
/// Both targets get pools of this size: the store's own default.
const POOL_SIZE: u32 = 10;

pub(super) fn targets() -> [Target; 3] {
    [
        Target {
            name: "postgres",
            short: "postgres",
            role: Role::Ours,
            in_process: false,
            about: "session_postgres::PostgresStore on DATABASE_URL (sqlx pool of 10), sessions without an owner",
            build: |payload, keys| {
                Box::pin(async move {
                    let Some(url) = database_url() else {
                        return Ok(None);
                    };
                    let (store, table) = migrated(&url).await?;
                    let inner = StoreTarget::new(Arc::new(store), &payload, keys, None);
                    Ok(Some(instance(inner.with_guard(table))))
                })
            },
        },
        Target {
            name: "postgres-bare",
            short: "bare sqlx",
            role: Role::Limit,
            in_process: false,
            about: "bare sqlx on the same pool size and table: INSERT ON CONFLICT DO NOTHING / SELECT / UPDATE / DELETE by key",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = database_url() else {
                        return Ok(None);
                    };
                    let (store, table) = migrated(&url).await?;
                    let t = format!("\"{SCHEMA}\".\"{}\"", table.table);
                    Ok(Some(instance(Bare {
                        pool: store.pool().clone(),
                        data: payload.encoded.clone(),
                        create: format!(
                            "INSERT INTO {t} (key, data, created_at, expires_at, version) VALUES ($1, $2, $3, $4, 1)
                             ON CONFLICT (key) DO NOTHING"
                        ),
                        load: format!(
                            "SELECT key, data, created_at, expires_at, version, owner FROM {t} WHERE key = $1 AND expires_at > now()"
                        ),
                        save: format!(
                            "UPDATE {t} SET data = $2, expires_at = $3, version = version + 1, updated_at = now()
                             WHERE key = $1 AND expires_at > now()"
                        ),
                        delete: format!("DELETE FROM {t} WHERE key = $1"),
                        _table: table,
                    })))
                })
            },
        },
        Target {
            name: "tower-sessions-sqlx-store",
            short: "ts-sqlx",
            role: Role::Peer,
            in_process: false,
            about: "tower-sessions-sqlx-store 0.15 PostgresStore on DATABASE_URL (sqlx pool of 10), data as a JSON value map",
            build: |payload, _keys| {
                Box::pin(async move {
                    let Some(url) = database_url() else {
                        return Ok(None);
                    };
                    let table = format!("peer_{}", &SessionId::generate().key().to_hex()[..16]);
                    let pool = PgPoolOptions::new()
                        .max_connections(POOL_SIZE)
                        .connect(&url)
                        .await?;
                    let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
                        .with_schema_name(SCHEMA)?
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

/// `DATABASE_URL`, or `None` after saying why the targets are skipped.
fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipping the postgres targets: DATABASE_URL is not set");
            None
        }
    }
}

/// A store on a fresh table, migrated, with the guard that drops the table.
async fn migrated(url: &str) -> Result<(PostgresStore, Arc<DropTable>), BoxError> {
    let table = format!("bench_{}", &SessionId::generate().key().to_hex()[..16]);
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(url)
        .await?;
    let store = PostgresStore::builder()
        .schema(SCHEMA)
        .table(&table)
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
        let statement = format!("DROP TABLE IF EXISTS \"{SCHEMA}\".\"{}\"", self.table);
        let dropper = std::thread::spawn(move || -> Result<(), BoxError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(&statement).execute(&mut conn).await?;
                conn.close().await?;
                Ok(())
            })
        });
        if let Ok(Err(e)) = dropper.join() {
            eprintln!(
                "could not drop the benchmark table {SCHEMA}.{}: {e}",
                self.table
            );
        }
    }
}

/// A millisecond timestamp sent as `timestamptz` in binary, exactly as the store sends it.
struct Millis(i64);

impl Type<Postgres> for Millis {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(1184))
    }
}

impl Encode<'_, Postgres> for Millis {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let micros = (self.0 - 946_684_800_000) * 1000;
        <i64 as Encode<'_, Postgres>>::encode_by_ref(&micros, buf)
    }
}

/// The limit: one plain statement per operation, no version check, no record decoding.
#[derive(Clone)]
struct Bare {
    pool: PgPool,
    data: Bytes,
    create: String,
    load: String,
    save: String,
    delete: String,
    _table: Arc<DropTable>,
}

fn affected(n: u64, otherwise: Outcome) -> Outcome {
    if n > 0 { Outcome::Done } else { otherwise }
}

impl BenchTarget for Bare {
    async fn create(&mut self, i: u64) -> OpResult {
        let now = Timestamp::now();
        let n = sqlx::query(&self.create)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(&self.data[..])
            .bind(Millis(now.unix_millis()))
            .bind(Millis((now + TTL).unix_millis()))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected(n, Outcome::Conflict))
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

    async fn save(&mut self, i: u64) -> OpResult {
        let n = sqlx::query(&self.save)
            .bind(session_key(i).as_bytes().as_slice())
            .bind(&self.data[..])
            .bind(Millis((Timestamp::now() + TTL).unix_millis()))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected(n, Outcome::Missing))
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        let n = sqlx::query(&self.delete)
            .bind(session_key(i).as_bytes().as_slice())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected(n, Outcome::Missing))
    }
}
