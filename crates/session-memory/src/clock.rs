//! Deadline checks that rarely need the precise clock.
//!
//! Reading `CLOCK_REALTIME` was about 7% of a load. Linux also keeps a coarse clock,
//! `CLOCK_REALTIME_COARSE`: the time at the last timer tick, read from the same vDSO page
//! without touching the TSC, for a fraction of the cost. It is never ahead of the precise
//! clock, and it lags it by at most about one tick (1–4 ms). So against the coarse time `c`:
//!
//! - a deadline at or before `c` has passed;
//! - a deadline more than [`WINDOW_MS`] after `c` has not: the precise clock is never that far
//!   ahead (that would take a dozen ticks missed in a row);
//! - only a deadline in between (the last moments of a session's life, a tiny share of its
//!   loads) is decided by the precise clock.
//!
//! The answer is the one [`Timestamp::now`] would give, as long as the coarse clock lags by
//! less than the window (if it ever lagged more, a session would outlive its deadline by the
//! excess, never end early). Where there is no coarse clock, or its tick is longer than
//! [`MAX_TICK_MS`], every check reads the precise clock.

use session_core::Timestamp;

/// A coarse clock with a longer tick than this is not used.
const MAX_TICK_MS: i64 = 10;

/// How far past the coarse time a deadline is still checked against the precise clock: far
/// more than the coarse clock lags (a tick), so that a tick delayed on a loaded machine or a
/// virtual CPU descheduled for a moment still gets the precise answer.
const WINDOW_MS: i64 = 50;

/// Whether `deadline` has passed: `deadline <= Timestamp::now()`.
pub(crate) fn has_passed(deadline: Timestamp) -> bool {
    if let Some(coarse) = coarse_now() {
        if deadline <= coarse {
            return true;
        }
        if deadline.unix_millis() > coarse.unix_millis().saturating_add(WINDOW_MS) {
            return false;
        }
    }
    deadline <= Timestamp::now()
}

/// The coarse time, if the coarse clock is fine enough to use.
#[cfg(target_os = "linux")]
fn coarse_now() -> Option<Timestamp> {
    use nix::sys::time::TimeSpec;
    use nix::time::{ClockId, clock_getres, clock_gettime};
    use std::sync::OnceLock;
    fn millis(t: TimeSpec) -> i64 {
        t.tv_sec()
            .saturating_mul(1000)
            .saturating_add(t.tv_nsec() / 1_000_000)
    }
    static USABLE: OnceLock<bool> = OnceLock::new();
    let usable = *USABLE.get_or_init(|| {
        clock_getres(ClockId::CLOCK_REALTIME_COARSE).is_ok_and(|tick| {
            let tick_ms = millis(tick) + i64::from(tick.tv_nsec() % 1_000_000 != 0);
            tick_ms > 0 && tick_ms <= MAX_TICK_MS
        })
    });
    if !usable {
        return None;
    }
    let coarse = clock_gettime(ClockId::CLOCK_REALTIME_COARSE).ok()?;
    Some(Timestamp::from_unix_millis(millis(coarse)))
}

#[cfg(not(target_os = "linux"))]
fn coarse_now() -> Option<Timestamp> {
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Around the precise time, in the window where the coarse clock lags it, every answer is
    /// the precise clock's: checking against the coarse time alone would call a deadline that
    /// passed a millisecond ago live most of the time.
    #[test]
    fn answers_as_the_precise_clock_does() {
        for _ in 0..2_000 {
            let before = Timestamp::now();
            let passed = [0, 1, 2, 5].map(|ms| has_passed(before - Duration::from_millis(ms)));
            assert_eq!(passed, [true; 4], "a deadline at or before now has passed");
            let ahead = Timestamp::now() + Duration::from_millis(50);
            assert!(!has_passed(ahead), "a deadline 50 ms ahead has not passed");
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(!has_passed(Timestamp::from_unix_millis(i64::MAX)));
        assert!(has_passed(Timestamp::from_unix_millis(i64::MIN)));
    }

    /// On Linux the coarse clock is in use (so the test above checks the fast path), it lags
    /// the precise clock by less than the window, and it is never ahead of it.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_coarse_clock_is_behind_the_precise_one_within_its_window() {
        for _ in 0..1_000 {
            let coarse = coarse_now().expect("Linux has a coarse clock of a few ms");
            let precise = Timestamp::now();
            assert!(coarse <= precise, "{coarse:?} is ahead of {precise:?}");
            assert!(precise.unix_millis() - coarse.unix_millis() <= WINDOW_MS);
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}
