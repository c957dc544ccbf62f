//! A node: one server's shared parts, composed once at start and handed to every session, the
//! APIs and the transports. The engines (store, broker, presence) come in through their traits,
//! so the same node runs on SQLite in the binary, on memory in the session's tests, and on a
//! networked database and broker in a cluster.
//!
//! The commit path, typed: the store's writer hands each committed message to the node's
//! [`Fanout`] ([`CommitSink`]), which delivers it to this node's connections through the hub and
//! publishes it for the other nodes; the [`Delivery`] of each of those hears it
//! ([`Subscriber`]) and delivers it to theirs.

use crate::auth::Auth;
use crate::broker::{Broker, LocalBus, Publication, Subscriber, Topic};
use crate::clock::Clock;
use crate::error::CloseReason;
use crate::hub::{Hub, Profile};
use crate::limits::Limits;
use crate::link::{Conn, SharedEvent};
use crate::metrics::Metrics;
use crate::presence::{LocalPresence, Presence};
use crate::sequencer::{self, Ready, Sequencer};
use crate::store::{CommitSink, ConversationInfo, Requester, Store, memory::MemoryStore};
use confab_codec::event::Message;
use confab_codec::{ConnectionId, ConversationId, UserId};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The TLS certificate clients may pin (its SHA-256 goes in the greeting); the server's
/// certificate store, which can change it while running.
pub trait Certificate: Send + Sync + std::fmt::Debug + 'static {
    /// SHA-256 of the certificate (DER), lowercase hex.
    fn sha256_hex(&self) -> String;
}

/// Everything sessions share.
#[derive(Debug)]
pub struct Node {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub auth: Arc<Auth>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Owns the timers sessions start (ephemeral photo expiry), so shutdown waits for them.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// The TLS certificate, when there is a TLS listener.
    pub certificate: Option<Arc<dyn Certificate>>,
    /// With other nodes on the same store: puts each conversation's messages in seq order
    /// (`sequencer`); none for a node alone.
    pub sequencer: Option<Arc<Sequencer>>,
    /// Wakes the repair loop's sweep at once (the broker reconnected: what it carried meanwhile
    /// is lost).
    pub sweep: Arc<tokio::sync::Notify>,
    /// The broker's subscriber for this node, which the bus holds weakly.
    _delivery: Arc<dyn Subscriber>,
}

/// The parts a node is made of that exist before its store: the store's writer needs the
/// fan-out (`fanout`) to hand its commits to.
#[derive(Debug)]
pub struct Parts {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub fanout: Arc<Fanout>,
    pub sequencer: Option<Arc<Sequencer>>,
    pub sweep: Arc<tokio::sync::Notify>,
    /// Keeps the broker's subscriber alive as long as the node (the bus holds it weakly).
    delivery: Arc<dyn Subscriber>,
}

impl Parts {
    /// A node's hub and fan-out on a [`LocalBus`] (one node: [`LocalBus::default`]) and a
    /// [`LocalPresence`].
    pub fn local(limits: Limits, clock: Clock, metrics: Arc<Metrics>, bus: &LocalBus) -> Self {
        Self::with_broker(limits, clock, metrics, None, |delivery| Arc::new(bus.attach(delivery)))
    }

    /// A node that shares its store with other nodes, through the broker `connect` makes for
    /// the node's subscriber: its conversations' messages go through a [`Sequencer`]. `sweep`
    /// wakes the repair loop's sweep (the broker calls it when it reconnects).
    pub fn networked(
        limits: Limits,
        clock: Clock,
        metrics: Arc<Metrics>,
        sweep: Arc<tokio::sync::Notify>,
        connect: impl FnOnce(std::sync::Weak<dyn Subscriber>) -> Arc<dyn Broker>,
    ) -> Self {
        let parts = Self::with_broker(limits, clock, metrics, Some(Arc::new(Sequencer::default())), connect);
        Self { sweep, ..parts }
    }

