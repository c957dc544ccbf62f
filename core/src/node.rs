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
use crate::receipts::Claims;
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
    /// When it stops being valid, Unix seconds.
    fn not_after_s(&self) -> i64;
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
    /// With other nodes on the same store: the recipients reached here, waiting to claim their
    /// delivery watermarks (`receipts::claim_loop`); none for a node alone.
    pub claims: Option<Arc<Claims>>,
    /// Recent errors and closes for cause, for the admin console.
    pub incidents: crate::incidents::Incidents,
    /// Serializes caching a conversation with dropping idle ones (`Node::drop_idle`), so that
    /// a conversation cached again is never left unsubscribed.
    following: std::sync::Mutex<()>,
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
    pub claims: Option<Arc<Claims>>,
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
        // Nodes that share a store share recipients too: the store decides who sends a receipt.
        let claims = sequencer.as_ref().map(|_| Arc::new(Claims::new(Arc::clone(&metrics))));
        let hub = Hub::new(limits);
        let hub = Arc::new(if claims.is_some() { hub.with_claimed_receipts() } else { hub });
        let delivery: Arc<dyn Subscriber> =
            Arc::new(Delivery { hub: Arc::clone(&hub), clock, sequencer: sequencer.clone(), claims: claims.clone() });
        let broker = connect(Arc::downgrade(&delivery));
        let fanout = Arc::new(Fanout {
            hub: Arc::clone(&hub),
            broker: Arc::clone(&broker),
            metrics: Arc::clone(&metrics),
            clock,
            sequencer: sequencer.clone(),
            claims: claims.clone(),
        });
        let presence = Arc::new(LocalPresence::default());
        let sweep = Arc::default();
        Self { hub, broker, presence, clock, metrics, fanout, sequencer, sweep, claims, delivery }
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
        let Parts { hub, broker, presence, clock, metrics, fanout: _, sequencer, sweep, claims, delivery } = parts;
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
            claims,
            incidents: crate::incidents::Incidents::default(),
            following: std::sync::Mutex::new(()),
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
        let _following = self.following.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = &self.sequencer {
            s.track(&info.id, info.last_seq);
        }
        self.hub.cache_conversation(info, replace);
        self.broker.subscribe(&topic);
    }

    /// Cluster mode: stops hearing the conversations none of this node's connections needs
    /// any more (their members left it), so that NATS carries their messages only to the
    /// nodes that serve someone in them.
    pub fn drop_idle(&self) {
        let Some(s) = &self.sequencer else { return };
        let _following = self.following.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in self.hub.drop_idle_conversations() {
            s.forget(&c);
            self.broker.unsubscribe(&Topic::Conversation(c));
        }
    }

    /// Cluster mode: caches the conversations of a user who connects here and hears them from
    /// the other nodes, so that their messages reach the user's connections here as
    /// `conversation:unread` before the user joins any (on a node alone, the node that commits
    /// a message has its conversation cached already). At most [`FOLLOW_MAX`] a connect, read
    /// in one call.
    pub async fn follow(&self, conversations: impl Iterator<Item = &ConversationId>) {
        if self.sequencer.is_none() {
            return;
        }
        let uncached: Vec<ConversationId> =
            conversations.take(FOLLOW_MAX).filter(|c| self.hub.member_count(c).is_none()).cloned().collect();
        if uncached.is_empty() {
            return;
        }
        match self.store.conversations(&uncached).await {
            Ok(infos) => infos.into_iter().for_each(|info| self.cache_conversation(info, false)),
            Err(e) => tracing::debug!(error = %e, conversations = uncached.len(), "following conversations"),
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
            release_in_order(&self.hub, self.claims.as_deref(), self.clock, s, |s| s.fill(c, after, read));
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
        // Shutdown closes the connections registered (`Hub::close_all`, after the token is
        // cancelled, under the hub's lock): one registered since is closed here instead.
        if self.shutdown.is_cancelled() {
            conn.closer.close(CloseReason::ServerShutdown);
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

    /// Tells the sender's connections that `recipient` got `message` (a replay caught them up):
    /// at once on a node alone, which has recorded the watermark; in a cluster once this node
    /// has won the watermark in the store.
    pub fn tell_delivered(&self, message: &Message, recipient: UserId, now: confab_codec::Timestamp) {
        match &self.claims {
            Some(claims) => claims.claim(message, vec![recipient]),
            None => self.hub.tell_delivered(message, recipient, now),
        }
    }

    /// Whether delivery watermarks are moved by claims ([`Node::tell_delivered`]) rather than
    /// by the caller.
    pub fn claims_receipts(&self) -> bool {
        self.claims.is_some()
    }

    /// Cluster mode: `message:delivered` for a watermark this node won, to the sender's
    /// connections here and on the other nodes.
    pub(crate) fn send_receipt(&self, message: &Message, recipient: UserId) {
        self.hub.tell_delivered(message, recipient.clone(), self.clock.now());
        let topic = Topic::User(message.sender_id.clone());
        if !self.broker.has_audience(&topic) {
            return;
        }
        for ev in self.hub.delivered_events(message, &[recipient], self.clock.now()) {
            if let Err(e) = self.broker.publish(&topic, Publication::Receipt(ev)) {
                tracing::debug!(error = %e, "publishing a receipt");
            }
        }
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

/// Releases messages from the sequencer (`release`: admit or fill) and delivers them, in their
/// order, under the sequencer's order lock (see [`Sequencer::ordered`]); queues the receipts
/// of the recipients reached here for their claims.
fn release_in_order(
    hub: &Hub,
    claims: Option<&Claims>,
    clock: Clock,
    s: &Sequencer,
    release: impl FnOnce(&Sequencer) -> Vec<Ready>,
) {
    let _order = s.ordered();
    for (m, requester) in release(s) {
        let reached = hub.dispatch_message(&m, requester.as_ref(), clock.now());
        if let Some(claims) = claims {
            claims.claim(&m, reached);
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
    claims: Option<Arc<Claims>>,
}

impl Fanout {
    /// Delivers a local commit here. Through the sequencer (other nodes on the store) it may
    /// wait behind another node's earlier message; the recipients reached claim their
    /// watermarks themselves then, so none is left for the store's writer to record.
    fn dispatch(&self, message: &Message, requester: Option<&Requester>) -> Vec<UserId> {
        let Some(s) = &self.sequencer else { return self.hub.dispatch_message(message, requester, self.clock.now()) };
        let now = self.clock.instant();
        release_in_order(&self.hub, self.claims.as_deref(), self.clock, s, |s| {
            s.admit(message.clone(), requester.cloned(), now)
        });
        Vec::new()
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
    claims: Option<Arc<Claims>>,
}

impl Subscriber for Delivery {
    fn deliver(&self, topic: &Topic, publication: &Publication) {
        match (topic, publication) {
            (Topic::Conversation(_), Publication::Message(m)) => match &self.sequencer {
                Some(s) => {
                    let now = self.clock.instant();
                    release_in_order(&self.hub, self.claims.as_deref(), self.clock, s, |s| {
                        s.admit(Message::clone(m), None, now)
                    });
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
/// reconnects, `Node::sweep`): for lost last messages, for photo expiries a dead node was
/// timing, and for conversations this node no longer needs (`Node::drop_idle`). Ends on
/// shutdown.
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
            node.drop_idle();
            todo.extend(behind(&node, &sequencer).await);
            crate::session::announce_overdue(&node).await;
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
