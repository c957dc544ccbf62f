//! Time, injectable: every deadline the rules keep (typing clears, token expiry, rate-limit
//! refills, photo expiry) and every timestamp they write come from one [`Clock`].
//!
//! Monotonic time is tokio's [`Instant`], so a test on a paused runtime
//! (`tokio::time::pause`, `advance`) drives every timer without waiting. Wall time is the
//! system's, except on a clock made with [`Clock::starting_at`], where it is a fixed start plus
//! the monotonic time elapsed since: paused time moves both together, as a real clock would.

use confab_codec::Timestamp;
use tokio::time::Instant;

/// The session layer's clock. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system's wall clock. `Some`: wall time is this start plus the time elapsed
    /// on the monotonic clock since `at`.
    fixed: Option<(Timestamp, Instant)>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system's clocks (wall time from the OS, monotonic time from tokio).
    pub const fn system() -> Self {
        Self { fixed: None }
    }

    /// A clock whose wall time reads `wall` now and then follows the monotonic clock: under
    /// paused tokio time, nothing moves until the test advances it.
    pub fn starting_at(wall: Timestamp) -> Self {
        Self { fixed: Some((wall, Instant::now())) }
    }

    /// Monotonic now, for deadlines.
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock now, as the protocol's timestamps.
    pub fn now(&self) -> Timestamp {
        match self.fixed {
            Some((wall, at)) => {
                let elapsed = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
                wall.plus_millis(elapsed)
            }
            None => system_now(),
        }
    }

    /// The monotonic instant at which wall time reaches `at` (now if it has).
    pub fn deadline_for(&self, at: Timestamp) -> Instant {
        let left = at.as_millis().saturating_sub(self.now().as_millis()).max(0);
        self.instant() + std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }
}

/// The system's wall clock, as the protocol's timestamps.
pub fn system_now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_fixed_clock_moves_with_paused_time_and_only_then() {
        let clock = Clock::starting_at(Timestamp::from_millis(1_000));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000));
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(clock.now(), Timestamp::from_millis(3_500));
        let due = clock.deadline_for(Timestamp::from_millis(4_000));
        assert_eq!(due - clock.instant(), Duration::from_millis(500));
        assert_eq!(clock.deadline_for(Timestamp::from_millis(0)), clock.instant(), "a past time is due now");
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let before = system_now();
        let read = Clock::system().now();
        assert!(read >= before && read.as_millis() > 1_700_000_000_000);
    }
}
