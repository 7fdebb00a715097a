//! The SQL of every operation, built once per store from its validated, quoted table name.
//!
//! Each trait operation is one statement, so one round trip; sqlx prepares each text once per
//! connection and reuses the plan. "Live" is `expires_at > now()` with the server's clock, so
//! every app server agrees on what has expired.

use session_core::Result;
use session_core::sql::{refuse_reserved_prefix, validate_identifier};

/// The longest table name accepted: PostgreSQL truncates identifiers at 63 bytes, and the
/// index names add up to 15 (`_expires_at_idx`). Without this, two long names could truncate
/// to the same index name and `CREATE INDEX IF NOT EXISTS` would silently skip one.
const MAX_TABLE_LEN: usize = 48;
/// The longest schema name PostgreSQL keeps untruncated.
const MAX_SCHEMA_LEN: usize = 63;

/// Checks a schema name: a plain identifier
/// ([`validate_identifier`](session_core::sql::validate_identifier)) outside the `pg_` names
/// PostgreSQL reserves for itself.
pub(crate) fn validate_schema(name: &str) -> Result<()> {
    validate_identifier("schema", name, MAX_SCHEMA_LEN)?;
    refuse_reserved_prefix("schema", name, "pg_", "PostgreSQL")
}

/// Checks a table name: a plain identifier of at most [`MAX_TABLE_LEN`] bytes.
pub(crate) fn validate_table(name: &str) -> Result<()> {
    validate_identifier("table", name, MAX_TABLE_LEN)
}

/// Quotes a validated identifier. Validation already rules out `"`; quoting keeps reserved
/// words (`user`, `order`) and mixed case usable.
fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) qualified: String,
    pub(crate) create_table: String,
    pub(crate) create_expiry_index: String,
    pub(crate) create_owner_index: String,
    pub(crate) create_schema: String,
    /// The quoted, schema-qualified index names, for `to_regclass`.
    pub(crate) expiry_index: String,
    pub(crate) owner_index: String,
    pub(crate) insert: String,
    pub(crate) load: String,
    pub(crate) save: String,
    pub(crate) delete: String,
    pub(crate) delete_many: String,
    pub(crate) exists: String,
    pub(crate) rotate: String,
    pub(crate) touch: String,
    pub(crate) count: String,
    pub(crate) count_expired: String,
    pub(crate) delete_expired_batch: String,
    pub(crate) list: String,
    pub(crate) list_first_page: String,
    pub(crate) list_page_after: String,
    pub(crate) list_by_owner: String,
    pub(crate) delete_by_owner: String,
}

