//! Cluster mode's broker: core NATS (`--broker nats://HOST:PORT[,...]`), at most once, as the
//! [`Broker`] contract asks. PostgreSQL is the record; what NATS loses shows as a gap in a
//! conversation's seqs and is read from the store (`confab_core::sequencer`).
//!
//! Subjects: `confab.c.<conversation>` for a conversation's messages and membership changes,
//! `confab.u.<user>` for events addressed to a user. A node subscribes to a subject only while
//! it holds a connection that needs it, so a message is copied to the nodes that need it, never
//! to all. The client is connected with `no_echo`: a node never hears its own publications.
//!
//! Publishing never blocks the store's writer: a publication goes into a bounded queue that a
//! task hands to NATS; when the queue is full (NATS away for long) it is dropped and counted.

use bytes::Bytes;
use confab_codec::event::{ServerEnvelope, ServerEvent};
use confab_codec::{Codec, ConversationId, Dialect, Format, Seq, UserId};
use confab_core::broker::{Broker, BrokerError, Publication, Subscriber, Topic};
use confab_core::link::SharedEvent;
use confab_core::metrics::Metrics;
use confab_core::store::{ConversationInfo, Member};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::mpsc;

/// Publications waiting for NATS; past this they are dropped (and repaired from the store).
const PUBLISH_QUEUE: usize = 65_536;

/// The URLs of `--broker`: `nats://HOST:PORT`, comma-separated for a NATS cluster.
pub fn parse_urls(s: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = s.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        return Err("broker: give nats://HOST:PORT[,nats://HOST:PORT...]".into());
    }
    for u in &urls {
        if !u.starts_with("nats://") {
            return Err(format!("broker: {u:?} is not nats://HOST:PORT"));
        }
        u.parse::<async_nats::ServerAddr>().map_err(|e| format!("broker: {u:?}: {e}"))?;
    }
    Ok(urls)
}

/// Connects to NATS. Reconnects by itself for ever; `reconnected` is woken when the link comes
/// back or NATS dropped messages for this node (what it carried meanwhile is lost: the node
/// sweeps its conversations then).
pub async fn connect(
    urls: &[String],
    metrics: Arc<Metrics>,
    reconnected: Arc<tokio::sync::Notify>,
) -> Result<async_nats::Client, String> {
    let watched = Arc::clone(&metrics);
    let options = async_nats::ConnectOptions::new()
        .name("confab")
        .no_echo()
        .connection_timeout(std::time::Duration::from_secs(5))
        // A link that went silent (a partition, no reset) is noticed after two unanswered
        // pings: 3-4 s at this interval, inside SPEC §8's 8 s for /readyz.
        .ping_interval(std::time::Duration::from_secs(1))
        .max_reconnects(None)
        // Soon after a broker restart (the default backoff grows to seconds): a node cut off for
        // SHED_AFTER sheds its clients.
        .reconnect_delay_callback(|attempts| std::time::Duration::from_millis((attempts as u64 * 100).min(1000)))
        .event_callback(move |event| {
            let (metrics, reconnected) = (Arc::clone(&watched), Arc::clone(&reconnected));
            async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics.broker_connected.set(1);
                        tracing::info!("broker: connected to NATS");
                        reconnected.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        metrics.broker_connected.set(0);
                        tracing::warn!("broker: lost NATS; reconnecting (messages are repaired from the store)");
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        // NATS dropped messages for this node: the sweep finds what is missing.
                        reconnected.notify_one();
                    }
                    other => tracing::debug!(event = %other, "broker: NATS event"),
                }
            }
        });
    let addrs: Vec<async_nats::ServerAddr> =
        urls.iter().map(|u| u.parse()).collect::<Result<_, _>>().map_err(|e| format!("broker: {e}"))?;
    let client = options.connect(addrs).await.map_err(|e| format!("broker: NATS: {e}"))?;
    metrics.broker_connected.set(1);
    Ok(client)
}

