//! The file-per-session store: the async front (a semaphore and `spawn_blocking`) over a
//! blocking core that does every operation under the key's lock where the contract needs it.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use session_core::{
    Bytes, CleanupTask, Error, Record, Result, SessionKey, SessionStore, Timestamp, async_trait,
    check_data_len,
};
use tokio::sync::Semaphore;

use crate::format::{self, Bad, Caps, HEADER_LEN, Header, MAX_OWNER_LEN};
use crate::fsio::{
    Context, FileError, Locks, STORE, TempFile, create_new, fail, is_not_found, is_symlink_refused,
    make_dir_all, open_read, remove_file, sync_dir,
};
use crate::layout::{Layout, TEMP_PREFIX, is_shard_name, key_in_shard};

/// Default largest session payload: 1 MiB, the same as the memory store, so moving between
/// the two never changes what is accepted. Every load reads the whole file into memory, so
/// some bound is needed; sessions near it are almost always a bug (a cache kept in the
/// session), and a smaller limit can be set with [`FileStoreBuilder::max_data_len`].
pub const DEFAULT_MAX_DATA_LEN: usize = 1 << 20;

/// Default number of file operations running at once (see [`FileStoreBuilder::concurrency`]).
///
/// Most of a write's time is waiting on `fsync`, not CPU, and a journaling filesystem commits
/// concurrent `fsync`s together, so more writes in flight means more writes per second (the
/// project's BENCHMARKS.md compares bounds). Each operation in flight holds one thread of
/// Tokio's blocking pool (512 by default).
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Default interval of the background sweep: 5 minutes, longer than the memory store's
/// minute because a sweep here reads the header of every session file.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// Default age after which a temp file is taken to be left by a crash and swept: one minute,
/// far above the time any single write takes.
pub const DEFAULT_STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// A [`SessionStore`] keeping one checksummed file per session under a root directory.
///
/// Cloning gives another handle to the same store. See the [crate docs](crate) for the layout,
/// the file format, durability, and what each operation costs.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
    cleanup: Arc<Mutex<Option<CleanupTask>>>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.inner.layout.root())
            .field("max_data_len", &self.inner.max_data_len)
            .field("concurrency", &self.inner.concurrency)
            .finish_non_exhaustive()
    }
}

/// Configures a [`FileStore`]; made by [`FileStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct FileStoreBuilder {
    root: PathBuf,
    max_data_len: Option<usize>,
    concurrency: usize,
    cleanup_interval: Duration,
    stale_temp_age: Duration,
}

