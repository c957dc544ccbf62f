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

    /// A compact level `tokens` after `ms` more milliseconds of refill.
    fn refilled(&self, tokens: f32, ms: u64) -> f32 {
        (f64::from(tokens) + ms as f64 * self.per_sec / 1000.0).min(self.capacity) as f32
    }

    /// The answer to a take from a bucket holding `tokens` (less than one).
    fn exceeded(&self, tokens: f64) -> Exceeded {
        let wait = (1.0 - tokens) / self.per_sec;
        Exceeded { limit: self.limit, interval: self.interval, retry_after: Duration::from_secs_f64(wait.max(0.0)) }
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
        Err(rate.exceeded(self.tokens))
    }

    /// Takes a token, or says when one will be there.
    fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Exceeded> {
        self.check(rate, now)?;
        self.tokens -= 1.0;
        Ok(())
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
    /// The buckets' times are milliseconds after this.
    base: Instant,
}

impl UserRates {
    pub fn new(l: &Limits) -> Self {
        let m = Duration::from_secs(60);
        Self {
            base: Instant::now(),
            minute: Rate::new(l.messages_per_minute, m, l.messages_per_minute),
            hour: Rate::new(l.messages_per_hour, Duration::from_secs(3600), l.messages_per_hour),
            day: Rate::new(l.messages_per_day, Duration::from_secs(86_400), l.messages_per_day),
            typing: Rate::new(l.typing_per_minute, m, l.typing_per_minute),
            connects: Rate::new(l.connects_per_minute, m, l.connects_per_minute),
        }
    }

