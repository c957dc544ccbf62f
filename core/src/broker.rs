//! The broker: how what happens on one node reaches the connections held by the others.
//!
//! A node publishes to a [`Topic`] (a conversation, or a user) and hears what the other nodes
//! publish to the topics it subscribed to, through the [`Subscriber`] it was built with. The
//! store stays the record: a broker is a fast hint, and what it drops is repaired from the
//! store (a receiver sees a gap in a conversation's seqs), so an at-most-once broker is enough.
//!
//! [`LocalBus`] is the broker of nodes that share one process: with one node (today's server)
//! nothing ever leaves it; with several (tests) it delivers between them as a networked broker
//! would, synchronously and in order.

use crate::link::SharedEvent;
use confab_codec::event::Message;
use confab_codec::{ConversationId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Where a publication goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Everything about one conversation (its messages): subscribed by the nodes that hold a
    /// connection of one of its members.
    Conversation(ConversationId),
    /// Events addressed to one user (the app backend's pushes): subscribed by the nodes that
    /// hold one of the user's connections.
    User(UserId),
}

/// What travels on a topic.
#[derive(Debug, Clone)]
pub enum Publication {
    /// A committed message, for the receiving node to fan out to its own connections.
    Message(Arc<Message>),
    /// A ready event for the topic's user.
    Event(Arc<SharedEvent>),
    /// A `message:delivered` for the topic's user (the sender), coalesced as local receipts are.
    Receipt(Arc<SharedEvent>),
    /// An event for every member of the topic's conversation.
    ToMembers(Arc<SharedEvent>),
    /// An event for the connections that joined the topic's conversation, but `except_user`'s;
    /// `lossy` for latest-wins traffic (typing).
    ToJoined { event: Arc<SharedEvent>, except_user: Option<UserId>, lossy: bool },
    /// A conversation's members changed (the server API): nodes that cache it replace theirs.
    Members(Arc<crate::store::ConversationInfo>),
}

/// Why a publication was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached now; what was published is lost (receivers repair from the
    /// store).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker was closed.
    #[error("broker closed")]
    Closed,
}

/// A node's link to the other nodes.
///
/// The contract every implementation keeps:
/// - **At most once.** A publication reaches each subscribed node once or not at all; a lost
///   one is not retried (the store is the record, and seqs make the loss visible).
/// - **Ordered per publisher and topic.** What one node publishes to one topic arrives in the
///   order it was published; publications of different nodes interleave in any order.
/// - **No echo.** A node never hears its own publications: it has already delivered them to
///   its connections.
/// - **Never blocks.** `publish` queues or drops: it runs on the store's writer, in the path of
///   every message.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    fn publish(&self, topic: &Topic, publication: Publication) -> Result<(), BrokerError>;
    /// Whether a publication on `topic` may reach another node: `false` lets the publisher
    /// skip building it (the message path's copy). A networked broker, which cannot know,
    /// answers `true`.
    fn has_audience(&self, _topic: &Topic) -> bool {
        true
    }
    /// `Err(reason)` while the other nodes cannot be reached (a node alone always can).
    fn healthy(&self) -> Result<(), String> {
        Ok(())
    }
    /// Starts hearing `topic`; subscribing twice is subscribing once.
    fn subscribe(&self, topic: &Topic);
    fn unsubscribe(&self, topic: &Topic);
    /// Stops: later publications fail with [`BrokerError::Closed`], nothing more is heard.
    fn close(&self);
}

/// What a node does with what it hears.
pub trait Subscriber: Send + Sync + std::fmt::Debug + 'static {
    fn deliver(&self, topic: &Topic, publication: &Publication);
}

type NodeKey = u64;

#[derive(Default)]
struct Bus {
    next: NodeKey,
    nodes: HashMap<NodeKey, Weak<dyn Subscriber>>,
    /// The nodes subscribed to each topic: a list, since a process holds few nodes (one, but
    /// in tests). With a set, each user's topic cost an idle connection about 70 bytes more
    /// (benchmarks.md, issue 19, sixth pass).
    topics: HashMap<Topic, Vec<NodeKey>>,
}

/// The broker of the nodes of one process. Cheap to clone; each node gets its own handle from
/// [`LocalBus::attach`].
#[derive(Clone, Default)]
pub struct LocalBus {
    bus: Arc<Mutex<Bus>>,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalBus")
    }
}