impl FileStoreBuilder {
    /// The largest payload accepted, in bytes (default [`DEFAULT_MAX_DATA_LEN`]); `None` for
    /// no limit.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = limit;
        self
    }

    /// How many file operations may run at once on Tokio's blocking pool (default
    /// [`DEFAULT_CONCURRENCY`]); further calls wait for a slot. Must be at least 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How often the background task sweeps expired sessions and stale temp files (default
    /// [`DEFAULT_CLEANUP_INTERVAL`]). Zero disables the task; expired sessions are still never
    /// returned, only kept until [`SessionStore::delete_expired`] runs.
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval;
        self
    }

    /// Age after which a sweep removes a temp file as left behind by a crash (default
    /// [`DEFAULT_STALE_TEMP_AGE`]). It must be longer than any write takes, since another
    /// process sharing the root may be writing that file right now.
    pub fn stale_temp_age(mut self, age: Duration) -> Self {
        self.stale_temp_age = age;
        self
    }

    /// Creates the root (mode 0700) if missing and opens the store on it, starting the
    /// cleanup task.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero concurrency, a root that is not a directory, a `locks` or
    /// `owners` directory that is a symlink, or a non-zero cleanup interval outside a Tokio
    /// runtime (a store opened there would never sweep); [`Error::Backend`] if the
    /// directories cannot be created.
    pub fn open(self) -> Result<FileStore> {
        if self.concurrency == 0 {
            return Err(Error::Config(
                "session-files: concurrency must be at least 1".into(),
            ));
        }
        let root = self.root;
        make_dir_all(&root)?;
        let meta = fs::metadata(&root).ctx("stat", &root)?;
        if !meta.is_dir() {
            return Err(Error::Config(
                format!("session-files: root {} is not a directory", root.display()).into(),
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(root = %root.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "session directory is readable by other users; 0700 is recommended");
        }
        let layout = Layout::new(root);
        for dir in [layout.owners_dir(), layout.locks_dir()] {
            make_dir_all(&dir)?;
            // A symlink here would send every lock file or owner marker wherever it points.
            if fs::symlink_metadata(&dir).ctx("stat", &dir)?.is_symlink() {
                return Err(Error::Config(
                    format!(
                        "session-files: {} is a symlink; the store's own directories must be real ones",
                        dir.display()
                    )
                    .into(),
                ));
            }
        }
        let inner = Arc::new(Inner {
            locks: Locks::new(layout.locks_dir()),
            layout,
            max_data_len: self.max_data_len,
            permits: Arc::new(Semaphore::new(self.concurrency)),
            concurrency: self.concurrency,
            stale_temp_age: self.stale_temp_age,
        });
        let cleanup = CleanupTask::spawn(
            STORE,
            self.cleanup_interval,
            Arc::downgrade(&inner),
            |inner: Arc<Inner>| async move { inner.run(|i| i.delete_expired(Timestamp::now())).await },
        )?;
        Ok(FileStore {
            inner,
            cleanup: Arc::new(Mutex::new(cleanup)),
        })
    }
}

impl FileStore {
    /// Opens a store on `root` with default settings, creating the directory if missing, and
    /// starts its sweep every [`DEFAULT_CLEANUP_INTERVAL`].
    ///
    /// # Errors
    /// As [`FileStoreBuilder::open`]; in particular [`Error::Config`] outside a Tokio runtime,
    /// where the sweep cannot run (open the store inside the runtime, or use the builder with
    /// a zero [`cleanup_interval`](FileStoreBuilder::cleanup_interval)).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::builder(root).open()
    }

    /// Starts configuring a store on `root`.
    pub fn builder(root: impl Into<PathBuf>) -> FileStoreBuilder {
        FileStoreBuilder {
            root: root.into(),
            max_data_len: Some(DEFAULT_MAX_DATA_LEN),
            concurrency: DEFAULT_CONCURRENCY,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            stale_temp_age: DEFAULT_STALE_TEMP_AGE,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// Stops the background cleanup task and waits for it to end. Idempotent.
    pub async fn stop_cleanup(&self) {
        let task = self
            .cleanup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.stop().await;
        }
    }
}

struct Inner {
    layout: Layout,
    locks: Locks,
    max_data_len: Option<usize>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    stale_temp_age: Duration,
}

/// How much of a file to read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// The header only: expiry, version, lengths.
    Header,
    /// The header and the owner (for the owner index).
    Owner,
    /// Everything, with the body checksum verified.
    Whole,
}

/// Identity of a file (device, inode), so a bad file is removed only if it is still the one
/// that was read, not a good one a writer put in its place meanwhile.
type Ident = (u64, u64);

struct Found {
    header: Header,
    owner: Option<String>,
    /// The whole file (header included) at [`Depth::Whole`].
    file: Bytes,
    data: Bytes,
}

