//! Small filesystem helpers: durable temp files, directory fsync, opening without following
//! symlinks, and the striped advisory locks shared between processes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::FlockOperation;
use session_core::{Error, SessionKey};

use crate::error::{Context, FileError, STORE};
use crate::layout::TEMP_PREFIX;

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Creates `dir` and missing parents with mode 0700, then fsyncs each parent that gained an
/// entry, so the new directory survives a crash along with the file about to go in it.
pub(crate) fn make_dir_all(dir: &Path) -> Result<(), Error> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) if is_not_found(&e) => {
            if let Some(parent) = dir.parent() {
                make_dir_all(parent)?;
            }
            match DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(FileError::new("create directory", dir, e).into()),
            }
        }
        Err(e) => return Err(FileError::new("create directory", dir, e).into()),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes the directory's entries (a rename, link or unlink in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// `O_NOFOLLOW`: opening a symlink fails with `ELOOP` instead of opening its target.
fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Opens a file for reading without following a symlink at its last component, so a link
/// planted in the root can never make the store read outside it.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(no_follow())
        .open(path)
}

/// Creates a new file (mode 0600) for writing; fails if anything, a symlink included, is
/// already at `path` (`O_EXCL`, and `O_NOFOLLOW` in case a filesystem ignores the former for
/// links), so a link planted under a name the store is about to use is never followed.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(path)
}

/// Whether `err` is the `ELOOP` an `O_NOFOLLOW` open gives for a symlink.
pub(crate) fn is_symlink_refused(err: &io::Error) -> bool {
    err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Removes a file; a file already gone is fine.
pub(crate) fn remove_file(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(FileError::new("remove", path, e).into()),
    }
}

/// A fully written, fsynced temp file next to its target. Dropped without being published, it
/// removes itself, so a failed write (a full disk) leaves nothing behind.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Writes `bytes` to a new uniquely named file in `dir` and fsyncs it. Creates `dir` if
    /// it is missing.
    pub(crate) fn write(dir: &Path, key: &SessionKey, bytes: &[u8]) -> Result<Self, Error> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| Error::backend(STORE, io::Error::other(e.to_string())))?;
        let path = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            key.to_hex(),
            hex::encode(random)
        ));
        let mut file = match create_new(&path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => {
                make_dir_all(dir)?;
                create_new(&path).ctx("create", &path)?
            }
            Err(e) => return Err(FileError::new("create", &path, e).into()),
        };
        let temp = Self { path: Some(path) };
        let path = temp.path();
        file.write_all(bytes).ctx("write", path)?;
        // fdatasync also flushes the size, which is all the metadata a reader needs.
        file.sync_data().ctx("fsync", path)?;
        Ok(temp)
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Publishes the file at `target`, replacing whatever is there, atomically.
    pub(crate) fn rename_to(mut self, target: &Path) -> Result<(), Error> {
        let from = self.path.take().unwrap_or_default();
        match fs::rename(&from, target) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.path = Some(from);
                Err(FileError::new("rename", target, e).into())
            }
        }
    }

    /// Publishes the file at `target` only if nothing is there (`link` fails on an existing
    /// name, in every process). Returns `false`, publishing nothing, if `target` exists.
    pub(crate) fn link_new(self, target: &Path) -> Result<bool, Error> {
        match fs::hard_link(self.path(), target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(FileError::new("link", target, e).into()),
        }
        // Dropping `self` removes the temp name; the data stays under `target`.
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = fs::remove_file(&path)
            && !is_not_found(&e)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a temp file; the sweep will retry");
        }
    }
}

/// Number of lock stripes: one lock file per first byte of the key.
const STRIPES: usize = 256;

/// Exclusive locks by key, shared between threads and processes.
///
/// Each stripe is a mutex (for threads of this process) around a lock file held with `flock`
/// (for other processes; `flock` locks belong to the open file, so two stores in one process
/// exclude each other too). A fixed set of lock files, rather than one per key, means lock
/// files are never deleted, which avoids the unlink-while-locked race of per-file locks; two
/// keys sharing a stripe only serialise with each other.
pub(crate) struct Locks {
    dir: PathBuf,
    stripes: Box<[Mutex<Option<File>>]>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A held stripe lock; dropping it releases the `flock` and then the mutex.
pub(crate) struct Held<'a> {
    guard: MutexGuard<'a, Option<File>>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.guard.as_ref() {
            let _ = rustix::fs::flock(file, FlockOperation::Unlock);
        }
    }
}

impl Locks {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            stripes: (0..STRIPES).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn stripe(key: &SessionKey) -> usize {
        usize::from(key.as_bytes()[0]) % STRIPES
    }

    fn lock_stripe(&self, stripe: usize) -> Result<Held<'_>, Error> {
        let mut guard = self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let path = self.dir.join(hex::encode([stripe as u8]));
        if guard.is_none() {
            // Not following a symlink: a link planted at a lock's name would otherwise make
            // the store create (and lock) a file wherever it points. Refused, it fails every
            // operation on the stripe with an error naming the path, for an operator to look.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(no_follow())
                .open(&path)
                .ctx("open lock file", &path)?;
            *guard = Some(file);
        }
        if let Some(file) = guard.as_ref() {
            loop {
                match rustix::fs::flock(file, FlockOperation::LockExclusive) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(FileError::new("lock", &path, e.into()).into()),
                }
            }
        }
        Ok(Held { guard })
    }

    /// Locks the stripe of `key`.
    pub(crate) fn lock(&self, key: &SessionKey) -> Result<Held<'_>, Error> {
        self.lock_stripe(Self::stripe(key))
    }

    /// Locks the stripes of both keys, lower stripe first so two movers cannot deadlock (in
    /// this process or between processes); one lock when they share a stripe.
    pub(crate) fn lock_two(
        &self,
        a: &SessionKey,
        b: &SessionKey,
    ) -> Result<(Held<'_>, Option<Held<'_>>), Error> {
        let (sa, sb) = (Self::stripe(a), Self::stripe(b));
        if sa == sb {
            return Ok((self.lock_stripe(sa)?, None));
        }
        let first = self.lock_stripe(sa.min(sb))?;
        let second = self.lock_stripe(sa.max(sb))?;
        Ok((first, Some(second)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("outside");
        let link = dir.path().join(".tmp-planted");
        std::os::unix::fs::symlink(&target, &link).expect("plant a symlink");
        let err = create_new(&link).expect_err("a symlink must not be opened");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists(), "the symlink's target was created");
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_never_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("outside");
        std::os::unix::fs::symlink(&target, dir.path().join("00")).expect("plant a symlink");
        let locks = Locks::new(dir.path().to_owned());
        let err = match locks.lock(&SessionKey::from_bytes([0; 32])) {
            Ok(_) => panic!("a symlinked lock file must be refused"),
            Err(e) => e,
        };
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(!target.exists(), "the symlink's target was created");
        // Other stripes are unaffected.
        assert!(locks.lock(&SessionKey::from_bytes([1; 32])).is_ok());
    }
}
