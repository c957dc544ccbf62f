//! The session layer: one [`Session`] per connection, whatever its transport. It reads typed
//! client events, applies the conversation rules (membership, limits, receipts, presence) and
//! answers through the hub and the connection's queue.
//!
//! - `mod.rs`: the session's state, its opening and end (presence, inbox), replies and timers;
//! - `requests`: what each client event does (SPEC §4 table);
//! - `driver`: the loop that feeds a session its inputs, its timers and shutdown;
//! - `expiry`: ephemeral photo timers.
//!
//! A session never sees a socket: it gets [`Inbound`] items and writes to its [`Conn`].
//!
//! A session is opened ([`open`]) before its transport tells the client that it is ready (the
//! upgrade's answer, the CONNECT's, the greeting): from that instant on, everything sent to
//! the connection reaches it. Then [`run`] drives it until it ends.

mod driver;
mod expiry;
mod requests;
#[cfg(test)]
mod tests;
mod timers;

pub use driver::run;
pub use expiry::{announce_overdue, rearm_all};

use crate::auth::{AuthError, Identity};
use crate::error::{CloseReason, SessionError};
use crate::hub::Profile;
use crate::limits::Bucket;
use crate::link::{Conn, ConnOutput, Route, SharedEvent, TransportKind};
use crate::node::Node;
use confab_codec::event::{Established, Hello, ServerEnvelope, ServerEvent, Typing, UserOffline, UserOnline};
use confab_codec::{Codec, ConversationId, RequestId, Seq, Timestamp, UserId};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Seconds between client heartbeats the server advertises (SPEC §3: pings every 30 s).
pub const HEARTBEAT_INTERVAL_S: u32 = confab_codec::wire::timing::HEARTBEAT_INTERVAL.as_secs() as u32;
/// A typing state is cleared by the server after this long without `typing:stop` (SPEC §4).
pub const TYPING_TIMEOUT: Duration = confab_codec::wire::timing::TYPING_TIMEOUT;
/// Rate-limited frames in a row after which a connection is closed (1008).
const MAX_STRIKES: u32 = 50;

/// One connection's session.
#[derive(Debug)]
pub struct Session {
    node: Arc<Node>,
    conn: Conn,
    identity: Identity,
    /// The token's expiry and the typing states the server clears.
    timers: timers::Timers,
    /// The frame rate and its strikes.
    frames: timers::FrameGate,
    /// Boxed: most clients never say hello, and two empty strings inline were 48 bytes of
    /// every connection.
    client: Option<Box<Hello>>,
    /// Sends waiting for their commit, answered in order as they complete. A connection's
    /// next frames are read meanwhile (up to [`MAX_PENDING_SENDS`]), so one sender's messages
    /// share group commits instead of waiting for one commit each.
    pending: Pending,
    /// Whether the hub knows this connection: it must be unregistered, however the session ends.
    registered: bool,
    /// For a connection scoped to one conversation (SPEC §7), replay its messages after this
    /// seq once the client is ready (`?since_seq=`).
    resume: Option<Seq>,
    /// Everything the session logs is inside this span (never a token or a message's content).
    span: tracing::Span,
    /// The base of the absolute URLs this connection is given (attachments).
    base_url: Option<Arc<str>>,
}

/// Sends in flight per connection before the session stops reading its frames.
pub const MAX_PENDING_SENDS: usize = 64;

/// The sends waiting for their commit, in order. Allocated by the first send and released
/// when the last one completes: `FuturesOrdered::new` allocates, and most connections wait
/// idle with nothing in flight (benchmarks.md, issue 19, third pass). Boxed too: inline, the
/// empty `Option` was 64 bytes of every session (sixth pass).
#[derive(Debug, Default)]
struct Pending(Option<Box<FuturesOrdered<BoxFuture<'static, SendDone>>>>);

impl Pending {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, send: BoxFuture<'static, SendDone>) {
        self.0.get_or_insert_with(|| Box::new(FuturesOrdered::new())).push_back(send);
    }
}

impl futures_util::Stream for Pending {
    type Item = SendDone;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SendDone>> {
        let Some(sends) = self.0.as_mut() else { return std::task::Poll::Ready(None) };
        let polled = futures_util::StreamExt::poll_next_unpin(sends, cx);
        if sends.is_empty() {
            self.0 = None;
        }
        polled
    }
}