/// A subject token for an id: the id itself, or `%` and its hex where it holds a `.` (a
/// subject's separator; ids never hold `*`, `>`, `%` or whitespace).
fn token(id: &str) -> String {
    if id.contains('.') {
        let mut t = String::with_capacity(1 + 2 * id.len());
        t.push('%');
        for b in id.bytes() {
            t.push_str(&format!("{b:02x}"));
        }
        t
    } else {
        id.to_owned()
    }
}

fn subject(topic: &Topic) -> String {
    match topic {
        Topic::Conversation(c) => format!("confab.c.{}", token(c.as_str())),
        Topic::User(u) => format!("confab.u.{}", token(u.as_str())),
    }
}

/// What travels between nodes: a kind byte, then the Winkr MessagePack envelope the codec
/// reads back (a message as `message:sent`; an event, after its conversation's id), or a
/// membership change as JSON.
fn codec() -> Codec {
    Codec::new(Dialect::Winkr, Format::MsgPack).with_max_frame(1 << 20)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MembersWire {
    id: ConversationId,
    max_members: Option<u32>,
    last_seq: u64,
    members: Vec<(UserId, u64, u64)>,
}

pub(crate) fn encode(p: &Publication) -> Result<Vec<u8>, String> {
    let codec = codec();
    let mut out = Vec::with_capacity(256);
    match p {
        Publication::Message(m) => {
            out.push(b'm');
            let env = ServerEnvelope::new(ServerEvent::MessageSent(confab_codec::event::Message::clone(m)));
            codec.encode_server_into(&env, &mut out).map_err(|e| e.to_string())?;
        }
        Publication::Event(ev) => put_event(&mut out, b'e', ev)?,
        Publication::Receipt(ev) => put_event(&mut out, b'r', ev)?,
        Publication::ToMembers(ev) => put_event(&mut out, b'M', ev)?,
        Publication::ToJoined { event, except_user, lossy } => {
            out.push(b'J');
            out.push(u8::from(*lossy));
            put_str(&mut out, except_user.as_ref().map_or("", |u| u.as_str()))?;
            put_event(&mut out, b'e', event)?;
        }
        Publication::Members(info) => {
            out.push(b'c');
            let wire = MembersWire {
                id: info.id.clone(),
                max_members: info.max_members,
                last_seq: info.last_seq.0,
                members: info.members.iter().map(|m| (m.user_id.clone(), m.read.0, m.delivered.0)).collect(),
            };
            serde_json::to_writer(&mut out, &wire).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// An id, after its length in one byte (ids are at most 128 bytes).
fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    out.push(u8::try_from(s.len()).map_err(|_| "id too long".to_owned())?);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn take_str(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    let (len, rest) = bytes.split_first().ok_or("truncated event")?;
    let (s, rest) = rest.split_at_checked(usize::from(*len)).ok_or("truncated event")?;
    Ok((std::str::from_utf8(s).map_err(|e| e.to_string())?, rest))
}

/// A kind byte, the event's conversation (empty for none), then its envelope.
fn put_event(out: &mut Vec<u8>, kind: u8, ev: &SharedEvent) -> Result<(), String> {
    out.push(kind);
    put_str(out, ev.conversation.as_ref().map_or("", |c| c.as_str()))?;
    codec().encode_server_into(&ev.envelope, out).map_err(|e| e.to_string()).map(drop)
}

fn take_event(bytes: &[u8]) -> Result<Arc<SharedEvent>, String> {
    let (c, env) = take_str(bytes)?;
    let conversation = if c.is_empty() { None } else { Some(ConversationId::parse(c)?) };
    let envelope = codec().decode_server(env).map_err(|e| e.to_string())?;
    Ok(SharedEvent::new(envelope, conversation))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Publication, String> {
    let (kind, rest) = bytes.split_first().ok_or("empty publication")?;
    match kind {
        b'm' => match codec().decode_server(rest).map_err(|e| e.to_string())?.event {
            ServerEvent::MessageSent(m) => Ok(Publication::Message(Arc::new(m))),
            other => Err(format!("a message publication holding {}", other.name())),
        },
        b'e' => Ok(Publication::Event(take_event(rest)?)),
        b'r' => Ok(Publication::Receipt(take_event(rest)?)),
        b'M' => Ok(Publication::ToMembers(take_event(rest)?)),
        b'J' => {
            let (lossy, rest) = rest.split_first().ok_or("truncated event")?;
            let (except, rest) = take_str(rest)?;
            let except_user = if except.is_empty() { None } else { Some(UserId::parse(except)?) };
            let event = match rest.split_first() {
                Some((b'e', rest)) => take_event(rest)?,
                _ => return Err("truncated event".into()),
            };
            Ok(Publication::ToJoined { event, except_user, lossy: *lossy != 0 })
        }
        b'c' => {
            let wire: MembersWire = serde_json::from_slice(rest).map_err(|e| e.to_string())?;
            Ok(Publication::Members(Arc::new(ConversationInfo {
                id: wire.id,
                max_members: wire.max_members,
                last_seq: Seq(wire.last_seq),
                members: wire
                    .members
                    .into_iter()
                    .map(|(user_id, read, delivered)| Member { user_id, read: Seq(read), delivered: Seq(delivered) })
                    .collect(),
            })))
        }
        other => Err(format!("unknown publication kind {other}")),
    }
}

/// One node's link to the others over NATS.
pub struct NatsBroker {
    client: async_nats::Client,
    out: mpsc::Sender<(String, Bytes)>,
    /// A task per subscribed subject (dropping its NATS subscription unsubscribes).
    subscriptions: Mutex<HashMap<Topic, tokio::task::AbortHandle>>,
    subscriber: Weak<dyn Subscriber>,
    metrics: Arc<Metrics>,
    closed: AtomicBool,
    /// Ends the publishing task.
    stop: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker").finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// The broker of the node whose subscriber is `subscriber`, on a connected client. Must be
    /// made on the runtime: its publishing task starts here.
    pub fn new(client: async_nats::Client, subscriber: Weak<dyn Subscriber>, metrics: Arc<Metrics>) -> Self {
        let (out, mut rx) = mpsc::channel::<(String, Bytes)>(PUBLISH_QUEUE);
        let stop = tokio_util::sync::CancellationToken::new();
        let (publisher, until) = (client.clone(), stop.clone());
        let published = Arc::clone(&metrics);
        // Ends when the broker is closed or dropped.
        drop(tokio::spawn(async move {
            loop {
                let (subject, payload) = tokio::select! {
                    () = until.cancelled() => return,
                    next = rx.recv() => match next {
                        Some(p) => p,
                        None => return,
                    },
                };
                match publisher.publish(subject, payload).await {
                    Ok(()) => drop(published.broker_published.inc()),
                    Err(e) => {
                        published.broker_dropped.inc();
                        tracing::debug!(error = %e, "broker: publishing to NATS");
                    }
                }
            }
        }));
        Self { client, out, subscriptions: Mutex::default(), subscriber, metrics, closed: AtomicBool::new(false), stop }
    }

    fn subscriptions(&self) -> MutexGuard<'_, HashMap<Topic, tokio::task::AbortHandle>> {
        self.subscriptions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Broker for NatsBroker {
    fn publish(&self, topic: &Topic, publication: Publication) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed);
        }
        let bytes = encode(&publication).map_err(BrokerError::Unavailable)?;
        self.out.try_send((subject(topic), Bytes::from(bytes))).map_err(|e| {
            self.metrics.broker_dropped.inc();
            BrokerError::Unavailable(format!("publish queue: {e}"))
        })
    }

    fn subscribe(&self, topic: &Topic) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut subs = self.subscriptions();
        if subs.contains_key(topic) {
            return;
        }
        let (client, topic_, subscriber, metrics) =
            (self.client.clone(), topic.clone(), self.subscriber.clone(), Arc::clone(&self.metrics));
        // Ends when unsubscribed (aborted), when the broker is closed, or with the node.
        let task = tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut sub = match client.subscribe(subject(&topic_)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "broker: subscribing on NATS");
                    return;
                }
            };
            while let Some(m) = sub.next().await {
                metrics.broker_received.inc();
                let Some(node) = subscriber.upgrade() else { return };
                match decode(&m.payload) {
                    Ok(p) => node.deliver(&topic_, &p),
                    Err(e) => tracing::warn!(error = %e, "broker: an unreadable publication"),
                }
            }
        });
        subs.insert(topic.clone(), task.abort_handle());
    }

    fn unsubscribe(&self, topic: &Topic) {
        if let Some(task) = self.subscriptions().remove(topic) {
            task.abort();
        }
    }

    fn healthy(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("broker unreachable (NATS {state:?})")),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.stop.cancel();
        for (_, task) in self.subscriptions().drain() {
            task.abort();
        }
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use confab_codec::event::{Message, Metadata};
    use confab_codec::{LocalId, MessageId, MessageKind, Timestamp};

    #[test]
    fn publications_travel_whole() {
        let mut metadata = Metadata::default();
        metadata.insert("lat".into(), serde_json::json!(48.858_370_1));
        let m = Message {
            id: MessageId::parse("msg_1").unwrap(),
            conversation_id: ConversationId::parse("c.1").unwrap(),
            seq: Some(Seq(7)),
            sender_id: UserId::parse("alice").unwrap(),
            content: "hello ✓".into(),
            kind: MessageKind::Text,
            metadata,
            created_at: Timestamp::from_millis(1_700_000_000_123),
            updated_at: None,
            is_read: None,
            local_id: Some(LocalId::parse("l-1").unwrap()),
            reply_to: Some(MessageId::parse("msg_0").unwrap()),
        };
        let Publication::Message(back) = decode(&encode(&Publication::Message(Arc::new(m.clone()))).unwrap()).unwrap()
        else {
            panic!("not a message")
        };
        assert_eq!(*back, m);
        let push = ServerEvent::push("match:new", Metadata::default()).unwrap();
        let ev = SharedEvent::new(ServerEnvelope::new(push), Some(ConversationId::parse("c").unwrap()));
        let Publication::Event(back) = decode(&encode(&Publication::Event(Arc::clone(&ev))).unwrap()).unwrap() else {
            panic!("not an event")
        };
        assert_eq!((back.envelope.event.name(), back.conversation.clone()), ("match:new", ev.conversation.clone()));
        let joined = Publication::ToJoined {
            event: Arc::clone(&ev),
            except_user: Some(UserId::parse("bob").unwrap()),
            lossy: true,
        };
        let Publication::ToJoined { event, except_user, lossy } = decode(&encode(&joined).unwrap()).unwrap() else {
            panic!("not a joined event")
        };
        assert_eq!((event.envelope.event.name(), except_user.unwrap().as_str(), lossy), ("match:new", "bob", true));
        let info = ConversationInfo {
            id: ConversationId::parse("c").unwrap(),
            members: vec![Member { user_id: UserId::parse("bob").unwrap(), read: Seq(2), delivered: Seq(3) }],
            max_members: Some(5),
            last_seq: Seq(9),
        };
        let Publication::Members(back) =
            decode(&encode(&Publication::Members(Arc::new(info.clone()))).unwrap()).unwrap()
        else {
            panic!("not members")
        };
        assert_eq!(*back, info);
        assert!(decode(b"").is_err() && decode(b"x").is_err() && decode(b"e\x05ab").is_err());
        assert_eq!(subject(&Topic::Conversation(ConversationId::parse("c.1").unwrap())), "confab.c.%632e31");
        assert_eq!(subject(&Topic::User(UserId::parse("bob").unwrap())), "confab.u.bob");
    }
}
