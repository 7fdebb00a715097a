//! Millisecond timestamps: the precision every backend can store exactly.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time as whole milliseconds since the Unix epoch (UTC).
///
/// Records carry these rather than [`SystemTime`] because every backend keeps milliseconds
/// exactly (Redis `PXAT`, a PostgreSQL `timestamptz`, a file header), so a record loaded back
/// compares equal to the one saved.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// How long from `self` until `later`, zero if `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            // Seconds and sub-second millis: cheaper than `as_millis`'s u128 division, and
            // this runs on every store call.
            Ok(d) => Self(
                i64::try_from(d.as_secs())
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000)
                    .saturating_add(i64::from(d.subsec_millis())),
            ),
            Err(e) => Self(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(t.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(t.0.unsigned_abs())
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(d)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis(d)))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_conversion() {
        let t = Timestamp::from_unix_millis(1_000);
        assert_eq!((t + Duration::from_millis(500)).unix_millis(), 1_500);
        assert_eq!((t - Duration::from_secs(2)).unix_millis(), -1_000);
        assert_eq!(t.until(t + Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!((t + Duration::from_secs(3)).until(t), Duration::ZERO);
        let back: SystemTime = t.into();
        assert_eq!(Timestamp::from(back), t);
        let neg = Timestamp::from_unix_millis(-5);
        assert_eq!(Timestamp::from(SystemTime::from(neg)), neg);
        assert!(Timestamp::now() > Timestamp::from_unix_millis(1_700_000_000_000));
    }
}