impl Queries {
    pub(crate) fn new(schema: &str, table: &str) -> Self {
        let t = format!("{}.{}", quote(schema), quote(table));
        let cols = "key, data, created_at, expires_at, version, owner";
        Self {
            create_schema: format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)),
            expiry_index: format!("{}.{}", quote(schema), quote(&format!("{table}_expires_at_idx"))),
            owner_index: format!("{}.{}", quote(schema), quote(&format!("{table}_owner_idx"))),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    key bytea PRIMARY KEY CHECK (octet_length(key) = 32),
                    data bytea NOT NULL,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    expires_at timestamptz NOT NULL,
                    version bigint NOT NULL,
                    owner text
                )"
            ),
            create_expiry_index: format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (expires_at)",
                quote(&format!("{table}_expires_at_idx"))
            ),
            create_owner_index: format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (owner) WHERE owner IS NOT NULL",
                quote(&format!("{table}_owner_idx"))
            ),
            // An expired row under the key is replaced in the same statement; a live one makes
            // the `WHERE` false, so nothing is written and no row is reported.
            insert: format!(
                "INSERT INTO {t} AS s (key, data, created_at, updated_at, expires_at, version, owner)
                 VALUES ($1, $2, $3, now(), $4, $5, $6)
                 ON CONFLICT (key) DO UPDATE SET
                    data = EXCLUDED.data, created_at = EXCLUDED.created_at,
                    updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at,
                    version = EXCLUDED.version, owner = EXCLUDED.owner
                 WHERE s.expires_at <= now()"
            ),
            load: format!("SELECT {cols} FROM {t} WHERE key = $1 AND expires_at > now()"),
            // The conditional write, then, only when it wrote nothing (`CASE` evaluates the
            // second sub-select lazily), a look at the statement's snapshot to tell a live row
            // of another version (Conflict) from no live row (NotFound): one round trip, and
            // the successful save pays for no second index probe.
            save: format!(
                "WITH upd AS (
                    UPDATE {t} SET data = $3, expires_at = $4, owner = $5,
                        version = version + 1, updated_at = now()
                    WHERE key = $1 AND version = $2 AND expires_at > now()
                    RETURNING version
                 )
                 SELECT v.version, CASE WHEN v.version IS NOT NULL THEN true
                    ELSE EXISTS (SELECT 1 FROM {t} WHERE key = $1 AND expires_at > now()) END
                 FROM (SELECT (SELECT version FROM upd) AS version) AS v"
            ),
            delete: format!("DELETE FROM {t} WHERE key = $1 RETURNING expires_at > now()"),
            delete_many: format!(
                "WITH d AS (DELETE FROM {t} WHERE key = ANY($1) RETURNING expires_at)
                 SELECT count(*) FILTER (WHERE expires_at > now()) FROM d"
            ),
            exists: format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE key = $1 AND expires_at > now())"),
            // An expired row at the new key would block the move with a unique violation, so
            // `gone` removes it first, but only when the old key is live (otherwise nothing may
            // change). The scalar subquery over `gone` in the UPDATE's WHERE forces the DELETE
            // to run before any row is moved; PostgreSQL would otherwise order the two freely.
            // A live row at the new key still violates the primary key: AlreadyExists.
            rotate: format!(
                "WITH gone AS (
                    DELETE FROM {t} WHERE key = $2 AND expires_at <= now()
                      AND EXISTS (SELECT 1 FROM {t} WHERE key = $1 AND expires_at > now())
                    RETURNING 1
                 )
                 UPDATE {t} SET key = $2, updated_at = now()
                 WHERE key = $1 AND expires_at > now() AND (SELECT count(*) FROM gone) >= 0"
            ),
            touch: format!(
                "UPDATE {t} SET expires_at = $2, updated_at = now() WHERE key = $1 AND expires_at > now()"
            ),
            count: format!("SELECT count(*) FROM {t} WHERE expires_at > now()"),
            count_expired: format!("SELECT count(*) FROM {t} WHERE expires_at <= now()"),
            // One batch is a range of the expiry index: the inner walk (an index-only scan in
            // expiry order, `ORDER BY` keeps the planner from a sequential or bitmap scan under
            // `LIMIT`) finds the expiry of the `$1`-th oldest expired row, and the `DELETE`
            // removes every row expired by then, as the bare statement would, but bounded.
            // Rows are locked only by the delete itself, once each: no `FOR UPDATE` pass
            // (which wrote every row twice) and no join on physical row ids. A session
            // re-created over an expired row meanwhile is re-checked after the lock wait and
            // kept (the condition is the range, not a list of keys); two sweepers on one table wait for each
            // other's rows (a statement's worth) instead of skipping them. Rows sharing the
            // bound's expiry all go, so a batch can exceed `$1` by ties at its edge; the
            // sweep's loop treats that as a full batch.
            //
            // The last condition, a one-time filter evaluated before any row is touched, turns
            // `synchronous_commit` off for this statement's own transaction: its commit does
            // not wait for the WAL flush, which was most of a sweep's time (one fsync per
            // batch). A crash can then lose the last batches' deletes; those rows come back
            // still expired, never returned, and the next sweep takes them. `set_config(…,
            // true)` ends with the transaction, so no pooled connection keeps it.
            delete_expired_batch: format!(
                "DELETE FROM {t} WHERE expires_at <= (
                    SELECT max(expires_at) FROM (
                        SELECT expires_at FROM {t} WHERE expires_at <= now()
                        ORDER BY expires_at LIMIT $1
                    ) AS batch
                 )
                 AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
            ),
            list: format!("SELECT key FROM {t} WHERE expires_at > now()"),
            // Keyset pagination on the primary key: each page is one index range scan that
            // starts at the cursor and stops after `$n` live rows, however large the table.
            // Two statements rather than `$1 IS NULL OR key > $1`, whose generic plan could
            // not start the scan at the cursor.
            list_first_page: format!(
                "SELECT key FROM {t} WHERE expires_at > now() ORDER BY key LIMIT $1"
            ),
            list_page_after: format!(
                "SELECT key FROM {t} WHERE key > $1 AND expires_at > now() ORDER BY key LIMIT $2"
            ),
            list_by_owner: format!(
                "SELECT {cols} FROM {t} WHERE owner = $1 AND expires_at > now()"
            ),
            // Expired rows of the owner go too (they are garbage anyway); only live ones count.
            delete_by_owner: format!(
                "WITH d AS (DELETE FROM {t} WHERE owner = $1 RETURNING expires_at)
                 SELECT count(*) FILTER (WHERE expires_at > now()) FROM d"
            ),
            qualified: t,
        }
    }
}

/// The advisory-lock key migrations of `schema` take: FNV-1a of a fixed prefix and the name,
/// so every process computes the same key without asking the server.
pub(crate) fn migration_lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "session-postgres migrate ".bytes().chain(schema.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Error;

    #[test]
    fn identifiers_are_strict() {
        for ok in ["sessions", "_s", "S1_x", &"a".repeat(MAX_TABLE_LEN)] {
            assert!(
                validate_identifier("table", ok, MAX_TABLE_LEN).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "",
            "1abc",
            "a b",
            "a\"b",
            "a;drop table x",
            "sessions\"; DROP TABLE users; --",
            "é",
            "a-b",
            "a.b",
            &"a".repeat(MAX_TABLE_LEN + 1),
        ] {
            assert!(
                matches!(validate_table(bad), Err(Error::Config(_))),
                "{bad:?} must be refused"
            );
        }
        assert!(validate_schema("pg_catalog").is_err());
        assert!(validate_schema("PG_x").is_err());
        assert!(validate_schema("app").is_ok());
        assert!(validate_schema(&"s".repeat(MAX_SCHEMA_LEN)).is_ok());
        assert!(validate_schema(&"s".repeat(MAX_SCHEMA_LEN + 1)).is_err());
    }

    #[test]
    fn names_are_quoted_everywhere() {
        let q = Queries::new("Auth", "user");
        assert_eq!(q.qualified, "\"Auth\".\"user\"");
        assert!(
            q.create_expiry_index
                .contains("\"user_expires_at_idx\" ON \"Auth\".\"user\"")
        );
        assert!(q.load.contains("FROM \"Auth\".\"user\" WHERE"));
    }

    #[test]
    fn lock_key_is_stable_and_per_schema() {
        assert_eq!(migration_lock_key("public"), migration_lock_key("public"));
        assert_ne!(migration_lock_key("public"), migration_lock_key("app"));
    }
}