impl Found {
    fn record(self, key: SessionKey) -> Record {
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

enum Peek {
    Missing,
    Bad(Bad, Option<Ident>),
    Found(Found),
}

fn ident(meta: &fs::Metadata) -> Ident {
    (meta.dev(), meta.ino())
}

/// Reads the session file at `path` to `depth`, classifying it. I/O failures other than
/// "not there" are errors; bad contents are a [`Peek::Bad`], never an error or a panic.
///
/// Nothing is allocated for a length read from the header before the header has passed its
/// checksum, `caps` and the comparison with the file's real length, so a forged or torn
/// header can make the store read at most `max_data_len` plus the owner limit, never more.
fn peek(path: &Path, caps: Caps, depth: Depth) -> Result<Peek> {
    let mut file = match open_read(path) {
        Ok(f) => f,
        Err(e) if is_not_found(&e) => return Ok(Peek::Missing),
        Err(e) if is_symlink_refused(&e) => {
            let id = fs::symlink_metadata(path).ok().map(|m| ident(&m));
            return Ok(Peek::Bad(Bad::Corrupt("a symlink, not a session file"), id));
        }
        Err(e) => return Err(fail("open", path, e)),
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
        Err(e) => return Err(fail("read", path, e)),
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
            fail(
                "allocate a read buffer for",
                path,
                io::Error::from(io::ErrorKind::OutOfMemory),
            )
        })
}

fn owner_len(record: &Record) -> Result<()> {
    match &record.owner {
        Some(o) if o.len() > MAX_OWNER_LEN => Err(Error::TooLarge {
            size: o.len(),
            limit: MAX_OWNER_LEN,
        }),
        _ => Ok(()),
    }
}

fn unsupported(path: &Path, bad: Bad) -> Error {
    Error::backend(
        STORE,
        FileError::from_parts(
            "read",
            path,
            io::Error::new(io::ErrorKind::InvalidData, bad.to_string()),
        ),
    )
}

/// The whole file of `found` with a new expiry: the body (and its checksum) is copied as it
/// is. The file is still rewritten whole, because patching the header in place could tear it.
fn retimed(found: &Found, expires_at: Timestamp) -> Vec<u8> {
    let header = Header {
        expires_at,
        ..found.header
    };
    let mut bytes = Vec::with_capacity(found.file.len());
    bytes.extend_from_slice(&header.encode());
    bytes.extend_from_slice(&found.file[HEADER_LEN..]);
    bytes
}

/// Renames `from` over `to`, creating `to`'s directory if it is missing.
fn rename_into(from: &Path, to: &Path, to_dir: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) && !to_dir.exists() => {
            make_dir_all(to_dir)?;
            fs::rename(from, to).ctx("rename", to)
        }
        Err(e) => Err(fail("rename", to, e)),
    }
}

impl Inner {
    fn peek(&self, path: &Path, depth: Depth) -> Result<Peek> {
        peek(
            path,
            Caps {
                data: self.max_data_len.map(|n| n as u64),
            },
            depth,
        )
    }

