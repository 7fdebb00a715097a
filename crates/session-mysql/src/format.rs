//! A record at rest: one row of `key, data, created_at, expires_at, version, owner`.
//!
//! | column | type | holds |
//! |---|---|---|
//! | `key` | `VARBINARY(32)` | the [`SessionKey`] (SHA-256 of the session id), never the id |
//! | `data` | `LONGBLOB` | the encoded session, as given |
//! | `created_at`, `expires_at` | `BIGINT` | Unix milliseconds (UTC), exact |
//! | `version` | `BIGINT UNSIGNED` | the record's version |
//! | `owner` | `TEXT` utf8mb4 | the owner, or `NULL` |

use session_core::sql::key_from_column;
use session_core::{Bytes, Error, Record, Result, Timestamp};
use sqlx::Row as _;
use sqlx::mysql::MySqlRow;

use crate::error::DbError;

/// The longest owner a `TEXT` column holds, in bytes. Longer owners are refused before any
/// query: a server outside strict mode would otherwise truncate them silently.
pub(crate) const MAX_OWNER_LEN: usize = 65_535;

/// Refuses an owner the column cannot hold exactly.
pub(crate) fn check_owner(owner: Option<&str>) -> Result<()> {
    match owner {
        Some(owner) if owner.len() > MAX_OWNER_LEN => Err(Error::TooLarge {
            size: owner.len(),
            limit: MAX_OWNER_LEN,
        }),
        _ => Ok(()),
    }
}

/// Reads a row of `key, data, created_at, expires_at, version, owner`.
pub(crate) fn record_from_row(row: &MySqlRow) -> Result<Record> {
    let key: &[u8] = row.try_get(0).map_err(DbError)?;
    let data: Vec<u8> = row.try_get(1).map_err(DbError)?;
    let created_at: i64 = row.try_get(2).map_err(DbError)?;
    let expires_at: i64 = row.try_get(3).map_err(DbError)?;
    let version: u64 = row.try_get(4).map_err(DbError)?;
    // Read as bytes: the column's binary collation (`utf8mb4_bin`) makes the server flag it
    // BINARY, and sqlx then refuses to decode it as a string.
    let owner: Option<Vec<u8>> = row.try_get(5).map_err(DbError)?;
    let owner = owner
        .map(String::from_utf8)
        .transpose()
        .map_err(|e| Error::corrupt(format!("stored owner is not UTF-8: {e}")))?;
    Ok(Record {
        key: key_from_column(key)?,
        data: Bytes::from(data),
        created_at: Timestamp::from_unix_millis(created_at),
        expires_at: Timestamp::from_unix_millis(expires_at),
        version,
        owner,
    })
}
