//! The link: the boundary between transports and the session layer.
//!
//! A transport hands the session a stream of [`Inbound`] (decoded client events, each with the
//! [`Route`] it came on) and a [`Conn`]: a bounded queue of [`Outgoing`] events it will write,
//! and a [`Closer`] that ends the connection with a [`CloseReason`]. The session never sees a
//! socket, a stream id or a byte; a transport never sees a conversation rule.
//! Both sides import this module; neither imports the other.
//!
//! Two orderings are the link's own, so that no transport has to know them: a connection's
//! greeting (`connection:established`) is the first event it writes, whatever the hub queued
//! before it ([`Conn::greet`]); and receipts to a sender are coalesced, one waiting per key
//! (a conversation, and in a small one a recipient), the newest winning
//! ([`Conn::send_receipt`]), so that receipts never fill a sender's queue however many there
//! are.

mod queue;

use crate::clock::Clock;
use crate::error::CloseReason;
use crate::metrics::{EventLabel, Metrics};
use bytes::Bytes;
use confab_codec::event::{Closed, ServerEnvelope, ServerEvent};
use confab_codec::{
    ClientEnvelope, Codec, ConnectionId, ConversationId, DecodeError, Dialect, EncodeError, Format, RequestId, Seq,
    Timestamp, UserId,
};
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// Which transport a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    WebTransport,
}

impl TransportKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::WebTransport => "webtransport",
        }
    }
}

/// Hands out the server's ids: connection ids and envelope ids (`srv_...`), unique for the
/// life of the process and, with a random boot prefix, across restarts.
#[derive(Debug)]
pub struct IdMint {
    boot: u64,
    next: AtomicU64,
}

impl Default for IdMint {
    fn default() -> Self {
        Self { boot: rand::random::<u32>().into(), next: AtomicU64::new(1) }
    }
}

impl IdMint {
    /// How many ids were handed out so far.
    pub fn count(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub fn connection_id(&self) -> ConnectionId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        ConnectionId::generate("conn_", (u128::from(self.boot) << 64) | u128::from(n))
    }

    /// A fresh envelope id.
    pub fn event_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("srv_{:x}{n:x}", self.boot)
    }

    /// Wraps an event in an envelope with a fresh id.
    pub fn envelope(&self, event: ServerEvent, now: Timestamp, request_id: Option<RequestId>) -> ServerEnvelope {
        ServerEnvelope { event, timestamp: Some(now), message_id: Some(self.event_id()), request_id }
    }
}

/// Where an event travels on a multi-stream transport (SPEC §3: one conversation, one stream).
/// A single-stream transport (WebSocket) ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The control stream: connection-level events.
    Control,
    /// A joined conversation's own stream.
    Conversation(ConversationId),
}

/// What a transport reads from the client.
#[derive(Debug)]
pub enum Inbound {
    /// One frame, decoded (or the reason it did not decode).
    Event(Route, Box<Result<ClientEnvelope, DecodeError>>),
    /// A conversation's own stream ended (the client closed it, or the transport reset it
    /// because the client stopped reading it): the client is no longer listening there.
    RouteClosed(Route),
    /// The peer closed (or the connection failed).
    Closed,
}

/// An event's bytes in one dialect and format; `None` when the dialect has no form for it.
type Encoded = Result<Option<Bytes>, EncodeError>;

/// One cache cell per dialect and format, and one for seed 000's flat `message:new`.
const ENCODINGS: usize = Dialect::ALL.len() * 2 + 1;

/// A server event, encoded at most once per dialect and format however many connections it
/// goes to (STYLE 9: a fan-out is encoded once per format, the bytes shared).
#[derive(Debug)]
pub struct SharedEvent {
    pub envelope: ServerEnvelope,
    /// The conversation the event belongs to, for routing.
    pub conversation: Option<ConversationId>,
    encoded: [OnceLock<Encoded>; ENCODINGS],
}

impl SharedEvent {
    pub fn new(envelope: ServerEnvelope, conversation: Option<ConversationId>) -> Arc<Self> {
        Arc::new(Self { envelope, conversation, encoded: Default::default() })
    }

    /// The event's bytes for `codec`, encoded on first use; `None`: nothing to send on a
    /// connection of that dialect.
    pub fn encoded(&self, codec: &Codec) -> Encoded {
        let format = match codec.format {
            Format::Json => 0,
            Format::MsgPack => 1,
        };
        let flat = codec.writes_flat_messages() && matches!(self.envelope.event, ServerEvent::MessageNew(_));
        let cell = &self.encoded[if flat { ENCODINGS - 1 } else { codec.dialect.index() * 2 + format }];
        cell.get_or_init(|| {
            let mut out = Vec::with_capacity(256);
            Ok(codec.encode_server_into(&self.envelope, &mut out)?.then(|| Bytes::from(out)))
        })
        .clone()
    }

