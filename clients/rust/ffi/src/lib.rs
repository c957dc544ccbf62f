//! confab-client for apps in Kotlin, Swift and Python, through UniFFI: the same Rust core,
//! a blocking interface that each platform calls from a background thread (or hands to
//! [`ConfabClient::listen`]), and plain records and enums in place of JSON.
//!
//! Each client owns a small tokio runtime, so the app needs none. The bindings are generated
//! from the built library (`uniffi-bindgen generate --library`); `clients/rust/README.md`
//! says how, and how Android and iOS apps build and load it.

use confab_client as core;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

uniffi::setup_scaffolding!();

/// What can go wrong, with the protocol's error codes where the server gave one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ConfabError {
    /// The configuration cannot work (a bad server URL, a bad certificate hash).
    #[error("configuration: {message}")]
    Config { message: String },
    /// The server refused the token (close 4001 without a new one, 4003 or 4004): the client
    /// does not reconnect. `code` is the protocol's (`UNAUTHORIZED`, `TOKEN_EXPIRED`, ...).
    #[error("refused by the server ({code}, close {close_code}): {message}")]
    Refused { code: String, close_code: u16, message: String },
    /// The server could not be reached; a connected client reconnects by itself.
    #[error("connection: {message}")]
    Connection { message: String },
    /// The client file could not be opened or written.
    #[error("client file: {message}")]
    Storage { message: String },
    /// The app's token provider failed.
    #[error("token provider: {message}")]
    Token { message: String },
    /// The client has stopped (`close`, or a refusal).
    #[error("the client has stopped")]
    Stopped,
}

impl From<core::ClientError> for ConfabError {
    fn from(e: core::ClientError) -> Self {
        use core::ClientError as E;
        match e {
            E::Config(message) => Self::Config { message },
            E::Refused { code, close_code, message } => Self::Refused { code, close_code, message },
            E::Connection(message) => Self::Connection { message },
            E::Outbox(message) => Self::Storage { message },
            E::Stopped => Self::Stopped,
        }
    }
}

// A provider written in Kotlin, Swift or Python that throws something the interface does not
// declare.
impl From<uniffi::UnexpectedUniFFICallbackError> for ConfabError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Token { message: e.reason }
    }
}

/// Which transports to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Transport {
    /// WebTransport first, WebSocket when UDP is blocked or the session is slow to open.
    Auto,
    WebTransport,
    WebSocket,
}

/// Where a sent message stands; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MessageState {
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
}

/// Everything a client needs; [`default_config`] fills in the defaults.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientConfig {
    /// `https://HOST:PORT`.
    pub server: String,
    /// A dev certificate's SHA-256 as 64 hex digits, pinned on both transports; `None`: the
    /// system's WebPKI roots (Mozilla's list).
    pub cert_sha256: Option<String>,
    pub transport: Transport,
    /// The client file (SQLite, in the app's private storage): the outbox, recent messages,
    /// the transport per network. `None`: memory only, and unsent messages die with the app.
    pub client_file: Option<String>,
    pub webtransport_deadline_ms: u64,
    pub connect_timeout_ms: u64,
    /// Keepalive period: three silent periods mean a dead path. Longer saves battery.
    pub keepalive_ms: u64,
    pub retry_webtransport_after_ms: u64,
}

/// A stored message, as the server sent it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChatMessage {
    pub id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub sender_id: String,
    pub content: String,
    /// `text`, `photo`, `location`, `gift`, `system`, ...
    pub message_type: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub local_id: Option<String>,
    pub reply_to: Option<String>,
    /// The message's `metadata` object as JSON.
    pub metadata_json: String,
}

impl ChatMessage {
    fn from_json(v: &Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let o = |k: &str| v[k].as_str().map(str::to_owned);
        ChatMessage {
            id: s("id"),
            conversation_id: s("conversation_id"),
            seq: v["seq"].as_u64().unwrap_or(0),
            sender_id: s("sender_id"),
            content: s("content"),
            message_type: v["type"].as_str().unwrap_or("text").to_owned(),
            created_at: s("created_at"),
            local_id: o("local_id"),
            reply_to: o("reply_to"),
            metadata_json: if v["metadata"].is_object() { v["metadata"].to_string() } else { "{}".into() },
        }
    }
}

