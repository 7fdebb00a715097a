//! Skipped tests, told where a person sees them.
//!
//! The test harness captures what a test prints with `print!`/`eprint!` and shows it only for
//! failing tests, so a skip written that way is invisible: the run reads "all passed" while a
//! backend was never tested. A skip here is written to the process's stderr handle itself,
//! which the harness does not capture, and counted; when the test binary exits, one summary
//! line says how many of its tests skipped and why.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Mutex, Once, PoisonError};

use super::REQUIRE_SERVICES_VAR;

/// What skipped in this process: each test once, and each reason with its count.
struct Tally {
    /// Names of the tests already counted. The harness runs each test on a thread named after
    /// it, so the name tells one test from another even when a test notes its skip twice (a
    /// fixture factory and then the case runner).
    tests: BTreeSet<String>,
    /// How many skipped tests gave each reason.
    reasons: BTreeMap<String, usize>,
}

impl Tally {
    const fn new() -> Self {
        Self {
            tests: BTreeSet::new(),
            reasons: BTreeMap::new(),
        }
    }

    /// Counts `test` under `reason`; false if that test was counted already. A test without a
    /// name (a thread the harness did not start) is counted every time: better one too many
    /// than a skip nobody hears of.
    fn count(&mut self, test: Option<&str>, reason: &str) -> bool {
        if let Some(test) = test
            && !self.tests.insert(test.to_owned())
        {
            return false;
        }
        *self.reasons.entry(reason.to_owned()).or_default() += 1;
        true
    }

    fn total(&self) -> usize {
        self.reasons.values().sum()
    }

    /// The summary line: which binary, how many tests skipped, and why.
    fn summary(&self, binary: &str) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} × {reason}"))
            .collect();
        Some(format!(
            "SKIPPED: {total} test{} of {binary} did not run: {} ({REQUIRE_SERVICES_VAR}=1 makes a missing server a failure)\n",
            if total == 1 { "" } else { "s" },
            reasons.join("; "),
        ))
    }
}

static TALLY: Mutex<Tally> = Mutex::new(Tally::new());

static SUMMARY_AT_EXIT: Once = Once::new();

/// Whether `SESSION_REQUIRE_SERVICES=1` asks for a missing server to fail the test.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VAR).is_ok_and(|v| v.trim() == "1")
}

/// Marks the running test as skipped because of `reason`, visibly.
///
/// - Writes `SKIPPED <test>: <reason>` to the terminal (the stderr handle, past the harness's
///   capture), once per test.
/// - Counts the test under `reason` for the summary line printed when the binary exits.
/// - Under `SESSION_REQUIRE_SERVICES=1` it does not skip: it panics with `reason`, failing the
///   test.
///
/// The caller then returns from the test without checking anything.
pub fn skip_test(reason: &str) {
    if services_required() {
        panic!("{reason} (and {REQUIRE_SERVICES_VAR}=1, so this test must not skip)");
    }
    let thread = std::thread::current();
    let first = TALLY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .count(thread.name(), reason);
    if !first {
        return;
    }
    SUMMARY_AT_EXIT.call_once(|| {
        if !shutdown_hooks::add_shutdown_hook(print_summary) {
            to_terminal("SKIPPED: could not register the exit hook for the skip summary\n");
        }
    });
    to_terminal(&format!(
        "SKIPPED {}: {reason}\n",
        thread.name().unwrap_or("a test")
    ));
}

/// How many tests of this process skipped so far.
pub fn skipped_tests() -> usize {
    TALLY.lock().unwrap_or_else(PoisonError::into_inner).total()
}

/// Writes `text` to the terminal, past the harness's output capture.
///
/// Errors are ignored: there is nowhere left to report a broken stderr.
pub(super) fn to_terminal(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `package/target` for the running test binary, e.g. `session-postgres/conformance`.
fn binary_name() -> String {
    // Cargo sets CARGO_PKG_NAME for the processes it runs, and names test binaries
    // `<target>-<hash>`.
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((target, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                target.to_owned()
            }
            _ => stem,
        })
        .unwrap_or_else(|| "this test binary".to_owned());
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) if !package.is_empty() => format!("{package}/{target}"),
        _ => target,
    }
}

/// Runs at process exit (registered with `atexit` on the first skip). It must not panic or
/// unwind: it only formats and writes.
extern "C" fn print_summary() {
    let line = std::panic::catch_unwind(|| {
        TALLY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary(&binary_name())
    });
    if let Ok(Some(line)) = line {
        to_terminal(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_noting_its_skip_twice_counts_once() {
        let mut tally = Tally::new();
        assert!(tally.count(Some("a::test"), "no server"));
        assert!(!tally.count(Some("a::test"), "no server"));
        assert!(tally.count(Some("another::test"), "no server"));
        assert_eq!(tally.total(), 2);
    }

    #[test]
    fn unnamed_threads_are_counted_every_time() {
        let mut tally = Tally::new();
        assert!(tally.count(None, "no server"));
        assert!(tally.count(None, "no server"));
        assert_eq!(tally.total(), 2);
    }

    #[test]
    fn the_summary_gives_the_binary_the_count_and_each_reason() {
        let mut tally = Tally::new();
        assert_eq!(tally.summary("pkg/bin"), None, "no skips, no line");
        tally.count(Some("a"), "no PostgreSQL server");
        tally.count(Some("b"), "no PostgreSQL server");
        tally.count(Some("c"), "no Redis server");
        let line = tally.summary("pkg/bin").expect("a line");
        assert!(
            line.starts_with("SKIPPED: 3 tests of pkg/bin did not run: 2 × no PostgreSQL server; 1 × no Redis server ("),
            "{line}"
        );
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "one line: {line}"
        );
    }
}
