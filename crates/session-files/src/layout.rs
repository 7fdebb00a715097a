//! Where things live under the root. Every path is built here, from a [`SessionKey`]'s hex or
//! an owner's SHA-256 hex, so no caller-supplied text ever becomes a path component.
//!
//! ```text
//! root/ab/cd/abcd…(64 hex)          one session (two shard levels from the key's hex)
//! root/ab/cd/.tmp-<key>-<random>    a write in progress (or left by a crash; swept)
//! root/owners/ef/ef01…(64 hex)/<key> empty marker: session <key> belongs to this owner
//! root/locks/00 … root/locks/ff     advisory lock files, one per first key byte
//! ```

use std::path::{Path, PathBuf};

use session_core::SessionKey;
use sha2::{Digest, Sha256};

pub(crate) const TEMP_PREFIX: &str = ".tmp-";
pub(crate) const OWNERS: &str = "owners";
pub(crate) const LOCKS: &str = "locks";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn shard_dir(&self, key: &SessionKey) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4])
    }

    pub(crate) fn record_path(&self, key: &SessionKey) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    pub(crate) fn owners_dir(&self) -> PathBuf {
        self.root.join(OWNERS)
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS)
    }

    /// `owners/<first two hex>/<sha256(owner) hex>`: one more level than the hash alone so a
    /// site with millions of users does not put millions of directories in one.
    pub(crate) fn owner_dir(&self, owner: &str) -> PathBuf {
        let hash = hex::encode(Sha256::digest(owner.as_bytes()));
        self.owners_dir().join(&hash[0..2]).join(hash)
    }

    pub(crate) fn marker_path(&self, owner: &str, key: &SessionKey) -> PathBuf {
        self.owner_dir(owner).join(key.to_hex())
    }
}

/// Whether `name` is a shard directory name: exactly two lowercase hex digits.
pub(crate) fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The key a file in shard `outer/inner` stands for, if its name is a key that belongs there.
/// A valid key name in the wrong shard is foreign (copied or planted) and ignored.
pub(crate) fn key_in_shard(outer: &str, inner: &str, name: &str) -> Option<SessionKey> {
    let key = SessionKey::from_hex(name)?;
    (name[0..2] == *outer && name[2..4] == *inner).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root_for_any_key_bytes() {
        let layout = Layout::new(PathBuf::from("/r"));
        for fill in [0u8, b'.', b'/', 0xff] {
            let key = SessionKey::from_bytes([fill; 32]);
            let path = layout.record_path(&key);
            let rel = path.strip_prefix("/r").expect("under the root");
            let parts: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            assert_eq!(parts.len(), 3);
            assert!(parts.iter().all(|p| {
                p.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            }));
        }
        let owner = layout.owner_dir("../../etc");
        assert!(owner.starts_with("/r/owners"));
        assert_eq!(owner.components().count(), 5);
    }

    #[test]
    fn only_keys_in_their_own_shard_count() {
        let key = SessionKey::from_bytes([0xab; 32]);
        let hex = key.to_hex();
        assert_eq!(key_in_shard("ab", "ab", &hex), Some(key));
        assert_eq!(key_in_shard("ab", "cd", &hex), None);
        assert_eq!(key_in_shard("ab", "ab", &hex.to_uppercase()), None);
        assert_eq!(key_in_shard("ab", "ab", ".tmp-x"), None);
        assert!(is_shard_name("0f") && !is_shard_name("0F") && !is_shard_name("owners"));
    }
}