    /// Runs `op` on Tokio's blocking pool once one of the store's slots is free. The slot
    /// moves into the blocking task, so a caller that gives up waiting does not free it before
    /// the operation (which always runs to the end) is done.
    async fn run<T, F>(self: &Arc<Self>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| Error::unavailable(STORE, e))?;
        let inner = Arc::clone(self);
        match tokio::task::spawn_blocking(move || {
            let _permit = permit;
            op(&inner)
        })
        .await
        {
            Ok(result) => result,
            Err(e) => Err(Error::backend(STORE, e)),
        }
    }

    /// Deals with a file whose contents are not a session. A corrupt one is logged and, if it
    /// is still the same file, removed (taking the key's lock unless `held`); an unsupported
    /// one is kept and returned as an error.
    fn bad(
        &self,
        key: &SessionKey,
        path: &Path,
        bad: Bad,
        id: Option<Ident>,
        held: bool,
    ) -> Result<()> {
        let Bad::Corrupt(reason) = bad else {
            return Err(unsupported(path, bad));
        };
        tracing::warn!(path = %path.display(), reason, "corrupt session file: treated as absent and removed");
        let _lock = if held {
            None
        } else {
            Some(self.locks.lock(key)?)
        };
        let same = fs::symlink_metadata(path).ok().map(|m| ident(&m));
        if same.is_some()
            && same == id
            && let Err(e) = fs::remove_file(path)
            && !is_not_found(&e)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a corrupt session file");
        }
        Ok(())
    }

    /// As [`bad`](Self::bad) for scans: an unsupported file is logged and skipped, so one file
    /// from a newer build does not stop counting or sweeping the others.
    fn bad_in_scan(
        &self,
        key: &SessionKey,
        path: &Path,
        bad: Bad,
        id: Option<Ident>,
    ) -> Result<()> {
        match self.bad(key, path, bad, id, false) {
            Err(Error::Backend { source, .. }) if matches!(bad, Bad::Unsupported(_)) => {
                tracing::warn!(path = %path.display(), error = %source, "skipping a session file this build cannot read");
                Ok(())
            }
            other => other,
        }
    }

    /// Records `key` under `owner`. Called with the key's lock held, before the record that
    /// names the owner is published, so a listed owner never misses a session; the directory
    /// is fsynced so the marker survives a crash with the record.
    fn add_marker(&self, owner: &str, key: &SessionKey) -> Result<()> {
        let dir = self.layout.owner_dir(owner);
        let path = dir.join(key.to_hex());
        // `delete_by_owner` in another process may remove the emptied directory between our
        // mkdir and create; trying again is enough.
        for _ in 0..8 {
            match create_new(&path) {
                Ok(_) => return sync_dir(&dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) if is_not_found(&e) => make_dir_all(&dir)?,
                Err(e) => return Err(fail("create owner marker", &path, e)),
            }
        }
        Err(fail(
            "create owner marker",
            &path,
            io::Error::other("the owner directory kept disappearing"),
        ))
    }

    /// Drops `key` from `owner`'s index. A marker left behind (this failing, or a crash) is
    /// harmless: listing checks every record's owner and removes stale markers.
    fn remove_marker(&self, owner: &str, key: &SessionKey) {
        let path = self.layout.marker_path(owner, key);
        if let Err(e) = remove_file(&path) {
            tracing::warn!(error = %e, "could not remove an owner marker; listing will clean it");
        }
    }

    fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        let path = self.layout.record_path(key);
        match self.peek(&path, Depth::Whole)? {
            Peek::Missing => Ok(None),
            Peek::Bad(bad, id) => self.bad(key, &path, bad, id, false).map(|()| None),
            Peek::Found(found) if found.header.live(now) => Ok(Some(found.record(*key))),
            Peek::Found(_) => Ok(None),
        }
    }

    fn exists(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now();
        let path = self.layout.record_path(key);
        match self.peek(&path, Depth::Header)? {
            Peek::Missing => Ok(false),
            Peek::Bad(bad, id) => self.bad(key, &path, bad, id, false).map(|()| false),
            Peek::Found(found) => Ok(found.header.live(now)),
        }
    }

    fn create(&self, record: &Record) -> Result<()> {
        let key = &record.key;
        let dir = self.layout.shard_dir(key);
        let path = self.layout.record_path(key);
        // A live record seen without the lock is a valid answer (the key was taken at that
        // moment) and spares writing a file for nothing.
        if let Peek::Found(found) = self.peek(&path, Depth::Header)?
            && found.header.live(Timestamp::now())
        {
            return Err(Error::AlreadyExists);
        }
        let bytes = format::encode(
            record.expires_at,
            record.created_at,
            record.version,
            record.owner.as_deref(),
            &record.data,
        );
        // Written and fsynced before taking the lock, so the lock is held only for the checks
        // and the rename.
        let temp = TempFile::write(&dir, key, &bytes)?;
        {
            let _lock = self.locks.lock(key)?;
            let now = Timestamp::now();
            // `None`: nothing there. `Some(owner)`: an expired or corrupt file to replace.
            let stale: Option<Option<String>> = match self.peek(&path, Depth::Owner)? {
                Peek::Missing => None,
                Peek::Found(found) if found.header.live(now) => return Err(Error::AlreadyExists),
                Peek::Found(found) => Some(found.owner),
                Peek::Bad(bad @ Bad::Unsupported(_), _) => return Err(unsupported(&path, bad)),
                Peek::Bad(Bad::Corrupt(reason), _) => {
                    tracing::warn!(path = %path.display(), reason, "corrupt session file: replaced by a create");
                    Some(None)
                }
            };
            if let Some(owner) = &record.owner {
                self.add_marker(owner, key)?;
            }
            match &stale {
                // `link` refuses an existing name in every process, lock or not.
                None => {
                    if !temp.link_new(&path)? {
                        return Err(Error::AlreadyExists);
                    }
                }
                Some(_) => temp.rename_to(&path)?,
            }
            if let Some(Some(old)) = &stale
                && record.owner.as_ref() != Some(old)
            {
                self.remove_marker(old, key);
            }
        }
        // The directory fsync needs no lock: it only makes the rename durable, and the call
        // does not return (or report success) before it is done.
        sync_dir(&dir)
    }

    fn save(&self, record: &Record) -> Result<u64> {
        let key = &record.key;
        let dir = self.layout.shard_dir(key);
        let path = self.layout.record_path(key);
        let Some(version) = record.version.checked_add(1) else {
            return Err(Error::backend(
                STORE,
                "the session's version counter is exhausted",
            ));
        };
        let encode = |created_at| {
            format::encode(
                record.expires_at,
                created_at,
                version,
                record.owner.as_deref(),
                &record.data,
            )
        };
        // First without the lock: a failure seen here is a valid answer (the save failed at
        // that moment), and a likely success gets its file written and fsynced before the
        // lock is taken, so the lock covers only the re-check and the rename.
        let early = match self.peek(&path, Depth::Header)? {
            Peek::Found(found) if found.header.live(Timestamp::now()) => {
                if found.header.version != record.version {
                    return Err(Error::Conflict);
                }
                let created_at = found.header.created_at;
                Some((created_at, TempFile::write(&dir, key, &encode(created_at))?))
            }
            Peek::Found(_) | Peek::Missing => return Err(Error::NotFound),
            Peek::Bad(..) => None,
        };
        {
            let _lock = self.locks.lock(key)?;
            let now = Timestamp::now();
            let stored = match self.peek(&path, Depth::Owner)? {
                Peek::Found(found) if found.header.live(now) => found,
                Peek::Found(_) | Peek::Missing => return Err(Error::NotFound),
                Peek::Bad(bad, id) => {
                    self.bad(key, &path, bad, id, true)?;
                    return Err(Error::NotFound);
                }
            };
            if stored.header.version != record.version {
                return Err(Error::Conflict);
            }
            let temp = match early {
                Some((created_at, temp)) if created_at == stored.header.created_at => temp,
                // Deleted and created again at the same version meanwhile: keep the new
                // record's creation time.
                _ => TempFile::write(&dir, key, &encode(stored.header.created_at))?,
            };
            let owner_changed = stored.owner != record.owner;
            if owner_changed && let Some(owner) = &record.owner {
                self.add_marker(owner, key)?;
            }
            temp.rename_to(&path)?;
            if owner_changed && let Some(old) = &stored.owner {
                self.remove_marker(old, key);
            }
        }
        sync_dir(&dir)?;
        Ok(version)
    }

    fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let dir = self.layout.shard_dir(key);
        let path = self.layout.record_path(key);
        // As in `save`: check and write the new file first, then re-check under the lock
        // that the file is still the one read (same header, so same body) and rename.
        let early = match self.peek(&path, Depth::Whole)? {
            Peek::Found(found) if found.header.live(Timestamp::now()) => {
                if found.header.expires_at == expires_at {
                    return Ok(());
                }
                Some((
                    found.header,
                    TempFile::write(&dir, key, &retimed(&found, expires_at))?,
                ))
            }
            Peek::Found(_) | Peek::Missing => return Err(Error::NotFound),
            Peek::Bad(..) => None,
        };
        {
            let _lock = self.locks.lock(key)?;
            let now = Timestamp::now();
            let temp = match (early, self.peek(&path, Depth::Header)?) {
                (Some((read, temp)), Peek::Found(found))
                    if found.header == read && read.live(now) =>
                {
                    temp
                }
                // Changed since: read it again under the lock.
                _ => {
                    let stored = match self.peek(&path, Depth::Whole)? {
                        Peek::Found(found) if found.header.live(now) => found,
                        Peek::Found(_) | Peek::Missing => return Err(Error::NotFound),
                        Peek::Bad(bad, id) => {
                            self.bad(key, &path, bad, id, true)?;
                            return Err(Error::NotFound);
                        }
                    };
                    if stored.header.expires_at == expires_at {
                        return Ok(());
                    }
                    TempFile::write(&dir, key, &retimed(&stored, expires_at))?
                }
            };
            temp.rename_to(&path)?;
        }
        sync_dir(&dir)
    }

    /// Removes the record under `key` (the lock is held by the caller); returns whether it was
    /// live, and whether anything was removed (so the caller fsyncs the directory: a delete is
    /// a logout, which must not come back after a crash). Anything unreadable at the key is
    /// removed too: a logout must not be blocked by a file it cannot decode.
    fn delete_locked(&self, key: &SessionKey, now: Timestamp) -> Result<(bool, bool)> {
        let path = self.layout.record_path(key);
        let found = match self.peek(&path, Depth::Owner)? {
            Peek::Missing => return Ok((false, false)),
            Peek::Bad(bad, _) => {
                tracing::warn!(path = %path.display(), reason = %bad, "unreadable session file removed by a delete");
                return Ok((false, remove_file(&path)?));
            }
            Peek::Found(found) => found,
        };
        let removed = remove_file(&path)?;
        if let Some(owner) = &found.owner {
            self.remove_marker(owner, key);
        }
        Ok((found.header.live(now), removed))
    }

    fn delete(&self, key: &SessionKey) -> Result<bool> {
        let (live, removed) = {
            let _lock = self.locks.lock(key)?;
            self.delete_locked(key, Timestamp::now())?
        };
        if removed {
            sync_dir(&self.layout.shard_dir(key))?;
        }
        Ok(live)
    }

    fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let (old_dir, old_path) = (self.layout.shard_dir(old), self.layout.record_path(old));
        let (new_dir, new_path) = (self.layout.shard_dir(new), self.layout.record_path(new));
        {
            let _locks = self.locks.lock_two(old, new)?;
            let now = Timestamp::now();
            let moving = match self.peek(&old_path, Depth::Owner)? {
                Peek::Found(found) if found.header.live(now) => found,
                Peek::Found(_) | Peek::Missing => return Err(Error::NotFound),
                Peek::Bad(bad, id) => {
                    self.bad(old, &old_path, bad, id, true)?;
                    return Err(Error::NotFound);
                }
            };
            if old == new {
                return Err(Error::AlreadyExists);
            }
            let replaced: Option<String> = match self.peek(&new_path, Depth::Owner)? {
                Peek::Missing => None,
                Peek::Found(found) if found.header.live(now) => return Err(Error::AlreadyExists),
                Peek::Found(found) => found.owner,
                Peek::Bad(bad @ Bad::Unsupported(_), _) => return Err(unsupported(&new_path, bad)),
                Peek::Bad(Bad::Corrupt(reason), _) => {
                    tracing::warn!(path = %new_path.display(), reason, "corrupt session file: replaced by rotate");
                    None
                }
            };
            if let Some(owner) = &moving.owner {
                self.add_marker(owner, new)?;
            }
            // One rename, not link + unlink: between those two steps both keys would be live,
            // and the contract is that no reader ever sees both (or neither).
            rename_into(&old_path, &new_path, &new_dir)?;
            if let Some(owner) = &moving.owner {
                self.remove_marker(owner, old);
            }
            if let Some(stale) = replaced
                && moving.owner.as_ref() != Some(&stale)
            {
                self.remove_marker(&stale, new);
            }
        }
        sync_dir(&new_dir)?;
        if old_dir != new_dir {
            sync_dir(&old_dir)?;
        }
        Ok(())
    }

    /// Calls `f` for each session file and each temp file under the root, shard by shard.
    /// Names that are neither (and session names in the wrong shard) are left alone.
    fn scan(&self, mut f: impl FnMut(Entry<'_>) -> Result<()>) -> Result<()> {
        let root = self.layout.root();
        for outer in read_dir(root)? {
            let Some(outer_name) = shard_entry(&outer) else {
                continue;
            };
            let outer_path = outer.path();
            for inner in read_dir(&outer_path)? {
                let Some(inner_name) = shard_entry(&inner) else {
                    continue;
                };
                let inner_path = inner.path();
                for file in read_dir(&inner_path)? {
                    let name = file.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let path = file.path();
                    if name.starts_with(TEMP_PREFIX) {
                        f(Entry::Temp(&path))?;
                    } else if let Some(key) = key_in_shard(&outer_name, &inner_name, name) {
                        f(Entry::Record(key, &path))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Live and expired session counts, reading headers only.
    fn tally(&self, now: Timestamp, mut keys: Option<&mut Vec<SessionKey>>) -> Result<(u64, u64)> {
        let (mut live, mut expired) = (0, 0);
        self.scan(|entry| {
            let Entry::Record(key, path) = entry else {
                return Ok(());
            };
            match self.peek(path, Depth::Header)? {
                Peek::Missing => {}
                Peek::Bad(bad, id) => self.bad_in_scan(&key, path, bad, id)?,
                Peek::Found(found) if found.header.live(now) => {
                    live += 1;
                    if let Some(keys) = keys.as_deref_mut() {
                        keys.push(key);
                    }
                }
                Peek::Found(_) => expired += 1,
            }
            Ok(())
        })?;
        Ok((live, expired))
    }

    fn delete_expired(&self, now: Timestamp) -> Result<u64> {
        let mut removed = 0;
        let stale_before = SystemTime::now().checked_sub(self.stale_temp_age);
        self.scan(|entry| match entry {
            Entry::Temp(path) => {
                let old = fs::symlink_metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| stale_before.is_some_and(|limit| t <= limit));
                if old {
                    tracing::info!(path = %path.display(), "removing a temp file left by an interrupted write");
                    remove_file(path)?;
                }
                Ok(())
            }
            Entry::Record(key, path) => {
                match self.peek(path, Depth::Header)? {
                    Peek::Found(found) if !found.header.live(now) => {}
                    Peek::Found(_) | Peek::Missing => return Ok(()),
                    Peek::Bad(bad, id) => return self.bad_in_scan(&key, path, bad, id),
                }
                let _lock = self.locks.lock(&key)?;
                // Checked again under the lock: it may have been replaced by a live one.
                match self.peek(path, Depth::Owner)? {
                    Peek::Found(found) if !found.header.live(now) => {
                        // No directory fsync: an expired file that reappears after a crash is
                        // still expired, and the next sweep takes it.
                        if remove_file(path)? {
                            removed += 1;
                        }
                        if let Some(owner) = &found.owner {
                            self.remove_marker(owner, &key);
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
        })?;
        Ok(removed)
    }

    /// The keys in `owner`'s index (unverified).
    fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>> {
        let dir = self.layout.owner_dir(owner);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(fail("list", &dir, e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.ctx("list", &dir)?;
            if let Some(key) = entry.file_name().to_str().and_then(SessionKey::from_hex) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Removes `owner`'s marker for `key` if the record there is not `owner`'s any more.
    fn drop_stale_marker(&self, owner: &str, key: &SessionKey) -> Result<()> {
        let _lock = self.locks.lock(key)?;
        let keep = match self.peek(&self.layout.record_path(key), Depth::Owner)? {
            Peek::Found(found) => found.owner.as_deref() == Some(owner),
            Peek::Bad(Bad::Unsupported(_), _) => true,
            Peek::Missing | Peek::Bad(..) => false,
        };
        if !keep {
            self.remove_marker(owner, key);
        }
        Ok(())
    }

    fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let now = Timestamp::now();
        let mut out = Vec::new();
        for key in self.owner_keys(owner)? {
            let path = self.layout.record_path(&key);
            match self.peek(&path, Depth::Whole)? {
                Peek::Found(found) if found.owner.as_deref() == Some(owner) => {
                    if found.header.live(now) {
                        out.push(found.record(key));
                    }
                }
                Peek::Found(_) | Peek::Missing => self.drop_stale_marker(owner, &key)?,
                Peek::Bad(bad, id) => self.bad_in_scan(&key, &path, bad, id)?,
            }
        }
        Ok(out)
    }

    fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let now = Timestamp::now();
        let mut removed = 0;
        for key in self.owner_keys(owner)? {
            let _lock = self.locks.lock(&key)?;
            let path = self.layout.record_path(&key);
            let owned = match self.peek(&path, Depth::Owner)? {
                Peek::Found(found) => found.owner.as_deref() == Some(owner),
                Peek::Bad(Bad::Unsupported(_), _) => {
                    tracing::warn!(path = %path.display(), "skipping a session file this build cannot read");
                    continue;
                }
                Peek::Missing | Peek::Bad(..) => false,
            };
            if owned {
                let (live, gone) = self.delete_locked(&key, now)?;
                if gone {
                    sync_dir(&self.layout.shard_dir(&key))?;
                }
                if live {
                    removed += 1;
                }
            } else {
                self.remove_marker(owner, &key);
            }
        }
        // Not an error when another process has just added a marker to it.
        let _ = fs::remove_dir(self.layout.owner_dir(owner));
        Ok(removed)
    }
}

enum Entry<'a> {
    Record(SessionKey, &'a Path),
    Temp(&'a Path),
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(fail("list", dir, e)),
    };
    entries.map(|e| e.ctx("list", dir)).collect()
}

fn shard_entry(entry: &fs::DirEntry) -> Option<String> {
    let name = entry.file_name().into_string().ok()?;
    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
    (is_dir && is_shard_name(&name)).then_some(name)
}

#[async_trait]
impl SessionStore for FileStore {
    async fn create(&self, record: &Record) -> Result<()> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        owner_len(record)?;
        let record = record.clone();
        self.inner.run(move |i| i.create(&record)).await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let key = *key;
        self.inner.run(move |i| i.load(&key)).await
    }

    async fn save(&self, record: &Record) -> Result<u64> {
        check_data_len(self.inner.max_data_len, record.data.len())?;
        owner_len(record)?;
        let record = record.clone();
        self.inner.run(move |i| i.save(&record)).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.inner.run(move |i| i.delete(&key)).await
    }

    async fn delete_many(&self, keys: &[SessionKey]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let keys = keys.to_vec();
        self.inner
            .run(move |i| {
                let mut removed = 0;
                for key in &keys {
                    if i.delete(key)? {
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.inner.run(move |i| i.exists(&key)).await
    }

    async fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
        let (old, new) = (*old, *new);
        self.inner.run(move |i| i.rotate(&old, &new)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let key = *key;
        self.inner.run(move |i| i.touch(&key, expires_at)).await
    }

    async fn count(&self) -> Result<u64> {
        self.inner
            .run(|i| i.tally(Timestamp::now(), None).map(|(live, _)| live))
            .await
    }

    async fn count_expired(&self) -> Result<u64> {
        self.inner
            .run(|i| i.tally(Timestamp::now(), None).map(|(_, expired)| expired))
            .await
    }

    async fn delete_expired(&self) -> Result<u64> {
        self.inner.run(|i| i.delete_expired(Timestamp::now())).await
    }

    async fn list(&self) -> Result<Vec<SessionKey>> {
        self.inner
            .run(|i| {
                let mut keys = Vec::new();
                i.tally(Timestamp::now(), Some(&mut keys))?;
                Ok(keys)
            })
            .await
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
        let owner = owner.to_owned();
        self.inner.run(move |i| i.list_by_owner(&owner)).await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.inner.run(move |i| i.delete_by_owner(&owner)).await
    }

    fn max_data_len(&self) -> Option<usize> {
        self.inner.max_data_len
    }
}
