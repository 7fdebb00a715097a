//! The store's errors: [`FileError`], the operation, path and OS error of a filesystem call
//! that failed, and how it maps to [`session_core::Error`].

use std::io;
use std::path::{Path, PathBuf};

use session_core::Error;

/// The store's name in errors and logs.
pub(crate) const STORE: &str = "files";

/// A filesystem operation that failed: what was done, to which path, and what the operating
/// system said. It is the `source` of the [`Error::Backend`] or [`Error::Unavailable`] the store
/// returns; [`FileError::io_error`] gives the OS error (e.g. to check for `ENOSPC`).
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FileError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl FileError {
    pub(crate) fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// What the store was doing (`"write"`, `"rename"`, …).
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The path it was doing it to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The operating system's error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }

    /// Whether the call may succeed if tried again: running out of file descriptors or
    /// memory, or an interrupted or timed-out call. Anything else (a full disk, a quota, a
    /// read-only or vanished filesystem, permissions) needs an operator.
    fn is_transient(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::OutOfMemory
        ) || matches!(
            self.source.raw_os_error(),
            Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error()
        )
    }
}

/// A failure that may pass (out of file descriptors or memory, interrupted, timed out) is
/// [`Error::Unavailable`], anything else [`Error::Backend`]; the [`FileError`] is the source
/// either way.
impl From<FileError> for Error {
    fn from(err: FileError) -> Self {
        if err.is_transient() {
            Error::unavailable(STORE, err)
        } else {
            Error::backend(STORE, err)
        }
    }
}

/// Extension to attach the operation and path to an `io::Result`.
pub(crate) trait Context<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, Error>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, Error> {
        self.map_err(|e| FileError::new(op, path, e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_failures_are_unavailable() {
        let err = |e: io::Error| Error::from(FileError::new("write", Path::new("/r/x"), e));
        for passing in [
            io::Error::from(io::ErrorKind::Interrupted),
            io::Error::from(io::ErrorKind::OutOfMemory),
            io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error()),
        ] {
            assert!(matches!(err(passing), Error::Unavailable { .. }));
        }
        for lasting in [
            io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            io::Error::from(io::ErrorKind::PermissionDenied),
            io::Error::from(io::ErrorKind::InvalidData),
        ] {
            assert!(matches!(err(lasting), Error::Backend { .. }));
        }
    }
}