/// One thing that happened; the client's events in order.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ClientEvent {
    Connected {
        transport: Transport,
    },
    NetworkChanged {
        local_address: String,
    },
    Disconnected {
        reason: String,
    },
    Joined {
        conversation_id: String,
        last_seq: u64,
    },
    Left {
        conversation_id: String,
    },
    /// Once each, in `seq` order per conversation.
    Message {
        message: ChatMessage,
    },
    State {
        local_id: String,
        conversation_id: String,
        state: MessageState,
        message_id: Option<String>,
    },
    Typing {
        conversation_id: String,
        user_id: String,
        is_typing: bool,
    },
    Presence {
        user_id: String,
        online: bool,
    },
    Unread {
        conversation_id: String,
        unread_count: u64,
    },
    History {
        conversation_id: String,
        messages: Vec<ChatMessage>,
        has_more: bool,
    },
    Error {
        code: String,
        message: String,
        local_id: Option<String>,
    },
    /// The last event: the client has stopped (closed, or refused: an `Error` came first).
    Stopped,
}

fn transport_of(t: core::TransportKind) -> Transport {
    match t {
        core::TransportKind::WebTransport => Transport::WebTransport,
        core::TransportKind::WebSocket => Transport::WebSocket,
    }
}

fn state_of(s: core::MessageState) -> MessageState {
    match s {
        core::MessageState::Sending => MessageState::Sending,
        core::MessageState::Sent => MessageState::Sent,
        core::MessageState::Delivered => MessageState::Delivered,
        core::MessageState::Read => MessageState::Read,
        core::MessageState::Failed => MessageState::Failed,
    }
}

impl From<core::Event> for ClientEvent {
    fn from(e: core::Event) -> Self {
        use core::Event as E;
        match e {
            E::Connected { transport } => Self::Connected { transport: transport_of(transport) },
            E::NetworkChanged { local_address } => Self::NetworkChanged { local_address },
            E::Disconnected { reason } => Self::Disconnected { reason },
            E::Joined { conversation_id, last_seq } => Self::Joined { conversation_id, last_seq },
            E::Left { conversation_id } => Self::Left { conversation_id },
            E::Message { message } => Self::Message { message: ChatMessage::from_json(&message) },
            E::State { local_id, conversation_id, state, message_id } => {
                Self::State { local_id, conversation_id, state: state_of(state), message_id }
            }
            E::Typing { conversation_id, user_id, is_typing } => Self::Typing { conversation_id, user_id, is_typing },
            E::Presence { user_id, online } => Self::Presence { user_id, online },
            E::Unread { conversation_id, unread_count } => Self::Unread { conversation_id, unread_count },
            E::History { conversation_id, messages, has_more } => Self::History {
                conversation_id,
                messages: messages.iter().map(ChatMessage::from_json).collect(),
                has_more,
            },
            E::Error { code, message, local_id } => Self::Error { code, message, local_id },
        }
    }
}

/// Where tokens come from: asked at every (re)connect and before the current token expires.
/// Called on a background thread; it may block (a network call to the app's backend).
#[uniffi::export(with_foreign)]
pub trait TokenProvider: Send + Sync {
    fn token(&self) -> Result<String, ConfabError>;
}

/// Hears every event, on a thread of the client's (see [`ConfabClient::listen`]).
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: ClientEvent);
}

/// The defaults: `Auto`, no pinning, no client file, a 3 s WebTransport deadline, a 10 s
/// connect timeout, a 10 s keepalive, WebTransport retried after 5 minutes on WebSocket.
#[uniffi::export]
pub fn default_config(server: String) -> ClientConfig {
    let d = core::Config::new(server.clone(), core::TokenSource::Fixed(String::new()));
    ClientConfig {
        server,
        cert_sha256: None,
        transport: Transport::Auto,
        client_file: None,
        webtransport_deadline_ms: d.webtransport_deadline.as_millis() as u64,
        connect_timeout_ms: d.connect_timeout.as_millis() as u64,
        keepalive_ms: d.keepalive.as_millis() as u64,
        retry_webtransport_after_ms: d.retry_webtransport_after.as_millis() as u64,
    }
}

