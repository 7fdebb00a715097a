//! Helpers shared by the newer test files: temp dirs, results that must be `Ok`, the store's
//! file names, and a small tmpfs for full-disk tests.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different part"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::{io, ok};
use session_core::{SessionId, SessionKey};
use session_hybrid::{HybridStore, HybridStoreBuilder};

pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    }
}

pub async fn must<T>(what: &str, result: impl Future<Output = session_core::Result<T>>) -> T {
    ok(what, result.await)
}

pub fn open(builder: HybridStoreBuilder) -> HybridStore {
    ok("opening the hybrid store", builder.open())
}

pub fn key() -> SessionKey {
    SessionId::generate().key()
}

pub fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("log-{n:020}.log"))
}

pub fn snapshot(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snap-{n:020}.snap"))
}

pub fn snapshot_tmp(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snap-{n:020}.tmp"))
}

/// The names in `dir` that start with `prefix`, sorted.
pub fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = io("listing a directory", std::fs::read_dir(dir))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The error's chain, searched for an OS error with this number.
pub fn has_errno(error: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// A tmpfs mounted for one test, unmounted (lazily, so open files cannot block it) on drop.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (as `mount -o size=` reads it) at `at`. Needs root; the error
/// says why when it cannot.
pub fn mount_tmpfs(at: &Path, size: &str) -> Result<Mount, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root, so no tmpfs can be mounted".into());
    }
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(at)
        .output()
        .map_err(|e| format!("running mount failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount was refused: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Mount(at.to_path_buf()))
}
