//! The blocking core: each operation on one key, done under the key's lock where the contract
//! needs it, with files written and fsynced before the lock is taken so it covers only the
//! checks and the rename. The owner index is in [`crate::owners`], scans and the sweep in
//! [`crate::upkeep`].

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use session_core::{Error, Record, Result, SessionKey, Timestamp};
use tokio::sync::Semaphore;

use crate::error::{Context, FileError, STORE};
use crate::format::{self, Bad, Caps, HEADER_LEN, Header};
use crate::fsio::{Locks, TempFile, is_not_found, make_dir_all, remove_file, sync_dir};
use crate::layout::Layout;
use crate::peek::{Depth, Found, Ident, Peek, ident, peek, unsupported};

/// The store's state and its blocking operations, shared by every handle and the sweep.
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) locks: Locks,
    pub(crate) max_data_len: Option<usize>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) concurrency: usize,
    pub(crate) stale_temp_age: Duration,
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
        Err(e) => Err(FileError::new("rename", to, e).into()),
    }
}

impl Inner {
    pub(crate) fn peek(&self, path: &Path, depth: Depth) -> Result<Peek> {
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
    pub(crate) async fn run<T, F>(self: &Arc<Self>, op: F) -> Result<T>
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
    pub(crate) fn bad(
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
    pub(crate) fn bad_in_scan(
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

    pub(crate) fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        let path = self.layout.record_path(key);
        match self.peek(&path, Depth::Whole)? {
            Peek::Missing => Ok(None),
            Peek::Bad(bad, id) => self.bad(key, &path, bad, id, false).map(|()| None),
            Peek::Found(found) if found.header.live(now) => Ok(Some(found.record(*key))),
            Peek::Found(_) => Ok(None),
        }
    }

    pub(crate) fn exists(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now();
        let path = self.layout.record_path(key);
        match self.peek(&path, Depth::Header)? {
            Peek::Missing => Ok(false),
            Peek::Bad(bad, id) => self.bad(key, &path, bad, id, false).map(|()| false),
            Peek::Found(found) => Ok(found.header.live(now)),
        }
    }

    pub(crate) fn create(&self, record: &Record) -> Result<()> {
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

    pub(crate) fn save(&self, record: &Record) -> Result<u64> {
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

    pub(crate) fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
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
    pub(crate) fn delete_locked(&self, key: &SessionKey, now: Timestamp) -> Result<(bool, bool)> {
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

    pub(crate) fn delete(&self, key: &SessionKey) -> Result<bool> {
        let (live, removed) = {
            let _lock = self.locks.lock(key)?;
            self.delete_locked(key, Timestamp::now())?
        };
        if removed {
            sync_dir(&self.layout.shard_dir(key))?;
        }
        Ok(live)
    }

    pub(crate) fn rotate(&self, old: &SessionKey, new: &SessionKey) -> Result<()> {
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
}
