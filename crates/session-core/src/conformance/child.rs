//! Real processes for tests that race, crash or kill them: a test binary runs itself again
//! as the child, which recognizes its part by an environment variable.
//!
//! ```text
//! #[test]
//! fn crash() {
//!     if std::env::var("MY_CHILD").is_ok() { return child_part(); }
//!     let mut child = reexec("crash", &[("MY_CHILD", dir.display().to_string())]);
//!     wait_for_file(&dir.join("ready"), &mut child, Duration::from_secs(60));
//!     child.kill().unwrap(); // SIGKILL on Unix
//! }
//! ```

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A multi-threaded runtime (four workers) for a test that is a plain `#[test]`: one that
/// runs itself again as a child, or drives stores from several threads.
///
/// # Panics
/// When the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("building a runtime failed: {e}"),
    }
}

/// Starts this test binary again, running only the test named `test` (exactly), which sees
/// `envs` and so plays the child's part. Its stdout is discarded; stderr is inherited, so a
/// child's panic shows in the parent's output.
///
/// # Panics
/// When the binary cannot be found or started.
pub fn reexec(test: &str, envs: &[(&str, String)]) -> Child {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("finding the test binary failed: {e}"),
    };
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("spawning the child process failed: {e}"),
    }
}

/// Waits until `path` exists.
///
/// # Panics
/// When `child` exits first or `limit` passes.
pub fn wait_for_file(path: &Path, child: &mut Child, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the child exited ({status}) before writing {}",
                path.display()
            );
        }
        assert!(
            start.elapsed() < limit,
            "the child did not write {} within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` to exit and returns its status.
///
/// # Panics
/// After killing the child, when it runs longer than `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("waiting for the child failed: {e}"),
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the child process hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One round of a kill -9 test: re-runs `test` as a child with `envs` plus
/// `CRASH_READY=<ready>`, waits (up to a minute) until the child has created `ready`, lets it
/// run for `at_least` plus a pseudo-random share of `spread` drawn from `seed` (which advances,
/// so rounds differ but a seed replays), then kills it with SIGKILL, so no destructor, flush
/// or cleanup runs in it, and reaps it.
///
/// # Panics
/// As [`reexec`] and [`wait_for_file`], or when the kill fails.
pub fn kill_9_after_ready(
    test: &str,
    envs: &[(&str, String)],
    ready: &Path,
    seed: &mut u64,
    at_least: Duration,
    spread: Duration,
) {
    let mut envs = envs.to_vec();
    envs.push(("CRASH_READY", ready.display().to_string()));
    let mut child = reexec(test, &envs);
    wait_for_file(ready, &mut child, Duration::from_secs(60));
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    std::thread::sleep(at_least + Duration::from_millis((*seed >> 33) % spread_ms));
    // `Child::kill` is SIGKILL on Unix.
    if let Err(e) = child.kill() {
        panic!("killing the child failed: {e}");
    }
    let _ = child.wait();
}
