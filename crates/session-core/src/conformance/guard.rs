//! Small test helpers: results that must be `Ok` (a panic naming what failed), names no other
//! test run uses, and clean-up that runs at the end of a test even when it panicked.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::SessionId;

/// The value of a store call that must succeed.
///
/// # Panics
/// With `what` and the error, when `r` is an error.
pub fn ok<T>(what: &str, r: crate::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

/// The value of a file-system call that must succeed.
///
/// # Panics
/// With `what` and the error, when `r` is an error.
pub fn io<T>(what: &str, r: std::io::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// Sixteen random lowercase hex digits (64 bits): a suffix that parallel and repeated runs
/// never share, for a table, schema, prefix or application name.
pub fn unique_suffix() -> String {
    SessionId::generate().key().to_hex()[..16].to_owned()
}

/// `prefix_` and a [`unique_suffix`], like `sessions_1f2e3d4c5b6a7988`: a plain identifier
/// when `prefix` is one.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", unique_suffix())
}

type CleanUp = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send>;

/// Runs an async clean-up (dropping a test's table, say) when it goes out of scope, even when
/// the test panicked.
///
/// `Drop` cannot await, and the test's own runtime may be the one unwinding, so the clean-up
/// runs on a short-lived thread with a runtime of its own (and so its own connections), which
/// the drop joins. That blocks only the thread dropping the guard, for the clean-up's time at
/// the end of the test; bound that time inside the clean-up (a lock timeout, say). A failed
/// clean-up is printed, never a panic in a drop.
pub struct DropGuard {
    what: String,
    clean_up: Option<CleanUp>,
}

impl DropGuard {
    /// A guard that runs `clean_up` when dropped; `what` names it in a failure message.
    pub fn new<F, Fut>(what: impl Into<String>, clean_up: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            what: what.into(),
            clean_up: Some(Box::new(move || Box::pin(clean_up()))),
        }
    }
}

impl fmt::Debug for DropGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropGuard")
            .field("what", &self.what)
            .finish()
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        let Some(clean_up) = self.clean_up.take() else {
            return;
        };
        let worker = std::thread::spawn(move || -> Result<(), String> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(clean_up())
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not clean up after the test ({}): {e}", self.what),
            Err(_) => eprintln!("the clean-up thread panicked ({})", self.what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn names_are_fresh_identifiers() {
        let (a, b) = (unique_name("t"), unique_name("t"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 + 16);
        assert!(a.starts_with("t_"));
        assert!(
            a[2..]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
    }

    #[test]
    fn the_clean_up_runs_on_drop_even_while_unwinding() {
        let ran = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&ran);
        let unwound = std::panic::catch_unwind(move || {
            let _guard = DropGuard::new("flag", move || async move {
                tokio::task::yield_now().await;
                seen.store(true, Ordering::SeqCst);
                Ok(())
            });
            panic!("the test failed");
        });
        assert!(unwound.is_err());
        assert!(
            ran.load(Ordering::SeqCst),
            "the clean-up ran during the unwind"
        );
        // A failing clean-up is reported, not raised.
        drop(DropGuard::new("failing", || async {
            Err("no server".to_owned())
        }));
    }
}
