//! The client: a handle the app calls, and one task that owns the connection. The task
//! connects (WebTransport first, WebSocket when that fails), resumes every joined conversation
//! after a reconnect (`since_seq`: nothing missed), hands each message to the app once and in
//! order (by `seq`), sends what the outbox holds until the server acknowledges it, follows each
//! sent message's state, and reconnects with backoff and jitter until the server refuses the
//! token (4001 without a new one, 4003, 4004) or the app closes it.

use crate::config::{Config, TransportChoice};
use crate::error::{ClientError, is_refusal, refusal_code};
use crate::event::{Event, MessageState, TransportKind};
use crate::link::{Incoming, Link};
use crate::store::{Pending, Recent, Store};
use crate::wire::{envelope, kind};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands waiting for the task.
const COMMANDS: usize = 256;
/// Events waiting for the app; the task waits when the app does not read.
const EVENTS: usize = 1024;
/// Sent messages whose receipts are followed, per conversation.
const TRACKED: usize = 1000;
/// A message not acknowledged this long after it was sent is sent again (same `local_id`).
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// How long `close` waits for the outbox to empty while connected.
const FLUSH: Duration = Duration::from_secs(2);
/// Messages for the cache are written in batches of at most this many (or when no more are
/// waiting): one transaction per batch, not per message.
const CACHE_BATCH: usize = 256;

enum Command {
    Join(String),
    Leave(String),
    Send(Pending),
    Read { conversation_id: String, message_id: String },
    Typing(String),
    History { conversation_id: String, before_seq: Option<u64>, limit: Option<u32> },
    Status { status: String, message: Option<String> },
    NetworkChanged,
    Pause,
    Resume,
    Close(oneshot::Sender<()>),
}

/// The app's handle. Cheap to clone; every call returns at once (a request waits in the task
/// while offline).
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    store: Arc<Store>,
}

