//! The on-disk encoding shared by log segments and snapshots.
//!
//! Both files are a sequence of frames: `len: u32 LE`, `crc: u32 LE`, `payload: [u8; len]`,
//! where `crc` is the CRC-32 of the four length bytes followed by the payload, so a corrupt
//! length is caught as surely as a corrupt payload. A payload starts with a one-byte tag.

use std::io::{self, Read};

use session_core::{Bytes, Record, SessionKey, Timestamp};
use session_memory::Change;

/// Bytes before each payload.
pub(crate) const FRAME_HEADER: usize = 8;

/// The largest payload beside the data and the owner: a move (tag, two keys, two timestamps,
/// version, owner length).
const MAX_FIXED_PAYLOAD: usize = 1 + 32 + 32 + 8 + 8 + 8 + 4;

/// The longest payload a store with this data limit writes (at most [`MAX_OWNER_LEN`] of
/// owner). Replay never reads a longer payload into memory, so a damaged or forged length
/// never sizes an allocation.
///
/// [`MAX_OWNER_LEN`]: crate::MAX_OWNER_LEN
pub(crate) fn max_payload(max_data_len: Option<usize>) -> u32 {
    max_data_len
        .and_then(|data| data.checked_add(MAX_FIXED_PAYLOAD + session_core::MAX_OWNER_LEN))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(u32::MAX)
}

const TAG_PUT: u8 = 1;
const TAG_TOUCH: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_MOVE: u8 = 4;
const TAG_SNAP_HEADER: u8 = 0x10;
const TAG_SNAP_END: u8 = 0x11;

const SNAP_MAGIC: &[u8; 8] = b"HYBSNAP\0";
const SNAP_FORMAT: u32 = 1;

/// An owner length of zero means "no owner"; any other value is the length plus one.
const NO_OWNER: u32 = 0;

/// One decoded log entry, borrowing its data and owner from the payload, so checking an
/// entry allocates nothing; [`RecordRef::to_record`] copies what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    Put(RecordRef<'a>),
    Touch {
        key: SessionKey,
        expires_at: Timestamp,
        version: u64,
        created_at: Timestamp,
    },
    Delete(SessionKey),
    Move {
        old: SessionKey,
        record: RecordRef<'a>,
    },
}

/// A record's state as a payload holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub(crate) key: SessionKey,
    pub(crate) data: &'a [u8],
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) version: u64,
    pub(crate) owner: Option<&'a str>,
}

impl RecordRef<'_> {
    /// The record, with its data copied into its own allocation (the payload buffer is
    /// reused for the next frame).
    pub(crate) fn to_record(self) -> Record {
        Record {
            key: self.key,
            data: Bytes::copy_from_slice(self.data),
            created_at: self.created_at,
            expires_at: self.expires_at,
            version: self.version,
            owner: self.owner.map(str::to_owned),
        }
    }
}

/// The payload of a delete of `key`.
pub(crate) fn delete_payload(key: &SessionKey) -> [u8; 33] {
    let mut p = [0u8; 33];
    p[0] = TAG_DELETE;
    p[1..].copy_from_slice(key.as_bytes());
    p
}

/// Appends one frame whose payload `write` produces.
fn frame(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    write(out);
    // Payloads are bounded by the store's size limit plus a few bytes, far below 4 GiB; a
    // larger one would be refused on replay rather than silently wrapped.
    let len = u32::try_from(out.len() - start - FRAME_HEADER).unwrap_or(u32::MAX);
    let len_bytes = len.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.finalize().to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.unix_millis().to_le_bytes());
}

/// The record state shared by `Put` and `Move`: timestamps, version, owner, then the data to
/// the end of the payload.
fn put_state(
    out: &mut Vec<u8>,
    created_at: Timestamp,
    expires_at: Timestamp,
    version: u64,
    owner: Option<&str>,
    data: &[u8],
) {
    put_time(out, created_at);
    put_time(out, expires_at);
    put_u64(out, version);
    match owner {
        None => put_u32(out, NO_OWNER),
        Some(owner) => {
            put_u32(out, u32::try_from(owner.len()).unwrap_or(u32::MAX - 1) + 1);
            out.extend_from_slice(owner.as_bytes());
        }
    }
    out.extend_from_slice(data);
}

