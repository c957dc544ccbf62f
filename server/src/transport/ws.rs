//! The WebSocket transport (SPEC §3): `/ws` and `/v1/ws`, plain or TLS.
//!
//! The token comes from `?token=`, `Authorization: Bearer`, or a `bearer.<token>` entry of
//! `Sec-WebSocket-Protocol` (browsers cannot set headers). JSON text frames by default;
//! MessagePack binary frames with `?codec=msgpack` or the subprotocol `confab.msgpack`.
//! Whatever was negotiated, a text frame is read as JSON and a binary one as MessagePack.
//!
//! The session is opened (registered, listening) before the upgrade is answered: a seed 003
//! client takes the completed upgrade as its ready signal. Per connection, one task: its
//! reading half decodes frames and drives the session; its writing half encodes queued events,
//! pings every 30 s and closes the socket when the closer fires. One task rather than a reader
//! and a writer task: a second task, and the lock that splits a socket between two tasks,
//! cost an idle connection about 1 KiB (benchmarks.md, issue 19, third pass). The writing half
//! has one wait ([`ConnOutput::next`]): the ping's tick comes from the session's timer, and the
//! closer wakes it, so it keeps no timer and no second wait (sixth pass).

use super::Opened;
use crate::app::{App, Scheme, Settings};
use crate::error::CloseReason;
use crate::link::{Closer, ConnOutput, Inbound, Next, Outgoing, Route, TransportKind};
use crate::session::{self, Opening};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use confab_codec::wire::{self, Endpoint};
use confab_codec::{Codec, Dialect, Format};
use futures_util::future::Either;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Error as WsError;

/// Subprotocols the server selects (the token-carrying `bearer.*` one is never echoed).
const PROTOCOLS: [&str; 7] = wire::subprotocol::SELECTABLE;
/// Frames larger than this end the connection (1009) before they are read; frames between
/// the codec's limit (32 KiB) and this get a `MESSAGE_TOO_LARGE` error instead.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// The WebSocket read buffer per connection, and the most one read takes. 256 bytes hold the
/// usual frame (a `message:send` is 130-250 bytes); a bigger frame grows it, and takes a second
/// read. 4 KiB -> 1 KiB -> 256 bytes: an idle connection 14.0 -> 11.1 KiB (issue 19, first
/// pass), 6.9 -> 6.1 KiB (third pass), with CPU per message the same within the noise
/// (benchmarks.md). Since the sixth pass an idle connection holds none: the patched tungstenite
/// (`vendor/tungstenite`) releases it when a read finds nothing, and its write buffer once
/// written.
const READ_BUFFER: usize = 256;
/// Events written before a flush when the queue has many waiting.
const WRITE_BATCH: usize = 64;
/// How long the final events and the close frame may take to write.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Where the token was found: query, header, or subprotocol.
fn find_token(query: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    if let Some(t) = query.get(wire::query::TOKEN).filter(|t| !t.is_empty()) {
        return Some(t.clone());
    }
    if let Some(h) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = h.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) {
            return Some(t.to_owned());
        }
    }
    offered_protocols(headers).find_map(|p| p.strip_prefix(wire::subprotocol::BEARER_PREFIX).map(str::to_owned))
}

fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn subprotocol_format(headers: &HeaderMap) -> Format {
    if offered_protocols(headers).any(|p| p == wire::subprotocol::MSGPACK) { Format::MsgPack } else { Format::Json }
}

/// `GET /ws`, and `GET /v1/ws`, seed 000's path, where `message:new` carries its fields flat
/// as well (`flat_messages`; protocol.md).
pub async fn upgrade(
    State(app): State<App>,
    flat_messages: bool,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    ws: WebSocketUpgrade,
) -> Response {
    let endpoint = Endpoint { flat_messages, ..Endpoint::default() };
    upgrade_at(app, query, headers, ws, endpoint, None, scheme).await
}

