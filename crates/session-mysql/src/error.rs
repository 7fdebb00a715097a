//! How driver and server errors map onto the store contract's categories.
//!
//! MySQL and MariaDB report most failures with a numeric error code and a SQLSTATE that is
//! often the catch-all `HY000`, so the code decides: the connection-level and "try again"
//! codes below are [`Error::Unavailable`], everything else [`Error::Backend`].

use session_core::Error;

/// The name every error of this store carries.
pub(crate) const STORE: &str = "mysql";

// Server error codes (shared by MySQL and MariaDB unless noted).
/// Too many connections.
const ER_CON_COUNT_ERROR: u16 = 1040;
/// Bad handshake (the server dropped the connection during setup).
const ER_HANDSHAKE_ERROR: u16 = 1043;
/// The server is shutting down.
const ER_SERVER_SHUTDOWN: u16 = 1053;
/// Net read/write errors and timeouts on the server's side of the socket (1158-1161).
const ER_NET_READ_ERROR: u16 = 1158;
const ER_NET_WRITE_INTERRUPTED: u16 = 1161;
/// The user has more connections than `max_user_connections` allows.
const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
/// `innodb_lock_wait_timeout` expired.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// Deadlock found; the transaction was rolled back.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// The statement was interrupted: `KILL QUERY`, or on MySQL `KILL CONNECTION` of a
/// connection in the middle of a statement.
const ER_QUERY_INTERRUPTED: u16 = 1317;
/// MariaDB: the connection was killed (`KILL CONNECTION`) while running the statement.
const ER_CONNECTION_KILLED: u16 = 1927;
/// MariaDB: `max_statement_time` expired.
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL: `max_execution_time` expired.
const ER_QUERY_TIMEOUT: u16 = 3024;
/// MySQL 8.0.24+: the server closed the connection for inactivity (`wait_timeout`).
const ER_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;
/// Duplicate entry for a unique key.
const ER_DUP_ENTRY: u16 = 1062;

/// A driver error on its way to becoming a [`session_core::Error`]: `?` on a
/// `Result<_, DbError>` inside the store converts it.
#[derive(Debug)]
pub(crate) struct DbError(pub(crate) sqlx::Error);

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self(e)
    }
}

impl From<DbError> for Error {
    /// Unreachable servers, lost or killed connections, pool timeouts, lock timeouts,
    /// deadlocks and statement timeouts are [`Error::Unavailable`]; everything else (a refused
    /// login, a missing table, a value out of range) is [`Error::Backend`].
    fn from(DbError(e): DbError) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Tls(source) => source.downcast_ref::<std::io::Error>().is_some(),
            sqlx::Error::Database(_) => {
                server_code(&e).is_some_and(|(number, state)| is_transient(number, state))
            }
            _ => false,
        };
        if transient {
            Error::unavailable(STORE, e)
        } else {
            Error::backend(STORE, e)
        }
    }
}

/// The server's error number and SQLSTATE, when the error came from the server.
fn server_code(e: &sqlx::Error) -> Option<(u16, &str)> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let mysql = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?;
    Some((mysql.number(), mysql.code().unwrap_or("HY000")))
}

/// Whether a server error means "try again later" rather than "this will never work".
fn is_transient(number: u16, sqlstate: &str) -> bool {
    // SQLSTATE class 08: connection exceptions; 40001: serialization failure (deadlock).
    sqlstate.starts_with("08")
        || sqlstate == "40001"
        || is_connection_lost(number)
        || matches!(
            number,
            ER_CON_COUNT_ERROR
                | ER_TOO_MANY_USER_CONNECTIONS
                | ER_LOCK_WAIT_TIMEOUT
                | ER_LOCK_DEADLOCK
                | ER_STATEMENT_TIMEOUT
                | ER_QUERY_TIMEOUT
        )
}

/// Server error codes that come with (or announce) the end of the connection.
fn is_connection_lost(number: u16) -> bool {
    matches!(
        number,
        ER_HANDSHAKE_ERROR
            | ER_SERVER_SHUTDOWN
            | ER_QUERY_INTERRUPTED
            | ER_CONNECTION_KILLED
            | ER_CLIENT_INTERACTION_TIMEOUT
    ) || (ER_NET_READ_ERROR..=ER_NET_WRITE_INTERRUPTED).contains(&number)
}

/// Whether `e` means the connection broke under the statement (reset, closed, killed), so
/// its reply was lost: the statement may or may not have been applied. Only these errors are
/// worth retrying at once on another connection, and only for idempotent statements.
///
/// `ER_QUERY_INTERRUPTED` is among them: MySQL reports a `KILL CONNECTION` that hits a running
/// statement with it, and when it was only `KILL QUERY`, running an idempotent statement once
/// more does no harm either.
pub(crate) fn is_broken_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(_) => server_code(e)
            .is_some_and(|(number, state)| state.starts_with("08") || is_connection_lost(number)),
        _ => false,
    }
}

/// Whether `e` is a duplicate primary key: for `create` and `rotate`, the key is taken.
pub(crate) fn is_duplicate_key(e: &sqlx::Error) -> bool {
    server_code(e).is_some_and(|(number, _)| number == ER_DUP_ENTRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        for transient in [1040, 1053, 1205, 1213, 1317, 1927, 1969, 3024, 4031, 1159] {
            assert!(is_transient(transient, "HY000"), "{transient}");
        }
        assert!(is_transient(9999, "08S01"));
        for permanent in [1045, 1146, 1062, 1264, 1406] {
            assert!(!is_transient(permanent, "HY000"), "{permanent}");
        }
        assert!(is_connection_lost(1927) && is_connection_lost(4031));
        assert!(
            !is_connection_lost(1205),
            "a lock timeout leaves the connection usable"
        );
    }

    #[test]
    fn pool_and_io_errors_are_unavailable() {
        let e: Error = DbError(sqlx::Error::PoolTimedOut).into();
        assert!(matches!(e, Error::Unavailable { store: "mysql", .. }));
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_broken_connection(&io));
        let e: Error = DbError(io).into();
        assert!(e.is_transient());
        let e: Error = DbError(sqlx::Error::RowNotFound).into();
        assert!(matches!(e, Error::Backend { store: "mysql", .. }));
    }
}