/// Appends the frame of one change reported by the memory store.
pub(crate) fn encode_change(out: &mut Vec<u8>, change: &Change<'_>) {
    match *change {
        Change::Put {
            key,
            data,
            created_at,
            expires_at,
            version,
            owner,
        } => frame(out, |p| {
            p.push(TAG_PUT);
            p.extend_from_slice(key.as_bytes());
            put_state(p, created_at, expires_at, version, owner, data);
        }),
        Change::Touch {
            key,
            expires_at,
            version,
            created_at,
        } => frame(out, |p| {
            p.push(TAG_TOUCH);
            p.extend_from_slice(key.as_bytes());
            put_time(p, expires_at);
            put_u64(p, version);
            put_time(p, created_at);
        }),
        Change::Delete { key } => frame(out, |p| {
            p.push(TAG_DELETE);
            p.extend_from_slice(key.as_bytes());
        }),
        Change::Move {
            old,
            new,
            data,
            created_at,
            expires_at,
            version,
            owner,
        } => frame(out, |p| {
            p.push(TAG_MOVE);
            p.extend_from_slice(old.as_bytes());
            p.extend_from_slice(new.as_bytes());
            put_state(p, created_at, expires_at, version, owner, data);
        }),
        // `Change` is non-exhaustive, but this crate is built against the memory store of the
        // same workspace, whose every kind is matched above.
        _ => tracing::error!("session-hybrid cannot journal an unknown kind of change"),
    }
}

/// Appends a snapshot's opening frame, naming the log segment it precedes.
pub(crate) fn encode_snapshot_header(out: &mut Vec<u8>, segment: u64) {
    frame(out, |p| {
        p.push(TAG_SNAP_HEADER);
        p.extend_from_slice(SNAP_MAGIC);
        put_u32(p, SNAP_FORMAT);
        put_u64(p, segment);
    });
}

/// Appends a snapshot's closing frame: without it (or with the wrong count) the snapshot is
/// incomplete and refused.
pub(crate) fn encode_snapshot_end(out: &mut Vec<u8>, count: u64) {
    frame(out, |p| {
        p.push(TAG_SNAP_END);
        put_u64(p, count);
    });
}

/// A bounds-checked reader over one payload: every getter fails instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    fn time(&mut self) -> Option<Timestamp> {
        Some(Timestamp::from_unix_millis(i64::from_le_bytes(
            self.array()?,
        )))
    }

    fn key(&mut self) -> Option<SessionKey> {
        Some(SessionKey::from_bytes(self.array()?))
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }

    fn state(&mut self, key: SessionKey) -> Option<RecordRef<'a>> {
        let created_at = self.time()?;
        let expires_at = self.time()?;
        let version = self.u64()?;
        let owner = match self.u32()? {
            NO_OWNER => None,
            len => {
                let bytes = self.take(usize::try_from(len - 1).ok()?)?;
                Some(std::str::from_utf8(bytes).ok()?)
            }
        };
        let data = std::mem::take(&mut self.0);
        Some(RecordRef {
            key,
            data,
            created_at,
            expires_at,
            version,
            owner,
        })
    }
}

/// Decodes a log payload; `None` when it is not a well-formed entry.
pub(crate) fn decode_entry(payload: &[u8]) -> Option<Entry<'_>> {
    let mut c = Cursor(payload);
    let entry = match c.u8()? {
        TAG_PUT => {
            let key = c.key()?;
            Entry::Put(c.state(key)?)
        }
        TAG_TOUCH => Entry::Touch {
            key: c.key()?,
            expires_at: c.time()?,
            version: c.u64()?,
            created_at: c.time()?,
        },
        TAG_DELETE => Entry::Delete(c.key()?),
        TAG_MOVE => {
            let old = c.key()?;
            let new = c.key()?;
            Entry::Move {
                old,
                record: c.state(new)?,
            }
        }
        _ => return None,
    };
    c.end()?;
    Some(entry)
}

/// Decodes a snapshot's opening frame: the segment number it precedes.
pub(crate) fn decode_snapshot_header(payload: &[u8]) -> Option<u64> {
    let mut c = Cursor(payload);
    (c.u8()? == TAG_SNAP_HEADER).then_some(())?;
    (&c.array::<8>()? == SNAP_MAGIC).then_some(())?;
    (c.u32()? == SNAP_FORMAT).then_some(())?;
    let segment = c.u64()?;
    c.end()?;
    Some(segment)
}

