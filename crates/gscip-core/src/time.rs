//! Time as the core sees it: microseconds on a clock the caller owns. The core never reads a
//! clock; the daemon passes a monotonic clock, the simulator its virtual time.

use std::ops::{Add, Sub};

/// A point in time, microseconds since an arbitrary epoch chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// A span of time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub u64);

impl Micros {
    pub const fn from_millis(ms: u64) -> Self {
        Micros(ms * 1_000)
    }
    pub const fn from_secs(s: u64) -> Self {
        Micros(s * 1_000_000)
    }
    pub const fn saturating_mul(self, k: u64) -> Self {
        Micros(self.0.saturating_mul(k))
    }
}

impl Add<Micros> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Micros) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Micros;
    fn sub(self, earlier: Timestamp) -> Micros {
        Micros(self.0.saturating_sub(earlier.0))
    }
}
