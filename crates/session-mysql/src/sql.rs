//! The SQL of every operation, built once per store from its validated, quoted names.
//!
//! Every value is bound; only the validated identifiers are spliced in, backtick-quoted.
//! Timestamps are `BIGINT` milliseconds since the Unix epoch, and "now" is the server's UTC
//! clock in the same unit ([`NOW_MS`]), so neither the server's nor the session's
//! `time_zone` plays any part, and every app server agrees on what has expired.

use session_core::sql::validate_identifier;
use session_core::{Error, Result};

/// MySQL and MariaDB keep identifiers of up to 64 characters.
const MAX_IDENTIFIER_LEN: usize = 64;

/// The databases the server keeps for itself.
const SYSTEM_DATABASES: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// The server's current time in Unix milliseconds, in UTC whatever `time_zone` says.
///
/// `UTC_TIMESTAMP(3)` is a `DATETIME` in UTC, and `TIMESTAMPDIFF` between two `DATETIME`s is
/// plain calendar arithmetic, with no zone conversion anywhere. (`UNIX_TIMESTAMP(NOW(3))`
/// would convert from the session's zone and back, which is ambiguous for an hour at every
/// daylight-saving change.) The value is constant within a statement, so the optimizer uses
/// it for range scans on the expiry index.
pub(crate) const NOW_MS: &str =
    "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(3)) DIV 1000)";

/// The most keys one `delete_many` statement binds; longer lists take several statements.
pub(crate) const DELETE_MANY_CHUNK: usize = 500;

/// Checks a database name: a plain identifier
/// ([`validate_identifier`](session_core::sql::validate_identifier)) of at most 64 bytes that
/// is not one of the server's system databases. Names are also backtick-quoted wherever they
/// are used; whether case matters depends on `lower_case_table_names`, as the server stores
/// tables as files.
pub(crate) fn validate_database(name: &str) -> Result<()> {
    validate_identifier("database", name, MAX_IDENTIFIER_LEN)?;
    if SYSTEM_DATABASES
        .iter()
        .any(|system| system.eq_ignore_ascii_case(name))
    {
        return Err(Error::Config(
            format!("database name {name:?} is reserved: the server keeps it for itself").into(),
        ));
    }
    Ok(())
}

/// Checks a table name: a plain identifier of at most 64 bytes.
pub(crate) fn validate_table(name: &str) -> Result<()> {
    validate_identifier("table", name, MAX_IDENTIFIER_LEN)
}

/// Quotes a validated identifier. Validation already rules out the backtick; quoting keeps
/// reserved words (`key`, `order`, `user`) usable.
fn quote(name: &str) -> String {
    format!("`{name}`")
}

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Queries {
    /// The quoted table name, qualified by its database when one was configured.
    pub(crate) qualified: String,
    pub(crate) create_database: Option<String>,
    pub(crate) create_table: String,
    pub(crate) create_expiry_index: String,
    pub(crate) create_owner_index: String,
    pub(crate) insert: String,
    pub(crate) delete_expired_at: String,
    pub(crate) load: String,
    pub(crate) save: String,
    pub(crate) exists: String,
    pub(crate) delete_live: String,
    pub(crate) delete_any: String,
    pub(crate) rotate: String,
    pub(crate) touch: String,
    pub(crate) count: String,
    pub(crate) count_expired: String,
    pub(crate) delete_expired_batch: String,
    pub(crate) list: String,
    pub(crate) list_first_page: String,
    pub(crate) list_page_after: String,
    pub(crate) list_by_owner: String,
    pub(crate) delete_live_by_owner: String,
    pub(crate) delete_expired_by_owner: String,
}

/// The columns of a record, in the order [`crate::format::record_from_row`] reads them.
const COLUMNS: &str = "`key`, `data`, `created_at`, `expires_at`, `version`, `owner`";

/// Exact owner match. `utf8mb4_bin` compares with PAD SPACE (so `'ann' = 'ann '`) on both
/// MySQL and MariaDB; the first condition finds the candidates through the owner index, the
/// byte comparison keeps only the exact owner.
const OWNER_IS: &str = "`owner` = ? AND CAST(`owner` AS BINARY) = CAST(? AS BINARY)";

