//! Rate limits as token buckets (SPEC §4 "Limits"): a bucket of `limit` tokens refilled at
//! `limit / interval`, so "30 per minute" allows a burst of 30 and then one every 2 s.
//!
//! Pure: time is passed in. The session owns the per-connection bucket; the hub owns each
//! user's buckets, shared by the user's devices.

use std::time::Duration;
use tokio::time::Instant;

/// The configured limits (all from the command line / environment, defaults from the seeds).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Frames per second per connection, and the burst above it (seed 002: 10/s, burst 20).
    pub conn_rate: f64,
    pub conn_burst: u32,
    /// Messages per user per minute, hour and day (seed 001: 30, 500, 2000).
    pub messages_per_minute: u32,
    pub messages_per_hour: u32,
    pub messages_per_day: u32,
    /// Typing events per user per minute (seed 001: 20).
    pub typing_per_minute: u32,
    /// New connections per user per minute, and concurrent connections per user (10, 5).
    pub connects_per_minute: u32,
    pub max_connections_per_user: usize,
    /// Events queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            conn_rate: 10.0,
            conn_burst: 20,
            messages_per_minute: 30,
            messages_per_hour: 500,
            messages_per_day: 2000,
            typing_per_minute: 20,
            connects_per_minute: 10,
            max_connections_per_user: 5,
            outbound_queue: 1024,
        }
    }
}

/// A limit that was hit: what it is and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: u32,
    pub interval: Duration,
    pub retry_after: Duration,
}

/// A bucket's fixed part: `limit` per `interval`, with a burst of `capacity`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    limit: u32,
    interval: Duration,
    capacity: f64,
    per_sec: f64,
}

impl Rate {
    pub fn new(limit: u32, interval: Duration, capacity: u32) -> Self {
        let per_sec = f64::from(limit) / interval.as_secs_f64().max(1e-9);
        Self { limit, interval, capacity: f64::from(capacity), per_sec }
    }

    /// A full bucket's level.
    fn full(&self, now: Instant) -> Level {
        Level { tokens: self.capacity, last: now }
    }
}

/// A bucket's changing part. The hub keeps five for every user seen in the last day, so their
/// rates live once in [`UserRates`] rather than in each of them (benchmarks.md, issue 19).
#[derive(Debug, Clone, Copy)]
pub struct Level {
    tokens: f64,
    last: Instant,
}

impl Level {
    fn refill(&mut self, rate: &Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_sec).min(rate.capacity);
        self.last = now;
    }

    /// Whether a token is there, without taking it.
    fn check(&mut self, rate: &Rate, now: Instant) -> Result<(), Exceeded> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / rate.per_sec;
        Err(Exceeded { limit: rate.limit, interval: rate.interval, retry_after: Duration::from_secs_f64(wait) })
    }

    /// Takes a token, or says when one will be there.
    fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Exceeded> {
        self.check(rate, now)?;
        self.tokens -= 1.0;
        Ok(())
    }

    fn is_full(&mut self, rate: &Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.capacity
    }
}

/// One token bucket with its own rate (a connection's frame gate).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    level: Level,
}

impl Bucket {
    /// `limit` per `interval`, with a burst of `capacity` (usually `limit`).
    pub fn new(limit: u32, interval: Duration, capacity: u32, now: Instant) -> Self {
        let rate = Rate::new(limit, interval, capacity);
        Self { rate, level: rate.full(now) }
    }

    /// Takes a token, or says when one will be there.
    pub fn take(&mut self, now: Instant) -> Result<(), Exceeded> {
        self.level.take(&self.rate, now)
    }
}

/// The rates of a user's shared buckets, from the configured limits.
#[derive(Debug, Clone)]
pub struct UserRates {
    minute: Rate,
    hour: Rate,
    day: Rate,
    typing: Rate,
    connects: Rate,
}

impl UserRates {
    pub fn new(l: &Limits) -> Self {
        let m = Duration::from_secs(60);
        Self {
            minute: Rate::new(l.messages_per_minute, m, l.messages_per_minute),
            hour: Rate::new(l.messages_per_hour, Duration::from_secs(3600), l.messages_per_hour),
            day: Rate::new(l.messages_per_day, Duration::from_secs(86_400), l.messages_per_day),
            typing: Rate::new(l.typing_per_minute, m, l.typing_per_minute),
            connects: Rate::new(l.connects_per_minute, m, l.connects_per_minute),
        }
    }

    /// A user's buckets, all full.
    pub fn full(&self, now: Instant) -> UserBuckets {
        UserBuckets {
            minute: self.minute.full(now),
            hour: self.hour.full(now),
            day: self.day.full(now),
            typing: self.typing.full(now),
            connects: self.connects.full(now),
        }
    }
}

/// A user's shared buckets (their levels; the rates are the hub's [`UserRates`]).
#[derive(Debug, Clone)]
pub struct UserBuckets {
    minute: Level,
    hour: Level,
    day: Level,
    typing: Level,
    connects: Level,
}

impl UserBuckets {
    /// Whether every bucket is back to full (the user has been idle long enough).
    pub fn all_full(&mut self, r: &UserRates, now: Instant) -> bool {
        self.minute.is_full(&r.minute, now)
            && self.hour.is_full(&r.hour, now)
            && self.day.is_full(&r.day, now)
            && self.typing.is_full(&r.typing, now)
            && self.connects.is_full(&r.connects, now)
    }

    /// One message against the minute, hour and day limits together: taken from every bucket,
    /// or from none if any is empty.
    pub fn take_message(&mut self, r: &UserRates, now: Instant) -> Result<(), Exceeded> {
        self.minute.check(&r.minute, now)?;
        self.hour.check(&r.hour, now)?;
        self.day.check(&r.day, now)?;
        for level in [&mut self.minute, &mut self.hour, &mut self.day] {
            level.tokens -= 1.0;
        }
        Ok(())
    }

    pub fn take_typing(&mut self, r: &UserRates, now: Instant) -> Result<(), Exceeded> {
        self.typing.take(&r.typing, now)
    }

    pub fn take_connect(&mut self, r: &UserRates, now: Instant) -> Result<(), Exceeded> {
        self.connects.take(&r.connects, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, Duration::from_secs(1), 20, t0);
        for _ in 0..20 {
            assert!(b.take(t0).is_ok());
        }
        let e = b.take(t0).unwrap_err();
        assert_eq!(e.limit, 10);
        assert!(e.retry_after <= Duration::from_millis(100));
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn thirty_a_minute_means_thirty_then_one_every_two_seconds() {
        let t0 = Instant::now();
        let r = UserRates::new(&Limits::default());
        let mut u = r.full(t0);
        for _ in 0..30 {
            assert!(u.take_message(&r, t0).is_ok());
        }
        let e = u.take_message(&r, t0).unwrap_err();
        assert_eq!((e.limit, e.interval), (30, Duration::from_secs(60)));
        assert!(u.take_message(&r, t0 + Duration::from_secs(2)).is_ok());
        // A refused message takes from no bucket.
        assert_eq!(u.hour.tokens.round() as i64, 500 - 31);
    }
}
