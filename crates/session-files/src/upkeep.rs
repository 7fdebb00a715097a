//! Whole-store work: walking the shards to count and list sessions, and the sweep of expired
//! sessions and of temp files left by interrupted writes.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use session_core::{Result, SessionKey, Timestamp};

use crate::blocking::Inner;
use crate::error::{Context, FileError};
use crate::fsio::{is_not_found, remove_file};
use crate::layout::{TEMP_PREFIX, is_shard_name, key_in_shard};
use crate::peek::{Depth, Peek};

impl Inner {
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
    pub(crate) fn tally(
        &self,
        now: Timestamp,
        mut keys: Option<&mut Vec<SessionKey>>,
    ) -> Result<(u64, u64)> {
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

    pub(crate) fn delete_expired(&self, now: Timestamp) -> Result<u64> {
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
}

/// A name a scan found under a shard directory.
enum Entry<'a> {
    Record(SessionKey, &'a Path),
    Temp(&'a Path),
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(FileError::new("list", dir, e).into()),
    };
    entries.map(|e| e.ctx("list", dir)).collect()
}

fn shard_entry(entry: &fs::DirEntry) -> Option<String> {
    let name = entry.file_name().into_string().ok()?;
    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
    (is_dir && is_shard_name(&name)).then_some(name)
}