/// A conversation's last `limit` cached messages, oldest first, straight from the client file:
/// what a cold start shows before a client is even connecting.
#[uniffi::export]
pub fn cached_messages(
    client_file: String,
    conversation_id: String,
    limit: u32,
) -> Result<Vec<ChatMessage>, ConfabError> {
    let found = core::cached_messages(std::path::Path::new(&client_file), &conversation_id, limit as usize)?;
    Ok(found.iter().map(ChatMessage::from_json).collect())
}

/// A dev server's token for `user_id` (`GET /dev/token`; dev mode only), trusting the pinned
/// certificate, or with `None` fetching and trusting the hash the server reports.
#[uniffi::export]
pub fn dev_token(server: String, user_id: String, cert_sha256: Option<String>) -> Result<String, ConfabError> {
    let rt = runtime(1)?;
    rt.block_on(async {
        let pin = cert_sha256.as_deref().map(core::parse_cert_hash).transpose()?;
        Ok(core::dev_token(&server, pin, &user_id).await?)
    })
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, ConfabError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("confab-client")
        .enable_all()
        .build()
        .map_err(|e| ConfabError::Config { message: format!("runtime: {e}") })
}

/// A connected (or connecting) client. Every method but [`ConfabClient::next_event`] returns
/// at once; requests made offline wait for the connection (sends in the outbox).
#[derive(uniffi::Object)]
pub struct ConfabClient {
    // Dropped in the background (see Drop): an app may release the client on any thread.
    runtime: Option<tokio::runtime::Runtime>,
    client: core::Client,
    events: Mutex<Option<core::Events>>,
}

impl std::fmt::Debug for ConfabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfabClient").finish_non_exhaustive()
    }
}