    fn with_broker(
        limits: Limits,
        clock: Clock,
        metrics: Arc<Metrics>,
        sequencer: Option<Arc<Sequencer>>,
        connect: impl FnOnce(std::sync::Weak<dyn Subscriber>) -> Arc<dyn Broker>,
    ) -> Self {
        let hub = Arc::new(Hub::new(limits));
        let delivery = Arc::new(Delivery {
            hub: Arc::clone(&hub),
            clock,
            sequencer: sequencer.clone(),
            broker: std::sync::OnceLock::new(),
        });
        let broker = connect(Arc::downgrade(&(Arc::clone(&delivery) as Arc<dyn Subscriber>)));
        let _ = delivery.broker.set(Arc::downgrade(&broker));
        let delivery: Arc<dyn Subscriber> = delivery;
        let fanout = Arc::new(Fanout {
            hub: Arc::clone(&hub),
            broker: Arc::clone(&broker),
            metrics: Arc::clone(&metrics),
            clock,
            sequencer: sequencer.clone(),
        });
        let presence = Arc::new(LocalPresence::default());
        let sweep = Arc::default();
        Self { hub, broker, presence, clock, metrics, fanout, sequencer, sweep, delivery }
    }
}

/// What else a node needs.
#[derive(Debug)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    pub certificate: Option<Arc<dyn Certificate>>,
}

impl Node {
    pub fn new(parts: Parts, services: Services) -> Arc<Self> {
        let Parts { hub, broker, presence, clock, metrics, fanout: _, sequencer, sweep, delivery } = parts;
        Arc::new(Self {
            hub,
            store: services.store,
            broker,
            presence,
            auth: services.auth,
            clock,
            metrics,
            tasks: services.tasks,
            shutdown: services.shutdown,
            certificate: services.certificate,
            sequencer,
            sweep,
            _delivery: delivery,
        })
    }

    /// A node on an in-memory store, a local broker and local presence: the session's tests.
    pub fn in_memory(limits: Limits, auth: Auth, clock: Clock) -> Arc<Self> {
        Self::in_memory_on(&LocalBus::default(), limits, auth, clock)
    }

    /// As [`Node::in_memory`], on a bus other nodes of the process share: several nodes in
    /// one test, each with its own store, hearing each other through the broker.
    pub fn in_memory_on(bus: &LocalBus, limits: Limits, auth: Auth, clock: Clock) -> Arc<Self> {
        let parts = Parts::local(limits, clock, Arc::new(Metrics::default()), bus);
        let store = Arc::new(MemoryStore::new(Arc::clone(&parts.fanout) as Arc<dyn CommitSink>));
        let services = Services {
            store,
            auth: Arc::new(auth),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            certificate: None,
        };
        Self::new(parts, services)
    }

    /// Caches a conversation in the hub (see [`Hub::cache_conversation`]) and hears the other
    /// nodes' messages in it. A change (`replace`: the server API changed the members) is
    /// published, so that the nodes that cache the conversation too replace theirs.
    pub fn cache_conversation(&self, info: ConversationInfo, replace: bool) {
        let topic = Topic::Conversation(info.id.clone());
        if replace {
            if let Err(e) = self.broker.publish(&topic, Publication::Members(Arc::new(info.clone()))) {
                tracing::debug!(error = %e, "publishing a membership change");
            }
        }
        if let Some(s) = &self.sequencer {
            s.track(&info.id, info.last_seq);
        }
        self.hub.cache_conversation(info, replace);
        self.broker.subscribe(&topic);
    }

