//! The SQL of every operation, built once per store from its validated, quoted table name.
//!
//! Each trait operation is one statement, so one trip to the connection's worker thread;
//! sqlx prepares each text once per connection and keeps it in its statement cache. "Live" is
//! `expires_at > ?now`, with `now` bound from the caller's clock: every process on the machine
//! reads the same clock, and a bound value keeps the statement free of SQL time functions
//! whose precision varies between SQLite versions.

use session_core::Result;
use session_core::sql::{refuse_reserved_prefix, validate_identifier};

/// The longest table name accepted, so the index names derived from it stay readable.
const MAX_TABLE_LEN: usize = 48;

/// Checks a table name: a plain identifier
/// ([`validate_identifier`](session_core::sql::validate_identifier)) of at most
/// [`MAX_TABLE_LEN`] bytes, and not `sqlite_…`, which SQLite keeps for itself. Names are also
/// double-quoted wherever they are used, so this is defence in depth.
pub(crate) fn validate_table(name: &str) -> Result<()> {
    validate_identifier("table", name, MAX_TABLE_LEN)?;
    refuse_reserved_prefix("table", name, "sqlite_", "SQLite")
}

/// Quotes a validated identifier. Validation already rules out `"`; quoting keeps keywords
/// (`order`, `user`) usable.
fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The statements of one store. Parameters are numbered so one value binds once even when a
/// statement uses it twice.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) create_table: String,
    pub(crate) create_expiry_index: String,
    pub(crate) create_owner_index: String,
    pub(crate) insert: String,
    pub(crate) load: String,
    pub(crate) save: String,
    pub(crate) is_live: String,
    pub(crate) delete: String,
    pub(crate) delete_many: String,
    pub(crate) exists: String,
    pub(crate) rotate: String,
    pub(crate) rotate_probe: String,
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
    pub(crate) fn new(table: &str) -> Self {
        let t = quote(table);
        let cols = "key, data, created_at, expires_at, version, owner";
        Self {
            // `WITHOUT ROWID` clusters rows on the key: a load is one B-tree search, not a
            // search of the key index and then of the rowid table. `STRICT` refuses values of
            // the wrong type instead of storing them.
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    key BLOB NOT NULL PRIMARY KEY CHECK (length(key) = 32),
                    data BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    version INTEGER NOT NULL,
                    owner TEXT
                 ) STRICT, WITHOUT ROWID"
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
            // the `WHERE` false, so nothing is written and no change is counted.
            insert: format!(
                "INSERT INTO {t} AS s ({cols}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key) DO UPDATE SET
                    data = excluded.data, created_at = excluded.created_at,
                    expires_at = excluded.expires_at, version = excluded.version,
                    owner = excluded.owner
                 WHERE s.expires_at <= ?7"
            ),
            load: format!("SELECT {cols} FROM {t} WHERE key = ?1 AND expires_at > ?2"),
            // The conditional write; only when it returns no row does the store run `is_live`
            // to tell a live row of another version (Conflict) from none (NotFound), so a
            // successful save is one statement.
            save: format!(
                "UPDATE {t} SET data = ?3, expires_at = ?4, owner = ?5, version = version + 1
                 WHERE key = ?1 AND version = ?2 AND expires_at > ?6
                 RETURNING version"
            ),
            is_live: format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE key = ?1 AND expires_at > ?2)"
            ),
            delete: format!("DELETE FROM {t} WHERE key = ?1 RETURNING expires_at > ?2"),
            // SQLite binds no arrays: the keys travel as one JSON array of hex strings, so any
            // number of them is one statement with two parameters (no variable limit, one
            // cached plan).
            delete_many: format!(
                "DELETE FROM {t} WHERE key IN (SELECT unhex(value) FROM json_each(?1))
                 RETURNING expires_at > ?2"
            ),
            exists: format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE key = ?1 AND expires_at > ?2)"),
            // One statement, so atomic: the move happens only when the old key is live and the
            // new one is not. `OR REPLACE` lets it overwrite an expired row at the new key
            // (the `NOT EXISTS` guarantees nothing live is replaced). When it moves nothing,
            // `rotate_probe` says why.
            rotate: format!(
                "UPDATE OR REPLACE {t} SET key = ?2
                 WHERE key = ?1 AND expires_at > ?3
                   AND NOT EXISTS (SELECT 1 FROM {t} WHERE key = ?2 AND expires_at > ?3)"
            ),
            rotate_probe: format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE key = ?1 AND expires_at > ?3),
                        EXISTS (SELECT 1 FROM {t} WHERE key = ?2 AND expires_at > ?3)"
            ),
            touch: format!("UPDATE {t} SET expires_at = ?2 WHERE key = ?1 AND expires_at > ?3"),
            count: format!("SELECT count(*) FROM {t} WHERE expires_at > ?1"),
            count_expired: format!("SELECT count(*) FROM {t} WHERE expires_at <= ?1"),
            // A bounded batch per statement: each one holds the write lock only briefly, so
            // requests (and other processes) get their turn between batches.
            delete_expired_batch: format!(
                "DELETE FROM {t} WHERE key IN (
                    SELECT key FROM {t} WHERE expires_at <= ?1 LIMIT ?2
                 )"
            ),
            list: format!("SELECT key FROM {t} WHERE expires_at > ?1"),
            // Keyset pagination on the primary key: each page is one range scan of the table's
            // B-tree starting at the cursor. Two statements rather than `?1 IS NULL OR key > ?1`,
            // which the planner could not start at the cursor.
            list_first_page: format!(
                "SELECT key FROM {t} WHERE expires_at > ?1 ORDER BY key LIMIT ?2"
            ),
            list_page_after: format!(
                "SELECT key FROM {t} WHERE key > ?3 AND expires_at > ?1 ORDER BY key LIMIT ?2"
            ),
            list_by_owner: format!("SELECT {cols} FROM {t} WHERE owner = ?1 AND expires_at > ?2"),
            // Expired rows of the owner go too (they are garbage anyway); only live ones count.
            delete_by_owner: format!("DELETE FROM {t} WHERE owner = ?1 RETURNING expires_at > ?2"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Error;

    #[test]
    fn table_names_are_strict() {
        for ok in [
            "sessions",
            "_s",
            "S1_x",
            "order",
            &"a".repeat(MAX_TABLE_LEN),
        ] {
            assert!(validate_table(ok).is_ok(), "{ok}");
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
            "main.sessions",
            "sqlite_master",
            "SQLITE_x",
            &"a".repeat(MAX_TABLE_LEN + 1),
        ] {
            assert!(
                matches!(validate_table(bad), Err(Error::Config(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn names_are_quoted_everywhere() {
        let q = Queries::new("order");
        assert!(
            q.create_expiry_index
                .contains("\"order_expires_at_idx\" ON \"order\"")
        );
        assert!(q.load.contains("FROM \"order\" WHERE"));
        assert!(q.rotate.starts_with("UPDATE OR REPLACE \"order\" SET"));
    }
}