/// The events, in order. `None` once the client has stopped.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Client {
    /// Starts the client. Returns once the first connection is open, or has failed for a
    /// reason other than a refusal (then the client works offline and keeps trying), or after
    /// the connect deadline: it always settles. A refused token is the error.
    pub async fn connect(config: Config) -> Result<(Client, Events), ClientError> {
        config.authority()?;
        let store = Arc::new(Store::open(config.outbox.as_deref())?);
        let pending = store.all()?;
        let (commands, rx) = mpsc::channel(COMMANDS);
        let (events, erx) = mpsc::channel(EVENTS);
        let (first_tx, first) = oneshot::channel();
        let deadline = config.connect_timeout + config.webtransport_deadline;
        let task = Task {
            config,
            store: store.clone(),
            events,
            joined: BTreeMap::new(),
            pending: pending.into_iter().map(|p| (p, None)).collect(),
            requests: HashMap::new(),
            tracked: HashMap::new(),
            next_request: 0,
            prefer_websocket: None,
            cache: Vec::new(),
            refresh_at: None,
            last_error: None,
            first: Some(first_tx),
        };
        tokio::spawn(task.run(rx));
        if let Ok(Ok(Err(refused))) = tokio::time::timeout(deadline, first).await {
            return Err(refused);
        }
        Ok((Client { commands, store }, Events { rx: erx }))
    }

    /// The conversation's last `limit` messages from the local cache (at most
    /// [`crate::RECENT`]), oldest first: what a cold start shows before the server answers.
    /// Empty without a client file (`Config::outbox`).
    pub fn cached_messages(&self, conversation_id: &str, limit: usize) -> Result<Vec<Value>, ClientError> {
        self.store.recent(conversation_id, limit)
    }

    async fn command(&self, c: Command) -> Result<(), ClientError> {
        self.commands.send(c).await.map_err(|_| ClientError::Stopped)
    }

    /// Joins a conversation; it is resumed after every reconnect.
    pub async fn join(&self, conversation_id: &str) -> Result<(), ClientError> {
        self.command(Command::Join(conversation_id.to_owned())).await
    }

    pub async fn leave(&self, conversation_id: &str) -> Result<(), ClientError> {
        self.command(Command::Leave(conversation_id.to_owned())).await
    }

    /// Sends a text message: it is in the outbox when this returns its `local_id`, and goes
    /// out as soon as the client is connected (again). States follow as `Event::State`.
    pub async fn send(&self, conversation_id: &str, content: &str) -> Result<String, ClientError> {
        let local_id = format!("lc_{:024x}", rand::random::<u128>() >> 32);
        let p = Pending {
            local_id: local_id.clone(),
            conversation_id: conversation_id.to_owned(),
            content: content.into(),
        };
        self.command(Command::Send(p)).await?;
        Ok(local_id)
    }

    /// Marks the conversation read up to `message_id` (the server's id).
    pub async fn mark_read(&self, conversation_id: &str, message_id: &str) -> Result<(), ClientError> {
        let (conversation_id, message_id) = (conversation_id.to_owned(), message_id.to_owned());
        self.command(Command::Read { conversation_id, message_id }).await
    }

    /// Says the user is typing (the server clears it after a few seconds).
    pub async fn typing(&self, conversation_id: &str) -> Result<(), ClientError> {
        self.command(Command::Typing(conversation_id.to_owned())).await
    }

    /// Asks for a page of history (an `Event::History` answers).
    pub async fn history(
        &self,
        conversation_id: &str,
        before_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(), ClientError> {
        self.command(Command::History { conversation_id: conversation_id.to_owned(), before_seq, limit }).await
    }

    /// Sets the user's presence status: `online`, `away`, `busy` or `offline`.
    pub async fn status(&self, status: &str, message: Option<&str>) -> Result<(), ClientError> {
        self.command(Command::Status { status: status.to_owned(), message: message.map(str::to_owned) }).await
    }

    /// Tells the client that the device changed networks (call it from the OS's network
    /// callback): on WebTransport the session moves to a new socket and goes on, conversation
    /// streams and all (QUIC connection migration); on WebSocket, or while offline, the client
    /// reconnects at once.
    pub async fn network_changed(&self) -> Result<(), ClientError> {
        self.command(Command::NetworkChanged).await
    }

    /// The app went to the background: the connection is closed and the client waits, sending
    /// nothing, until [`Client::resume`]. Sends meanwhile wait in the outbox.
    pub async fn pause(&self) -> Result<(), ClientError> {
        self.command(Command::Pause).await
    }

    /// Back in the foreground: connects at once and resumes every conversation.
    pub async fn resume(&self) -> Result<(), ClientError> {
        self.command(Command::Resume).await
    }

    /// Stops: waits briefly for the outbox to empty when connected (what is left is sent by
    /// the next client on the same outbox file), then closes the connection.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A message of this client's whose receipts are followed.
#[derive(Debug)]
struct Tracked {
    seq: u64,
    local_id: String,
    message_id: String,
    state: MessageState,
}

/// How a session ended.
enum End {
    Lost(String),
    /// The app paused the client.
    Paused,
    Refused(ClientError),
    Closed(oneshot::Sender<()>),
    /// `Auto` was on WebSocket and a WebTransport session opened: the client moves to it.
    Upgraded(Link),
    /// The network changed under a connection that cannot move (a WebSocket).
    Moved,
}

/// A connection being opened beside the one in use.
type Opening = Pin<Box<dyn Future<Output = Result<Link, String>> + Send>>;

struct Task {
    config: Config,
    store: Arc<Store>,
    events: mpsc::Sender<Event>,
    /// Joined conversations, and the last `seq` handed to the app (unknown until joined once).
    joined: BTreeMap<String, Option<u64>>,
    /// Messages not yet acknowledged, in the order sent, with when each last went out.
    pending: Vec<(Pending, Option<Instant>)>,
    /// Request ids of sends in flight → their `local_id`.
    requests: HashMap<String, String>,
    tracked: HashMap<String, Vec<Tracked>>,
    next_request: u64,
    /// `Auto` fell back to WebSocket on this network (the local address the server is reached
    /// from): WebTransport is tried again after this.
    prefer_websocket: Option<(String, Instant)>,
    /// Messages handed to the app, for the cache: written in batches.
    cache: Vec<Recent>,
    /// When to ask the token callback for a new token (three quarters into the current one's
    /// life), if it has an `exp`.
    refresh_at: Option<Instant>,
    /// The last `error` event's code, for a refusal's report.
    last_error: Option<(String, String)>,
    first: Option<oneshot::Sender<Result<(), ClientError>>>,
}

impl Task {
    async fn emit(&self, e: Event) {
        let _ = self.events.send(e).await;
    }

    fn settle_first(&mut self, outcome: Result<(), ClientError>) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(outcome);
        }
    }

    fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("cr_{}", self.next_request)
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut attempt: u32 = 0;
        let mut upgraded: Option<Link> = None;
        loop {
            let outcome = if let Some(link) = upgraded.take() { Ok(link) } else { self.connect_once().await };
            match outcome {
                Ok(link) => {
                    attempt = 0;
                    let end = self.session(link, &mut commands).await;
                    // The session settles `connect` once the server accepted the token; one that
                    // ended before it said either way counts as a failure to connect.
                    if !matches!(end, End::Refused(_)) {
                        self.settle_first(Ok(()));
                    }
                    match end {
                        End::Closed(done) => {
                            // What the app lent the client (a token provider: in the bindings,
                            // a foreign object) is released before `close` returns, so that an
                            // app that exits right after never has a thread of ours release it
                            // while its runtime is going away (Python aborts on that).
                            drop(self);
                            let _ = done.send(());
                            return;
                        }
                        End::Refused(e) => {
                            self.settle_first(Err(e.clone()));
                            let (code, message) = (e.code().unwrap_or("UNAUTHORIZED").to_owned(), e.to_string());
                            self.emit(Event::Error { code, message, local_id: None }).await;
                            return;
                        }
                        End::Lost(reason) => self.emit(Event::Disconnected { reason }).await,
                        // A new network: a connection there at once, not after a backoff.
                        End::Moved => {
                            self.emit(Event::Disconnected { reason: "network changed".into() }).await;
                            continue;
                        }
                        End::Upgraded(link) => {
                            upgraded = Some(link);
                            continue;
                        }
                        End::Paused => {
                            self.emit(Event::Disconnected { reason: "paused".into() }).await;
                            if !self.paused(&mut commands).await {
                                return;
                            }
                            attempt = 0;
                            continue;
                        }
                    }
                }
                Err(why) => {
                    tracing::debug!(%why, "connect failed");
                    self.settle_first(Ok(()));
                }
            }
            // Backoff with jitter; requests meanwhile wait for the next connection.
            let base = Duration::from_millis(250).saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(10));
            let delay = base.mul_f64(0.5 + rand::random::<f64>());
            attempt = attempt.saturating_add(1);
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    c = commands.recv() => match c {
                        Some(Command::Close(done)) => {
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                        // A new network, or back in the foreground: try now rather than at the
                        // end of the backoff.
                        Some(Command::NetworkChanged | Command::Resume) => {
                            attempt = 0;
                            break;
                        }
                        Some(Command::Pause) => {
                            if !self.paused(&mut commands).await {
                                return;
                            }
                            attempt = 0;
                            break;
                        }
                        Some(c) => self.offline(c).await,
                    }
                }
            }
        }
    }

    /// Waits for `Resume` (true) or `Close` (false), keeping requests for later.
    async fn paused(&mut self, commands: &mut mpsc::Receiver<Command>) -> bool {
        loop {
            match commands.recv().await {
                Some(Command::Resume) => return true,
                Some(Command::Close(done)) => {
                    let _ = done.send(());
                    return false;
                }
                None => return false,
                Some(c) => self.offline(c).await,
            }
        }
    }

    /// A token, then a connection.
    async fn connect_once(&mut self) -> Result<Link, String> {
        let token = self.config.token.get().await.map_err(|e| format!("token: {e}"))?;
        // A fixed token is not refreshed: the server closes with 4001 at its expiry.
        let callback = matches!(self.config.token, crate::config::TokenSource::Callback(_));
        self.refresh_at = if callback { refresh_time(&token) } else { None };
        self.open(&token).await
    }

    /// Tries the transports in order. `Auto` goes straight to WebSocket on a network where
    /// WebTransport failed less than `retry_webtransport_after` ago (remembered in the client
    /// file across restarts), and records what worked.
    async fn open(&mut self, token: &str) -> Result<Link, String> {
        let now = Instant::now();
        let network = match self.config.transport {
            TransportChoice::Auto => network_of(&self.config).await,
            _ => None,
        };
        // A copy: the guard below borrows `self` mutably.
        let choice = self.config.transport;
        let order: &[TransportKind] = match choice {
            TransportChoice::WebSocket => &[TransportKind::WebSocket],
            TransportChoice::WebTransport => &[TransportKind::WebTransport],
            TransportChoice::Auto if self.websocket_preferred(network.as_deref(), now) => &[TransportKind::WebSocket],
            TransportChoice::Auto => &[TransportKind::WebTransport, TransportKind::WebSocket],
        };
        let mut why = String::new();
        for (i, kind) in order.iter().enumerate() {
            match Link::open(&self.config, *kind, token).await {
                Ok(link) => {
                    if let Some(network) = network {
                        if i > 0 {
                            self.prefer_websocket = Some((network.clone(), now + self.config.retry_webtransport_after));
                        }
                        if i > 0 || *kind == TransportKind::WebTransport {
                            self.remember_transport(&network, *kind);
                        }
                    }
                    return Ok(link);
                }
                Err(e) => why = e,
            }
        }
        Err(why)
    }

    /// Whether `Auto` should skip WebTransport on this network for now.
    fn websocket_preferred(&mut self, network: Option<&str>, now: Instant) -> bool {
        let Some(network) = network else { return false };
        if let Some((n, until)) = &self.prefer_websocket {
            if n == network {
                return *until > now;
            }
        }
        // Another network, or a fresh start: what the file remembers about this one.
        let Some((TransportKind::WebSocket, at)) = self.store.transport_for(network) else { return false };
        let retry = self.config.retry_webtransport_after.as_millis() as i64;
        let left = (at + retry).saturating_sub(crate::store::now_ms());
        if left <= 0 {
            return false;
        }
        self.prefer_websocket = Some((network.to_owned(), now + Duration::from_millis(left as u64)));
        true
    }

    fn remember_transport(&self, network: &str, kind: TransportKind) {
        if let Err(e) = self.store.set_transport(network, kind) {
            tracing::warn!(error = %e, "client file");
        }
    }

    /// Writes the messages waiting for the cache.
    fn flush_cache(&mut self) {
        if let Err(e) = self.store.remember(&self.cache) {
            tracing::warn!(error = %e, "cache");
        }
        self.cache.clear();
    }

    /// Follows a conversation from now on. A new one resumes from the last cached message (of
    /// this run or an earlier one), so that what was missed while away arrives; from nothing
    /// without a client file.
    fn follow(&mut self, conv: &str) {
        if self.joined.contains_key(conv) {
            return;
        }
        // What waits for the cache counts too: a quick leave and join must not replay it.
        self.flush_cache();
        let from = self.store.last_seq(conv);
        self.joined.insert(conv.to_owned(), from);
    }

    /// A request while there is no connection: kept for the next one.
    async fn offline(&mut self, c: Command) {
        match c {
            Command::Join(conv) => self.follow(&conv),
            Command::Leave(conv) => {
                self.joined.remove(&conv);
            }
            Command::Send(p) => self.queue(p).await,
            // Latest-wins or answerable later: dropped while offline.
            Command::Read { .. } | Command::Typing(_) | Command::History { .. } | Command::Status { .. } => {}
            Command::NetworkChanged | Command::Pause | Command::Resume | Command::Close(_) => {}
        }
    }

    async fn queue(&mut self, p: Pending) {
        if let Err(e) = self.store.add(&p) {
            self.emit(Event::Error {
                code: "OUTBOX".into(),
                message: e.to_string(),
                local_id: Some(p.local_id.clone()),
            })
            .await;
        }
        let (local_id, conversation_id) = (p.local_id.clone(), p.conversation_id.clone());
        self.pending.push((p, None));
        self.emit(Event::State { local_id, conversation_id, state: MessageState::Sending, message_id: None }).await;
    }

    async fn send_pending(&mut self, link: &mut Link, i: usize) -> Result<(), String> {
        let rid = self.request_id();
        let Some((p, at)) = self.pending.get_mut(i) else { return Ok(()) };
        *at = Some(Instant::now());
        let data =
            json!({"conversation_id": p.conversation_id, "content": p.content, "type": "text", "local_id": p.local_id});
        let (conv, local_id) = (p.conversation_id.clone(), p.local_id.clone());
        // One request in flight per message: an earlier copy's answer can only be the same.
        self.requests.retain(|_, l| *l != local_id);
        self.requests.insert(rid.clone(), local_id);
        link.send(&envelope("message:send", data, &rid), Some(&conv)).await
    }

    async fn join_on(&mut self, link: &mut Link, conv: &str) -> Result<(), String> {
        let since = self.joined.get(conv).copied().flatten();
        let mut data = json!({"conversation_id": conv});
        if let Some(s) = since {
            data["since_seq"] = json!(s);
        }
        let rid = self.request_id();
        link.join(conv, &envelope("conversation:join", data, &rid)).await
    }

    async fn session(&mut self, link: Link, commands: &mut mpsc::Receiver<Command>) -> End {
        let end = self.connected(link, commands).await;
        self.flush_cache();
        end
    }

    async fn connected(&mut self, mut link: Link, commands: &mut mpsc::Receiver<Command>) -> End {
        self.emit(Event::Connected { transport: link.kind }).await;
        self.last_error = None;
        // Requests of an earlier connection get no answer now.
        self.requests.clear();
        let convs: Vec<String> = self.joined.keys().cloned().collect();
        for c in convs {
            if let Err(e) = self.join_on(&mut link, &c).await {
                return End::Lost(e);
            }
        }
        for i in 0..self.pending.len() {
            if let Err(e) = self.send_pending(&mut link, i).await {
                return End::Lost(e);
            }
        }
        let keepalive = self.config.keepalive;
        let mut beat = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        let mut heard = Instant::now();
        let mut closing: Option<(oneshot::Sender<()>, Instant)> = None;
        // Made once, not at every event: polled only while closing, and while a refresh is due.
        let mut flush = tokio::time::interval(Duration::from_millis(50));
        let refresh = tokio::time::sleep_until(self.refresh_at.unwrap_or_else(far_future));
        tokio::pin!(refresh);
        // `Auto` on WebSocket tries WebTransport again beside it, and moves when it opens.
        let retry = self.config.retry_webtransport_after;
        let upgrade_at = (self.config.transport == TransportChoice::Auto && link.kind == TransportKind::WebSocket)
            .then(|| self.prefer_websocket.as_ref().map_or_else(|| Instant::now() + retry, |(_, until)| *until));
        let upgrade = tokio::time::sleep_until(upgrade_at.unwrap_or_else(far_future));
        tokio::pin!(upgrade);
        let mut opening: Option<Opening> = None;
        loop {
            if let Some((_, until)) = &closing {
                if self.pending.is_empty() || Instant::now() >= *until {
                    let Some((done, _)) = closing.take() else { continue };
                    link.close().await;
                    return End::Closed(done);
                }
            }
            tokio::select! {
                c = commands.recv(), if closing.is_none() => {
                    let Some(c) = c else { link.close().await; return End::Lost("client dropped".into()) };
                    if let Command::Close(done) = c {
                        closing = Some((done, Instant::now() + FLUSH));
                        continue;
                    }
                    if let Command::Pause = c {
                        link.close().await;
                        return End::Paused;
                    }
                    if matches!(c, Command::NetworkChanged) && link.kind == TransportKind::WebSocket {
                        link.close().await;
                        return End::Moved;
                    }
                    if let Err(e) = self.online(&mut link, c).await {
                        return End::Lost(e);
                    }
                }
                incoming = link.incoming.recv() => match incoming {
                    Some(Incoming::Event(v)) => {
                        heard = Instant::now();
                        // The server accepted the token: `connect` returns. (A refusal comes as
                        // `error` and `connection:closed`, then the close.)
                        if self.first.is_some() && kind(&v) == "connection:established" {
                            self.settle_first(Ok(()));
                        }
                        self.on_event(v).await;
                        if !self.cache.is_empty() && (link.incoming.is_empty() || self.cache.len() >= CACHE_BATCH) {
                            self.flush_cache();
                        }
                    }
                    Some(Incoming::Closed { code: Some(code), reason }) if is_refusal(code) => {
                        // A new token may cure an expired one.
                        if code == 4001 && matches!(self.config.token, crate::config::TokenSource::Callback(_)) {
                            return End::Lost(format!("token expired ({reason})"));
                        }
                        let (code_name, message) = self.last_error.take()
                            .unwrap_or_else(|| (refusal_code(code).to_owned(), reason.clone()));
                        return End::Refused(ClientError::Refused { code: code_name, close_code: code, message });
                    }
                    Some(Incoming::Closed { code, reason }) => {
                        return End::Lost(match code { Some(c) => format!("closed {c}: {reason}"), None => reason });
                    }
                    None => return End::Lost("connection ended".into()),
                },
                _ = beat.tick() => {
                    if heard.elapsed() > keepalive * 3 {
                        return End::Lost(format!("nothing heard for {:?}", heard.elapsed()));
                    }
                    let rid = self.request_id();
                    if let Err(e) = link.send(&envelope("heartbeat", json!({}), &rid), None).await {
                        return End::Lost(e);
                    }
                    // Sends not acknowledged in a while go again (the same `local_id`).
                    for i in 0..self.pending.len() {
                        if self.pending[i].1.is_none_or(|t| t.elapsed() >= RESEND_AFTER) {
                            if let Err(e) = self.send_pending(&mut link, i).await {
                                return End::Lost(e);
                            }
                        }
                    }
                }
                _ = flush.tick(), if closing.is_some() => {}
                _ = &mut upgrade, if upgrade_at.is_some() && opening.is_none() && closing.is_none() => {
                    let config = self.config.clone();
                    opening = Some(Box::pin(async move {
                        let token = config.token.get().await.map_err(|e| format!("token: {e}"))?;
                        Link::open(&config, TransportKind::WebTransport, &token).await
                    }));
                    upgrade.as_mut().reset(far_future());
                }
                opened = async {
                    match opening.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if opening.is_some() => {
                    opening = None;
                    match opened {
                        Ok(wt) => {
                            if let Some(network) = network_of(&self.config).await {
                                self.remember_transport(&network, TransportKind::WebTransport);
                            }
                            self.prefer_websocket = None;
                            link.close().await;
                            return End::Upgraded(wt);
                        }
                        Err(why) => {
                            tracing::debug!(%why, "WebTransport still fails");
                            upgrade.as_mut().reset(Instant::now() + retry);
                        }
                    }
                }
                _ = &mut refresh, if self.refresh_at.is_some() => {
                    self.refresh_at = None;
                    if let Err(e) = self.refresh(&mut link).await {
                        return End::Lost(e);
                    }
                    refresh.as_mut().reset(self.refresh_at.unwrap_or_else(far_future));
                }
            }
        }
    }

    async fn online(&mut self, link: &mut Link, c: Command) -> Result<(), String> {
        match c {
            Command::Join(conv) => {
                self.follow(&conv);
                self.join_on(link, &conv).await
            }
            Command::Leave(conv) => {
                self.joined.remove(&conv);
                let rid = self.request_id();
                link.leave(&conv, &envelope("conversation:leave", json!({"conversation_id": conv}), &rid)).await
            }
            Command::Send(p) => {
                self.queue(p).await;
                self.send_pending(link, self.pending.len() - 1).await
            }
            Command::Read { conversation_id, message_id } => {
                let rid = self.request_id();
                let data = json!({"conversation_id": conversation_id, "message_id": message_id});
                link.send(&envelope("message:read", data, &rid), Some(&conversation_id)).await
            }
            Command::Typing(conv) => {
                let rid = self.request_id();
                link.send_unreliable(&envelope("typing:start", json!({"conversation_id": conv}), &rid)).await
            }
            Command::History { conversation_id, before_seq, limit } => {
                let rid = self.request_id();
                let mut data = json!({"conversation_id": conversation_id});
                if let Some(b) = before_seq {
                    data["before_seq"] = json!(b);
                }
                if let Some(l) = limit {
                    data["limit"] = json!(l);
                }
                link.send(&envelope("history:get", data, &rid), Some(&conversation_id)).await
            }
            Command::Status { status, message } => {
                let rid = self.request_id();
                link.send(&envelope("status:update", json!({"status": status, "message": message}), &rid), None).await
            }
            Command::NetworkChanged => {
                let local = link.network_changed()?;
                self.emit(Event::NetworkChanged { local_address: local.to_string() }).await;
                // A packet on the new path at once: the server validates it and answers there.
                let rid = self.request_id();
                link.send(&envelope("heartbeat", json!({}), &rid), None).await
            }
            Command::Pause | Command::Resume | Command::Close(_) => Ok(()),
        }
    }

    /// Sends `auth:refresh` with a new token from the callback, before the current one
    /// expires (only a callback has one to give: `refresh_at` is set for it alone).
    async fn refresh(&mut self, link: &mut Link) -> Result<(), String> {
        let token = match tokio::time::timeout(self.config.connect_timeout, self.config.token.get()).await {
            Ok(Ok(t)) => t,
            // Tried again in a while; the connection stays until the server's 4001.
            _ => {
                self.refresh_at = Some(Instant::now() + Duration::from_secs(5));
                return Ok(());
            }
        };
        self.refresh_at = refresh_time(&token);
        let rid = self.request_id();
        link.send(&envelope("auth:refresh", json!({"token": token}), &rid), None).await
    }

    async fn advance(&mut self, conv: &str, up_to: u64, state: MessageState) {
        let mut moved = Vec::new();
        if let Some(list) = self.tracked.get_mut(conv) {
            for t in list.iter_mut().filter(|t| t.seq <= up_to && t.state < state) {
                t.state = state;
                moved.push((t.local_id.clone(), t.message_id.clone()));
            }
            // Read is as far as a message goes.
            list.retain(|t| t.state < MessageState::Read);
        }
        for (local_id, message_id) in moved {
            let conversation_id = conv.to_owned();
            self.emit(Event::State { local_id, conversation_id, state, message_id: Some(message_id) }).await;
        }
    }

    async fn on_event(&mut self, mut v: Value) {
        // A new message is the most frequent event and the largest: taken out, not copied.
        if kind(&v) == "message:new" {
            let mut data = v["data"].take();
            let message = if data["message"].is_object() { data["message"].take() } else { data };
            return self.on_message(message).await;
        }
        let d = &v["data"];
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
        match kind(&v) {
            "conversation:joined" => {
                let conv = s("conversation_id");
                let last = d["last_seq"].as_u64().unwrap_or(0);
                if let Some(seen) = self.joined.get_mut(&conv) {
                    seen.get_or_insert(last);
                }
                self.emit(Event::Joined { conversation_id: conv.clone(), last_seq: last }).await;
                if let Some(r) = d["others_delivered_seq"].as_u64() {
                    self.advance(&conv, r, MessageState::Delivered).await;
                }
                if let Some(r) = d["others_read_seq"].as_u64() {
                    self.advance(&conv, r, MessageState::Read).await;
                }
            }
            "conversation:left" => {
                let conv = s("conversation_id");
                self.joined.remove(&conv);
                self.emit(Event::Left { conversation_id: conv }).await;
            }
            "message:sent" => {
                let local_id = s("local_id");
                let Some(i) = self.pending.iter().position(|(p, _)| p.local_id == local_id) else { return };
                let (p, _) = self.pending.remove(i);
                self.requests.retain(|_, l| *l != local_id);
                if let Err(e) = self.store.remove(&local_id) {
                    tracing::warn!(error = %e, "outbox");
                }
                let (message_id, seq) = (s("id"), d["seq"].as_u64().unwrap_or(0));
                let list = self.tracked.entry(p.conversation_id.clone()).or_default();
                if list.len() >= TRACKED {
                    list.remove(0);
                }
                list.push(Tracked {
                    seq,
                    local_id: local_id.clone(),
                    message_id: message_id.clone(),
                    state: MessageState::Sent,
                });
                let conversation_id = p.conversation_id;
                self.emit(Event::State {
                    local_id,
                    conversation_id,
                    state: MessageState::Sent,
                    message_id: Some(message_id),
                })
                .await;
            }
            "message:delivered" => {
                if let Some(seq) = d["seq"].as_u64() {
                    self.advance(&s("conversation_id"), seq, MessageState::Delivered).await;
                }
            }
            "message:viewed" => {
                if let Some(seq) = d["seq"].as_u64() {
                    let conv = s("conversation_id");
                    self.advance(&conv, seq, MessageState::Delivered).await;
                    self.advance(&conv, seq, MessageState::Read).await;
                }
            }
            "typing:indicator" => {
                let e = Event::Typing {
                    conversation_id: s("conversation_id"),
                    user_id: s("user_id"),
                    is_typing: d["is_typing"].as_bool().unwrap_or(false),
                };
                self.emit(e).await;
            }
            "user:online" | "user:offline" => {
                let online = kind(&v) == "user:online";
                self.emit(Event::Presence { user_id: s("user_id"), online }).await;
            }
            "conversation:unread" => {
                let e = Event::Unread {
                    conversation_id: s("conversation_id"),
                    unread_count: d["unread_count"].as_u64().unwrap_or(0),
                };
                self.emit(e).await;
            }
            "history" => {
                let messages = d["messages"].as_array().cloned().unwrap_or_default();
                let e = Event::History {
                    conversation_id: s("conversation_id"),
                    messages,
                    has_more: d["has_more"].as_bool().unwrap_or(false),
                };
                self.emit(e).await;
            }
            "error" => self.on_error(d).await,
            _ => {}
        }
    }

    /// A message, once and in order per conversation: a replay after a reconnect may repeat
    /// what was seen.
    async fn on_message(&mut self, message: Value) {
        let conv = message["conversation_id"].as_str().unwrap_or_default().to_owned();
        let seq = message["seq"].as_u64();
        if let (Some(seq), Some(seen)) = (seq, self.joined.get_mut(&conv)) {
            if seen.is_some_and(|last| seq <= last) {
                return;
            }
            *seen = Some(seq);
            if self.store.keeps() {
                self.cache.push((conv, seq, message.to_string()));
            }
        }
        self.emit(Event::Message { message }).await;
    }

    async fn on_error(&mut self, d: &Value) {
        let code = d["code"].as_str().unwrap_or("INTERNAL_ERROR").to_owned();
        let message = d["message"].as_str().unwrap_or_default().to_owned();
        let local_id = d["request_id"].as_str().and_then(|r| self.requests.remove(r));
        self.last_error = Some((code.clone(), message.clone()));
        // The token's refusal, which the close that follows reports (once, as the refusal).
        if local_id.is_none() && matches!(code.as_str(), "UNAUTHORIZED" | "TOKEN_INVALID" | "TOKEN_EXPIRED") {
            return;
        }
        if let Some(local_id) = &local_id {
            // Worth trying again: the same `local_id` cannot double the message.
            let transient = matches!(code.as_str(), "RATE_LIMITED" | "SERVICE_UNAVAILABLE" | "INTERNAL_ERROR");
            if !transient {
                if let Some(i) = self.pending.iter().position(|(p, _)| &p.local_id == local_id) {
                    let (p, _) = self.pending.remove(i);
                    let _ = self.store.remove(local_id);
                    let e = Event::State {
                        local_id: local_id.clone(),
                        conversation_id: p.conversation_id,
                        state: MessageState::Failed,
                        message_id: None,
                    };
                    self.emit(e).await;
                }
            }
        }
        self.emit(Event::Error { code, message, local_id }).await;
    }
}

