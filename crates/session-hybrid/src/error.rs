//! This store's failures, classified once by [`From`] into the session layer's [`Error`]
//! categories, so every operation maps them the same way.

use std::io;
use std::path::PathBuf;

use session_core::Error;

use crate::health::{BacklogFull, DiskError};

/// The name every error of this store carries.
pub(crate) const STORE: &str = "hybrid";

/// What went wrong, before it becomes an [`Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum HybridError {
    /// Opening, reading or writing the directory failed (while opening the store).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Writing the log or a snapshot failed (the flusher's or the compaction's error).
    #[error(transparent)]
    Disk(DiskError),
    /// The log backlog is at its bound and cannot be written (see [`BacklogFull`]).
    #[error(transparent)]
    Backlog(BacklogFull),
    /// Another open store holds the directory's lock.
    #[error("session directory {} is in use by another open store", .0.display())]
    InUse(PathBuf),
    /// The store was closed before the call.
    #[error("the store is closed")]
    Closed,
    /// The store was closed while a call waited for its change to be flushed.
    #[error("the store was closed before this change reached its log")]
    ClosedBeforeFlush,
    /// The store was closed while a call waited for a compaction.
    #[error("the store was closed before the compaction finished")]
    ClosedBeforeCompaction,
}

impl From<DiskError> for HybridError {
    fn from(error: DiskError) -> Self {
        Self::Disk(error)
    }
}

impl From<HybridError> for Error {
    /// A directory held by another store is [`Error::Config`] (two stores on one directory
    /// is a deployment mistake, not a fault to retry); a full backlog is
    /// [`Error::Unavailable`] with the [`BacklogFull`] as its source (nothing was applied;
    /// later may work); everything else is [`Error::Backend`], with the I/O or disk error as
    /// its source.
    fn from(error: HybridError) -> Self {
        match error {
            HybridError::InUse(_) => Error::Config(error.to_string().into()),
            HybridError::Io(e) => Error::backend(STORE, e),
            HybridError::Disk(e) => Error::backend(STORE, e),
            HybridError::Backlog(e) => Error::unavailable(STORE, e),
            other => Error::backend(STORE, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind lands in the category its doc promises, with the original error as source.
    #[test]
    fn errors_map_to_their_categories() {
        let in_use = Error::from(HybridError::InUse(PathBuf::from("/srv/sessions")));
        assert!(
            matches!(&in_use, Error::Config(m) if m.contains("/srv/sessions") && m.contains("in use")),
            "{in_use:?}"
        );
        let io = Error::from(HybridError::from(io::Error::from(
            io::ErrorKind::PermissionDenied,
        )));
        match &io {
            Error::Backend { store, source } => {
                assert_eq!(*store, STORE);
                assert_eq!(
                    source.downcast_ref::<io::Error>().map(io::Error::kind),
                    Some(io::ErrorKind::PermissionDenied)
                );
            }
            other => panic!("expected Backend, got {other:?}"),
        }
        let closed = Error::from(HybridError::Closed);
        assert!(
            matches!(&closed, Error::Backend { source, .. } if source.to_string() == "the store is closed"),
            "{closed:?}"
        );
    }
}