    /// Cluster mode: caches the conversations of a user who connects here and hears them from
    /// the other nodes, so that their messages reach the user's connections here as
    /// `conversation:unread` before the user joins any (on a node alone, the node that commits
    /// a message has its conversation cached already). At most [`FOLLOW_MAX`] a connect.
    pub async fn follow(&self, conversations: impl Iterator<Item = &ConversationId>) {
        if self.sequencer.is_none() {
            return;
        }
        for c in conversations.take(FOLLOW_MAX) {
            if self.hub.member_count(c).is_some() {
                continue;
            }
            match self.store.conversation(c).await {
                Ok(Some(info)) => self.cache_conversation(info, false),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, conversation = %c, "following a conversation"),
            }
        }
    }

    /// Drops a deleted conversation; returns the connections that had joined it.
    pub fn forget_conversation(&self, c: &ConversationId) -> Vec<Conn> {
        self.broker.unsubscribe(&Topic::Conversation(c.clone()));
        if let Some(s) = &self.sequencer {
            s.forget(c);
        }
        self.hub.forget_conversation(c)
    }

    /// Delivers what the store holds of `c` after `after`, read to fill a gap in what the
    /// broker brought (see [`Sequencer::fill`]).
    pub fn fill(&self, c: &ConversationId, after: confab_codec::Seq, read: Vec<Message>) {
        if let Some(s) = &self.sequencer {
            dispatch_ready(&self.hub, self.broker.as_ref(), self.clock, s.fill(c, after, read));
        }
    }

    /// Counts and registers a connection: `Ok(true)` when it is the user's first anywhere.
    pub async fn register(&self, conn: &Conn, profile: Profile) -> Result<bool, CloseReason> {
        let limit = self.hub.limits().max_connections_per_user;
        self.hub.take_connect(&conn.user_id, self.clock.instant())?;
        let first = self.presence.connected(&conn.user_id, limit).await.map_err(|e| match e {
            crate::presence::PresenceError::TooManyConnections(_) => CloseReason::TooManyConnections,
            // The cluster's store is away: this node cannot serve now; another may.
            crate::presence::PresenceError::Unavailable(_) => CloseReason::ServerShutdown,
        })?;
        if self.hub.register(conn, profile) {
            self.broker.subscribe(&Topic::User(conn.user_id.clone()));
        }
        Ok(first)
    }

    /// Removes a connection from this node's hub (at once, so that nothing more is queued to
    /// it); [`Node::uncount`] then says whether it was the user's last anywhere.
    pub fn unregister(&self, conn: &Conn) {
        if self.hub.unregister(conn) {
            self.broker.unsubscribe(&Topic::User(conn.user_id.clone()));
        }
    }

    /// Uncounts a connection that [`Node::unregister`] removed: `true` when it was the user's
    /// last anywhere (they went offline at `at`).
    pub async fn uncount(&self, user: &UserId, at: confab_codec::Timestamp) -> bool {
        self.presence.disconnected(user, at).await
    }

    /// Sends an event to a user's connections, here and on the other nodes; how many
    /// connections of this node it reached.
    pub fn to_user(&self, user: &UserId, ev: &Arc<SharedEvent>) -> usize {
        self.to_users(std::iter::once(user), ev, None)
    }

    /// Sends an event to users' connections (but `except`), here and on the other nodes; how
    /// many connections of this node it reached.
    pub fn to_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        ev: &Arc<SharedEvent>,
        except: Option<&ConnectionId>,
    ) -> usize {
        let users: Vec<&UserId> = users.into_iter().collect();
        let n = self.hub.to_users(users.iter().copied(), ev, except);
        for u in users {
            self.publish(Topic::User(u.clone()), || Publication::Event(Arc::clone(ev)));
        }
        n
    }

    /// Sends an event to a conversation's members (but the connection `except`), here and on
    /// the other nodes.
    pub fn to_members(&self, c: &ConversationId, ev: &Arc<SharedEvent>, except: Option<&ConnectionId>) {
        self.hub.to_members(c, ev, except);
        self.publish(Topic::Conversation(c.clone()), || Publication::ToMembers(Arc::clone(ev)));
    }

    /// Sends an event to the connections that joined `c` (but `except_user`'s), here and on the
    /// other nodes; `lossy` for latest-wins traffic.
    pub fn to_joined(&self, c: &ConversationId, ev: &Arc<SharedEvent>, except_user: Option<&UserId>, lossy: bool) {
        self.hub.to_joined(c, ev, except_user, lossy);
        self.publish(Topic::Conversation(c.clone()), || Publication::ToJoined {
            event: Arc::clone(ev),
            except_user: except_user.cloned(),
            lossy,
        });
    }

    /// Tells the sender's connections, here and on the other nodes, that `recipient` got
    /// `message` (a replay caught them up).
    pub fn tell_delivered(&self, message: &Message, recipient: UserId, now: confab_codec::Timestamp) {
        self.hub.tell_delivered(message, recipient.clone(), now);
        send_receipts(&self.hub, self.broker.as_ref(), self.clock, message, &[recipient]);
    }

    /// Publishes for the other nodes, if any may hear it (none does for a node alone: nothing
    /// is built).
    fn publish(&self, topic: Topic, publication: impl FnOnce() -> Publication) {
        if self.broker.has_audience(&topic) {
            if let Err(e) = self.broker.publish(&topic, publication()) {
                tracing::debug!(error = %e, "publishing for the other nodes");
            }
        }
    }
}