impl Queries {
    pub(crate) fn new(database: Option<&str>, table: &str) -> Self {
        let t = match database {
            Some(db) => format!("{}.{}", quote(db), quote(table)),
            None => quote(table),
        };
        let now = NOW_MS;
        Self {
            create_database: database.map(|db| {
                format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                    quote(db)
                )
            }),
            // Binary keys and data (no charset, bytewise order and comparison), text owners in
            // utf8mb4 (all of Unicode), and no column whose meaning depends on a time zone.
            // `LONGBLOB` because "no limit" must mean what it says up to `max_allowed_packet`.
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    `key` VARBINARY(32) NOT NULL,
                    `data` LONGBLOB NOT NULL,
                    `created_at` BIGINT NOT NULL,
                    `expires_at` BIGINT NOT NULL,
                    `version` BIGINT UNSIGNED NOT NULL,
                    `owner` TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                    PRIMARY KEY (`key`),
                    KEY `expires_at_idx` (`expires_at`),
                    KEY `owner_idx` (`owner`(255)),
                    CHECK (LENGTH(`key`) = 32)
                 ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
            ),
            create_expiry_index: format!("CREATE INDEX `expires_at_idx` ON {t} (`expires_at`)"),
            create_owner_index: format!("CREATE INDEX `owner_idx` ON {t} (`owner`(255))"),
            insert: format!("INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"),
            delete_expired_at: format!("DELETE FROM {t} WHERE `key` = ? AND `expires_at` <= {now}"),
            load: format!("SELECT {COLUMNS} FROM {t} WHERE `key` = ? AND `expires_at` > {now}"),
            // `version` always changes, so the row always changes and the affected-row count
            // is 1 exactly when the condition held, whatever CLIENT_FOUND_ROWS says.
            save: format!(
                "UPDATE {t} SET `data` = ?, `expires_at` = ?, `owner` = ?, `version` = `version` + 1
                 WHERE `key` = ? AND `version` = ? AND `expires_at` > {now}"
            ),
            exists: format!("SELECT 1 FROM {t} WHERE `key` = ? AND `expires_at` > {now}"),
            delete_live: format!("DELETE FROM {t} WHERE `key` = ? AND `expires_at` > {now}"),
            delete_any: format!("DELETE FROM {t} WHERE `key` = ?"),
            rotate: format!("UPDATE {t} SET `key` = ? WHERE `key` = ? AND `expires_at` > {now}"),
            // Setting the deadline it already has leaves the row unchanged: this counts on
            // CLIENT_FOUND_ROWS (which sqlx always asks for) to report the row as affected.
            touch: format!(
                "UPDATE {t} SET `expires_at` = ? WHERE `key` = ? AND `expires_at` > {now}"
            ),
            count: format!("SELECT COUNT(*) FROM {t} WHERE `expires_at` > {now}"),
            count_expired: format!("SELECT COUNT(*) FROM {t} WHERE `expires_at` <= {now}"),
            // One range scan of the expiry index, oldest first, at most `?` rows: each batch
            // holds its row locks only for one short statement. The condition is checked on
            // the current row, so a session extended a moment ago is never deleted.
            delete_expired_batch: format!(
                "DELETE FROM {t} WHERE `expires_at` <= {now} ORDER BY `expires_at` LIMIT ?"
            ),
            list: format!("SELECT `key` FROM {t} WHERE `expires_at` > {now}"),
            // Keyset pagination on the primary key: each page is one range scan that starts
            // at the cursor and stops after `?` live rows, however large the table.
            list_first_page: format!(
                "SELECT `key` FROM {t} WHERE `expires_at` > {now} ORDER BY `key` LIMIT ?"
            ),
            list_page_after: format!(
                "SELECT `key` FROM {t} WHERE `key` > ? AND `expires_at` > {now} ORDER BY `key` LIMIT ?"
            ),
            list_by_owner: format!(
                "SELECT {COLUMNS} FROM {t} WHERE {OWNER_IS} AND `expires_at` > {now}"
            ),
            delete_live_by_owner: format!(
                "DELETE FROM {t} WHERE {OWNER_IS} AND `expires_at` > {now}"
            ),
            delete_expired_by_owner: format!(
                "DELETE FROM {t} WHERE {OWNER_IS} AND `expires_at` <= {now}"
            ),
            qualified: t,
        }
    }

    /// `DELETE … WHERE key IN (?, …)` for `n` keys, live or expired ones as asked.
    pub(crate) fn delete_many(&self, n: usize, live: bool) -> String {
        let marks = vec!["?"; n].join(", ");
        let cmp = if live { ">" } else { "<=" };
        format!(
            "DELETE FROM {} WHERE `key` IN ({marks}) AND `expires_at` {cmp} {NOW_MS}",
            self.qualified
        )
    }
}

/// The name of the lock (`GET_LOCK`) migrations of one table take: a hash of the database and
/// table, so it fits the server's 64-character limit on lock names, and every process computes
/// the same one.
pub(crate) fn migration_lock_name(database: Option<&str>, table: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in database
        .unwrap_or("")
        .bytes()
        .chain([b'.'])
        .chain(table.bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("session-mysql migrate {hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_strict() {
        for ok in ["sessions", "_s", "S1_x", &"a".repeat(MAX_IDENTIFIER_LEN)] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a b",
            "a`b",
            "a\"b",
            "a;drop table x",
            "sessions`; DROP TABLE users; --",
            "é",
            "a-b",
            "a.b",
            &"a".repeat(MAX_IDENTIFIER_LEN + 1),
        ] {
            assert!(
                matches!(validate_table(bad), Err(Error::Config(_))),
                "{bad:?} must be refused"
            );
        }
        for reserved in [
            "mysql",
            "MySQL",
            "information_schema",
            "sys",
            "performance_schema",
        ] {
            assert!(validate_database(reserved).is_err(), "{reserved}");
        }
        assert!(validate_database("app").is_ok());
    }

    #[test]
    fn names_are_quoted_everywhere() {
        let q = Queries::new(Some("Auth"), "user");
        assert_eq!(q.qualified, "`Auth`.`user`");
        assert!(q.load.contains("FROM `Auth`.`user` WHERE"));
        assert!(
            q.delete_many(2, true)
                .contains("FROM `Auth`.`user` WHERE `key` IN (?, ?)")
        );
        assert_eq!(Queries::new(None, "s").qualified, "`s`");
    }

    #[test]
    fn lock_names_fit_and_differ() {
        let a = migration_lock_name(Some("app"), &"t".repeat(64));
        assert!(a.len() <= 64);
        assert_eq!(a, migration_lock_name(Some("app"), &"t".repeat(64)));
        assert_ne!(
            migration_lock_name(None, "ab"),
            migration_lock_name(Some("a"), "b")
        );
    }
}
