//! The hub: who is connected (users and their devices), which connection joined which
//! conversation, conversations' members and read watermarks, and the fan-out of events to
//! them. It holds no rules about who may do what (the session decides) and does no I/O: it
//! only puts events into connections' bounded queues.
//!
//! Messages reach the hub through [`Hub::dispatch_message`], called in commit order by the
//! store's commit callback, so every connection sees a conversation's messages in seq order.
//! The sending connection's `message:sent` is queued there too, ahead of the fan-out, so that
//! no receipt for a message reaches its sender before the message's id does. A connection
//! that joins with `since_seq` is fed its replay by its session while live messages for it are
//! held back; [`Hub::finish_replay`] then releases those past the replay, so nothing is missed
//! or repeated (SPEC §4 recovery). A broker for several nodes would call `dispatch_message`
//! from its subscription instead of the local feed.
//!
//! Receipts (`message:delivered`) wait in the sender's queue coalesced, the newest winning
//! (`Conn::send_receipt`): one per recipient in a conversation of up to
//! [`RECEIPTS_PER_RECIPIENT_UP_TO`] other members (seed 001's form), one per message with
//! counts in a bigger one. A group of any size costs its sender a bounded number of slots.

use crate::error::CloseReason;
use crate::limits::{Exceeded, Limits, UserBuckets, UserRates};
use crate::link::{Conn, IdMint, Queued, ReceiptKey, SharedEvent};
use crate::store::{ConversationInfo, Requester};
use confab_codec::event::{Delivered, Message, MessageNew, Sender, ServerEnvelope, ServerEvent, Unread};
use confab_codec::{ConnectionId, ConversationId, RequestId, Seq, Timestamp, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// How a user presents in events (from their token).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub username: Option<String>,
    pub avatar_url: Option<String>,
}

/// A user's connections on this node (their presence across nodes is `presence`'s).
#[derive(Debug)]
struct UserEntry {
    conns: Vec<Conn>,
    profile: Profile,
}

#[derive(Debug)]
struct Joined {
    conn: Conn,
    /// Live events held back while the session replays history to this connection.
    replay: Option<Vec<Arc<SharedEvent>>>,
    /// The last seq the replay sent: a message up to it that reaches the fan-out later (its
    /// commit was visible to the replay's read before the writer, or the broker, handed it
    /// here) is not sent again.
    replayed: Seq,
}

/// A member's watermarks, as cached.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    read: Seq,
    delivered: Seq,
}

#[derive(Debug, Default)]
struct ConvEntry {
    members: HashMap<UserId, Marks>,
    joined: HashMap<ConnectionId, Joined>,
    /// The last message fanned out here, and when it was sent (the admin console's activity).
    last: Option<(Seq, Timestamp)>,
}

/// How a connection talks: the protocol's names of its transport, dialect and codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionKind {
    pub transport: &'static str,
    pub dialect: &'static str,
    pub codec: &'static str,
}

/// One of the devices (connections) of a user on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub connection_id: ConnectionId,
    pub kind: ConnectionKind,
}

/// A conversation as this node knows it: cached because a member is connected here.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationActivity {
    pub id: ConversationId,
    pub members: Vec<UserId>,
    /// Connections here that joined it.
    pub joined: usize,
    /// The last message fanned out here since this node cached it.
    pub last: Option<(Seq, Timestamp)>,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, UserEntry>,
    buckets: HashMap<UserId, UserBuckets>,
    convs: HashMap<ConversationId, ConvEntry>,
    /// The connections registered, by kind (the admin console's counts, without a walk).
    kinds: HashMap<ConnectionKind, usize>,
    /// The conversations each connection joined, so that a disconnect touches those only (it
    /// used to walk every cached conversation: with tens of thousands cached, that showed in
    /// profiles of the benchmark's teardowns).
    joins: HashMap<ConnectionId, HashSet<ConversationId>>,
}

/// Conversations with up to this many members besides the sender give it one receipt per
/// recipient (seed 001); in bigger ones a receipt is per message, with how many members have
/// it, so that the sender's queue never holds more receipts than this per conversation.
pub const RECEIPTS_PER_RECIPIENT_UP_TO: u32 = 32;

