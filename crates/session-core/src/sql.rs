//! Checks and conversions every SQL backend needs, kept here so they are written once and
//! behave the same in each; no driver is involved (this crate depends on none).
//!
//! Each backend still owns its dialect: its length limit, reserved prefixes and quoting.

use crate::{Error, Result, SessionKey};

/// Checks that `name` (a configured table, schema or database) is a plain SQL identifier: an
/// ASCII letter or `_`, then ASCII letters, digits or `_`, at most `max` bytes. Backends also
/// quote names wherever they use them, so this is defence in depth; it also keeps names
/// readable in logs and portable across servers and file systems.
///
/// # Errors
/// [`Error::Config`] naming `what` and the rule.
pub fn validate_identifier(what: &str, name: &str, max: usize) -> Result<()> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok || !rest_ok || name.len() > max {
        return Err(Error::Config(
            format!(
                "{what} name {name:?} is not a plain identifier: use 1 to {max} ASCII letters, digits or underscores, not starting with a digit"
            )
            .into(),
        ));
    }
    Ok(())
}

/// Refuses `name` when it starts with `prefix` in any case (`pg_`, `sqlite_`): names the
/// server keeps for itself. `server` names it in the message.
///
/// # Errors
/// [`Error::Config`] naming `what`, the prefix and the server.
pub fn refuse_reserved_prefix(what: &str, name: &str, prefix: &str, server: &str) -> Result<()> {
    let reserved = name
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix));
    if reserved {
        return Err(Error::Config(
            format!("{what} name {name:?} is reserved: {server} keeps names starting with {prefix} for itself").into(),
        ));
    }
    Ok(())
}

/// Checks a configured cleanup batch (rows per delete statement) and returns it as the
/// `BIGINT` a statement binds.
///
/// # Errors
/// [`Error::Config`] for zero or a count above `i64::MAX`.
pub fn cleanup_batch(rows: usize) -> Result<i64> {
    i64::try_from(rows).ok().filter(|n| *n > 0).ok_or_else(|| {
        Error::Config(format!("cleanup batch must be 1 to {}, got {rows}", i64::MAX).into())
    })
}

/// A stored key column back as a [`SessionKey`]; anything but 32 bytes was not written by a
/// store of this project.
///
/// # Errors
/// [`Error::Corrupt`] naming the length.
pub fn key_from_column(bytes: &[u8]) -> Result<SessionKey> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::corrupt(format!("stored key is {} bytes, not 32", bytes.len())))?;
    Ok(SessionKey::from_bytes(bytes))
}

/// A `COUNT(*)` as the trait reports it: never negative, so the sign is only dropped.
pub fn count_from_column(n: i64) -> u64 {
    n.unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_strict() {
        for ok in ["sessions", "_s", "S1_x", &"a".repeat(48)] {
            assert!(validate_identifier("table", ok, 48).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a b",
            "a\"b",
            "a`b",
            "a;drop table x",
            "sessions\"; DROP TABLE users; --",
            "é",
            "a-b",
            "a.b",
            &"a".repeat(49),
        ] {
            assert!(
                matches!(validate_identifier("table", bad, 48), Err(Error::Config(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn reserved_prefixes_are_refused_in_any_case() {
        for bad in ["pg_catalog", "PG_x", "Pg_"] {
            assert!(refuse_reserved_prefix("schema", bad, "pg_", "PostgreSQL").is_err());
        }
        for ok in ["pg", "app", "p", ""] {
            assert!(refuse_reserved_prefix("schema", ok, "pg_", "PostgreSQL").is_ok());
        }
    }

    #[test]
    fn a_batch_is_one_row_or_more() {
        assert!(matches!(cleanup_batch(0), Err(Error::Config(_))));
        assert_eq!(cleanup_batch(1).ok(), Some(1));
        assert_eq!(cleanup_batch(1000).ok(), Some(1000));
        if let Ok(big) = usize::try_from(u64::MAX) {
            assert!(cleanup_batch(big).is_err());
        }
    }

    #[test]
    fn only_32_byte_keys_come_back() {
        let key = SessionKey::from_bytes([7; 32]);
        assert_eq!(key_from_column(key.as_bytes()).ok(), Some(key));
        for len in [0, 31, 33] {
            assert!(matches!(
                key_from_column(&vec![0; len]),
                Err(Error::Corrupt(_))
            ));
        }
    }
}
