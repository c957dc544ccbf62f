//! A connection's clocks and counters, as plain state: no I/O, no clock of their own (every
//! call is given `now`), so they are tested as they are and the session only acts on what they
//! answer.
//!
//! - [`Timers`]: the token's expiry, the typing states the server clears after
//!   [`TYPING_TIMEOUT`](super::TYPING_TIMEOUT) without a stop, and the transport's keepalive
//!   tick (one timer a connection, not one for the session and one for the transport);
//! - [`FrameGate`]: the per-connection frame rate (a token bucket) and the strikes after which
//!   a client that keeps sending over it is disconnected.

use crate::limits::{Bucket, Exceeded};
use confab_codec::ConversationId;
use std::time::Duration;
use tokio::time::Instant;

/// What is due at a given instant.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// The token ran out: the connection ends (typing states go with it).
    TokenExpired,
    /// These typing states ran out (possibly none): each is cleared and said so; and whether
    /// the keepalive tick is due.
    Ticks { typing_cleared: Vec<ConversationId>, keepalive: bool },
}

#[derive(Debug)]
pub(super) struct Timers {
    token: Instant,
    /// A list, not a map: empty it costs no allocation and 24 bytes of every connection (a
    /// map was 48), and the typing limit keeps it short (a few entries per timeout).
    typing: Vec<(ConversationId, Instant)>,
    typing_timeout: Duration,
    /// The next keepalive tick and the interval, if the transport asked for one.
    keepalive: Option<(Instant, Duration)>,
}

impl Timers {
    pub(super) fn new(token: Instant, typing_timeout: Duration) -> Self {
        Self { token, typing: Vec::new(), typing_timeout, keepalive: None }
    }

    /// A tick every `every` from `now` on (a zero interval is taken as a millisecond).
    pub(super) fn set_keepalive(&mut self, every: Duration, now: Instant) {
        let every = every.max(Duration::from_millis(1));
        self.keepalive = Some((now + every, every));
    }

    /// A refreshed token.
    pub(super) fn set_token(&mut self, expires: Instant) {
        self.token = expires;
    }

    /// The user is typing in `c`: cleared at `now` plus the timeout unless stopped or renewed.
    pub(super) fn start_typing(&mut self, c: ConversationId, now: Instant) {
        let until = now + self.typing_timeout;
        match self.typing.iter_mut().find(|(k, _)| *k == c) {
            Some((_, at)) => *at = until,
            None => self.typing.push((c, until)),
        }
    }

    /// Stops a typing state; true if there was one (then others should hear it stopped).
    pub(super) fn stop_typing(&mut self, c: &ConversationId) -> bool {
        let before = self.typing.len();
        self.typing.retain(|(k, _)| k != c);
        self.typing.len() != before
    }

    /// Every typing state, removed (the connection is ending).
    pub(super) fn drain_typing(&mut self) -> Vec<ConversationId> {
        self.typing.drain(..).map(|(c, _)| c).collect()
    }

    /// The earliest instant anything is due.
    pub(super) fn next(&self) -> Instant {
        let first = self.keepalive.map_or(self.token, |(at, _)| at.min(self.token));
        self.typing.iter().map(|(_, at)| *at).fold(first, Instant::min)
    }

    /// What is due at `now`; typing states that are due are removed.
    pub(super) fn due(&mut self, now: Instant) -> Due {
        if now >= self.token {
            return Due::TokenExpired;
        }
        let mut due = Vec::new();
        self.typing.retain(|(c, at)| {
            let ended = *at <= now;
            if ended {
                due.push(c.clone());
            }
            !ended
        });
        let keepalive = match &mut self.keepalive {
            Some((at, every)) if *at <= now => {
                // The next tick from now, not from the missed one: a late turn sends one ping.
                *at = now + *every;
                true
            }
            _ => false,
        };
        Due::Ticks { typing_cleared: due, keepalive }
    }
}

/// What the frame gate says of one frame.
#[derive(Debug, PartialEq)]
pub(super) enum Admit {
    Yes,
    /// Over the rate: refuse this frame (`RATE_LIMITED`), the connection carries on.
    Refused(Exceeded),
    /// Over the rate more than the allowed frames in a row: close the connection (1008).
    Close,
}

#[derive(Debug)]
pub(super) struct FrameGate {
    rate: Bucket,
    strikes: u32,
    max_strikes: u32,
}

impl FrameGate {
    pub(super) fn new(rate: Bucket, max_strikes: u32) -> Self {
        Self { rate, strikes: 0, max_strikes }
    }