/// Decodes a snapshot's closing frame: its record count. `None` for any other frame.
pub(crate) fn decode_snapshot_end(payload: &[u8]) -> Option<u64> {
    let mut c = Cursor(payload);
    (c.u8()? == TAG_SNAP_END).then_some(())?;
    let count = c.u64()?;
    c.end()?;
    Some(count)
}

/// What reading the next frame found.
#[derive(Debug)]
pub(crate) enum Next {
    /// A whole frame with a valid checksum; its payload is in the reader's buffer.
    Frame,
    /// A whole frame with a valid checksum whose payload is longer than the limit (written
    /// under a larger `max_data_len`): checked in pieces, never read into memory whole. The
    /// reader's buffer holds its first [`OVERSIZED_PREFIX`] bytes: the tag and the keys.
    Oversized,
    /// The file ended exactly at a frame boundary.
    End,
    /// The file ended inside a frame: a write cut short.
    Torn,
    /// A whole frame whose checksum or length is wrong.
    Corrupt,
}

/// How much of an oversized payload is kept: the tag and up to two keys.
pub(crate) const OVERSIZED_PREFIX: usize = 1 + 32 + 32;

/// Reads frames one at a time from a file of known length, reusing one payload buffer.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    inner: R,
    remaining: u64,
    /// The longest payload read into memory (see [`max_payload`]).
    max_payload: u32,
    /// Offset of the end of the last good frame.
    pub(crate) good: u64,
    /// Offset of the start of the frame read last.
    pub(crate) start: u64,
    pub(crate) payload: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(inner: R, len: u64, max_payload: u32) -> Self {
        Self {
            inner,
            remaining: len,
            max_payload,
            good: 0,
            start: 0,
            payload: Vec::new(),
        }
    }

    pub(crate) fn next_frame(&mut self) -> io::Result<Next> {
        self.start = self.good;
        if self.remaining == 0 {
            return Ok(Next::End);
        }
        if self.remaining < FRAME_HEADER as u64 {
            return Ok(Next::Torn);
        }
        let mut header = [0u8; FRAME_HEADER];
        self.inner.read_exact(&mut header)?;
        self.remaining -= FRAME_HEADER as u64;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if len == 0 {
            return Ok(Next::Corrupt);
        }
        if u64::from(len) > self.remaining {
            // A length past the end is a write cut short, unless no entry can be that long.
            return Ok(if len > self.max_payload {
                Next::Corrupt
            } else {
                Next::Torn
            });
        }
        if len > self.max_payload {
            return self.check_oversized(&header, len, crc);
        }
        let len = len as usize;
        self.payload.clear();
        // `read_to_end` fills the reused buffer's spare capacity without zeroing it first.
        (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut self.payload)?;
        if self.payload.len() != len {
            // The file shrank while being read.
            return Ok(Next::Torn);
        }
        self.remaining -= len as u64;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[..4]);
        hasher.update(&self.payload);
        if hasher.finalize() != crc {
            return Ok(Next::Corrupt);
        }
        self.good += (FRAME_HEADER + len) as u64;
        Ok(Next::Frame)
    }

    /// Checksums a payload above the limit through a small fixed buffer, keeping its prefix.
    fn check_oversized(&mut self, header: &[u8; 8], len: u32, crc: u32) -> io::Result<Next> {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[..4]);
        self.payload.clear();
        let mut buf = [0u8; 8192];
        let mut left = u64::from(len);
        while left > 0 {
            let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            let got = match self.inner.read(&mut buf[..want]) {
                Ok(0) => return Ok(Next::Torn),
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..got]);
            let keep = (OVERSIZED_PREFIX - self.payload.len()).min(got);
            self.payload.extend_from_slice(&buf[..keep]);
            left -= got as u64;
        }
        self.remaining -= u64::from(len);
        if hasher.finalize() != crc {
            return Ok(Next::Corrupt);
        }
        self.good += FRAME_HEADER as u64 + u64::from(len);
        Ok(Next::Oversized)
    }
}