/// `GET /api/v1/ws/chat/{chatId}` (seed 003): the chatrooms dialect, scoped to the chat.
pub async fn upgrade_chat(
    State(app): State<App>,
    Path(chat_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    ws: WebSocketUpgrade,
) -> Response {
    let endpoint = Endpoint { dialect: Some(Dialect::Chatrooms), scope: Some(chat_id), flat_messages: false };
    upgrade_at(app, query, headers, ws, endpoint, None, scheme).await
}

/// `GET /api/v1/ws/{userId}` (seed 003): the user's personal socket; the token must be theirs.
pub async fn upgrade_personal(
    State(app): State<App>,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    ws: WebSocketUpgrade,
) -> Response {
    let endpoint = Endpoint { dialect: Some(Dialect::ChatroomsPersonal), scope: None, flat_messages: false };
    upgrade_at(app, query, headers, ws, endpoint, Some(user_id), scheme).await
}

async fn upgrade_at(
    app: App,
    query: HashMap<String, String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
    endpoint: Endpoint,
    owner: Option<String>,
    scheme: Option<Extension<Scheme>>,
) -> Response {
    if !app.settings.origin_allowed(&headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    // `?codec=` first, then the `confab.msgpack` subprotocol, then JSON.
    let codec = app.settings.codec(&query, offered_protocols(&headers), subprotocol_format(&headers), &endpoint);
    let (codec, resume) = match (codec, Settings::resume(&query)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let guard = app.node.tasks.token();
    // Verified before the upgrade, refused after it: a browser only sees close codes.
    let scheme = scheme.map_or("http", |Extension(Scheme(s))| s);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let base_url = app.settings.base_url(scheme, host);
    let keepalive = Some(app.settings.ping_interval);
    let opening = Opening { transport: TransportKind::WebSocket, codec: codec.clone(), resume, base_url, keepalive };
    let opened = super::open_session(&app, find_token(&query, &headers).as_deref(), owner.as_deref(), opening).await;
    // Boxed: axum's upgrade future keeps the callback it was given for the connection's whole
    // life, so what the callback captures is paid by every connection (136 bytes unboxed).
    let setup = Box::new((app, opened, codec, guard));
    ws.protocols(PROTOCOLS)
        .max_message_size(HARD_FRAME_LIMIT)
        // tungstenite allocates its whole read buffer per connection (128 KiB by default): an
        // idle connection should cost a few KiB, and frames are small (benchmarks.md, density).
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            let (app, opened, codec, guard) = *setup;
            serve(socket, app, opened, codec, guard)
        })
}

/// One connection's socket, shared by its reading and its writing half inside its one task.
/// Each poll takes the lock and lets it go before returning, and the halves are polled one
/// after the other, so the lock is never contended: it is there because two futures of one
/// task cannot both hold `&mut` to the socket.
struct Half<'a>(&'a Mutex<WebSocket>);

impl Half<'_> {
    fn socket(&self) -> MutexGuard<'_, WebSocket> {
        // Never held across a poll: a panic in one leaves a socket as usable as any.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Stream for Half<'_> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.socket().poll_next_unpin(cx)
    }
}

impl Sink<Message> for Half<'_> {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket().poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.socket().start_send_unpin(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket().poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket().poll_close_unpin(cx)
    }
}

/// What the reading half needs to turn frames into [`Inbound`] items.
struct Reading {
    json: Codec,
    packed: Codec,
    closer: Arc<Closer>,
}

impl Reading {
    fn inbound(&self, msg: Result<Message, axum::Error>, pings: &Pings) -> Option<Inbound> {
        match msg {
            Ok(Message::Text(t)) => {
                Some(Inbound::Event(Route::Control, Box::new(self.json.decode_client(t.as_bytes()))))
            }
            Ok(Message::Binary(b)) => Some(Inbound::Event(Route::Control, Box::new(self.packed.decode_client(&b)))),
            Ok(Message::Pong(_)) => {
                pings.pong();
                None
            }
            Ok(Message::Ping(_)) => None,
            Ok(Message::Close(_)) => Some(Inbound::Closed),
            Err(e) => {
                let inner = e.into_inner();
                if matches!(inner.downcast_ref::<WsError>(), Some(WsError::Capacity(_))) {
                    self.closer.close(CloseReason::TooBig);
                }
                Some(Inbound::Closed)
            }
        }
    }
}

/// Sets the connection up and returns what runs it: its one task.
///
/// Not an `async fn`: the future it returns, which every connection keeps for its whole life,
/// holds only what the running connection needs, not a second copy of the arguments and of
/// the setup's locals (8.9 KB a connection when it was one, benchmarks.md issue 19).
fn serve(
    mut socket: WebSocket,
    app: App,
    opened: Opened,
    codec: Codec,
    guard: tokio_util::task::task_tracker::TaskTrackerToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (session, output) = match opened {
        Ok(o) => o,
        Err(e) => {
            let (ev, reason) = session::refusal(&app.node, &e);
            let refusal = ev.encoded(&codec).ok().flatten().map(|bytes| frame(&codec, bytes));
            return Either::Left(async move {
                if let Some(refusal) = refusal {
                    let _ = socket.send(refusal).await;
                }
                let _ = socket.send(close_message(reason)).await;
                drop(guard);
            });
        }
    };
    let codec = session.conn().codec.clone();
    let reading = Reading {
        json: Codec { format: Format::Json, ..codec.clone() },
        packed: Codec { format: Format::MsgPack, ..codec.clone() },
        closer: Arc::clone(&session.conn().closer),
    };
    let pings = Pings { timeout: app.settings.pong_timeout, started: Instant::now(), last_pong: AtomicU64::new(0) };
    let socket = Mutex::new(socket);
    let mut output = output;
    // The halves borrow what the block captured: a captured value moved into a local of the
    // block would be kept twice for the connection's whole life.
    Either::Right(async move {
        let writing = write_loop(Half(&socket), &mut output, &codec, &pings);
        let reading = read_loop(Half(&socket), session, &reading, &pings);
        tokio::join!(writing, reading);
        drop(guard);
    })
}

