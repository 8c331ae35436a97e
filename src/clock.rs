//! The store's clock: wall time for event timestamps and ages, monotonic time
//! for deadlines and schedules (acknowledgement timeouts, background runs).
//!
//! [`SystemClock`] is the default; tests give a store a [`ManualClock`] and
//! move time forward without sleeping. This module must never sleep or block.

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Where a store reads the time.
pub trait Clock: Send + Sync + Debug {
    /// Microseconds since the Unix epoch (event timestamps, ages of events).
    fn now_micros(&self) -> i64;
    /// A monotonic instant (deadlines and schedules).
    fn now(&self) -> Instant;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        system_micros()
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Microseconds since the Unix epoch by the system clock (negative before it,
/// saturated at the ends of `i64`).
pub(crate) fn system_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// A clock that stands still until told to move: both its wall time and its
/// instants advance only by [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    start_micros: i64,
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the system's time now.
    pub fn new() -> Self {
        ManualClock {
            start_micros: system_micros(),
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut e = self.elapsed.lock();
        *e = e.saturating_add(by);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        let elapsed = i64::try_from(self.elapsed.lock().as_micros()).unwrap_or(i64::MAX);
        self.start_micros.saturating_add(elapsed)
    }
    fn now(&self) -> Instant {
        let elapsed = *self.elapsed.lock();
        self.start.checked_add(elapsed).unwrap_or(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let (t0, i0) = (c.now_micros(), c.now());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!((c.now_micros(), c.now()), (t0, i0));
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now_micros() - t0, 90_000_000);
        assert_eq!(c.now() - i0, Duration::from_secs(90));
    }
}