/// Delivers messages the sequencer released, in their order, and sends the receipts of the
/// recipients reached here to the senders' connections on the other nodes.
fn dispatch_ready(hub: &Hub, broker: &dyn Broker, clock: Clock, ready: Vec<Ready>) {
    for (m, requester) in ready {
        let reached = hub.dispatch_message(&m, requester.as_ref(), clock.now());
        send_receipts(hub, broker, clock, &m, &reached);
    }
}

/// Cluster mode: the `message:delivered` of recipients reached on this node, for the sender's
/// connections on the others (the sender's connections here have theirs from the hub).
fn send_receipts(hub: &Hub, broker: &dyn Broker, clock: Clock, m: &Message, reached: &[UserId]) {
    let topic = Topic::User(m.sender_id.clone());
    if reached.is_empty() || !broker.has_audience(&topic) {
        return;
    }
    for ev in hub.delivered_events(m, reached, clock.now()) {
        if let Err(e) = broker.publish(&topic, Publication::Receipt(ev)) {
            tracing::debug!(error = %e, "publishing a receipt");
        }
    }
}

/// Where the store's writer hands each committed message, in commit order: this node's
/// connections, then the other nodes.
#[derive(Debug)]
pub struct Fanout {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    clock: Clock,
    sequencer: Option<Arc<Sequencer>>,
}

impl Fanout {
    /// Delivers a local commit here. Through the sequencer (other nodes on the store) it may
    /// wait behind another node's earlier message; the members it reaches then are not
    /// reported, and their delivery marks wait for a later message (a repeated receipt at
    /// worst, never a lost message).
    fn dispatch(&self, message: &Message, requester: Option<&Requester>) -> Vec<UserId> {
        let Some(s) = &self.sequencer else { return self.hub.dispatch_message(message, requester, self.clock.now()) };
        let mut advanced = Vec::new();
        for (m, r) in s.admit(message.clone(), requester.cloned(), self.clock.instant()) {
            let reached = self.hub.dispatch_message(&m, r.as_ref(), self.clock.now());
            send_receipts(&self.hub, self.broker.as_ref(), self.clock, &m, &reached);
            if m.seq == message.seq {
                advanced = reached;
            }
        }
        advanced
    }
}

impl CommitSink for Fanout {
    fn committed(&self, message: &Message, requester: Option<&Requester>) -> Vec<UserId> {
        self.metrics.messages_stored.inc();
        let topic = Topic::Conversation(message.conversation_id.clone());
        let advanced = self.dispatch(message, requester);
        // Alone on the bus (one node), nothing is built: no copy on the path of every message.
        if self.broker.has_audience(&topic) {
            if let Err(e) = self.broker.publish(&topic, Publication::Message(Arc::new(message.clone()))) {
                tracing::debug!(error = %e, "publishing a message");
            }
        }
        advanced
    }
}

/// What a node does with what the other nodes publish: delivers it to its own connections.
#[derive(Debug)]
struct Delivery {
    hub: Arc<Hub>,
    clock: Clock,
    sequencer: Option<Arc<Sequencer>>,
    /// Where receipts for the other nodes' senders go; set once the broker exists (it is made
    /// for this subscriber).
    broker: std::sync::OnceLock<std::sync::Weak<dyn Broker>>,
}

