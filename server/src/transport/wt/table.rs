//! The stream table (SPEC §3, one conversation, one stream): which stream carries which
//! conversation's events on one WebTransport session. Pure state, no I/O: the dispatcher and
//! the stream readers ask it and act on its answers (finish a replaced stream, reset a slow
//! one, tell the session a conversation's stream is gone).

use confab_codec::ConversationId;
use std::collections::{HashMap, HashSet};

/// A stream as the table knows it: something with a stable id (the QUIC stream id).
pub(super) trait StreamId: Clone {
    fn stream_id(&self) -> u64;
}

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target<S> {
    /// Its conversation's own stream.
    Bound(S),
    /// The control stream (connection-level events, and conversations without a stream).
    Control(S),
    /// Nowhere: its conversation's stream was reset as a slow consumer and the client has not
    /// joined it again, or there is no control stream yet.
    Drop,
}

#[derive(Debug)]
pub(super) struct Table<S> {
    control: Option<S>,
    bound: HashMap<ConversationId, S>,
    /// Conversations whose stream was reset as a slow consumer: their events are dropped (not
    /// moved to the control stream, which would then fill up too) until the client joins them
    /// again.
    dropped: HashSet<ConversationId>,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self { control: None, bound: HashMap::new(), dropped: HashSet::new() }
    }
}

impl<S: StreamId> Table<S> {
    pub(super) fn set_control(&mut self, s: S) {
        self.control = Some(s);
    }

    /// A stream's first frame joined `c`: the stream is now `c`'s. Returns the stream it
    /// replaces, if any (a second stream for a conversation replaces the first, which the
    /// caller finishes). A join ends a slow-consumer drop.
    pub(super) fn bind(&mut self, c: ConversationId, s: S) -> Option<S> {
        self.dropped.remove(&c);
        self.bound.insert(c, s)
    }

    /// Unbinds `c` if it is still bound to stream `id` (not to a stream that replaced it);
    /// true if it was.
    pub(super) fn unbind(&mut self, c: &ConversationId, id: u64) -> bool {
        if self.bound.get(c).is_some_and(|s| s.stream_id() == id) {
            self.bound.remove(c);
            true
        } else {
            false
        }
    }

    /// `c`'s stream was reset because the client stopped reading it: drop its events until
    /// the client joins it again.
    pub(super) fn reset_slow(&mut self, c: &ConversationId) {
        self.dropped.insert(c.clone());
    }

    /// Where an event of `conversation` (none: a connection-level event) goes; `is_join` for
    /// `conversation:joined`, which ends a drop (the client joined again on the control stream).
    pub(super) fn target(&mut self, conversation: Option<&ConversationId>, is_join: bool) -> Target<S> {
        if let Some(c) = conversation.filter(|c| self.dropped.contains(*c)) {
            if !is_join {
                return Target::Drop;
            }
            self.dropped.remove(c);
        }
        match conversation.and_then(|c| self.bound.get(c)) {
            Some(s) => Target::Bound(s.clone()),
            None => self.control.clone().map_or(Target::Drop, Target::Control),
        }
    }

    /// Every conversation stream, unbound (the session is ending), and the control stream.
    pub(super) fn take_all(&mut self) -> (Option<S>, Vec<S>) {
        (self.control.clone(), self.bound.drain().map(|(_, s)| s).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    impl StreamId for u64 {
        fn stream_id(&self) -> u64 {
            *self
        }
    }

    fn c(s: &str) -> ConversationId {
        ConversationId::parse(s).unwrap()
    }

    #[test]
    fn events_go_to_their_conversation_s_stream_else_to_control() {
        let mut t = Table::<u64>::default();
        assert_eq!(t.target(None, false), Target::Drop, "no control stream yet");
        t.set_control(0);
        assert_eq!(t.bind(c("a"), 4), None);
        assert_eq!(t.target(Some(&c("a")), false), Target::Bound(4));
        assert_eq!(t.target(Some(&c("b")), false), Target::Control(0), "not bound: control");
        assert_eq!(t.target(None, false), Target::Control(0));
    }

    #[test]
    fn a_second_stream_for_a_conversation_replaces_the_first_and_the_old_one_cannot_unbind_it() {
        let mut t = Table::<u64>::default();
        t.set_control(0);
        t.bind(c("a"), 4);
        assert_eq!(t.bind(c("a"), 8), Some(4), "the caller finishes stream 4");
        assert!(!t.unbind(&c("a"), 4), "stream 4 ending does not unbind stream 8");
        assert_eq!(t.target(Some(&c("a")), false), Target::Bound(8));
        assert!(t.unbind(&c("a"), 8));
        assert!(!t.unbind(&c("a"), 8), "once");
        assert_eq!(t.target(Some(&c("a")), false), Target::Control(0));
    }

    #[test]
    fn a_slow_stream_s_conversation_is_dropped_until_the_client_joins_it_again() {
        let mut t = Table::<u64>::default();
        t.set_control(0);
        t.bind(c("a"), 4);
        t.reset_slow(&c("a"));
        assert!(t.unbind(&c("a"), 4));
        assert_eq!(t.target(Some(&c("a")), false), Target::Drop, "not moved to control");
        assert_eq!(t.target(Some(&c("b")), false), Target::Control(0), "others unaffected");
        // Re-joined on the control stream: its `conversation:joined` goes there, then live.
        assert_eq!(t.target(Some(&c("a")), true), Target::Control(0));
        assert_eq!(t.target(Some(&c("a")), false), Target::Control(0));
        // Or re-joined on a new stream.
        t.reset_slow(&c("a"));
        assert_eq!(t.bind(c("a"), 12), None);
        assert_eq!(t.target(Some(&c("a")), false), Target::Bound(12));
    }

    #[test]
    fn taking_all_unbinds_every_conversation() {
        let mut t = Table::<u64>::default();
        t.set_control(0);
        t.bind(c("a"), 4);
        t.bind(c("b"), 8);
        let (control, mut bound) = t.take_all();
        bound.sort_unstable();
        assert_eq!((control, bound), (Some(0), vec![4, 8]));
        assert_eq!(t.target(Some(&c("a")), false), Target::Control(0));
    }
}
