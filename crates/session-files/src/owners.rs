//! The owner index: an empty marker file per session under `owners/<hash>/`, written before
//! the record that names the owner is published, so a listed owner never misses a session.
//! Stale markers (a crash, a failed removal) are harmless: listing checks every record's owner.

use std::fs;
use std::io;

use session_core::{Record, Result, SessionKey, Timestamp};

use crate::blocking::Inner;
use crate::error::{Context, FileError};
use crate::format::Bad;
use crate::fsio::{create_new, is_not_found, make_dir_all, remove_file, sync_dir};
use crate::peek::{Depth, Peek};

impl Inner {
    /// Records `key` under `owner`. Called with the key's lock held, before the record that
    /// names the owner is published, so a listed owner never misses a session; the directory
    /// is fsynced so the marker survives a crash with the record.
    pub(crate) fn add_marker(&self, owner: &str, key: &SessionKey) -> Result<()> {
        let dir = self.layout.owner_dir(owner);
        let path = dir.join(key.to_hex());
        // `delete_by_owner` in another process may remove the emptied directory between our
        // mkdir and create; trying again is enough.
        for _ in 0..8 {
            match create_new(&path) {
                Ok(_) => return sync_dir(&dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) if is_not_found(&e) => make_dir_all(&dir)?,
                Err(e) => return Err(FileError::new("create owner marker", &path, e).into()),
            }
        }
        Err(FileError::new(
            "create owner marker",
            &path,
            io::Error::other("the owner directory kept disappearing"),
        )
        .into())
    }

    /// Drops `key` from `owner`'s index. A marker left behind (this failing, or a crash) is
    /// harmless: listing checks every record's owner and removes stale markers.
    pub(crate) fn remove_marker(&self, owner: &str, key: &SessionKey) {
        let path = self.layout.marker_path(owner, key);
        if let Err(e) = remove_file(&path) {
            tracing::warn!(error = %e, "could not remove an owner marker; listing will clean it");
        }
    }

    /// The keys in `owner`'s index (unverified).
    fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>> {
        let dir = self.layout.owner_dir(owner);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(FileError::new("list", &dir, e).into()),
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

    pub(crate) fn list_by_owner(&self, owner: &str) -> Result<Vec<Record>> {
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

    pub(crate) fn delete_by_owner(&self, owner: &str) -> Result<u64> {
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