/// The keys an oversized entry's prefix names: a put's key, or a move's old and new keys.
/// `None` when the prefix is no put or move (nothing else can be that long).
pub(crate) fn oversized_keys(prefix: &[u8]) -> Option<(SessionKey, Option<SessionKey>)> {
    let mut c = Cursor(prefix);
    match c.u8()? {
        TAG_PUT => Some((c.key()?, None)),
        TAG_MOVE => Some((c.key()?, Some(c.key()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::from_bytes([b; 32])
    }

    /// An entry with its data copied out, to compare after the read buffer is reused.
    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Put(Record),
        Touch {
            key: SessionKey,
            expires_at: Timestamp,
            version: u64,
            created_at: Timestamp,
        },
        Delete(SessionKey),
        Move {
            old: SessionKey,
            record: Record,
        },
    }

    fn owned(entry: Entry<'_>) -> Owned {
        match entry {
            Entry::Put(r) => Owned::Put(r.to_record()),
            Entry::Touch {
                key,
                expires_at,
                version,
                created_at,
            } => Owned::Touch {
                key,
                expires_at,
                version,
                created_at,
            },
            Entry::Delete(key) => Owned::Delete(key),
            Entry::Move { old, record } => Owned::Move {
                old,
                record: record.to_record(),
            },
        }
    }

    fn read_all(bytes: &[u8]) -> (Vec<Option<Owned>>, Next) {
        let mut r = FrameReader::new(bytes, bytes.len() as u64, u32::MAX);
        let mut out = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Next::Frame) => out.push(decode_entry(&r.payload).map(owned)),
                Ok(other) => return (out, other),
                Err(e) => panic!("reading from a slice failed: {e}"),
            }
        }
    }

    #[test]
    fn every_change_round_trips() {
        let data = Bytes::from_static(b"\x00\xffdata");
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        let mut buf = Vec::new();
        encode_change(
            &mut buf,
            &Change::Put {
                key: &key(1),
                data: &data,
                created_at: t,
                expires_at: t,
                version: 7,
                owner: Some("ann"),
            },
        );
        encode_change(
            &mut buf,
            &Change::Touch {
                key: &key(1),
                expires_at: t,
                version: 7,
                created_at: t,
            },
        );
        encode_change(&mut buf, &Change::Delete { key: &key(2) });
        encode_change(
            &mut buf,
            &Change::Move {
                old: &key(1),
                new: &key(3),
                data: &data,
                created_at: t,
                expires_at: t,
                version: 7,
                owner: None,
            },
        );
        let (entries, end) = read_all(&buf);
        assert!(matches!(end, Next::End));
        let rec = |k, owner: Option<&str>| Record {
            key: key(k),
            data: data.clone(),
            created_at: t,
            expires_at: t,
            version: 7,
            owner: owner.map(str::to_owned),
        };
        assert_eq!(
            entries,
            vec![
                Some(Owned::Put(rec(1, Some("ann")))),
                Some(Owned::Touch {
                    key: key(1),
                    expires_at: t,
                    version: 7,
                    created_at: t
                }),
                Some(Owned::Delete(key(2))),
                Some(Owned::Move {
                    old: key(1),
                    record: rec(3, None)
                }),
            ]
        );
    }

    #[test]
    fn torn_and_corrupt_frames_are_told_apart() {
        let mut buf = Vec::new();
        encode_change(&mut buf, &Change::Delete { key: &key(1) });
        let one = buf.len();
        encode_change(&mut buf, &Change::Delete { key: &key(2) });
        let (entries, end) = read_all(&buf[..buf.len() - 1]);
        assert_eq!(entries.len(), 1);
        assert!(matches!(end, Next::Torn));
        let mut bad = buf.clone();
        bad[one + FRAME_HEADER + 3] ^= 0x40;
        let (entries, end) = read_all(&bad);
        assert_eq!(entries.len(), 1);
        assert!(matches!(end, Next::Corrupt));
        let mut bad_len = buf;
        bad_len[one] ^= 0x01;
        let (_, end) = read_all(&bad_len);
        assert!(matches!(end, Next::Corrupt | Next::Torn));
    }

    #[test]
    fn garbage_payloads_decode_to_none() {
        assert_eq!(decode_entry(&[]), None);
        assert_eq!(
            decode_entry(&delete_payload(&key(4))),
            Some(Entry::Delete(key(4)))
        );
        assert_eq!(decode_entry(&[TAG_DELETE, 1, 2]), None);
        assert_eq!(decode_entry(&[99; 40]), None);
        let mut p = vec![TAG_PUT];
        p.extend_from_slice(&[0; 32 + 24]);
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_entry(&p),
            None,
            "an owner longer than the payload is refused"
        );
    }
}
