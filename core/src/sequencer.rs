//! The sequencer: with several nodes, each conversation's messages reach a node in seq order,
//! once each, whatever order the broker and the node's own commits bring them in.
//!
//! One node's commits arrive in seq order, but with several nodes on one store a local commit
//! can be seq n+1 while seq n, committed on another node a moment earlier, is still on its way
//! through the broker, and the broker may lose or reorder a publication. So every message,
//! local or remote, is admitted here first: the next seq goes out at once with those held
//! behind it, a later one is held, an earlier one (already delivered) is dropped. A gap that
//! outlasts [`PATIENCE`] is filled from the store by the node's repair loop
//! ([`Sequencer::overdue`], [`Sequencer::fill`]), which is the truth (the broker is only a
//! hint). A node alone on its store needs none of this and has no sequencer.

use crate::store::Requester;
use confab_codec::event::Message;
use confab_codec::{ConversationId, Seq};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// How long a gap may wait for the broker before it is read from the store: a publication
/// from another node normally arrives within a millisecond or two; past this it is lost or
/// badly late.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);
/// Most messages held per conversation; past this the gap is repaired at once.
const MAX_HELD: usize = 4096;

/// A message to deliver, and who to acknowledge it to (a local commit's sender).
pub type Ready = (Message, Option<Requester>);

#[derive(Debug, Default)]
struct Track {
    /// The seq this node delivers next.
    next: u64,
    held: BTreeMap<u64, Ready>,
    /// When the oldest gap began.
    waiting_since: Option<Instant>,
}

impl Track {
    /// Takes `next` and what follows it from the held ones.
    fn release(&mut self, out: &mut Vec<Ready>) {
        while let Some(ready) = self.held.remove(&self.next) {
            out.push(ready);
            self.next += 1;
        }
        // What is still held is behind a new gap (or none).
        self.held.retain(|seq, _| *seq >= self.next);
        self.waiting_since = if self.held.is_empty() { None } else { self.waiting_since };
    }
}

/// Per conversation, the next seq to deliver and the messages held behind a gap.
#[derive(Debug, Default)]
pub struct Sequencer {
    tracks: Mutex<HashMap<ConversationId, Track>>,
    /// Held from admitting to delivering (see [`Sequencer::ordered`]).
    order: Mutex<()>,
}