/// Keepalive: a ping at each of the session's ticks (every `ping_interval`), the connection
/// closed when no pong came for `timeout`.
struct Pings {
    timeout: Duration,
    started: Instant,
    /// When the last pong came, in milliseconds after `started`.
    last_pong: AtomicU64,
}

impl Pings {
    fn pong(&self) {
        self.last_pong.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn overdue(&self) -> bool {
        let since =
            self.started.elapsed().saturating_sub(Duration::from_millis(self.last_pong.load(Ordering::Relaxed)));
        since > self.timeout
    }
}

/// The connection's reading half: runs the session on the decoded frames, then reads on
/// until the peer's close frame.
fn read_loop<'a>(
    half: Half<'a>,
    session: Box<session::Session>,
    reading: &'a Reading,
    pings: &'a Pings,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    let mut inbound = half.filter_map(move |msg| std::future::ready(reading.inbound(msg, pings)));
    async move {
        session::run(session, &mut inbound).await;
        // Keep reading while the writing half says goodbye, until the peer's close frame (or
        // a deadline): closing the socket with the peer's frames unread would reset the
        // connection, and a reset can destroy the close frame before the client reads it.
        let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
            while let Some(item) = inbound.next().await {
                if matches!(item, Inbound::Closed) {
                    break;
                }
            }
        })
        .await;
    }
}

fn frame(codec: &Codec, bytes: Bytes) -> Message {
    if codec.format.is_text() {
        match Utf8Bytes::try_from(bytes) {
            Ok(t) => Message::Text(t),
            Err(_) => Message::Text(Utf8Bytes::from_static("")),
        }
    } else {
        Message::Binary(bytes)
    }
}

fn close_message(reason: CloseReason) -> Message {
    Message::Close(Some(CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.as_str()) }))
}

/// The connection's writing half. Not an `async fn`, for the reason `serve` gives: one kept a
/// second copy of its arguments (216 bytes an idle connection).
#[allow(clippy::manual_async_fn)]
fn write_loop<'a>(
    mut sink: Half<'a>,
    out: &'a mut ConnOutput,
    codec: &'a Codec,
    pings: &'a Pings,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    async move {
        loop {
            match out.next().await {
                Next::Closed => break,
                Next::Event(first) => {
                    if write_batch(&mut sink, out, codec, first).await.is_err() {
                        out.closer.close(CloseReason::Normal);
                        break;
                    }
                }
                Next::Keepalive => {
                    if pings.overdue() {
                        out.closer.close(CloseReason::Timeout);
                        break;
                    }
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        out.closer.close(CloseReason::Normal);
                        break;
                    }
                }
            }
        }
        let reason = out.closer.reason().unwrap_or(CloseReason::Normal);
        // A peer that stopped reading must not hold the task: the goodbye gets a deadline.
        // Boxed: its timer and its frames, inline, were 190 bytes of every idle connection's
        // task, for a step each connection takes once.
        let _ = Box::pin(tokio::time::timeout(CLOSE_DEADLINE, say_goodbye(&mut sink, out, codec, reason))).await;
    }
}

/// Flushes what was queued (unless the queue is the problem), sends `connection:closed` and
/// the close frame.
async fn say_goodbye(sink: &mut Half<'_>, out: &mut ConnOutput, codec: &Codec, reason: CloseReason) {
    if reason == CloseReason::Normal {
        let _ = sink.close().await;
        return;
    }
    if reason != CloseReason::SlowConsumer {
        while let Some(Outgoing(ev, _)) = out.try_recv() {
            if let Ok(Some(bytes)) = ev.encoded(codec) {
                if sink.feed(frame(codec, bytes)).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Ok(Some(bytes)) = out.closing_event(reason).encoded(codec) {
        let _ = sink.feed(frame(codec, bytes)).await;
    }
    let _ = sink.send(close_message(reason)).await;
    let _ = sink.close().await;
}

async fn write_batch(
    sink: &mut Half<'_>,
    out: &mut ConnOutput,
    codec: &Codec,
    first: Outgoing,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(Outgoing(ev, pacing)) = next {
        match ev.encoded(codec) {
            Ok(Some(bytes)) => {
                sink.feed(frame(codec, bytes)).await?;
                out.written(&ev, pacing);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "encoding an event"),
        }
        n += 1;
        next = if n < WRITE_BATCH { out.try_recv() } else { None };
    }
    sink.flush().await
}
