//! Time as the protocol cores see it: an opaque, monotonic microsecond count handed in by the caller.
//!
//! No core reads a clock. The reactor reads `std::time::Instant` once per loop turn and converts it into
//! [`Instant`] (microseconds since the reactor started); tests and the simulator start at zero and advance a
//! virtual clock. Spans are plain [`std::time::Duration`]s.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A loop turn that woke this much later than it asked counts as a stall (the process was stopped, the
/// machine suspended or starved): the cores' `handle_stall` then forgive what they could not have heard.
pub const STALL: Duration = Duration::from_millis(250);

/// A point in time, in microseconds since an epoch chosen by whoever drives the cores.
///
/// Arithmetic saturates instead of panicking: a deadline past `u64::MAX` µs (half a million years) simply never
/// arrives.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);
    /// A point that is never reached; useful as "no deadline" in `min` computations.
    pub const NEVER: Instant = Instant(u64::MAX);

    /// The instant `us` microseconds after the epoch.
    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the epoch (rounded down).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// The span from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Converts a span to microseconds, saturating at `u64::MAX`.
pub fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_micros(rhs)))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: a later `rhs` gives zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t.as_micros(), 5000);
        assert_eq!(t + Duration::from_micros(7), Instant::from_micros(5007));
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_millis(5));
        assert_eq!(Instant::NEVER + Duration::from_secs(1), Instant::NEVER);
        assert_eq!(
            format!("{:?}", Instant::from_micros(1_500_001)),
            "1.500001s"
        );
    }
}