    pub fn route(&self) -> Route {
        self.conversation.clone().map_or(Route::Control, Route::Conversation)
    }
}

/// One event queued for a connection, and whether its producer waits for room.
#[derive(Debug, Clone)]
pub struct Outgoing(pub Arc<SharedEvent>, pub Pacing);

/// How an event's producer deals with a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Live traffic: a full queue means a slow consumer.
    Live,
    /// Latest-wins traffic (typing): dropped, not fatal, when a queue is full, and fit for an
    /// unreliable datagram.
    Lossy,
    /// Bulk traffic the session produces itself (a `since_seq` replay), paced by the reader:
    /// a transport with queues of its own waits for room too, rather than treating it as live.
    Paced,
}

/// Ends a connection once, with a reason, from anywhere (the session, the hub when the
/// connection is a slow consumer, shutdown). The transport's writer watches it.
///
/// A flag and a `Notify` rather than a `CancellationToken`, which allocates a tree node
/// (112 bytes) for every connection.
#[derive(Debug, Default)]
pub struct Closer {
    /// Set once: the first reason wins, and being set is being closed.
    reason: OnceLock<CloseReason>,
    closing: Notify,
    /// The transport's writer waiting in [`ConnOutput::next`]: woken here rather than through
    /// a second wait on `closing`, which was 80 bytes of every idle connection's task.
    writer: AtomicWaker,
    /// The session's driver waiting ([`Closer::poll_closed_for_session`]): a `Notified` in its
    /// wait was 64 bytes of every idle connection's task.
    session: AtomicWaker,
}

impl Closer {
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.closing.notify_waiters();
        self.writer.wake();
        self.session.wake();
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    pub fn is_closed(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Ready once the connection is being closed: the session's driver's wait (one waiter,
    /// that one; every other wait is [`Closer::closed`]).
    pub fn poll_closed_for_session(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.session.register(cx.waker());
        if self.is_closed() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Resolves once the connection is being closed. Cancel-safe.
    pub async fn closed(&self) {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        // Registered before the check: a `close` after it still wakes this wait.
        closing.as_mut().enable();
        if self.is_closed() {
            return;
        }
        closing.await;
    }
}

/// The `connection:closed` event that precedes the close frame.
pub fn closing_event(ids: &IdMint, reason: CloseReason, now: Timestamp) -> Arc<SharedEvent> {
    let event =
        ServerEvent::Closed(Closed { reason: reason.as_str().into(), code: reason.code(), timestamp: Some(now) });
    SharedEvent::new(ids.envelope(event, now, None), None)
}

/// What travels in a connection's queue.
#[derive(Debug)]
enum Item {
    Event(Outgoing),
    /// The newest receipt for this key waits in the connection's [`Held`] slots. Boxed, so
    /// that an item is 16 bytes, not 32: a queue's memory is its items'.
    Receipt(Box<ReceiptKey>),
}

const _: () = assert!(std::mem::size_of::<Item>() <= 16, "a queue item is two words");

/// What a receipt is about: a conversation, and the recipient when receipts go per recipient.
pub type ReceiptKey = (ConversationId, Option<UserId>);

/// What a connection holds outside its queue: its greeting until it is given, and the newest
/// receipt per key until the transport takes it.
#[derive(Debug, Default)]
struct Held {
    greeting: Mutex<Option<Arc<SharedEvent>>>,
    /// The greeting was given (or there will be none): the queue may be written.
    greeted: AtomicBool,
    /// The session's keepalive tick came and the writer has not taken it yet.
    keepalive: AtomicBool,
    receipts: Mutex<HashMap<ReceiptKey, (Arc<SharedEvent>, Seq)>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data, consistent between statements: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection as the hub and the session see it.
#[derive(Debug, Clone)]
pub struct Conn {
    pub id: ConnectionId,
    pub user_id: UserId,
    pub transport: TransportKind,
    pub codec: Codec,
    queue: queue::Sender<Item>,
    held: Arc<Held>,
    pub closer: Arc<Closer>,
    metrics: Arc<Metrics>,
}

/// The transport's end of a [`Conn`]: what it writes, and how it learns to stop.
#[derive(Debug)]
pub struct ConnOutput {
    queue: queue::Receiver<Item>,
    held: Arc<Held>,
    /// Whether the greeting was handed out (or there will be none).
    greeted: bool,
    pub closer: Arc<Closer>,
    ids: Arc<IdMint>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl ConnOutput {
    /// The next event to write: the greeting first (nothing is written before it), then the
    /// queue in order. `None` once the session has gone. Cancel-safe: an event is taken only
    /// when this returns.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            match self.ready() {
                Ready::Event(out) => return Some(out),
                Ready::Closed => return None,
                Ready::Empty => {}
            }
            // Woken by an item, the greeting, or the last sender leaving; may be spurious.
            self.queue.readable().await;
        }
    }

    /// The writer's one wait, for a transport that asked its session for a keepalive tick
    /// ([`Opening::keepalive`](crate::session::Opening)): the next event, the tick, or the end
    /// (the connection closed, or the session gone). With it the writer needs no timer and
    /// no wait of its own on the closer: an idle WebSocket's task was 400 bytes smaller
    /// (benchmarks.md, issue 19, sixth pass). Cancel-safe, like [`ConnOutput::recv`].
    pub async fn next(&mut self) -> Next {
        loop {
            if self.closer.is_closed() {
                return Next::Closed;
            }
            match self.ready() {
                Ready::Event(out) => return Next::Event(out),
                Ready::Closed => return Next::Closed,
                Ready::Empty => {}
            }
            if self.held.keepalive.swap(false, Ordering::AcqRel) {
                return Next::Keepalive;
            }
            let closer = &self.closer;
            let mut readable = std::pin::pin!(self.queue.readable());
            std::future::poll_fn(|cx| {
                closer.writer.register(cx.waker());
                if closer.is_closed() {
                    return Poll::Ready(());
                }
                std::future::Future::poll(readable.as_mut(), cx)
            })
            .await;
        }
    }

    /// What the queue holds now, the greeting first.
    fn ready(&mut self) -> Ready {
        loop {
            if let Some(first) = self.take_greeting() {
                return Ready::Event(first);
            }
            if !self.greeted {
                return Ready::Empty;
            }
            match self.queue.try_pop() {
                queue::Pop::Item(item) => {
                    if let Some(out) = self.resolve(item) {
                        return Ready::Event(out);
                    }
                }
                queue::Pop::Closed => return Ready::Closed,
                queue::Pop::Empty => return Ready::Empty,
            }
        }
    }

    /// The next event if one is waiting. Used to batch writes after [`ConnOutput::recv`] and
    /// to flush at close, when a greeting that never came no longer holds the queue back.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        if let Some(first) = self.take_greeting() {
            return Some(first);
        }
        loop {
            let queue::Pop::Item(item) = self.queue.try_pop() else { return None };
            if let Some(out) = self.resolve(item) {
                return Some(out);
            }
        }
    }

