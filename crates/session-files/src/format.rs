//! The on-disk form of one session: a fixed header, then the owner bytes, then the data.
//!
//! ```text
//! offset size field
//!      0    4 magic "SESF"
//!      4    2 format version (1), little-endian like every field below
//!      6    2 flags: bit 0 = has an owner; other bits must be zero
//!      8    8 expires_at, unix millis (i64)
//!     16    8 created_at, unix millis (i64)
//!     24    8 version (u64)
//!     32    4 owner length in bytes (u32)
//!     36    8 data length in bytes (u64)
//!     44    4 CRC32 of the body (owner bytes then data)
//!     48    4 CRC32 of bytes 0..48
//!     52      owner bytes (UTF-8), then data
//! ```
//!
//! The header has its own checksum so expiry can be trusted after reading 52 bytes, without
//! reading the data; the file length must equal header + owner + data exactly, so a torn or
//! extended file is caught before the body checksum is even computed.

use std::fmt;

use session_core::{Bytes, Timestamp};

pub(crate) const HEADER_LEN: usize = 52;
const MAGIC: [u8; 4] = *b"SESF";
pub(crate) const FORMAT_VERSION: u16 = 1;
const FLAG_OWNER: u16 = 1;

pub use session_core::MAX_OWNER_LEN;

/// The largest lengths a reader accepts from a header: the store's data limit and
/// [`MAX_OWNER_LEN`]. A header claiming more is corrupt (or written under a larger limit) and
/// is refused before anything is allocated for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// `None`: no data limit, so a read is bounded only by the file's real length.
    pub(crate) data: Option<u64>,
}

impl Caps {
    pub(crate) fn check(self, header: &Header) -> Result<(), Bad> {
        if header.owner_len as usize > MAX_OWNER_LEN {
            return Err(Bad::Corrupt("owner length above the limit"));
        }
        if self.data.is_some_and(|limit| header.data_len > limit) {
            return Err(Bad::Corrupt("data length above the store's max_data_len"));
        }
        Ok(())
    }
}

/// The decoded fixed-size header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) expires_at: Timestamp,
    pub(crate) created_at: Timestamp,
    pub(crate) version: u64,
    pub(crate) has_owner: bool,
    pub(crate) owner_len: u32,
    pub(crate) data_len: u64,
    pub(crate) body_crc: u32,
}

impl Header {
    /// The exact file length this header describes, if it fits in a `u64`.
    pub(crate) fn file_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add(u64::from(self.owner_len))?
            .checked_add(self.data_len)
    }

    pub(crate) fn live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let flags = if self.has_owner { FLAG_OWNER } else { 0 };
        h[6..8].copy_from_slice(&flags.to_le_bytes());
        h[8..16].copy_from_slice(&self.expires_at.unix_millis().to_le_bytes());
        h[16..24].copy_from_slice(&self.created_at.unix_millis().to_le_bytes());
        h[24..32].copy_from_slice(&self.version.to_le_bytes());
        h[32..36].copy_from_slice(&self.owner_len.to_le_bytes());
        h[36..44].copy_from_slice(&self.data_len.to_le_bytes());
        h[44..48].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..48]);
        h[48..52].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, Bad> {
        if h[0..4] != MAGIC {
            return Err(Bad::Corrupt("bad magic: not a session file"));
        }
        let stored_crc = u32::from_le_bytes(field(h, 48));
        if crc32fast::hash(&h[..48]) != stored_crc {
            return Err(Bad::Corrupt("header checksum mismatch"));
        }
        let format = u16::from_le_bytes(field(h, 4));
        if format != FORMAT_VERSION {
            return Err(Bad::Unsupported(format));
        }
        let flags = u16::from_le_bytes(field(h, 6));
        if flags & !FLAG_OWNER != 0 {
            return Err(Bad::Corrupt("unknown header flags"));
        }
        let header = Self {
            expires_at: Timestamp::from_unix_millis(i64::from_le_bytes(field(h, 8))),
            created_at: Timestamp::from_unix_millis(i64::from_le_bytes(field(h, 16))),
            version: u64::from_le_bytes(field(h, 24)),
            has_owner: flags & FLAG_OWNER != 0,
            owner_len: u32::from_le_bytes(field(h, 32)),
            data_len: u64::from_le_bytes(field(h, 36)),
            body_crc: u32::from_le_bytes(field(h, 44)),
        };
        if !header.has_owner && header.owner_len != 0 {
            return Err(Bad::Corrupt("owner bytes without the owner flag"));
        }
        if header.file_len().is_none() {
            return Err(Bad::Corrupt("lengths overflow"));
        }
        Ok(header)
    }
}

fn field<const N: usize>(h: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[at..at + N]);
    out
}

/// Why a file's bytes are not a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Torn, truncated, altered or foreign: reported, then removed.
    Corrupt(&'static str),
    /// Written by a newer build (format version shown): kept, and reported as a backend error,
    /// since deleting data this build cannot read would lose another build's sessions.
    Unsupported(u16),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(why) => f.write_str(why),
            Self::Unsupported(v) => write!(
                f,
                "file format version {v} is not supported by this build (it reads version {FORMAT_VERSION})"
            ),
        }
    }
}

