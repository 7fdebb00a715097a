//! The on-the-wire form of a record's fields: millisecond timestamps as `timestamptz`, and
//! versions as `bigint`, and a row read back as a [`Record`].

use session_core::sql::key_from_column;
use session_core::{Bytes, Error, Record, Result, Timestamp};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use crate::error::{DbError, STORE};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::{Decode, Encode, Type};

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
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> std::result::Result<IsNull, BoxDynError> {
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
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, BoxDynError> {
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

/// A record version as the `bigint` column holds it.
pub(crate) fn version_to_db(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| {
        Error::backend(
            STORE,
            format!("version {version} is above the largest bigint PostgreSQL can store"),
        )
    })
}

/// A stored version back as the record's; a negative one was not written by this store.
pub(crate) fn version_from_db(version: i64) -> Result<u64> {
    u64::try_from(version)
        .map_err(|_| Error::corrupt(format!("stored version {version} is negative")))
}

/// Reads a row of `key, data, created_at, expires_at, version, owner`.
pub(crate) fn record_from_row(row: &PgRow) -> Result<Record> {
    let key: &[u8] = row.try_get(0).map_err(DbError)?;
    let data: Vec<u8> = row.try_get(1).map_err(DbError)?;
    let created_at: PgMillis = row.try_get(2).map_err(DbError)?;
    let expires_at: PgMillis = row.try_get(3).map_err(DbError)?;
    let version: i64 = row.try_get(4).map_err(DbError)?;
    let owner: Option<String> = row.try_get(5).map_err(DbError)?;
    Ok(Record {
        key: key_from_column(key)?,
        data: Bytes::from(data),
        created_at: created_at.0,
        expires_at: expires_at.0,
        version: version_from_db(version)?,
        owner,
    })
}