/// The network the device is on, as told by the local address the OS routes the server's
/// traffic from (no packet is sent): Wi-Fi and cellular differ, and so do most Wi-Fi networks.
async fn network_of(config: &Config) -> Option<String> {
    let (host, port) = config.authority().ok()?;
    let server = tokio::net::lookup_host((host.as_str(), port)).await.ok()?.next()?;
    let any: std::net::SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(server).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// An instant no timer of a session reaches.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 86_400)
}

/// Three quarters into the token's life, from its `exp` claim (read, not verified: the server
/// verifies). `None` for a token without one. The time left is measured against the clock's
/// fraction of a second too: in whole seconds it was up to a second too long, which put the
/// refresh of a short-lived token right at its expiry.
fn refresh_time(token: &str) -> Option<Instant> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let exp = Duration::from_secs(serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_u64()?);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Instant::now() + exp.saturating_sub(now) * 3 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn a_token_is_refreshed_three_quarters_into_its_life() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"a","exp":{}}}"#, now + 400));
        let at = refresh_time(&format!("h.{claims}.s")).unwrap();
        let wait = at.duration_since(Instant::now());
        assert!(wait > Duration::from_secs(290) && wait <= Duration::from_secs(300), "{wait:?}");
        // A short-lived token: a quarter of what is really left stays, to the clock's fraction.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let exp = now.as_secs() + 4;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        let wait = refresh_time(&format!("h.{claims}.s")).unwrap().duration_since(Instant::now());
        let left = Duration::from_secs(exp).saturating_sub(now);
        assert!(wait <= left.mul_f64(0.76), "{wait:?} of {left:?}");
        assert!(refresh_time("not-a-jwt").is_none());
        assert!(refresh_time("h.e30.s").is_none(), "no exp");
    }
}