fn lock(bus: &Mutex<Bus>) -> MutexGuard<'_, Bus> {
    bus.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalBus {
    /// A node joins the bus; what others publish to its topics goes to `subscriber`, which the
    /// bus holds weakly (a dropped node simply stops hearing).
    pub fn attach(&self, subscriber: Weak<dyn Subscriber>) -> LocalBroker {
        let mut bus = lock(&self.bus);
        bus.next += 1;
        let key = bus.next;
        bus.nodes.insert(key, subscriber);
        LocalBroker { bus: Arc::clone(&self.bus), key, closed: std::sync::atomic::AtomicBool::new(false) }
    }
}

/// One node's handle on a [`LocalBus`].
pub struct LocalBroker {
    bus: Arc<Mutex<Bus>>,
    key: NodeKey,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").field("node", &self.key).finish()
    }
}

impl Broker for LocalBroker {
    fn publish(&self, topic: &Topic, publication: Publication) -> Result<(), BrokerError> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(BrokerError::Closed);
        }
        // Collected under the lock, delivered outside it: a subscriber may publish or
        // subscribe in turn.
        let receivers: Vec<Arc<dyn Subscriber>> = {
            let bus = lock(&self.bus);
            let Some(keys) = bus.topics.get(topic) else { return Ok(()) };
            keys.iter().filter(|k| **k != self.key).filter_map(|k| bus.nodes.get(k)?.upgrade()).collect()
        };
        for r in receivers {
            r.deliver(topic, &publication);
        }
        Ok(())
    }

    fn has_audience(&self, topic: &Topic) -> bool {
        lock(&self.bus).topics.get(topic).is_some_and(|keys| keys.iter().any(|k| *k != self.key))
    }

    fn subscribe(&self, topic: &Topic) {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut bus = lock(&self.bus);
        if bus.topics.get(topic).is_some_and(|k| k.contains(&self.key)) {
            return;
        }
        bus.topics.entry(topic.clone()).or_default().push(self.key);
    }

    fn unsubscribe(&self, topic: &Topic) {
        let mut bus = lock(&self.bus);
        if let Some(keys) = bus.topics.get_mut(topic) {
            keys.retain(|k| *k != self.key);
            if keys.is_empty() {
                bus.topics.remove(topic);
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut bus = lock(&self.bus);
        bus.nodes.remove(&self.key);
        bus.topics.retain(|_, keys| {
            keys.retain(|k| *k != self.key);
            !keys.is_empty()
        });
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use confab_codec::event::{ServerEnvelope, ServerEvent};

    #[derive(Debug, Default)]
    struct Heard(Mutex<Vec<(Topic, String)>>);

    impl Subscriber for Heard {
        fn deliver(&self, topic: &Topic, p: &Publication) {
            let Publication::Event(e) = p else { return };
            self.0.lock().unwrap().push((topic.clone(), e.envelope.message_id.clone().unwrap_or_default()));
        }
    }

    fn event(id: &str) -> Publication {
        let env = ServerEnvelope {
            event: ServerEvent::Heartbeat(confab_codec::event::HeartbeatAck { timestamp: None, server_time: None }),
            timestamp: None,
            message_id: Some(id.into()),
            request_id: None,
        };
        Publication::Event(SharedEvent::new(env, None))
    }

    fn attach(bus: &LocalBus) -> (Arc<Heard>, LocalBroker) {
        let heard = Arc::new(Heard::default());
        let weak: Weak<dyn Subscriber> = Arc::downgrade(&(Arc::clone(&heard) as Arc<dyn Subscriber>));
        (heard, bus.attach(weak))
    }

    #[test]
    fn subscribers_of_other_nodes_hear_in_order_and_the_publisher_never_does() {
        let bus = LocalBus::default();
        let (a_heard, a) = attach(&bus);
        let (b_heard, b) = attach(&bus);
        let (c_heard, _c) = attach(&bus);
        let t = Topic::User(UserId::parse("u").unwrap());
        a.subscribe(&t);
        b.subscribe(&t);
        b.subscribe(&t);
        for id in ["1", "2", "3"] {
            a.publish(&t, event(id)).unwrap();
        }
        let ids = |h: &Heard| h.0.lock().unwrap().iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&b_heard), ["1", "2", "3"], "once each, in order, though subscribed twice");
        assert!(ids(&a_heard).is_empty(), "no echo");
        assert!(ids(&c_heard).is_empty(), "not subscribed");
        assert!(a.has_audience(&t) && b.has_audience(&t), "each has the other");
        b.unsubscribe(&t);
        assert!(!a.has_audience(&t), "only itself");
        a.publish(&t, event("4")).unwrap();
        assert_eq!(ids(&b_heard).len(), 3);
        a.close();
        assert_eq!(a.publish(&t, event("5")), Err(BrokerError::Closed));
    }
}