    /// A user's buckets, all full.
    pub fn full(&self, now: Instant) -> UserBuckets {
        let at = self.stamp(now);
        UserBuckets {
            messages_at: at,
            typing_at: at,
            connects_at: at,
            minute: self.minute.capacity as f32,
            hour: self.hour.capacity as f32,
            day: self.day.capacity as f32,
            typing: self.typing.capacity as f32,
            connects: self.connects.capacity as f32,
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

/// A user's shared buckets: their levels, compact, since the hub keeps them for every user
/// seen in the last day (48 bytes, where five [`Level`]s took 120: an idle connection's share
/// of the hub's map fell by about 120 bytes, benchmarks.md issue 19, sixth pass). The rates
/// are the hub's [`UserRates`]. Times are milliseconds after [`UserRates`]' base: the three
/// message buckets are refilled together, so they share theirs. Tokens are `f32`: a day's
/// 2,000 keep a precision of a ten-thousandth of a token.
#[derive(Debug, Clone)]
pub struct UserBuckets {
    messages_at: u64,
    typing_at: u64,
    connects_at: u64,
    minute: f32,
    hour: f32,
    day: f32,
    typing: f32,
    connects: f32,
}

const _: () = assert!(std::mem::size_of::<UserBuckets>() <= 48);

impl UserBuckets {
    /// Whether every bucket is back to full (the user has been idle long enough).
    pub fn all_full(&self, r: &UserRates, now: Instant) -> bool {
        let t = r.stamp(now);
        let full =
            |rate: &Rate, tokens: f32, at: u64| f64::from(rate.refilled(tokens, t.saturating_sub(at))) >= rate.capacity;
        full(&r.minute, self.minute, self.messages_at)
            && full(&r.hour, self.hour, self.messages_at)
            && full(&r.day, self.day, self.messages_at)
            && full(&r.typing, self.typing, self.typing_at)
            && full(&r.connects, self.connects, self.connects_at)
    }

    /// One message against the minute, hour and day limits together: taken from every bucket,
    /// or from none if any is empty.
    pub fn take_message(&mut self, r: &UserRates, now: Instant) -> Result<(), Exceeded> {
        let t = r.stamp(now);
        let ms = t.saturating_sub(self.messages_at);
        self.messages_at = t;
        self.minute = r.minute.refilled(self.minute, ms);
        self.hour = r.hour.refilled(self.hour, ms);
        self.day = r.day.refilled(self.day, ms);
        for (rate, tokens) in [(&r.minute, self.minute), (&r.hour, self.hour), (&r.day, self.day)] {
            if tokens < 1.0 {
                return Err(rate.exceeded(f64::from(tokens)));
            }
        }
        for tokens in [&mut self.minute, &mut self.hour, &mut self.day] {
            *tokens -= 1.0;
        }
        Ok(())
    }

    pub fn take_typing(&mut self, r: &UserRates, now: Instant) -> Result<(), Exceeded> {
        take(&r.typing, &mut self.typing, &mut self.typing_at, r.stamp(now))
    }

    pub fn take_connect(&mut self, r: &UserRates, now: Instant) -> Result<(), Exceeded> {
        take(&r.connects, &mut self.connects, &mut self.connects_at, r.stamp(now))
    }
}

/// Takes a token from a compact bucket at `t`, or says when one will be there.
fn take(rate: &Rate, tokens: &mut f32, at: &mut u64, t: u64) -> Result<(), Exceeded> {
    *tokens = rate.refilled(*tokens, t.saturating_sub(*at));
    *at = t;
    if *tokens < 1.0 {
        return Err(rate.exceeded(f64::from(*tokens)));
    }
    *tokens -= 1.0;
    Ok(())
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
        // The rates first: their clock starts when they are made, and a time before that
        // counts as their start.
        let r = UserRates::new(&Limits::default());
        let t0 = Instant::now();
        let mut u = r.full(t0);
        for _ in 0..30 {
            assert!(u.take_message(&r, t0).is_ok());
        }
        let e = u.take_message(&r, t0).unwrap_err();
        assert_eq!((e.limit, e.interval), (30, Duration::from_secs(60)));
        assert!(u.take_message(&r, t0 + Duration::from_secs(2)).is_ok());
        // A refused message takes from no bucket.
        assert_eq!(u.hour.round() as i64, 500 - 31);
    }

    #[test]
    fn compact_buckets_refill_say_when_and_know_when_they_are_full() {
        let r = UserRates::new(&Limits { typing_per_minute: 20, connects_per_minute: 10, ..Limits::default() });
        let t0 = Instant::now();
        let mut u = r.full(t0);
        assert!(u.all_full(&r, t0));
        for _ in 0..20 {
            assert!(u.take_typing(&r, t0).is_ok());
        }
        assert!(!u.all_full(&r, t0));
        // 20 a minute: the next token after 3 s, and a refusal says so.
        let e = u.take_typing(&r, t0 + Duration::from_millis(1000)).unwrap_err();
        assert_eq!((e.limit, e.interval), (20, Duration::from_secs(60)));
        let wait = e.retry_after.as_secs_f64();
        assert!((wait - 2.0).abs() < 0.01, "retry_after {wait}");
        assert!(u.take_typing(&r, t0 + Duration::from_millis(3000)).is_ok());
        // The connect bucket is separate from the typing one.
        assert!(u.take_connect(&r, t0 + Duration::from_millis(3000)).is_ok());
        // Refill stops at the limit: a day's idle brings back 20, not more.
        let later = t0 + Duration::from_secs(86_400);
        assert!(u.all_full(&r, later));
        for _ in 0..20 {
            assert!(u.take_typing(&r, later).is_ok());
        }
        assert!(u.take_typing(&r, later).is_err());
        // A day's 2,000 count exactly in f32: the 2,001st is refused by the day's bucket,
        // which has a token again after 86,400 / 2,000 = 43.2 s.
        let r = UserRates::new(&Limits {
            messages_per_minute: 5000,
            messages_per_hour: 5000,
            messages_per_day: 2000,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let mut v = r.full(t0);
        for _ in 0..2000 {
            assert!(v.take_message(&r, t0).is_ok());
        }
        let e = v.take_message(&r, t0).unwrap_err();
        assert_eq!(e.limit, 2000);
        assert!((e.retry_after.as_secs_f64() - 43.2).abs() < 0.01, "retry_after {:?}", e.retry_after);
        assert!(v.take_message(&r, t0 + Duration::from_millis(43_201)).is_ok());
    }
}
