//! How driver failures map onto the store contract's error categories.

use session_core::Error;

/// The name every error of this store carries.
pub(crate) const STORE: &str = "postgres";

/// Whether a database error's SQLSTATE means "try again later" rather than "this will never work".
fn is_transient_sqlstate(code: &str) -> bool {
    // 08: connection exceptions. 57P01-57P03: the server is shutting down or terminated this
    // backend (`pg_terminate_backend`). 57014: statement timeout or cancel. 53300: too many
    // connections. 40001/40P01: serialization failure or deadlock. 55P03: lock timeout.
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57014" | "53300" | "40001" | "40P01" | "55P03"
        )
}

/// Whether `error` means the connection itself broke (reset, closed, or its backend was
/// terminated), so the statement's reply was lost and the connection is gone. Only these
/// errors are worth retrying at once on another connection; the statement may or may not have
/// been applied.
pub(crate) fn is_broken_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(e) => !is_refused_certificate(e),
        // 08: connection exceptions. 57P01: `pg_terminate_backend` or a fast shutdown.
        // 57P02: the server crashed and is restarting.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02")),
        _ => false,
    }
}

/// Whether an I/O error is the TLS layer refusing the server (an untrusted certificate, a
/// name that does not match), which sqlx reports as I/O of kind `InvalidData`: the network
/// worked, and retrying will not make the certificate trusted.
fn is_refused_certificate(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::InvalidData
}

/// A driver error on its way to the session layer's [`Error`]: `.map_err(DbError)?` maps it.
#[derive(Debug)]
pub(crate) struct DbError(pub(crate) sqlx::Error);

/// Maps a driver error to the session layer's categories.
///
/// Unreachable servers, lost connections, pool timeouts and the SQLSTATEs of
/// [`is_transient_sqlstate`] are [`Error::Unavailable`]; everything else is [`Error::Backend`].
/// TLS failures are `Unavailable` only when the network failed under them: a certificate the
/// client does not trust, or a server without TLS, will not get better by retrying.
/// Callers that know what a unique violation means there check [`is_unique_violation`] first.
impl From<DbError> for Error {
    fn from(DbError(error): DbError) -> Self {
        let transient = match &error {
            sqlx::Error::Io(e) => !is_refused_certificate(e),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                true
            }
            sqlx::Error::Tls(source) => source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| !is_refused_certificate(e)),
            sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
            _ => false,
        };
        if transient {
            Error::unavailable(STORE, error)
        } else {
            Error::backend(STORE, error)
        }
    }
}

/// Whether `error` is a unique-constraint violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