impl Drop for ConfabClient {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ConfabClient {
    fn rt(&self) -> Result<&tokio::runtime::Runtime, ConfabError> {
        self.runtime.as_ref().ok_or(ConfabError::Stopped)
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, core::ClientError>>) -> Result<T, ConfabError> {
        self.rt()?.block_on(f).map_err(ConfabError::from)
    }
}

#[uniffi::export]
impl ConfabClient {
    /// Connects: returns once the first connection is open, or failed for a reason other than
    /// a refusal (the client then keeps trying and works offline), or at the connect deadline;
    /// it always returns. A refused token is the error. Blocks: call it off the UI thread.
    #[uniffi::constructor]
    pub fn connect(config: ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<Arc<Self>, ConfabError> {
        let mut c = core::Config::new(
            config.server,
            core::TokenSource::Callback(Arc::new(move || {
                let tokens = tokens.clone();
                Box::pin(async move {
                    // The app's code may block; never on the client's own threads.
                    match tokio::task::spawn_blocking(move || tokens.token()).await {
                        Ok(Ok(t)) => Ok(t),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(format!("token provider panicked: {e}")),
                    }
                })
            })),
        );
        c.cert_sha256 = config.cert_sha256.as_deref().map(core::parse_cert_hash).transpose()?;
        c.transport = match config.transport {
            Transport::Auto => core::TransportChoice::Auto,
            Transport::WebTransport => core::TransportChoice::WebTransport,
            Transport::WebSocket => core::TransportChoice::WebSocket,
        };
        c.outbox = config.client_file.map(Into::into);
        let ms = |v: u64, what: &str| {
            if v == 0 || v > 86_400_000 {
                return Err(ConfabError::Config { message: format!("{what}: 1 ms to 24 h") });
            }
            Ok(Duration::from_millis(v))
        };
        c.webtransport_deadline = ms(config.webtransport_deadline_ms, "webtransport_deadline_ms")?;
        c.connect_timeout = ms(config.connect_timeout_ms, "connect_timeout_ms")?;
        c.keepalive = ms(config.keepalive_ms, "keepalive_ms")?;
        c.retry_webtransport_after = ms(config.retry_webtransport_after_ms, "retry_webtransport_after_ms")?;
        let rt = runtime(2)?;
        let (client, events) = rt.block_on(core::Client::connect(c))?;
        Ok(Arc::new(ConfabClient { runtime: Some(rt), client, events: Mutex::new(Some(events)) }))
    }

    /// Joins a conversation; it is resumed after every reconnect.
    pub fn join(&self, conversation_id: String) -> Result<(), ConfabError> {
        self.run(self.client.join(&conversation_id))
    }

    pub fn leave(&self, conversation_id: String) -> Result<(), ConfabError> {
        self.run(self.client.leave(&conversation_id))
    }

    /// Sends a text message and returns its `local_id` at once, online or not: it is in the
    /// outbox (the client file) until the server stores it, exactly once.
    pub fn send(&self, conversation_id: String, content: String) -> Result<String, ConfabError> {
        self.run(self.client.send(&conversation_id, &content))
    }

    pub fn mark_read(&self, conversation_id: String, message_id: String) -> Result<(), ConfabError> {
        self.run(self.client.mark_read(&conversation_id, &message_id))
    }

    pub fn typing(&self, conversation_id: String) -> Result<(), ConfabError> {
        self.run(self.client.typing(&conversation_id))
    }

    /// Asks for a page of history; a `History` event answers.
    pub fn history(
        &self,
        conversation_id: String,
        before_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(), ConfabError> {
        self.run(self.client.history(&conversation_id, before_seq, limit))
    }

    /// `online`, `away`, `busy` or `offline`.
    pub fn set_status(&self, status: String, message: Option<String>) -> Result<(), ConfabError> {
        self.run(self.client.status(&status, message.as_deref()))
    }

    /// Call from the OS's network callback: the WebTransport session moves to a new socket.
    pub fn network_changed(&self) -> Result<(), ConfabError> {
        self.run(self.client.network_changed())
    }

    /// The app went to the background.
    pub fn pause(&self) -> Result<(), ConfabError> {
        self.run(self.client.pause())
    }

    /// Back in the foreground.
    pub fn resume(&self) -> Result<(), ConfabError> {
        self.run(self.client.resume())
    }

    /// The conversation's last `limit` cached messages, oldest first.
    pub fn cached_messages(&self, conversation_id: String, limit: u32) -> Result<Vec<ChatMessage>, ConfabError> {
        let found = self.client.cached_messages(&conversation_id, limit as usize)?;
        Ok(found.iter().map(ChatMessage::from_json).collect())
    }

    /// The next event, waiting up to `timeout_ms`: `None` when none came in time, `Stopped`
    /// (once, then `None`) when the client has stopped. One reader at a time.
    pub fn next_event(&self, timeout_ms: u64) -> Option<ClientEvent> {
        let rt = self.rt().ok()?;
        let mut guard = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let events = guard.as_mut()?;
        // The timer is made inside the runtime: it needs the runtime's clock.
        let wait = Duration::from_millis(timeout_ms);
        match rt.block_on(async { tokio::time::timeout(wait, events.next()).await }) {
            Ok(Some(e)) => Some(e.into()),
            Ok(None) => {
                *guard = None;
                Some(ClientEvent::Stopped)
            }
            Err(_) => None,
        }
    }

    /// Hands every event to `listener` on a thread of the client's, until it stops (the last
    /// event is `Stopped`). Instead of `next_event`, not beside it.
    pub fn listen(self: Arc<Self>, listener: Arc<dyn EventListener>) {
        let spawned = std::thread::Builder::new().name("confab-events".into()).spawn(move || {
            loop {
                match self.next_event(1000) {
                    Some(ClientEvent::Stopped) => {
                        listener.on_event(ClientEvent::Stopped);
                        return;
                    }
                    Some(e) => listener.on_event(e),
                    // Nothing in a second; a client stopped by `close` ends with `Stopped`.
                    None if self.events.lock().map(|g| g.is_none()).unwrap_or(true) => return,
                    None => {}
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "listen: no thread for the events");
        }
    }

    /// Stops: waits up to 2 s for the outbox to empty, then closes the connection. What is
    /// left is sent by the next client on the same client file. On return the client holds
    /// nothing of the app's (the token provider is released): the app may exit at once.
    pub fn close(&self) {
        if let Ok(rt) = self.rt() {
            rt.block_on(self.client.clone().close());
        }
    }
}