/// A send whose commit finished (or failed).
struct SendDone {
    request_id: Option<RequestId>,
    conversation_id: ConversationId,
    result: Result<crate::store::Appended, crate::store::StoreError>,
}

impl std::fmt::Debug for SendDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendDone").field("conversation_id", &self.conversation_id).finish_non_exhaustive()
    }
}

impl Session {
    fn new(node: Arc<Node>, conn: Conn, identity: Identity, resume: Option<Seq>, base_url: Option<Arc<str>>) -> Self {
        let now = node.clock.instant();
        let limits = node.hub.limits();
        let rate =
            Bucket::new(limits.conn_rate.round().max(1.0) as u32, Duration::from_secs(1), limits.conn_burst, now);
        let timers = timers::Timers::new(node.clock.deadline_for(identity.expires_at), TYPING_TIMEOUT);
        let span = tracing::info_span!(
            "conn",
            conn = %conn.id,
            user = %conn.user_id,
            transport = conn.transport.name(),
            dialect = conn.codec.dialect.name(),
            codec = conn.codec.format.name(),
        );
        Self {
            node,
            conn,
            identity,
            timers,
            frames: timers::FrameGate::new(rate, MAX_STRIKES),
            client: None,
            pending: Pending::default(),
            registered: false,
            resume,
            span,
            base_url,
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    fn user(&self) -> &UserId {
        &self.identity.user_id
    }

    /// Wall-clock now, from the node's clock.
    fn now(&self) -> Timestamp {
        self.node.clock.now()
    }

    /// Makes the connection listen, then greets it: registers it (presence, limits), joins
    /// what its dialect listens to from the start, queues `connection:established` as its
    /// first event, tells contacts the user came online (first device only), and delivers what
    /// waited in the user's inbox. Events that reach the connection before the greeting wait
    /// behind it. On `Err` the connection is closed with that reason (after an `error` event
    /// where there is one to give) and never greeted.
    async fn open(&mut self) -> Result<(), CloseReason> {
        let span = self.span.clone();
        let opened = self.listen_and_greet().instrument(span).await;
        if let Err(reason) = opened {
            self.conn.no_greeting();
            self.conn.closer.close(reason);
        }
        opened
    }

    async fn listen_and_greet(&mut self) -> Result<(), CloseReason> {
        let profile =
            Profile { username: self.identity.username.clone(), avatar_url: self.identity.avatar_url.clone() };
        let first = self.node.register(&self.conn, profile).await.inspect_err(|r| {
            if *r == CloseReason::TooManyConnections {
                self.node
                    .metrics
                    .rate_limited
                    .get_or_create(&crate::metrics::LimitLabel { limit: "connections" })
                    .inc();
            }
        })?;
        self.registered = true;
        let labels = self.conn_labels();
        self.node.metrics.connections.get_or_create(&labels).inc();
        self.node.metrics.sessions_opened.get_or_create(&labels).inc();
        // Read after registering: a conversation the server API creates from here on joins
        // this connection itself (`Hub::cache_conversation`), one created before is read here.
        let conversations = self.memberships().await;
        self.node.follow(conversations.iter().map(|m| &m.conversation_id)).await;
        self.listen_from_start(&conversations).await?;
        let established = Established {
            user_id: self.user().clone(),
            connection_id: self.conn.id.clone(),
            active_conversations: Some(conversations.iter().map(|c| c.conversation_id.clone()).collect()),
            heartbeat_interval: Some(HEARTBEAT_INTERVAL_S),
            transport: Some(self.conn.transport.name().into()),
            codec: Some(self.conn.codec.format.name().into()),
            timestamp: Some(self.now()),
            certificate_sha256: self.node.certificate.as_ref().map(|c| c.sha256_hex()),
        };
        let env = self.node.hub.envelope(ServerEvent::Established(established), self.now(), None);
        self.conn.greet(SharedEvent::new(env, None));
        tracing::info!(first_device = first, "connected");
        if first {
            let contacts = contacts_of(&conversations, self.user());
            let ev = ServerEvent::UserOnline(UserOnline {
                user_id: self.user().clone(),
                username: self.identity.username.clone(),
                online_at: self.now(),
            });
            self.node.to_users(contacts.iter(), &self.node.hub.shared(ev, self.now(), None), None);
        }
        match self.node.store.inbox_take(self.user()).await {
            Ok(items) => {
                for item in items {
                    if let Some(ev) = ServerEvent::push(&item.kind, item.data) {
                        self.send(ev, None, Route::Control);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the inbox"),
        }
        Ok(())
    }

    /// For dialects without a join request (SPEC §7): a scoped connection listens to its
    /// conversation (creating the user's own one on first use); an actions or personal
    /// connection listens to every conversation of its user. A scope the user may not join
    /// ends the connection (4004) after an `error` event. A replay asked with `?since_seq=`
    /// waits until the client is ready ([`Session::catch_up_resume`]); live events are held
    /// back until it is done.
    async fn listen_from_start(&mut self, conversations: &[crate::store::Membership]) -> Result<(), CloseReason> {
        if let Some(c) = self.conn.codec.scope.clone() {
            if c.as_str() == self.user().as_str() {
                self.ensure_own_conversation(&c).await;
            }
            if let Err(e) = self.listen(&c).await {
                self.fail(&e, Some("conversation:join"), None, Route::Control);
                return Err(CloseReason::AccessDenied);
            }
            if self.resume.is_none() {
                self.node.hub.finish_replay(&c, &self.conn.id, Seq::ZERO);
            }
        } else if self.conn.listens_to_all() {
            for m in conversations {
                let c = &m.conversation_id;
                match self.listen(c).await {
                    Ok(()) => self.node.hub.finish_replay(c, &self.conn.id, Seq::ZERO),
                    Err(e) => tracing::debug!(conversation = %c, error = %e, "listening to a conversation at start"),
                }
            }
        }
        Ok(())
    }

    /// Replays what a scoped connection asked for with `?since_seq=`, once the client is ready.
    async fn catch_up_resume(&mut self) {
        let (Some(c), Some(since)) = (self.conn.codec.scope.clone(), self.resume.take()) else { return };
        if let Err(e) = self.catch_up(&c, Some(since)).await {
            self.fail(&e, Some("conversation:join"), None, Route::Control);
        }
    }

    /// The user's own conversation (its id is theirs) exists once they connect to it; the
    /// backend adds members (an assistant) and posts to it through the server API.
    async fn ensure_own_conversation(&mut self, c: &ConversationId) {
        match self.node.store.conversation(c).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let created = self.node.store.create_conversation(c.clone(), vec![self.user().clone()], None).await;
                if let Err(e) = created {
                    tracing::debug!(conversation = %c, error = %e, "creating the user's own conversation");
                }
            }
            Err(e) => tracing::error!(error = %e, "reading a conversation"),
        }
    }

    /// Unregisters the connection: clears its typing states, and tells contacts the user went
    /// offline if this was their last device.
    async fn finish(&mut self) {
        if let Some(leaving) = self.unregister() {
            leaving.finish(&self.node).await;
        }
        let reason = self.conn.closer.reason().map_or("normal_closure", CloseReason::as_str);
        let client = self.client.as_deref();
        let version = client.and_then(|c| c.client_version.as_deref());
        let platform = client.and_then(|c| c.platform.as_deref());
        tracing::info!(
            parent: &self.span,
            reason,
            client_version = version.unwrap_or(""),
            platform = platform.unwrap_or(""),
            "disconnected"
        );
    }

    /// The part of the end that needs no waiting (also run when a session is dropped before it
    /// ran, as when an upgrade fails after the session was opened); the user's offline notice,
    /// if this was their last connection, is what is left to do.
    fn unregister(&mut self) -> Option<Leaving> {
        if !std::mem::take(&mut self.registered) {
            return None;
        }
        for c in self.timers.drain_typing() {
            self.broadcast_typing(&c, false);
        }
        let t = self.now();
        self.node.unregister(&self.conn);
        self.node.metrics.connections.get_or_create(&self.conn_labels()).dec();
        let closed_by = self.conn.closer.reason();
        let reason = closed_by.map_or("normal_closure", CloseReason::as_str);
        self.node.metrics.sessions_closed.get_or_create(&crate::metrics::ReasonLabel { reason }).inc();
        if closed_by.is_some_and(|r| !matches!(r, CloseReason::Normal | CloseReason::ServerShutdown)) {
            self.record(reason, None, format!("connection closed: {reason}"));
        }
        Some(Leaving(Offline { user: self.user().clone(), username: self.identity.username.clone(), at: t }))
    }

    async fn memberships(&mut self) -> Vec<crate::store::Membership> {
        memberships(&self.node, self.user()).await
    }

    /// The earliest timer: token expiry or a typing state to clear.
    fn next_deadline(&self) -> Instant {
        self.timers.next()
    }

    async fn handle_timeout(&mut self, now_i: Instant) {
        match self.timers.due(now_i) {
            timers::Due::TokenExpired => {
                let message = "token expired".into();
                let e = SessionError::Token { code: confab_codec::ErrorCode::TokenExpired, message };
                self.send(ServerEvent::Error(e.to_error_data(None, None)), None, Route::Control);
                self.conn.closer.close(CloseReason::TokenExpired);
            }
            timers::Due::Ticks { typing_cleared, keepalive } => {
                for c in typing_cleared {
                    self.broadcast_typing(&c, false);
                }
                if keepalive {
                    self.conn.keepalive();
                }
            }
        }
    }

    /// Queues an answer for this connection.
    fn send(&self, event: ServerEvent, request_id: Option<RequestId>, route: Route) {
        let conversation = match route {
            Route::Conversation(c) => Some(c),
            Route::Control => None,
        };
        let env: ServerEnvelope = self.node.hub.envelope(event, self.now(), request_id);
        self.conn.send(SharedEvent::new(env, conversation));
    }

    fn conn_labels(&self) -> crate::metrics::ConnLabels {
        crate::metrics::ConnLabels {
            transport: self.conn.transport.name(),
            codec: self.conn.codec.format.name(),
            dialect: self.conn.codec.dialect.name(),
        }
    }

    fn fail(&self, e: &SessionError, request_event: Option<&str>, request_id: Option<&RequestId>, route: Route) {
        self.node.metrics.errors.get_or_create(&crate::metrics::CodeLabel { code: e.code().as_str() }).inc();
        self.record(e.code().as_str(), request_event, e.to_string());
        let data = e.to_error_data(request_event, request_id.map(RequestId::as_str));
        self.send(ServerEvent::Error(data), None, route);
    }

    /// Keeps an error or a close for the admin console.
    fn record(&self, code: &'static str, event: Option<&str>, message: String) {
        self.node.incidents.record(crate::incidents::Incident {
            at: self.now(),
            code,
            user_id: self.user().clone(),
            connection_id: self.conn.id.clone(),
            event: event.map(str::to_owned),
            message,
        });
    }

    fn broadcast_typing(&self, c: &ConversationId, is_typing: bool) {
        let t = self.now();
        let ev = ServerEvent::Typing(Typing {
            conversation_id: c.clone(),
            user_id: self.user().clone(),
            username: self.identity.username.clone(),
            is_typing,
            timestamp: Some(t),
        });
        let shared = self.node.hub.shared(ev, t, Some(c.clone()));
        self.node.to_joined(c, &shared, Some(self.user()), true);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(leaving) = self.unregister() else { return };
        tracing::debug!(parent: &self.span, "session dropped before it ran");
        let node = Arc::clone(&self.node);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.node.tasks.spawn_on(async move { leaving.finish(&node).await }, &runtime);
        }
    }
}

/// A connection that ended, still counted by presence: uncounting it may find it was the
/// user's last anywhere, and then their contacts hear `user:offline`.
#[derive(Debug)]
struct Leaving(Offline);

impl Leaving {
    async fn finish(self, node: &Node) {
        if node.uncount(&self.0.user, self.0.at).await {
            self.0.tell(node).await;
        }
    }
}

/// Tells a user's contacts, here and on the other nodes, that the user went offline at `at`
/// (cluster mode: a dead node's users, found by a survivor).
pub async fn tell_offline(node: &Node, user: UserId, at: Timestamp) {
    Offline { user, username: None, at }.tell(node).await;
}

/// A user's last connection ended: their contacts hear `user:offline`.
#[derive(Debug)]
struct Offline {
    user: UserId,
    username: Option<String>,
    at: Timestamp,
}

impl Offline {
    async fn tell(self, node: &Node) {
        let contacts = contacts_of(&memberships(node, &self.user).await, &self.user);
        let ev = ServerEvent::UserOffline(UserOffline {
            user_id: self.user,
            username: self.username,
            offline_at: self.at,
            last_seen: Some(self.at),
        });
        node.to_users(contacts.iter(), &node.hub.shared(ev, self.at, None), None);
    }
}

/// What a transport knows of a connection when it opens its session.
#[derive(Debug, Clone)]
pub struct Opening {
    pub transport: TransportKind,
    pub codec: Codec,
    /// For a connection scoped to one conversation, replay after this seq (`?since_seq=`).
    pub resume: Option<Seq>,
    /// The base of the absolute URLs the connection is given (`Settings::base_url`).
    pub base_url: Option<Arc<str>>,
    /// A tick for the transport's writer this often ([`ConnOutput::next`]), for a transport
    /// that pings its peer (WebSocket); the session's timer carries it, so that a connection
    /// has one timer.
    pub keepalive: Option<Duration>,
}

/// Creates a connection and opens its session (see [`Session::open`]). The transport calls it
/// before it tells the client that the connection is ready, then writes what the output gives
/// and runs the session with [`run`]. A session refused here (too many connections, a scope
/// it may not join) has its connection closed already: the transport says goodbye.
///
/// The session comes boxed: moved from the transport's setup into the future that runs it, and
/// from there into the driver's own state, an inline `Session` left a dead copy of itself in
/// each of those futures for the connection's whole life (1 KB an idle connection, benchmarks.md
/// issue 19).
pub async fn open(node: &Arc<Node>, identity: Identity, o: Opening) -> (Box<Session>, ConnOutput) {
    let codec = default_scope(o.codec, &identity.user_id);
    let queue = node.hub.limits().outbound_queue;
    let (conn, output) = Conn::new(
        node.hub.ids(),
        identity.user_id.clone(),
        o.transport,
        codec,
        queue,
        Arc::clone(&node.metrics),
        node.clock,
    );
    let mut session = Box::new(Session::new(Arc::clone(node), conn, identity, o.resume, o.base_url));
    if let Some(every) = o.keepalive {
        session.timers.set_keepalive(every, node.clock.instant());
    }
    let _ = session.open().await;
    (session, output)
}

/// The user's conversations and their members; on a store failure, none (presence notices
/// are best effort, and the failure is logged).
async fn memberships(node: &Node, user: &UserId) -> Vec<crate::store::Membership> {
    node.store.memberships(user).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "listing the user's conversations");
        Vec::new()
    })
}

