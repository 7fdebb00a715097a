//! How the store opens its files: private modes (directory 0700, files 0600) whatever the
//! process umask, and never through a symlink planted at one of its names.
//!
//! Session data and owner ids are secrets, so nothing the store creates is readable by other
//! users; `O_NOFOLLOW` on every open (and `O_EXCL` on temp files) means a link planted in the
//! directory can neither redirect a write (truncating or appending to another file) nor feed
//! replay a foreign file.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

fn nofollow() -> i32 {
    // The flag is a small positive constant; the cast cannot wrap.
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Whether `error` is what `O_NOFOLLOW` returns for a symlink (`ELOOP`).
pub(crate) fn is_symlink_error(error: &io::Error) -> bool {
    error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Turns the bare `ELOOP` of a refused symlink into an error that names the path.
fn explain(path: &Path, error: io::Error) -> io::Error {
    if is_symlink_error(&error) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; the session store never follows one",
                path.display()
            ),
        )
    } else {
        error
    }
}

/// Creates `dir` and any missing parents with mode 0700 and makes the new entry durable.
/// An existing directory is left as it is, with a warning when other users can read it.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    // The configured path itself may be a link an operator made: it is followed.
    match fs::metadata(dir) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "session directory is readable by other users; 0700 is recommended");
            }
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Opens (creating if missing) the lock file.
pub(crate) fn open_lock(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(path)
        .map_err(|e| explain(path, e))?;
    make_private(path, &file);
    Ok(file)
}

/// Opens a log segment for appending, creating it if missing (`create_new` for a segment that
/// must not exist yet, as on rotation).
pub(crate) fn open_segment(path: &Path, create_new: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(nofollow());
    if create_new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    let file = options.open(path).map_err(|e| explain(path, e))?;
    make_private(path, &file);
    Ok(file)
}

/// Opens a file for reading. A symlink fails with `ELOOP` (see [`is_symlink_error`]).
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)?;
    make_private(path, &file);
    Ok(file)
}

/// Opens an existing file for writing (to cut a torn tail off it).
pub(crate) fn open_write(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(nofollow())
        .open(path)
        .map_err(|e| explain(path, e))
}

/// Creates a temp file that did not exist (`O_EXCL`). Whatever sits at the name (a leftover
/// of a crash, or a planted link) is removed first: unlinking a symlink removes the link, not
/// its target.
pub(crate) fn create_temp(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(nofollow())
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// Makes a file written by an older build (created under the umask) private as well. Best
/// effort: a file that cannot be changed is still usable, so this only warns.
fn make_private(path: &Path, file: &File) {
    let result = file.metadata().and_then(|meta| {
        let mode = meta.permissions().mode();
        if mode & 0o077 == 0 {
            return Ok(());
        }
        file.set_permissions(Permissions::from_mode(mode & 0o700))
    });
    if let Err(error) = result {
        tracing::warn!(%error, path = %path.display(), "could not make a session file private (0600)");
    }
}

/// Makes renames and new files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
