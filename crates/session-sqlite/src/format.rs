//! The at-rest form of a record: one row of `key BLOB(32), data BLOB, created_at INTEGER,
//! expires_at INTEGER, version INTEGER, owner TEXT`, timestamps in Unix milliseconds.

use session_core::sql::key_from_column;
use session_core::{Bytes, Error, Record, Result, SessionKey, Timestamp};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use crate::error::{ResultExt as _, STORE};

/// A timestamp as stored: whole milliseconds since the Unix epoch, exact in SQLite's 64-bit
/// integers, and ordered as the expiry index needs.
pub(crate) fn millis(t: Timestamp) -> i64 {
    t.unix_millis()
}

/// The current time as the queries compare it.
pub(crate) fn now() -> i64 {
    millis(Timestamp::now())
}

/// A record version as SQLite's signed 64-bit integer holds it.
pub(crate) fn version_to_db(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| {
        Error::backend(
            STORE,
            format!("version {version} is above the largest integer SQLite can store"),
        )
    })
}

/// A stored version back as the record's; a negative one was not written by this store.
pub(crate) fn version_from_db(version: i64) -> Result<u64> {
    u64::try_from(version)
        .map_err(|_| Error::corrupt(format!("stored version {version} is negative")))
}

/// Keys as the JSON array of hex strings that `delete_many` unpacks with `json_each`.
pub(crate) fn keys_as_json(keys: &[SessionKey]) -> String {
    let mut json = String::with_capacity(2 + keys.len() * 67);
    json.push('[');
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        json.push_str(&key.to_hex());
        json.push('"');
    }
    json.push(']');
    json
}

/// Reads a row of `key, data, created_at, expires_at, version, owner`.
pub(crate) fn record_from_row(row: &SqliteRow) -> Result<Record> {
    let key: &[u8] = row.try_get(0).db()?;
    let data: Vec<u8> = row.try_get(1).db()?;
    let created_at: i64 = row.try_get(2).db()?;
    let expires_at: i64 = row.try_get(3).db()?;
    let version: i64 = row.try_get(4).db()?;
    let owner: Option<String> = row.try_get(5).db()?;
    Ok(Record {
        key: key_from_column(key)?,
        data: Bytes::from(data),
        created_at: Timestamp::from_unix_millis(created_at),
        expires_at: Timestamp::from_unix_millis(expires_at),
        version: version_from_db(version)?,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_a_json_array_of_hex() {
        let a = SessionKey::from_bytes([0xab; 32]);
        let b = SessionKey::from_bytes([0x01; 32]);
        assert_eq!(keys_as_json(&[]), "[]");
        assert_eq!(
            keys_as_json(&[a, b]),
            format!("[\"{}\",\"{}\"]", "ab".repeat(32), "01".repeat(32))
        );
    }

    #[test]
    fn versions_and_keys_are_checked() {
        assert!(version_to_db(u64::MAX).is_err());
        assert!(matches!(version_from_db(-1), Err(Error::Corrupt(_))));
        assert!(matches!(key_from_column(&[0; 31]), Err(Error::Corrupt(_))));
        assert_eq!(
            key_from_column(&[7; 32]).ok(),
            Some(SessionKey::from_bytes([7; 32]))
        );
    }
}
