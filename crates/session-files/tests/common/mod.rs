//! Helpers shared by the test files: runtimes, temp dirs, and re-running this test binary as a
//! child process so a test can kill, race or crash real processes.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "each test file uses a different part"
)]

use std::path::{Path, PathBuf};

use session_core::Error;
pub use session_core::conformance::child::{reexec, wait_exit, wait_for_file};
#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::{io, ok};

#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::child::runtime;

pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("creating a temp dir failed: {e}"),
    }
}

/// Keys from small numbers, the same in every process of a test, and a seed that keeps runs
/// apart.
#[allow(
    unused_imports,
    reason = "each test file uses its own subset of these helpers"
)]
pub use session_core::conformance::processes::{key, seed};

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out
}

/// Temp files (writes in progress or left by a crash) under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".tmp-"))
        })
        .collect()
}

/// Whether `err` (or a source of it) is an OS error with this errno.
pub fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        if let Some(f) = e.downcast_ref::<session_files::FileError>()
            && f.io_error().raw_os_error() == Some(errno)
        {
            return true;
        }
        cur = e.source();
    }
    false
}
