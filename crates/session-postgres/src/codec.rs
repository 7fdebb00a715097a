//! How values cross the wire: millisecond timestamps as `timestamptz`, and driver errors as the
//! session layer's [`Error`].

use session_core::{Error, Timestamp};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Encode, Type};

/// The name every error of this store carries.
pub(crate) const STORE: &str = "postgres";

/// `timestamptz`'s type OID, fixed since PostgreSQL 7.
const TIMESTAMPTZ_OID: Oid = Oid(1184);

/// Milliseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01T00:00:00Z).
const PG_EPOCH_UNIX_MILLIS: i64 = 946_684_800_000;

/// A [`Timestamp`] as a `timestamptz` in sqlx's binary format: microseconds since 2000-01-01.
///
/// Converting in integers here (rather than `to_timestamp($1 / 1000.0)` in SQL, which goes
/// through a float) keeps every millisecond exact over `timestamptz`'s whole range, needs no
/// `chrono` or `time` dependency, and sends 8 bytes instead of a numeric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PgMillis(pub(crate) Timestamp);

impl Type<Postgres> for PgMillis {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TIMESTAMPTZ_OID)
    }
}

impl Encode<'_, Postgres> for PgMillis {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let micros = self
            .0
            .unix_millis()
            .checked_sub(PG_EPOCH_UNIX_MILLIS)
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| format!("{:?} is outside the range of timestamptz", self.0))?;
        <i64 as Encode<'_, Postgres>>::encode_by_ref(&micros, buf)
    }

    fn size_hint(&self) -> usize {
        8
    }
}

impl<'r> Decode<'r, Postgres> for PgMillis {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            return Err(
                "timestamptz arrived in text format; this store reads only binary results".into(),
            );
        }
        let micros = <i64 as Decode<'r, Postgres>>::decode(value)?;
        // Every value this store writes is whole milliseconds; `div_euclid` keeps anything written
        // by hand with finer precision on the right millisecond before the epoch too.
        let millis = micros.div_euclid(1000).saturating_add(PG_EPOCH_UNIX_MILLIS);
        Ok(Self(Timestamp::from_unix_millis(millis)))
    }
}

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

/// Maps a driver error to the session layer's categories.
///
/// Unreachable servers, lost connections, pool timeouts and the SQLSTATEs of
/// [`is_transient_sqlstate`] are [`Error::Unavailable`]; everything else is [`Error::Backend`].
/// TLS failures are `Unavailable` only when the network failed under them: a certificate the
/// client does not trust, or a server without TLS, will not get better by retrying.
/// Callers that know what a unique violation means there check [`is_unique_violation`] first.
pub(crate) fn map_err(error: sqlx::Error) -> Error {
    let transient = match &error {
        sqlx::Error::Io(e) => !is_refused_certificate(e),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
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

/// Whether `error` is a unique-constraint violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A record version as the `bigint` column holds it.
pub(crate) fn version_to_db(version: u64) -> Result<i64, Error> {
    i64::try_from(version).map_err(|_| {
        Error::backend(
            STORE,
            format!("version {version} is above the largest bigint PostgreSQL can store"),
        )
    })
}

/// A stored version back as the record's; a negative one was not written by this store.
pub(crate) fn version_from_db(version: i64) -> Result<u64, Error> {
    u64::try_from(version)
        .map_err(|_| Error::corrupt(format!("stored version {version} is negative")))
}