impl Subscriber for Delivery {
    fn deliver(&self, topic: &Topic, publication: &Publication) {
        match (topic, publication) {
            (Topic::Conversation(_), Publication::Message(m)) => match &self.sequencer {
                Some(s) => {
                    let ready = s.admit(Message::clone(m), None, self.clock.instant());
                    match self.broker.get().and_then(std::sync::Weak::upgrade) {
                        Some(broker) => dispatch_ready(&self.hub, broker.as_ref(), self.clock, ready),
                        None => ready.into_iter().for_each(|(m, r)| {
                            self.hub.dispatch_message(&m, r.as_ref(), self.clock.now());
                        }),
                    }
                }
                None => {
                    self.hub.dispatch_message(m, None, self.clock.now());
                }
            },
            (Topic::User(u), Publication::Receipt(ev)) => self.hub.receipt_to_user(u, ev),
            (Topic::Conversation(c), Publication::ToMembers(ev)) => self.hub.to_members(c, ev, None),
            (Topic::Conversation(c), Publication::ToJoined { event, except_user, lossy }) => {
                self.hub.to_joined(c, event, except_user.as_ref(), *lossy);
            }
            (Topic::User(u), Publication::Event(ev)) => {
                self.hub.to_users(std::iter::once(u), ev, None);
            }
            (Topic::Conversation(_), Publication::Members(info)) => {
                self.hub.cache_conversation(crate::store::ConversationInfo::clone(info), true);
            }
            _ => {}
        }
    }
}

/// Most conversations a connect caches in cluster mode (`Node::follow`): the most recently
/// active first.
const FOLLOW_MAX: usize = 1000;
/// How often the repair loop looks for gaps that have waited past [`sequencer::PATIENCE`].
const REPAIR_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How often every followed conversation's last seq is compared with the store's, to catch a
/// lost *last* message (no later one shows the gap).
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Most messages read from the store for one gap at a time.
const REPAIR_READ: u32 = 1000;

/// The repair loop of a node that shares its store (one with a sequencer): fills the gaps the
/// broker left from the store, and sweeps every [`SWEEP_EVERY`] (and when the broker
/// reconnects, `Node::sweep`). Ends on shutdown.
pub async fn repair_loop(node: Arc<Node>) {
    let Some(sequencer) = node.sequencer.clone() else { return };
    let mut tick = tokio::time::interval(REPAIR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = node.clock.instant();
    loop {
        let sweep_now = tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = tick.tick() => false,
            () = node.sweep.notified() => true,
        };
        let now = node.clock.instant();
        let mut todo = sequencer.overdue(now, sequencer::PATIENCE);
        if sweep_now || now.duration_since(swept) >= SWEEP_EVERY {
            swept = now;
            todo.extend(behind(&node, &sequencer).await);
        }
        for (c, after) in todo {
            match node.store.messages_after(&c, after, REPAIR_READ).await {
                Ok(read) => {
                    node.metrics.broker_gaps_repaired.inc();
                    node.fill(&c, after, read);
                }
                Err(e) => tracing::debug!(error = %e, conversation = %c, "repair: reading the store"),
            }
        }
    }
}

/// The followed conversations whose last seq in the store is past what this node delivered.
async fn behind(node: &Node, sequencer: &Sequencer) -> Vec<(ConversationId, confab_codec::Seq)> {
    let positions = sequencer.positions();
    let mut out = Vec::new();
    for chunk in positions.chunks(REPAIR_READ as usize) {
        let ids: Vec<ConversationId> = chunk.iter().map(|(c, _)| c.clone()).collect();
        let Ok(stored) = node.store.last_seqs(&ids).await else { continue };
        let stored: std::collections::HashMap<_, _> = stored.into_iter().collect();
        out.extend(chunk.iter().filter(|(c, at)| stored.get(c).is_some_and(|last| last > at)).cloned());
    }
    out
}