    fn take_greeting(&mut self) -> Option<Outgoing> {
        if self.greeted {
            return None;
        }
        let first = locked(&self.held.greeting).take();
        if first.is_some() || self.held.greeted.load(Ordering::Acquire) {
            self.greeted = true;
        }
        first.map(|ev| Outgoing(ev, Pacing::Live))
    }

    fn resolve(&self, item: Item) -> Option<Outgoing> {
        match item {
            Item::Event(out) => Some(out),
            Item::Receipt(c) => locked(&self.held.receipts).remove(&*c).map(|(ev, _)| Outgoing(ev, Pacing::Live)),
        }
    }

    /// The `connection:closed` event that precedes the transport's close.
    pub fn closing_event(&self, reason: CloseReason) -> Arc<SharedEvent> {
        closing_event(&self.ids, reason, self.clock.now())
    }

    /// Records that `ev` was handed to the socket or stream: a live message's latency so far
    /// (a replayed one is old news, not latency).
    pub fn written(&self, ev: &SharedEvent, pacing: Pacing) {
        if let (ServerEvent::MessageNew(m), Pacing::Live) = (&ev.envelope.event, pacing) {
            let ms = self.clock.now().as_millis().saturating_sub(m.message.created_at.as_millis());
            self.metrics.message_latency_seconds.observe(ms.max(0) as f64 / 1000.0);
            self.metrics.latency_window.observe(u64::try_from(ms).unwrap_or(0));
        }
    }
}

/// What [`ConnOutput::next`] hands the writer.
#[derive(Debug)]
pub enum Next {
    Event(Outgoing),
    /// The keepalive tick: the writer pings, or closes a peer that stopped answering.
    Keepalive,
    /// Stop: the connection is closing (its closer has the reason) or the session has gone.
    Closed,
}

enum Ready {
    Event(Outgoing),
    Empty,
    Closed,
}

/// Whether a queued event made it into the connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// The queue was full: the connection is being closed as a slow consumer.
    SlowConsumer,
    /// Latest-wins traffic (typing) dropped because the queue was full.
    Dropped,
    /// The connection is gone.
    Gone,
}