    /// Every frame, good or bad, passes here first (SPEC §4: per connection 10 frames/s with a
    /// burst of 20). An admitted frame clears the strikes.
    pub(super) fn admit(&mut self, now: Instant) -> Admit {
        match self.rate.take(now) {
            Ok(()) => {
                self.strikes = 0;
                Admit::Yes
            }
            Err(_) if self.strikes >= self.max_strikes => Admit::Close,
            Err(e) => {
                self.strikes += 1;
                Admit::Refused(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn c(s: &str) -> ConversationId {
        ConversationId::parse(s).unwrap()
    }

    const SIX: Duration = Duration::from_secs(6);

    #[test]
    fn typing_states_clear_after_the_timeout_unless_stopped_or_renewed() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0 + Duration::from_secs(3600), SIX);
        t.start_typing(c("a"), t0);
        t.start_typing(c("b"), t0 + Duration::from_secs(2));
        assert_eq!(t.next(), t0 + SIX);
        assert_eq!(t.due(t0 + Duration::from_secs(5)), Due::Ticks { typing_cleared: vec![], keepalive: false });
        t.start_typing(c("a"), t0 + Duration::from_secs(5)); // renewed
        assert_eq!(t.due(t0 + SIX), Due::Ticks { typing_cleared: vec![], keepalive: false }, "a was renewed");
        assert_eq!(t.due(t0 + Duration::from_secs(8)), Due::Ticks { typing_cleared: vec![c("b")], keepalive: false });
        assert!(t.stop_typing(&c("a")));
        assert!(!t.stop_typing(&c("a")), "stopped once");
        assert_eq!(t.next(), t0 + Duration::from_secs(3600), "only the token is left");
    }

    #[test]
    fn the_token_s_expiry_comes_first_and_a_refresh_moves_it() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0 + Duration::from_secs(60), SIX);
        t.start_typing(c("a"), t0 + Duration::from_secs(58));
        assert_eq!(t.next(), t0 + Duration::from_secs(60));
        t.set_token(t0 + Duration::from_secs(120));
        assert_eq!(t.due(t0 + Duration::from_secs(61)), Due::Ticks { typing_cleared: vec![], keepalive: false });
        assert_eq!(t.due(t0 + Duration::from_secs(120)), Due::TokenExpired);
        assert_eq!(t.drain_typing(), vec![c("a")]);
    }

    #[test]
    fn the_keepalive_ticks_every_interval_beside_typing_and_a_late_turn_ticks_once() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0 + Duration::from_secs(3600), SIX);
        assert_eq!(t.next(), t0 + Duration::from_secs(3600), "no tick unless asked for");
        t.set_keepalive(Duration::from_secs(30), t0);
        assert_eq!(t.next(), t0 + Duration::from_secs(30));
        t.start_typing(c("a"), t0 + Duration::from_secs(26));
        assert_eq!(t.due(t0 + Duration::from_secs(29)), Due::Ticks { typing_cleared: vec![], keepalive: false });
        assert_eq!(t.due(t0 + Duration::from_secs(30)), Due::Ticks { typing_cleared: vec![], keepalive: true });
        assert_eq!(t.next(), t0 + Duration::from_secs(32), "the typing state is next");
        assert_eq!(t.due(t0 + Duration::from_secs(32)), Due::Ticks { typing_cleared: vec![c("a")], keepalive: false });
        assert_eq!(t.next(), t0 + Duration::from_secs(60));
        // A turn three intervals late ticks once, and the next tick is an interval after it.
        assert_eq!(t.due(t0 + Duration::from_secs(150)), Due::Ticks { typing_cleared: vec![], keepalive: true });
        assert_eq!(t.due(t0 + Duration::from_secs(151)), Due::Ticks { typing_cleared: vec![], keepalive: false });
        assert_eq!(t.next(), t0 + Duration::from_secs(180));
        // The token still ends the connection, tick or not.
        assert_eq!(t.due(t0 + Duration::from_secs(3600)), Due::TokenExpired);
    }

    #[test]
    fn over_the_rate_frames_are_refused_then_the_connection_closed_and_a_good_frame_forgives() {
        let t0 = Instant::now();
        let mut g = FrameGate::new(Bucket::new(10, Duration::from_secs(1), 20, t0), 3);
        for _ in 0..20 {
            assert_eq!(g.admit(t0), Admit::Yes);
        }
        for _ in 0..3 {
            assert!(matches!(g.admit(t0), Admit::Refused(_)));
        }
        assert_eq!(g.admit(t0), Admit::Close, "the fourth strike in a row");
        // A tenth of a second refills one frame: admitted, and the strikes start over.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(g.admit(later), Admit::Yes);
        assert!(matches!(g.admit(later), Admit::Refused(_)));
    }
}