/// How often (in ids handed out) idle per-user state is pruned.
const PRUNE_EVERY: u64 = 4096;

/// Drops the rate-limit buckets of offline users whose buckets have all refilled (nothing is
/// lost: a full bucket is what a new one would be), so that memory follows the users active in
/// the last day rather than every user ever seen.
fn prune(s: &mut State, rates: &UserRates, now: Instant) {
    let users = &s.users;
    s.buckets.retain(|u, b| users.contains_key(u) || !b.all_full(rates, now));
}

fn device(conn: &Conn) -> Device {
    Device {
        connection_id: conn.id.clone(),
        kind: ConnectionKind {
            transport: conn.transport.name(),
            dialect: conn.codec.dialect.name(),
            codec: conn.codec.format.name(),
        },
    }
}

/// Shared by every connection; cheap to lock (no await while held).
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    limits: Limits,
    rates: UserRates,
    ids: Arc<IdMint>,
    /// Cluster mode: `message:delivered` is sent by the node that wins the watermark in the
    /// store (`receipts`), not by [`Hub::dispatch_message`].
    claimed_receipts: bool,
}

impl Hub {
    pub fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::default(),
            rates: UserRates::new(&limits),
            limits,
            ids: Arc::default(),
            claimed_receipts: false,
        }
    }

    /// A hub whose [`Hub::dispatch_message`] sends no receipts (cluster mode: see `receipts`).
    #[must_use]
    pub fn with_claimed_receipts(self) -> Self {
        Self { claimed_receipts: true, ..self }
    }

    /// The server's id mint, which connections share for their own events.
    pub fn ids(&self) -> &Arc<IdMint> {
        &self.ids
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough to
        // serve; refusing every later request would be worse.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wraps an event in an envelope with a fresh server id.
    pub fn envelope(&self, event: ServerEvent, now: Timestamp, request_id: Option<RequestId>) -> ServerEnvelope {
        self.ids.envelope(event, now, request_id)
    }

    /// An envelope ready to share between connections.
    pub fn shared(&self, event: ServerEvent, now: Timestamp, conversation: Option<ConversationId>) -> Arc<SharedEvent> {
        SharedEvent::new(self.envelope(event, now, None), conversation)
    }

    // ---- connections and presence ----

    /// Takes a connect from the user's bucket (connects per minute).
    pub fn take_connect(&self, user: &UserId, now: Instant) -> Result<(), CloseReason> {
        let mut s = self.lock();
        if self.ids.count() % PRUNE_EVERY == 0 {
            prune(&mut s, &self.rates, now);
        }
        self.buckets(&mut s, user, now).take_connect(&self.rates, now).map_err(|_| CloseReason::TooManyConnections)
    }

    /// Adds a connection. `true` if it is the user's first on this node.
    pub fn register(&self, conn: &Conn, profile: Profile) -> bool {
        let mut s = self.lock();
        let entry = s
            .users
            .entry(conn.user_id.clone())
            .or_insert_with(|| UserEntry { conns: Vec::new(), profile: profile.clone() });
        entry.profile = profile;
        // Exactly one more: most users have one connection, and a `Vec` grows to four
        // entries (400 bytes) on its first push (benchmarks.md, issue 19, third pass).
        entry.conns.reserve_exact(1);
        entry.conns.push(conn.clone());
        let first = entry.conns.len() == 1;
        *s.kinds.entry(device(conn).kind).or_default() += 1;
        first
    }

    /// Removes a connection everywhere. `true` if it was the user's last on this node.
    pub fn unregister(&self, conn: &Conn) -> bool {
        let mut s = self.lock();
        for c in s.joins.remove(&conn.id).unwrap_or_default() {
            if let Some(entry) = s.convs.get_mut(&c) {
                entry.joined.remove(&conn.id);
            }
        }
        let (removed, last) = match s.users.get_mut(&conn.user_id) {
            Some(u) => {
                let before = u.conns.len();
                u.conns.retain(|c| c.id != conn.id);
                (u.conns.len() < before, u.conns.is_empty())
            }
            None => (false, false),
        };
        if removed {
            let kind = device(conn).kind;
            if let Some(n) = s.kinds.get_mut(&kind) {
                *n -= 1;
                if *n == 0 {
                    s.kinds.remove(&kind);
                }
            }
        }
        if last {
            s.users.remove(&conn.user_id);
        }
        last
    }

    pub fn profile(&self, user: &UserId) -> Profile {
        self.lock().users.get(user).map(|u| u.profile.clone()).unwrap_or_default()
    }

    // ---- limits ----

    pub fn take_message(&self, user: &UserId, now: Instant) -> Result<(), Exceeded> {
        let mut s = self.lock();
        self.buckets(&mut s, user, now).take_message(&self.rates, now)
    }

    pub fn take_typing(&self, user: &UserId, now: Instant) -> Result<(), Exceeded> {
        let mut s = self.lock();
        self.buckets(&mut s, user, now).take_typing(&self.rates, now)
    }

    fn buckets<'s>(&self, s: &'s mut State, user: &UserId, now: Instant) -> &'s mut UserBuckets {
        s.buckets.entry(user.clone()).or_insert_with(|| self.rates.full(now))
    }

    // ---- conversations ----

    /// Whether `user` is a member; `None` if the conversation is not cached (ask the store).
    pub fn is_member(&self, c: &ConversationId, user: &UserId) -> Option<bool> {
        self.lock().convs.get(c).map(|e| e.members.contains_key(user))
    }

    /// The lowest read and delivery watermarks among the members other than `user`, if the
    /// conversation is cached and has other members.
    pub fn others_marks(&self, c: &ConversationId, user: &UserId) -> Option<(Seq, Seq)> {
        let s = self.lock();
        let others = s.convs.get(c)?.members.iter().filter(|(u, _)| *u != user).map(|(_, m)| *m);
        others.fold(None, |acc, m| {
            let (read, delivered) = acc.unwrap_or((m.read, m.delivered));
            Some((read.min(m.read), delivered.min(m.delivered)))
        })
    }

    /// How many members, if cached.
    pub fn member_count(&self, c: &ConversationId) -> Option<usize> {
        self.lock().convs.get(c).map(|e| e.members.len())
    }

    /// The members, if cached.
    pub fn members(&self, c: &ConversationId) -> Option<Vec<UserId>> {
        self.lock().convs.get(c).map(|e| e.members.keys().cloned().collect())
    }

    /// Caches a conversation read from the store; `replace` when it comes from a change (the
    /// server API), otherwise only if absent so a stale read never overwrites a newer change.
    /// A change also joins the members' connections that listen to all their conversations
    /// (dialects without a join request), so that they hear a new conversation at once.
    pub fn cache_conversation(&self, info: ConversationInfo, replace: bool) {
        let mut s = self.lock();
        let c = info.id.clone();
        let entry = s.convs.entry(c.clone()).or_default();
        if !replace && !entry.members.is_empty() {
            return;
        }
        entry.members =
            info.members.into_iter().map(|m| (m.user_id, Marks { read: m.read, delivered: m.delivered })).collect();
        // Connections of users who are no longer members stop receiving it.
        let members = &entry.members;
        entry.joined.retain(|_, j| members.contains_key(&j.conn.user_id));
        if !replace {
            return;
        }
        let State { users, convs, joins, .. } = &mut *s;
        let Some(entry) = convs.get_mut(&c) else { return };
        for user in entry.members.keys() {
            for conn in users.get(user).map(|u| u.conns.as_slice()).unwrap_or_default() {
                if conn.listens_to_all() && !entry.joined.contains_key(&conn.id) {
                    entry
                        .joined
                        .insert(conn.id.clone(), Joined { conn: conn.clone(), replay: None, replayed: Seq::ZERO });
                    joins.entry(conn.id.clone()).or_default().insert(c.clone());
                }
            }
        }
    }

    /// Cluster mode: drops the cached conversations that no connection here joined and no
    /// member connected here belongs to (their users left this node), and returns them: the
    /// node stops hearing them. A member who connects again caches them again.
    pub fn drop_idle_conversations(&self) -> Vec<ConversationId> {
        let mut s = self.lock();
        let State { users, convs, .. } = &mut *s;
        let idle: Vec<ConversationId> = convs
            .iter()
            .filter(|(_, e)| e.joined.is_empty() && !e.members.keys().any(|u| users.contains_key(u)))
            .map(|(c, _)| c.clone())
            .collect();
        for c in &idle {
            convs.remove(c);
        }
        idle
    }

    /// The connections on this node by transport, dialect and codec, with their counts.
    pub fn connection_counts(&self) -> Vec<(ConnectionKind, usize)> {
        let mut out: Vec<(ConnectionKind, usize)> = self.lock().kinds.iter().map(|(k, n)| (*k, *n)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// The user's connections on this node.
    pub fn devices(&self, user: &UserId) -> Vec<Device> {
        let s = self.lock();
        s.users.get(user).map(|u| u.conns.iter().map(device).collect()).unwrap_or_default()
    }

    /// Closes one of the user's connections here with `reason`; whether it was found.
    pub fn disconnect(&self, user: &UserId, connection: &ConnectionId, reason: CloseReason) -> bool {
        let s = self.lock();
        let conn = s.users.get(user).and_then(|u| u.conns.iter().find(|c| c.id == *connection));
        conn.inspect(|c| c.closer.close(reason)).is_some()
    }

    /// Up to `limit` cached conversations, the most recently active first.
    pub fn conversation_activity(&self, limit: usize) -> Vec<ConversationActivity> {
        let s = self.lock();
        let mut all: Vec<ConversationActivity> = s
            .convs
            .iter()
            .map(|(id, e)| {
                let mut members: Vec<UserId> = e.members.keys().cloned().collect();
                members.sort();
                ConversationActivity { id: id.clone(), members, joined: e.joined.len(), last: e.last }
            })
            .collect();
        drop(s);
        all.sort_by(|a, b| b.last.map(|l| l.1).cmp(&a.last.map(|l| l.1)).then_with(|| a.id.cmp(&b.id)));
        all.truncate(limit);
        all
    }

    /// Drops a deleted conversation; returns the connections that had joined it.
    pub fn forget_conversation(&self, c: &ConversationId) -> Vec<Conn> {
        let mut s = self.lock();
        let Some(entry) = s.convs.remove(c) else { return Vec::new() };
        for conn in entry.joined.keys() {
            if let Some(joins) = s.joins.get_mut(conn) {
                joins.remove(c);
            }
        }
        entry.joined.into_values().map(|j| j.conn).collect()
    }

    /// Joins `conn` to a (cached) conversation. Live events are held back until
    /// [`Hub::finish_replay`]. Returns false if the conversation is not cached.
    pub fn join(&self, c: &ConversationId, conn: &Conn) -> bool {
        let mut s = self.lock();
        let Some(entry) = s.convs.get_mut(c) else { return false };
        entry
            .joined
            .insert(conn.id.clone(), Joined { conn: conn.clone(), replay: Some(Vec::new()), replayed: Seq::ZERO });
        s.joins.entry(conn.id.clone()).or_default().insert(c.clone());
        true
    }

    /// Ends the replay: releases held-back events, skipping messages the replay already sent.
    pub fn finish_replay(&self, c: &ConversationId, conn: &ConnectionId, replayed_up_to: Seq) {
        let mut s = self.lock();
        let Some(j) = s.convs.get_mut(c).and_then(|e| e.joined.get_mut(conn)) else { return };
        j.replayed = j.replayed.max(replayed_up_to);
        for ev in j.replay.take().unwrap_or_default() {
            let already = match &ev.envelope.event {
                ServerEvent::MessageNew(m) => m.message.seq.is_some_and(|s| s <= replayed_up_to),
                _ => false,
            };
            if !already {
                j.conn.send(ev);
            }
        }
    }

    pub fn leave(&self, c: &ConversationId, conn: &ConnectionId) -> bool {
        let mut s = self.lock();
        if let Some(joins) = s.joins.get_mut(conn) {
            joins.remove(c);
        }
        s.convs.get_mut(c).is_some_and(|e| e.joined.remove(conn).is_some())
    }

    pub fn set_read(&self, c: &ConversationId, user: &UserId, seq: Seq) {
        if let Some(m) = self.lock().convs.get_mut(c).and_then(|e| e.members.get_mut(user)) {
            m.read = m.read.max(seq);
        }
    }

    // ---- delivery ----

    /// Moves `user`'s delivery watermark in `c` to `seq`; true if it moved (the caller then
    /// tells the sender `message:delivered` and records the watermark).
    pub fn advance_delivered(&self, c: &ConversationId, user: &UserId, seq: Seq) -> bool {
        let mut s = self.lock();
        match s.convs.get_mut(c).and_then(|e| e.members.get_mut(user)) {
            Some(m) if m.delivered < seq => {
                m.delivered = seq;
                true
            }
            _ => false,
        }
    }

    /// Tells the sender's connections that `recipient` got `message` (and so every message of
    /// the conversation up to it).
    pub fn tell_delivered(&self, message: &Message, recipient: UserId, now: Timestamp) {
        let s = self.lock();
        self.receipts(&s, message, &[recipient], now);
    }

    /// The `message:delivered` events (with their coalescing keys) for the `recipients` whose
    /// devices just got `message`, each with how many of the other members' devices have had it: one per
    /// recipient in a conversation of up to [`RECEIPTS_PER_RECIPIENT_UP_TO`] other members,
    /// else one for them all (naming the recipient only if there is one).
    fn receipt_events(
        &self,
        s: &State,
        message: &Message,
        recipients: &[UserId],
        now: Timestamp,
    ) -> Vec<(ReceiptKey, Arc<SharedEvent>)> {
        let c = &message.conversation_id;
        let seq = message.seq.unwrap_or_default();
        let (delivered, others) = s.convs.get(c).map_or((0, 0), |e| {
            let others = e.members.iter().filter(|(u, _)| **u != message.sender_id);
            others.fold((0u32, 0u32), |(d, n), (_, m)| (d + u32::from(m.delivered >= seq), n + 1))
        });
        // Keyed by recipient only in a small conversation: in a big one every receipt takes
        // the conversation's one slot, whoever it names.
        let per_recipient = others <= RECEIPTS_PER_RECIPIENT_UP_TO;
        let mut out = Vec::new();
        let mut one = |recipient: Option<&UserId>| {
            let ev = self.shared(
                ServerEvent::Delivered(Delivered {
                    message_id: message.id.clone(),
                    conversation_id: c.clone(),
                    delivered_at: now,
                    user_id: recipient.cloned(),
                    seq: message.seq,
                    delivered_count: Some(delivered),
                    recipient_count: Some(others),
                }),
                now,
                Some(c.clone()),
            );
            out.push(((c.clone(), recipient.filter(|_| per_recipient).cloned()), ev));
        };
        if per_recipient {
            recipients.iter().for_each(|r| one(Some(r)));
        } else if let [r] = recipients {
            one(Some(r));
        } else if !recipients.is_empty() {
            one(None);
        }
        out
    }

    /// `message:delivered` to the sender's connections here (see [`Hub::receipt_events`]).
    fn receipts(&self, s: &State, message: &Message, recipients: &[UserId], now: Timestamp) {
        let conns = s.users.get(&message.sender_id).map(|u| u.conns.as_slice()).unwrap_or_default();
        if conns.is_empty() {
            return;
        }
        let seq = message.seq.unwrap_or_default();
        for (key, ev) in self.receipt_events(s, message, recipients, now) {
            for conn in conns {
                conn.send_receipt(key.clone(), seq, Arc::clone(&ev));
            }
        }
    }

    /// The `message:delivered` events for `recipients` whose devices here just got `message`,
    /// for the sender's connections on other nodes (cluster mode).
    pub fn delivered_events(&self, message: &Message, recipients: &[UserId], now: Timestamp) -> Vec<Arc<SharedEvent>> {
        let s = self.lock();
        self.receipt_events(&s, message, recipients, now).into_iter().map(|(_, ev)| ev).collect()
    }

    /// A receipt from another node to `user`'s connections here, coalesced as local ones are
    /// (the newest per conversation and recipient wins).
    pub fn receipt_to_user(&self, user: &UserId, ev: &Arc<SharedEvent>) {
        let ServerEvent::Delivered(d) = &ev.envelope.event else { return };
        let s = self.lock();
        let key = (d.conversation_id.clone(), d.user_id.clone());
        for conn in s.users.get(user).map(|u| u.conns.as_slice()).unwrap_or_default() {
            conn.send_receipt(key.clone(), d.seq.unwrap_or_default(), Arc::clone(ev));
        }
    }

    /// Fans out a committed message: `message:sent` to the connection that sent it (first, so
    /// that it precedes every receipt), `message:new` to every connection that joined the
    /// conversation (the sender's too: seed 001 clients take it as the confirmation),
    /// `conversation:unread` to members online without the conversation joined, and one
    /// `message:delivered` to the sender if any recipient's device got it for the first time
    /// (unless the receipts are claimed). Returns the recipients whose delivery watermark moved
    /// here.
    pub fn dispatch_message(&self, message: &Message, requester: Option<&Requester>, now: Timestamp) -> Vec<UserId> {
        let c = message.conversation_id.clone();
        let sender_id = message.sender_id.clone();
        let mut s = self.lock();
        if let Some(r) = requester {
            let conn = s.users.get(&sender_id).and_then(|u| u.conns.iter().find(|conn| conn.id == r.connection));
            if let Some(conn) = conn {
                let env = self.envelope(ServerEvent::MessageSent(message.clone()), now, r.request_id.clone());
                conn.send(SharedEvent::new(env, Some(c.clone())));
            }
        }
        let profile = s.users.get(&sender_id).map(|u| u.profile.clone()).unwrap_or_default();
        let Some(entry) = s.convs.get_mut(&c) else { return Vec::new() };
        if let Some(seq) = message.seq {
            entry.members.entry(sender_id.clone()).and_modify(|m| m.read = m.read.max(seq));
            entry.last = Some((seq, message.created_at));
        }
        let sender = Sender { id: sender_id.clone(), username: profile.username, avatar_url: profile.avatar_url };
        let new = SharedEvent::new(
            self.envelope(ServerEvent::MessageNew(MessageNew { message: message.clone(), sender }), now, None),
            Some(c.clone()),
        );
        let mut reached: HashSet<UserId> = HashSet::new();
        let mut joined_users: HashSet<UserId> = HashSet::new();
        for j in entry.joined.values_mut() {
            joined_users.insert(j.conn.user_id.clone());
            if message.seq.is_some_and(|seq| seq <= j.replayed) {
                continue;
            }
            let ok = match &mut j.replay {
                Some(held) if held.len() < self.limits.outbound_queue => {
                    held.push(Arc::clone(&new));
                    true
                }
                Some(_) => {
                    j.conn.closer.close(CloseReason::SlowConsumer);
                    false
                }
                None => j.conn.send(Arc::clone(&new)) == Queued::Yes,
            };
            if ok && j.conn.user_id != sender_id {
                reached.insert(j.conn.user_id.clone());
            }
        }
        let seq = message.seq.unwrap_or_default();
        let mut unread_for: Vec<(UserId, u64)> = Vec::new();
        for (user, marks) in &entry.members {
            if *user != sender_id && !joined_users.contains(user) {
                unread_for.push((user.clone(), seq.0.saturating_sub(marks.read.0)));
            }
        }
        let preview = message.preview();
        for (user, count) in unread_for {
            let Some(u) = s.users.get(&user) else { continue };
            let ev = self.shared(
                ServerEvent::Unread(Unread {
                    conversation_id: c.clone(),
                    unread_count: count,
                    last_message: Some(preview.clone()),
                }),
                now,
                None,
            );
            let mut got = false;
            for conn in &u.conns {
                got |= conn.send(Arc::clone(&ev)) == Queued::Yes;
            }
            if got {
                reached.insert(user);
            }
        }
        // Once per recipient, ever: only where the delivery watermark moves.
        let mut advanced = Vec::new();
        if let Some(entry) = s.convs.get_mut(&c) {
            for user in reached {
                if let Some(m) = entry.members.get_mut(&user).filter(|m| m.delivered < seq) {
                    m.delivered = seq;
                    advanced.push(user);
                }
            }
        }
        if !self.claimed_receipts {
            self.receipts(&s, message, &advanced, now);
        }
        advanced
    }

    /// Sends to every connection that joined `c`, except those of `except_user`; lossy for
    /// latest-wins traffic (typing).
    pub fn to_joined(&self, c: &ConversationId, ev: &Arc<SharedEvent>, except_user: Option<&UserId>, lossy: bool) {
        let mut s = self.lock();
        let Some(entry) = s.convs.get_mut(c) else { return };
        for j in entry.joined.values_mut() {
            if except_user == Some(&j.conn.user_id) {
                continue;
            }
            match &mut j.replay {
                Some(held) if !lossy && held.len() < self.limits.outbound_queue => held.push(Arc::clone(ev)),
                // Held back for a replay that is not draining: as with a full queue.
                Some(_) if !lossy => j.conn.closer.close(CloseReason::SlowConsumer),
                Some(_) => {}
                None if lossy => {
                    j.conn.send_lossy(Arc::clone(ev));
                }
                None => {
                    j.conn.send(Arc::clone(ev));
                }
            }
        }
    }

    /// Sends to every online connection of `users`, except the connection `except`.
    pub fn to_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        ev: &Arc<SharedEvent>,
        except: Option<&ConnectionId>,
    ) -> usize {
        let s = self.lock();
        let mut n = 0;
        for user in users {
            for conn in s.users.get(user).map(|u| u.conns.as_slice()).unwrap_or_default() {
                if Some(&conn.id) != except && conn.send(Arc::clone(ev)) == Queued::Yes {
                    n += 1;
                }
            }
        }
        n
    }

    /// Sends to every online connection of every member of `c`, except the connection `except`.
    pub fn to_members(&self, c: &ConversationId, ev: &Arc<SharedEvent>, except: Option<&ConnectionId>) {
        let members = self.members(c).unwrap_or_default();
        self.to_users(members.iter(), ev, except);
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for u in self.lock().users.values() {
            for c in &u.conns {
                c.closer.close(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::Clock;
    use crate::link::{ConnOutput, TransportKind};
    use crate::store::Member;
    use confab_codec::{Codec, Dialect, Format, MessageId, MessageKind};

    fn c1() -> ConversationId {
        ConversationId::parse("c1").unwrap()
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    /// A hub with c1 (alice and bob) cached, and a connection of bob's registered.
    fn hub_with_bob() -> (Hub, Conn, ConnOutput) {
        let hub = Hub::new(Limits::default());
        let members = ["alice", "bob"].map(|u| Member { user_id: user(u), read: Seq::ZERO, delivered: Seq::ZERO });
        hub.cache_conversation(
            ConversationInfo { id: c1(), members: members.to_vec(), max_members: None, last_seq: Seq::ZERO },
            false,
        );
        let codec = Codec::new(Dialect::Winkr, Format::Json);
        let (conn, out) =
            Conn::new(hub.ids(), user("bob"), TransportKind::WebSocket, codec, 16, Arc::default(), Clock::system());
        hub.register(&conn, Profile::default());
        (hub, conn, out)
    }

    fn message(seq: u64) -> Message {
        Message {
            id: MessageId::generate("msg_", u128::from(seq)),
            conversation_id: c1(),
            seq: Some(Seq(seq)),
            sender_id: user("alice"),
            content: format!("m{seq}"),
            kind: MessageKind::Text,
            metadata: Default::default(),
            created_at: Timestamp::from_millis(0),
            updated_at: None,
            is_read: None,
            local_id: None,
            reply_to: None,
        }
    }

    /// The seqs of the `message:new` events waiting in `out`.
    fn delivered(out: &mut ConnOutput) -> Vec<u64> {
        std::iter::from_fn(|| out.try_recv())
            .filter_map(|o| match &o.0.envelope.event {
                ServerEvent::MessageNew(m) => m.message.seq.map(|s| s.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_admin_view_counts_kinds_lists_devices_and_disconnects_one() {
        let (hub, bob, _out) = hub_with_bob();
        let codec = Codec::new(Dialect::Systimz, Format::MsgPack);
        let (bob2, _out2) =
            Conn::new(hub.ids(), user("bob"), TransportKind::WebTransport, codec, 16, Arc::default(), Clock::system());
        hub.register(&bob2, Profile::default());
        let counts = hub.connection_counts();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.iter().all(|(_, n)| *n == 1));
        assert!(
            counts.iter().any(|(k, _)| (k.transport, k.dialect, k.codec) == ("webtransport", "systimz", "msgpack"))
        );
        assert_eq!(hub.devices(&user("bob")).len(), 2);
        assert!(hub.disconnect(&user("bob"), &bob2.id, CloseReason::Disconnected));
        assert_eq!(bob2.closer.reason(), Some(CloseReason::Disconnected));
        assert_eq!(bob.closer.reason(), None, "the other device stays");
        assert!(!hub.disconnect(&user("alice"), &bob.id, CloseReason::Disconnected), "only the user's own");
        hub.unregister(&bob2);
        hub.unregister(&bob2);
        assert_eq!(hub.connection_counts().len(), 1, "counted down once");
        // Activity: the last message fanned out.
        assert_eq!(hub.conversation_activity(10)[0].last, None);
        hub.dispatch_message(&message(7), None, Timestamp::from_millis(0));
        let a = hub.conversation_activity(10);
        assert_eq!((a.len(), a[0].last.map(|l| l.0), a[0].members.len()), (1, Some(Seq(7)), 2));
        hub.unregister(&bob);
        assert!(hub.connection_counts().is_empty());
    }

    #[test]
    fn live_messages_wait_behind_a_replay_and_only_those_past_it_are_released() {
        let (hub, conn, mut out) = hub_with_bob();
        conn.no_greeting();
        assert!(hub.join(&c1(), &conn));
        for seq in 1..=3 {
            hub.dispatch_message(&message(seq), None, Timestamp::from_millis(0));
        }
        assert!(delivered(&mut out).is_empty(), "held back during the replay");
        // The replay sent up to seq 2 (it read the store after seq 3 was committed, or not).
        hub.finish_replay(&c1(), &conn.id, Seq(2));
        assert_eq!(delivered(&mut out), [3], "once each: 1 and 2 came with the replay");
        hub.dispatch_message(&message(4), None, Timestamp::from_millis(0));
        assert_eq!(delivered(&mut out), [4], "live after the replay");
    }

    /// The replay read a message whose commit the fan-out had not dispatched yet (PostgreSQL:
    /// the read sees the commit before the writer hands it over; a cluster: before the broker
    /// brings it); when it comes after the replay ended, it is not sent twice.
    #[test]
    fn a_message_the_replay_sent_is_not_sent_again_when_its_fan_out_comes_late() {
        let (hub, conn, mut out) = hub_with_bob();
        conn.no_greeting();
        assert!(hub.join(&c1(), &conn));
        hub.finish_replay(&c1(), &conn.id, Seq(2));
        for seq in 1..=3 {
            hub.dispatch_message(&message(seq), None, Timestamp::from_millis(0));
        }
        assert_eq!(delivered(&mut out), [3]);
    }

    #[test]
    fn a_replay_that_never_drains_makes_the_connection_a_slow_consumer() {
        let (hub, conn, _out) = hub_with_bob();
        assert!(hub.join(&c1(), &conn));
        for seq in 1..=Limits::default().outbound_queue as u64 + 1 {
            hub.dispatch_message(&message(seq), None, Timestamp::from_millis(0));
        }
        assert_eq!(conn.closer.reason(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn a_conversation_is_idle_once_no_member_is_connected_here_and_none_joined() {
        let (hub, conn, _out) = hub_with_bob();
        assert!(hub.join(&c1(), &conn));
        assert!(hub.drop_idle_conversations().is_empty(), "joined");
        assert!(hub.leave(&c1(), &conn.id));
        assert!(hub.drop_idle_conversations().is_empty(), "bob, a member, is still connected here");
        hub.unregister(&conn);
        assert_eq!(hub.drop_idle_conversations(), [c1()]);
        assert_eq!(hub.member_count(&c1()), None, "dropped from the cache");
        assert!(hub.drop_idle_conversations().is_empty());
    }

    #[test]
    fn the_last_local_connection_is_reported_and_its_joins_are_dropped() {
        let (hub, conn, _out) = hub_with_bob();
        assert!(hub.join(&c1(), &conn));
        assert!(hub.unregister(&conn), "bob's last connection here");
        assert!(!hub.leave(&c1(), &conn.id), "unregistering left every conversation");
        assert!(!hub.unregister(&conn));
    }
}