impl Sequencer {
    /// Taken around admitting and delivering what was released (`node::release_in_order`): the store's
    /// writer (local commits), the broker's subscriber and the repair loop each release
    /// messages, and without it one of them could deliver seq n+1 while another, which
    /// released n just before, had not delivered n yet (seen in the three-senders test:
    /// 115..119 before 101..114).
    pub fn ordered(&self) -> MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConversationId, Track>> {
        // Plain data, consistent between statements: a panic elsewhere leaves it usable.
        self.tracks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts following `c` from `last` (its last seq as read from the store when the node
    /// caches it): what comes next is `last + 1`. One already followed is left as it is: a
    /// later read may be newer than messages still on their way here, which must not be
    /// skipped.
    pub fn track(&self, c: &ConversationId, last: Seq) {
        self.lock().entry(c.clone()).or_insert_with(|| Track { next: last.0 + 1, ..Track::default() });
    }

    /// Stops following a conversation (deleted, or no longer cached).
    pub fn forget(&self, c: &ConversationId) {
        self.lock().remove(c);
    }

    /// Admits a message; returns what is ready to deliver now, in seq order (nothing while it
    /// waits behind a gap, or if it was delivered already). A conversation not followed is
    /// passed through: no connection here needs it in order.
    pub fn admit(&self, message: Message, requester: Option<Requester>, now: Instant) -> Vec<Ready> {
        let Some(seq) = message.seq else { return vec![(message, requester)] };
        let mut tracks = self.lock();
        let Some(t) = tracks.get_mut(&message.conversation_id) else { return vec![(message, requester)] };
        let mut out = Vec::new();
        if seq.0 < t.next {
            return out;
        }
        t.held.insert(seq.0, (message, requester));
        t.release(&mut out);
        if !t.held.is_empty() && t.waiting_since.is_none() {
            t.waiting_since = Some(now);
        }
        out
    }

    /// Conversations whose gap has waited longer than `patience` (or holds too much), with
    /// the seq to read from the store after.
    pub fn overdue(&self, now: Instant, patience: std::time::Duration) -> Vec<(ConversationId, Seq)> {
        self.lock()
            .iter()
            .filter(|(_, t)| {
                t.held.len() >= MAX_HELD || t.waiting_since.is_some_and(|since| now.duration_since(since) >= patience)
            })
            .map(|(c, t)| (c.clone(), Seq(t.next.saturating_sub(1))))
            .collect()
    }

    /// The conversations followed, and the last seq delivered in each: what the sweep
    /// compares with the store to catch a lost last message.
    pub fn positions(&self) -> Vec<(ConversationId, Seq)> {
        self.lock().iter().map(|(c, t)| (c.clone(), Seq(t.next.saturating_sub(1)))).collect()
    }

    /// Messages read from the store after `after`, oldest first, to fill `c`'s gap: admitted
    /// as any other. The store holds every seq below a held one (seqs are taken in commit
    /// order), so one it did not return was deleted: delivery skips it.
    pub fn fill(&self, c: &ConversationId, after: Seq, read: Vec<Message>) -> Vec<Ready> {
        let mut tracks = self.lock();
        let Some(t) = tracks.get_mut(c) else { return Vec::new() };
        // Unless delivery moved on while the store was read (then only what is still ahead
        // counts), what the store did not return below the lowest seq at hand was deleted.
        let from_here = t.next == after.0 + 1;
        let lowest_read = read.first().and_then(|m| m.seq).map(|s| s.0);
        for m in read {
            if let Some(seq) = m.seq.filter(|s| s.0 >= t.next) {
                t.held.entry(seq.0).or_insert((m, None));
            }
        }
        let lowest = match (lowest_read, t.held.keys().next().copied()) {
            (Some(r), Some(h)) => Some(r.min(h)),
            (r, h) => r.or(h),
        };
        if let Some(lowest) = lowest.filter(|_| from_here) {
            t.next = t.next.max(lowest);
        }
        let mut out = Vec::new();
        t.release(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use confab_codec::event::Metadata;
    use confab_codec::{MessageId, MessageKind, Timestamp, UserId};

    fn m(seq: u64) -> Message {
        Message {
            id: MessageId::parse(&format!("msg_{seq}")).unwrap(),
            conversation_id: ConversationId::parse("c").unwrap(),
            seq: Some(Seq(seq)),
            sender_id: UserId::parse("u").unwrap(),
            content: String::new(),
            kind: MessageKind::Text,
            metadata: Metadata::default(),
            created_at: Timestamp::from_millis(0),
            updated_at: None,
            is_read: None,
            local_id: None,
            reply_to: None,
        }
    }

    fn seqs(r: &[Ready]) -> Vec<u64> {
        r.iter().map(|(m, _)| m.seq.unwrap().0).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn in_order_once_each_with_gaps_filled_from_the_store() {
        let s = Sequencer::default();
        let c = ConversationId::parse("c").unwrap();
        let now = Instant::now();
        assert_eq!(seqs(&s.admit(m(7), None, now)), [7], "not followed: passed through");
        s.track(&c, Seq(2));
        assert_eq!(seqs(&s.admit(m(3), None, now)), [3]);
        assert!(s.admit(m(3), None, now).is_empty(), "once");
        assert!(s.admit(m(5), None, now).is_empty(), "held behind 4");
        assert!(s.admit(m(6), None, now).is_empty());
        assert!(s.overdue(now, PATIENCE).is_empty(), "not yet");
        assert_eq!(seqs(&s.admit(m(4), None, now)), [4, 5, 6], "the gap closes");
        assert!(s.admit(m(9), None, now).is_empty(), "held behind 7 and 8");
        let later = now + PATIENCE;
        assert_eq!(s.overdue(later, PATIENCE), [(c.clone(), Seq(6))]);
        // The store has 8 and 9; 7 was deleted.
        assert_eq!(seqs(&s.fill(&c, Seq(6), vec![m(8), m(9)])), [8, 9]);
        assert!(s.overdue(later, PATIENCE).is_empty());
        assert_eq!(s.positions(), [(c.clone(), Seq(9))]);
        s.track(&c, Seq(4));
        s.track(&c, Seq(12));
        assert_eq!(seqs(&s.admit(m(10), None, later)), [10], "followed already: a read changes nothing");
        s.forget(&c);
        assert!(s.positions().is_empty());
    }
}
