//! Reading one session file: to the header, the owner or the whole, classified as missing,
//! bad (with the file's identity, so only that file is ever removed) or found.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use session_core::{Bytes, Error, Record, Result, SessionKey};

use crate::error::{Context, FileError};
use crate::format::{self, Bad, Caps, HEADER_LEN, Header};
use crate::fsio::{is_not_found, is_symlink_refused, open_read};

/// How much of a file to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// The header only: expiry, version, lengths.
    Header,
    /// The header and the owner (for the owner index).
    Owner,
    /// Everything, with the body checksum verified.
    Whole,
}

/// Identity of a file (device, inode), so a bad file is removed only if it is still the one
/// that was read, not a good one a writer put in its place meanwhile.
pub(crate) type Ident = (u64, u64);

/// A record file that passed its checks, read to the [`Depth`] asked for.
pub(crate) struct Found {
    pub(crate) header: Header,
    pub(crate) owner: Option<String>,
    /// The whole file (header included) at [`Depth::Whole`].
    pub(crate) file: Bytes,
    pub(crate) data: Bytes,
}

impl Found {
    pub(crate) fn record(self, key: SessionKey) -> Record {
        Record {
            key,
            data: self.data,
            created_at: self.header.created_at,
            expires_at: self.header.expires_at,
            version: self.header.version,
            owner: self.owner,
        }
    }
}

/// What [`peek`] found at a path.
pub(crate) enum Peek {
    Missing,
    Bad(Bad, Option<Ident>),
    Found(Found),
}

pub(crate) fn ident(meta: &fs::Metadata) -> Ident {
    (meta.dev(), meta.ino())
}

/// Reads the session file at `path` to `depth`, classifying it. I/O failures other than
/// "not there" are errors; bad contents are a [`Peek::Bad`], never an error or a panic.
///
/// Nothing is allocated for a length read from the header before the header has passed its
/// checksum, `caps` and the comparison with the file's real length, so a forged or torn
/// header can make the store read at most `max_data_len` plus the owner limit, never more.
pub(crate) fn peek(path: &Path, caps: Caps, depth: Depth) -> Result<Peek> {
    let mut file = match open_read(path) {
        Ok(f) => f,
        Err(e) if is_not_found(&e) => return Ok(Peek::Missing),
        Err(e) if is_symlink_refused(&e) => {
            let id = fs::symlink_metadata(path).ok().map(|m| ident(&m));
            return Ok(Peek::Bad(Bad::Corrupt("a symlink, not a session file"), id));
        }
        Err(e) => return Err(FileError::new("open", path, e).into()),
    };
    let meta = file.metadata().ctx("stat", path)?;
    let id = Some(ident(&meta));
    if !meta.is_file() {
        return Ok(Peek::Bad(Bad::Corrupt("not a regular file"), id));
    }
    let len = meta.len();
    if len < HEADER_LEN as u64 {
        return Ok(Peek::Bad(
            Bad::Corrupt("shorter than a header: torn or truncated"),
            id,
        ));
    }
    let mut head = [0u8; HEADER_LEN];
    match file.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Peek::Bad(
                Bad::Corrupt("shorter than a header: torn or truncated"),
                id,
            ));
        }
        Err(e) => return Err(FileError::new("read", path, e).into()),
    }
    let header = match Header::decode(&head).and_then(|h| caps.check(&h).map(|()| h)) {
        Ok(h) => h,
        Err(bad) => return Ok(Peek::Bad(bad, id)),
    };
    if header.file_len() != Some(len) {
        return Ok(Peek::Bad(
            Bad::Corrupt("length differs from the header: torn, truncated or extended"),
            id,
        ));
    }
    let mut found = Found {
        header,
        owner: None,
        file: Bytes::new(),
        data: Bytes::new(),
    };
    match depth {
        Depth::Header => {}
        Depth::Owner => {
            let mut owner = Vec::new();
            reserve(&mut owner, u64::from(header.owner_len), path)?;
            owner.resize(header.owner_len as usize, 0);
            file.read_exact(&mut owner).ctx("read", path)?;
            match format::decode_owner(&header, &owner) {
                Ok(o) => found.owner = o,
                Err(bad) => return Ok(Peek::Bad(bad, id)),
            }
        }
        Depth::Whole => {
            let body_len = len - HEADER_LEN as u64;
            let mut buf = Vec::new();
            reserve(&mut buf, len, path)?;
            buf.extend_from_slice(&head);
            // Bounded by the length already checked, plus one byte to notice a file that grew.
            (&mut file)
                .take(body_len + 1)
                .read_to_end(&mut buf)
                .ctx("read", path)?;
            if buf.len() as u64 != len {
                return Ok(Peek::Bad(Bad::Corrupt("length changed while reading"), id));
            }
            let buf = Bytes::from(buf);
            match format::decode_body(&header, buf.clone()) {
                Ok((owner, data)) => {
                    found.owner = owner;
                    found.data = data;
                    found.file = buf;
                }
                Err(bad) => return Ok(Peek::Bad(bad, id)),
            }
        }
    }
    Ok(Peek::Found(found))
}

/// Makes room for `len` bytes, failing with `Unavailable` (out of memory) instead of aborting
/// the process when even a length that passed every check cannot be had, e.g. with no data
/// limit configured.
fn reserve(buf: &mut Vec<u8>, len: u64, path: &Path) -> Result<()> {
    usize::try_from(len)
        .ok()
        .and_then(|n| buf.try_reserve_exact(n).ok())
        .ok_or_else(|| {
            FileError::new(
                "allocate a read buffer for",
                path,
                io::Error::from(io::ErrorKind::OutOfMemory),
            )
            .into()
        })
}

/// The error for a file a newer build wrote: kept on disk, and a [`Error::Backend`] for the
/// caller (invalid data is never transient).
pub(crate) fn unsupported(path: &Path, bad: Bad) -> Error {
    FileError::new(
        "read",
        path,
        io::Error::new(io::ErrorKind::InvalidData, bad.to_string()),
    )
    .into()
}