impl Conn {
    pub fn new(
        ids: &Arc<IdMint>,
        user_id: UserId,
        transport: TransportKind,
        codec: Codec,
        queue_len: usize,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> (Self, ConnOutput) {
        let (tx, rx) = queue::bounded(queue_len);
        let closer = Arc::new(Closer::default());
        let held = Arc::new(Held::default());
        let conn = Self {
            id: ids.connection_id(),
            user_id,
            transport,
            codec,
            queue: tx,
            held: Arc::clone(&held),
            closer: Arc::clone(&closer),
            metrics: Arc::clone(&metrics),
        };
        let output = ConnOutput { queue: rx, held, greeted: false, closer, ids: Arc::clone(ids), metrics, clock };
        (conn, output)
    }

    /// Whether this connection hears every conversation of its user from the start: a dialect
    /// without a join request, not scoped to one conversation (SPEC §7).
    pub fn listens_to_all(&self) -> bool {
        self.codec.scope.is_none() && self.codec.dialect.listens_to_all()
    }

    /// Gives the connection its greeting, the first event it writes, and lets the transport
    /// write what was queued behind it. A connection must be listening (registered, its
    /// conversations joined) before its client is told it is ready; events that reach it in
    /// between wait in its queue.
    pub fn greet(&self, event: Arc<SharedEvent>) {
        self.counted(&event);
        self.observe_depth(self.queue.len());
        *locked(&self.held.greeting) = Some(event);
        self.held.greeted.store(true, Ordering::Release);
        self.queue.wake();
    }

    /// The session's keepalive tick, for the writer ([`ConnOutput::next`]): at most one waits,
    /// and it takes no room in the queue.
    pub fn keepalive(&self) {
        self.held.keepalive.store(true, Ordering::Release);
        self.queue.wake();
    }

    /// Releases the queue without a greeting (a connection refused before it was ready).
    pub fn no_greeting(&self) {
        self.held.greeted.store(true, Ordering::Release);
        self.queue.wake();
    }

    /// Queues a receipt for one of this user's messages, covering every message of its
    /// conversation up to `seq`. At most one receipt per key waits in the queue: a newer one
    /// takes the place of the one waiting (the latest watermark wins), so however many
    /// receipts the hub produces, a sender's queue holds one per key.
    pub fn send_receipt(&self, key: ReceiptKey, seq: Seq, event: Arc<SharedEvent>) -> Queued {
        {
            let mut receipts = locked(&self.held.receipts);
            if let Some(waiting) = receipts.get_mut(&key) {
                if seq >= waiting.1 {
                    *waiting = (event, seq);
                }
                return Queued::Yes;
            }
            receipts.insert(key.clone(), (Arc::clone(&event), seq));
        }
        self.counted(&event);
        self.push(Item::Receipt(Box::new(key)), Pacing::Live)
    }

    /// Counts an event sent to this connection.
    fn counted(&self, event: &SharedEvent) {
        self.metrics.events_out.get_or_create(&EventLabel { event: event.envelope.event.name() }).inc();
    }

    /// How long the queue was when an event joined it.
    fn observe_depth(&self, depth: usize) {
        self.metrics.outbound_queue_depth.observe(depth as f64);
    }

    /// Queues an event that must not be lost: if the queue is full the reader is too slow,
    /// and it is disconnected (STYLE 9: never a broadcast that silently skips messages).
    pub fn send(&self, event: Arc<SharedEvent>) -> Queued {
        self.counted(&event);
        self.push(Item::Event(Outgoing(event, Pacing::Live)), Pacing::Live)
    }

    fn push(&self, item: Item, pacing: Pacing) -> Queued {
        // The depth comes back from the push: one lock an event, on the fan-out's path.
        match self.queue.push(item) {
            Ok(depth) => {
                self.observe_depth(depth);
                Queued::Yes
            }
            Err(queue::PushError::Full(_)) if pacing == Pacing::Lossy => {
                self.observe_depth(self.queue.capacity());
                self.metrics.events_dropped.inc();
                Queued::Dropped
            }
            Err(queue::PushError::Full(_)) => {
                self.observe_depth(self.queue.capacity());
                self.closer.close(CloseReason::SlowConsumer);
                Queued::SlowConsumer
            }
            Err(queue::PushError::Gone(_)) => Queued::Gone,
        }
    }

    /// Queues an event, waiting for room (a replay: bulk traffic the session produces itself,
    /// paced by the reader). False if the connection is gone.
    pub async fn send_waiting(&self, event: Arc<SharedEvent>) -> bool {
        self.counted(&event);
        self.observe_depth(self.queue.len());
        tokio::select! {
            r = self.queue.push_waiting(Item::Event(Outgoing(event, Pacing::Paced))) => r.is_ok(),
            _ = self.closer.closed() => false,
        }
    }

    /// Queues latest-wins traffic (typing): dropped, not fatal, when the queue is full.
    pub fn send_lossy(&self, event: Arc<SharedEvent>) -> Queued {
        self.counted(&event);
        self.push(Item::Event(Outgoing(event, Pacing::Lossy)), Pacing::Lossy)
    }
}