/// Everyone the user shares a conversation with.
fn contacts_of(conversations: &[crate::store::Membership], user: &UserId) -> Vec<UserId> {
    let mut out: Vec<UserId> =
        conversations.iter().flat_map(|c| c.members.iter()).filter(|m| *m != user).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// A connection of a dialect whose frames name no conversation, that named none in its URL, is
/// scoped to the user's own conversation, whose id is the user's id (SPEC §7; protocol.md §11).
fn default_scope(codec: Codec, user: &UserId) -> Codec {
    if codec.dialect.needs_scope() && codec.scope.is_none() {
        let own = ConversationId::parse(user.as_str()).ok();
        codec.with_scope(own)
    } else {
        codec
    }
}

/// The answer to a connection whose token was refused: an `error` event, then the close.
pub fn refusal(node: &Node, e: &AuthError) -> (Arc<SharedEvent>, CloseReason) {
    let code = e.code();
    let err = SessionError::Token { code, message: e.to_string() };
    let ev = node.hub.shared(ServerEvent::Error(err.to_error_data(None, None)), node.clock.now(), None);
    let reason = match e {
        AuthError::Expired => CloseReason::TokenExpired,
        AuthError::Missing | AuthError::Invalid(_) => CloseReason::Unauthorized,
        AuthError::OtherUser => CloseReason::AccessDenied,
    };
    (ev, reason)
}

/// Delivers a backend-published event: to the user's connections if online, else to the inbox.
pub async fn publish(
    node: &Node,
    users: &[UserId],
    kind: &str,
    data: confab_codec::event::Metadata,
) -> Result<usize, String> {
    let Some(event) = ServerEvent::push(kind, data.clone()) else {
        return Err(format!("type must be one of {:?}", confab_codec::event::PUSH_EVENT_NAMES));
    };
    let shared = node.hub.shared(event, node.clock.now(), None);
    let mut online = 0;
    for u in users {
        // Online anywhere (presence counts every node in a cluster): the event goes to the
        // user's connections, here and through the broker; else to the inbox, for the next
        // connect on any node. (A user who goes offline between the two misses it: a push is
        // at most once while online.)
        if node.presence.get(u).await.online {
            node.to_user(u, &shared);
            online += 1;
        } else {
            let item = crate::store::InboxItem { kind: kind.to_owned(), data: data.clone() };
            node.store.inbox_push(u, item).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(online)
}
