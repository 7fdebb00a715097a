//! The stored form of a record: one Redis string per session.
//!
//! ```text
//! offset  size  field
//!  0      1     format (1)
//!  1      8     version, u64 big-endian
//!  9      8     created_at, unix ms, i64 big-endian
//! 17      8     expires_at, unix ms, i64 big-endian
//! 25      1     1 when there is an owner, else 0
//! 26      4     owner length, u32 big-endian
//! 30      n     owner, UTF-8
//! 30+n    rest  data
//! ```
//!
//! Why one string and not a hash: `load` is a single `GET` of one contiguous value (no field
//! names stored per session, no hash overhead once data passes Redis's small-hash size), and
//! fixed offsets let the scripts compare the version as 8 raw bytes (exact for every `u64`,
//! where Lua numbers would round above 2^53) and patch the deadline in place with `SETRANGE`.
//! The deadline is kept in the value because the key's own expiry is set one millisecond
//! early (see `store.rs`) and `load` must return it exactly.

use bytes::Buf;
use session_core::{Bytes, Error, Record, Result, SessionKey, Timestamp};

const FORMAT: u8 = 1;
pub(crate) const HEADER_LEN: usize = 30;

/// Encodes `record` with `version` in place of its own.
pub(crate) fn encode(record: &Record, version: u64) -> Result<Vec<u8>> {
    let owner = record.owner.as_deref().unwrap_or("");
    let owner_len = u32::try_from(owner.len())
        .map_err(|_| Error::backend("redis", "the owner name is longer than 4 GiB"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + owner.len() + record.data.len());
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&record.created_at.unix_millis().to_be_bytes());
    out.extend_from_slice(&record.expires_at.unix_millis().to_be_bytes());
    out.push(u8::from(record.owner.is_some()));
    out.extend_from_slice(&owner_len.to_be_bytes());
    out.extend_from_slice(owner.as_bytes());
    out.extend_from_slice(&record.data);
    Ok(out)
}

/// Decodes a stored value found under `key`. The record's data is a view into `value`, not a
/// copy (it keeps the 30-byte header and the owner alive with it).
pub(crate) fn decode(key: SessionKey, value: Vec<u8>) -> Result<Record> {
    let corrupt = |what: &'static str| Error::corrupt(what);
    let Some((header, rest)) = value.as_slice().split_first_chunk::<HEADER_LEN>() else {
        return Err(corrupt("stored session is shorter than its header"));
    };
    if header[0] != FORMAT {
        return Err(corrupt("stored session has an unknown format byte"));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        b
    };
    let version = u64::from_be_bytes(u64_at(1));
    let created_at = Timestamp::from_unix_millis(i64::from_be_bytes(u64_at(9)));
    let expires_at = Timestamp::from_unix_millis(i64::from_be_bytes(u64_at(17)));
    let has_owner = match header[25] {
        0 => false,
        1 => true,
        _ => return Err(corrupt("stored session has an invalid owner flag")),
    };
    let owner_len = u32::from_be_bytes([header[26], header[27], header[28], header[29]]);
    let owner_len = usize::try_from(owner_len).map_err(|_| corrupt("owner length overflows"))?;
    if rest.len() < owner_len {
        return Err(corrupt("stored session is shorter than its owner length"));
    }
    let owner = if has_owner {
        let owner = std::str::from_utf8(&rest[..owner_len]).map_err(Error::corrupt)?;
        Some(owner.to_owned())
    } else {
        None
    };
    Ok(Record {
        key,
        data: {
            // `advance` moves the start in place; `slice` would first turn the buffer into a
            // shared one (an allocation) to hand out a second handle.
            let mut data = Bytes::from(value);
            data.advance(HEADER_LEN + owner_len);
            data
        },
        created_at,
        expires_at,
        version,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use session_core::SessionId;

    use super::*;

    fn sample() -> Record {
        Record::new(
            SessionId::generate().key(),
            &b"\x00\xffdata"[..],
            Timestamp::now() + Duration::from_secs(9),
        )
    }

    #[test]
    fn round_trips_with_and_without_owner() {
        for record in [
            sample(),
            sample().with_owner("Zoë"),
            sample().with_owner(""),
        ] {
            let value = match encode(&record, record.version) {
                Ok(v) => v,
                Err(e) => panic!("encode failed: {e}"),
            };
            match decode(record.key, value) {
                Ok(back) => assert_eq!(back, record),
                Err(e) => panic!("decode failed: {e}"),
            }
        }
    }

    #[test]
    fn version_is_replaced_and_exact_for_large_values() {
        let record = sample();
        let value = encode(&record, u64::MAX - 1).map_err(|e| e.to_string());
        let back = value.and_then(|v| decode(record.key, v).map_err(|e| e.to_string()));
        assert_eq!(back.map(|r| r.version), Ok(u64::MAX - 1));
    }

    #[test]
    fn truncated_or_foreign_values_are_corrupt() {
        let record = sample().with_owner("ann");
        let value = encode(&record, 1).unwrap_or_default();
        for bad in [
            &value[..10],
            &value[..HEADER_LEN + 1],
            b"plain string value here, not ours".as_slice(),
        ] {
            assert!(
                matches!(decode(record.key, bad.to_vec()), Err(Error::Corrupt(_))),
                "{bad:?} must be corrupt"
            );
        }
    }
}