/// Builds the whole file for a record.
pub(crate) fn encode(
    expires_at: Timestamp,
    created_at: Timestamp,
    version: u64,
    owner: Option<&str>,
    data: &[u8],
) -> Vec<u8> {
    let owner_bytes = owner.map_or(&[][..], str::as_bytes);
    let mut crc = crc32fast::Hasher::new();
    crc.update(owner_bytes);
    crc.update(data);
    let header = Header {
        expires_at,
        created_at,
        version,
        has_owner: owner.is_some(),
        // Callers check the owner fits in a u32 first (`owner_len`).
        owner_len: u32::try_from(owner_bytes.len()).unwrap_or(u32::MAX),
        data_len: data.len() as u64,
        body_crc: crc.finalize(),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + owner_bytes.len() + data.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(owner_bytes);
    out.extend_from_slice(data);
    out
}

/// Checks the body of a whole file (header already decoded, length already checked) and
/// splits it into owner and data. `file` is the whole file, header included.
pub(crate) fn decode_body(header: &Header, file: Bytes) -> Result<(Option<String>, Bytes), Bad> {
    let owner_end = HEADER_LEN + header.owner_len as usize;
    if file.len() < owner_end {
        return Err(Bad::Corrupt("file shorter than its header says"));
    }
    if crc32fast::hash(&file[HEADER_LEN..]) != header.body_crc {
        return Err(Bad::Corrupt("body checksum mismatch"));
    }
    let owner = decode_owner(header, &file[HEADER_LEN..owner_end])?;
    Ok((owner, file.slice(owner_end..)))
}

/// Reads the owner bytes without checking the body checksum (used where only the owner index
/// needs the owner; loads always check the checksum).
pub(crate) fn decode_owner(header: &Header, bytes: &[u8]) -> Result<Option<String>, Bad> {
    if !header.has_owner {
        return Ok(None);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Some(s.to_owned())),
        Err(_) => Err(Bad::Corrupt("owner is not UTF-8")),
    }
}

/// Refuses an owner longer than [`MAX_OWNER_LEN`] before anything is written.
pub(crate) fn check_owner(owner: Option<&str>) -> session_core::Result<()> {
    match owner {
        Some(o) if o.len() > MAX_OWNER_LEN => Err(session_core::Error::TooLarge {
            size: o.len(),
            limit: MAX_OWNER_LEN,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(owner: Option<&str>) -> Vec<u8> {
        encode(
            Timestamp::from_unix_millis(1_700_000_000_123),
            Timestamp::from_unix_millis(-5),
            u64::MAX - 1,
            owner,
            b"payload",
        )
    }

    fn header_of(file: &[u8]) -> Result<Header, Bad> {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&file[..HEADER_LEN]);
        Header::decode(&h)
    }

    #[test]
    fn round_trips_every_field() {
        for owner in [None, Some(""), Some("Zoë 👩‍💻")] {
            let file = sample(owner);
            let header = header_of(&file).expect("a fresh header decodes");
            assert_eq!(header.expires_at.unix_millis(), 1_700_000_000_123);
            assert_eq!(header.created_at.unix_millis(), -5);
            assert_eq!(header.version, u64::MAX - 1);
            assert_eq!(header.file_len(), Some(file.len() as u64));
            let (o, data) = decode_body(&header, Bytes::from(file)).expect("a fresh body decodes");
            assert_eq!(o.as_deref(), owner);
            assert_eq!(&data[..], b"payload");
        }
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let file = sample(Some("ann"));
        for byte in 0..file.len() {
            for bit in 0..8 {
                let mut bad = file.clone();
                bad[byte] ^= 1 << bit;
                let caught = match header_of(&bad) {
                    Err(_) => true,
                    Ok(h) => {
                        h.file_len() != Some(bad.len() as u64)
                            || decode_body(&h, Bytes::from(bad)).is_err()
                    }
                };
                assert!(caught, "flipping bit {bit} of byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn lengths_above_the_caps_are_corrupt() {
        let file = encode(
            Timestamp::from_unix_millis(1),
            Timestamp::from_unix_millis(0),
            1,
            Some(&"o".repeat(MAX_OWNER_LEN)),
            &[7u8; 100],
        );
        let header = header_of(&file).expect("decodes");
        assert_eq!(Caps { data: Some(100) }.check(&header), Ok(()));
        assert_eq!(Caps { data: None }.check(&header), Ok(()));
        assert!(matches!(
            Caps { data: Some(99) }.check(&header),
            Err(Bad::Corrupt(_))
        ));
        let long_owner = Header {
            owner_len: MAX_OWNER_LEN as u32 + 1,
            ..header
        };
        assert!(matches!(
            Caps { data: None }.check(&long_owner),
            Err(Bad::Corrupt(_))
        ));
    }

    #[test]
    fn newer_format_is_unsupported_not_corrupt() {
        let mut file = sample(None);
        file[4] = 2;
        let crc = crc32fast::hash(&file[..48]);
        file[48..52].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(header_of(&file), Err(Bad::Unsupported(2)));
    }
}
