//! The WebTransport transport (SPEC §3): HTTP/3 extended CONNECT on `/wt` over QUIC, on the
//! TLS listener's port number (UDP).
//!
//! One session per QUIC connection, opened (registered, listening) before the CONNECT is
//! answered, so that a client never hears "ready" before its connection listens; events that
//! arrive before the control stream wait in the connection's queue. The first bidirectional
//! stream the client opens is the control stream; every further one is bound to the
//! conversation its first frame joins, and carries that conversation's events for this client,
//! in order. Frames are length-prefixed envelopes (`confab_codec::frame`), MessagePack unless
//! `?codec=json`. Typing indicators and heartbeat answers go as datagrams once the client has
//! sent a datagram.
//!
//! Tasks per connection, all owned by the connection's task through a [`TaskTracker`] and ended
//! by its `done` token: one reader and one writer per stream (so a stream the client stops
//! reading stalls only itself), the stream accept loop, the datagram reader, the watcher of the
//! session's close, and the dispatcher that routes the session's queue to the streams. No
//! conversation rule lives here: the session decides, this module routes by conversation id.

use crate::app::{App, Settings};
use crate::auth::AuthError;
use crate::error::CloseReason;
use crate::link::{Closer, ConnOutput, Inbound, Outgoing, Pacing, Route, SharedEvent, TransportKind, closing_event};
use crate::session::{self, Opening, Session};
use bytes::Bytes;
use confab_codec::event::{ClientEvent, ServerEvent};
use confab_codec::frame::{FrameDecoder, encode_frame};
use confab_codec::wire::Endpoint;
use confab_codec::{Codec, CodecError, ConversationId, DecodeError, Format};
use h3::quic::{BidiStream as _, RecvStream as _, SendStream as _};
use h3_webtransport::server::{AcceptedBi, WebTransportSession};
use http::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type Wt = WebTransportSession<h3_quinn::Connection, Bytes>;
type H3 = h3::server::Connection<h3_quinn::Connection, Bytes>;
type ConnectStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type WtBidi = h3_webtransport::stream::BidiStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type WtSend = h3_webtransport::stream::SendStream<h3_quinn::SendStream<Bytes>, Bytes>;
type WtRecv = h3_webtransport::stream::RecvStream<h3_quinn::RecvStream, Bytes>;

/// The path of the extended CONNECT.
pub const PATH: &str = confab_codec::wire::path::WT;
/// Frames over the codec's limit but not over this are skipped with `MESSAGE_TOO_LARGE`;
/// larger ones close the stream (as the WebSocket transport closes with 1009).
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// Inbound frames buffered between the stream readers and the session.
const INBOUND_QUEUE: usize = 64;
/// How long the final events and the close may take, and how long the client then has to
/// close the QUIC connection itself before the server does.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);
/// Between the last frame on the control stream and the close capsule.
const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// Room left in a QUIC datagram for the HTTP/3 datagram header (the quarter stream id).
const DATAGRAM_HEADER: usize = 8;
/// Bidirectional streams a client may have open at once: a control stream and one per joined
/// conversation. quinn keeps state for every stream a peer may open, so this is most of an
/// idle session's memory: 1,024 cost 148 KiB a session, 128 cost 74 KiB (benchmarks.md).
const MAX_STREAMS: u32 = 128;

/// Stream error codes the server resets or stops streams with (the codec's wire contract).
pub use confab_codec::wire::stream_reset as stream_code;

/// The QUIC endpoints: the TLS listener's address and, for loopback or any-address, the IPv6
/// counterpart on the same port (Chromium dials `localhost` as `::1` only, with no fallback).
pub fn bind(
    addr: SocketAddr,
    tls: &Arc<crate::tls::CertStore>,
    settings: &crate::app::Settings,
) -> Result<Vec<quinn::Endpoint>, String> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.quic_server_config()?)
        .map_err(|e| format!("quic tls: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Aligned with the heartbeat rules: the server's QUIC PINGs every ping interval keep a
    // live client's connection open; one silent for the pong timeout is gone.
    transport
        .max_idle_timeout(Some(quinn::IdleTimeout::try_from(settings.pong_timeout).map_err(|e| e.to_string())?))
        .keep_alive_interval(Some(settings.ping_interval))
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(16u32.into())
        .datagram_receive_buffer_size(Some(64 * 1024));
    server.transport_config(Arc::new(transport));
    // A phone moving from Wi-Fi to LTE keeps its session (SPEC §3).
    server.migration(true);

    let mut addrs = vec![];
    match addr.ip() {
        // A dual-stack socket on [::] also takes IPv4; fall back to IPv4 alone without IPv6.
        IpAddr::V4(v4) if v4.is_unspecified() => {
            addrs.push((SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port()), Some(addr)))
        }
        IpAddr::V4(v4) if v4.is_loopback() => {
            addrs.push((addr, None));
            addrs.push((SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()), None));
        }
        _ => addrs.push((addr, None)),
    }
    let mut endpoints = vec![];
    for (i, (a, fallback)) in addrs.into_iter().enumerate() {
        let bound = endpoint(server.clone(), a).or_else(|e| match fallback {
            Some(f) => endpoint(server.clone(), f),
            None => Err(e),
        });
        match bound {
            Ok(ep) => endpoints.push(ep),
            // The IPv6 twin is a convenience for browsers; the main address must work.
            Err(e) if i > 0 => tracing::warn!(addr = %a, error = %e, "webtransport: no IPv6 listener"),
            Err(e) => return Err(format!("udp {a}: {e}")),
        }
    }
    Ok(endpoints)
}

/// What the QUIC socket asks of the kernel for its receive and send buffers. Every session
/// shares this one socket, and the kernel's default (about 208 KiB) overflowed under load: the
/// benchmark's 2,000 sessions lost 130,000 datagrams in a 10 s run, and each loss costs the
/// stream a QUIC retransmission timeout (seconds once it backs off), which was the p99 of
/// seconds in the WebTransport saturation runs. Linux caps it at `net.core.rmem_max` /
/// `wmem_max` (docs/operations.md).
const UDP_BUFFER_BYTES: usize = 8 << 20;

/// A QUIC endpoint on `addr` whose socket has [`UDP_BUFFER_BYTES`] of buffers (as much as the
/// kernel allows; a refusal is not an error, the defaults still work).
fn endpoint(server: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(error = %e, "webtransport: UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(error = %e, "webtransport: UDP send buffer");
    }
    socket.bind(&addr.into())?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket.into(), runtime)
}

/// Accepts QUIC connections until shutdown, one tracked task each.
pub async fn serve(endpoint: quinn::Endpoint, app: App) {
    let shutdown = app.node.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let app = app.clone();
        app.node.tasks.clone().spawn(connection(incoming, app));
    }
    // Sessions close themselves (with 1001) on shutdown; the endpoint lives until their
    // connections have closed, under the shutdown's drain deadline.
    app.node.tasks.spawn(async move { endpoint.wait_idle().await });
}

/// What the CONNECT request asked for.
#[derive(Debug)]
struct Wanted {
    token: Option<String>,
    codec: Codec,
    resume: Option<confab_codec::Seq>,
}

/// Checks the CONNECT request: method and protocol, path, origin, query. `Err` is the status
/// to answer with.
fn check_request(req: &Request<()>, app: &App) -> Result<Wanted, (StatusCode, String)> {
    let protocol = req.extensions().get::<h3::ext::Protocol>();
    if req.method() != Method::CONNECT || protocol != Some(&h3::ext::Protocol::WEB_TRANSPORT) {
        return Err((StatusCode::NOT_FOUND, "only WebTransport sessions (extended CONNECT) are served here".into()));
    }
    if req.uri().path() != PATH {
        return Err((StatusCode::NOT_FOUND, format!("WebTransport is served on {PATH}")));
    }
    if !app.settings.origin_allowed(req.headers()) {
        return Err((StatusCode::FORBIDDEN, "origin not allowed".into()));
    }
    let query: HashMap<String, String> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("query: {e}")))?;
    // MessagePack unless `?codec=json` (SPEC §3); the dialect from `?dialect=` (SPEC §7).
    let offered = std::iter::empty();
    let codec = app
        .settings
        .codec(&query, offered, Format::MsgPack, &Endpoint::default())
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let resume = Settings::resume(&query).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    Ok(Wanted { token: query.get("token").filter(|t| !t.is_empty()).cloned(), codec, resume })
}

async fn connection(incoming: quinn::Incoming, app: App) {
    let handshake = app.settings.handshake_timeout;
    let conn = match tokio::time::timeout(handshake, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return tracing::debug!(error = %e, "quic handshake"),
        Err(_) => return tracing::debug!("quic handshake timed out"),
    };
    let quic = conn.clone();
    let connect = tokio::select! {
        r = tokio::time::timeout(handshake, next_connect(conn, &app)) => r.ok().flatten(),
        _ = app.node.shutdown.cancelled() => None,
    };
    let Some((req, stream, h3, wanted)) = connect else {
        return quic.close(0u32.into(), b"");
    };
    let identity = match &wanted.token {
        Some(t) => app.node.auth.verify(t),
        None => Err(AuthError::Missing),
    };
    // Listening before the CONNECT is answered. Should the session not get going from here on,
    // dropping it unregisters it.
    let opened = match identity {
        Ok(id) => {
            let base_url = app.settings.base_url("https", req.uri().authority().map(|a| a.as_str()));
            let opening = Opening {
                transport: TransportKind::WebTransport,
                codec: wanted.codec.clone(),
                resume: wanted.resume,
                base_url,
            };
            Ok(session::open(&app.node, id, opening).await)
        }
        Err(e) => Err(e),
    };
    // The session's codec has its scope; a refused one is answered in the codec asked for.
    let codec = opened.as_ref().map_or(wanted.codec, |(s, _)| s.conn().codec.clone());
    let accepted = tokio::time::timeout(handshake, WebTransportSession::accept(req, stream, h3)).await;
    match accepted {
        Ok(Ok(wt)) => run(Arc::new(wt), quic, codec, opened, app).await,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "webtransport accept");
            quic.close(0u32.into(), b"");
        }
        Err(_) => quic.close(0u32.into(), b""),
    }
}

/// Serves HTTP/3 requests until one is a good WebTransport CONNECT, which it returns
/// unanswered; the others are answered with their error status.
async fn next_connect(conn: quinn::Connection, app: &App) -> Option<(Request<()>, ConnectStream, H3, Wanted)> {
    let mut h3 = h3::server::builder()
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .send_grease(true)
        .build(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| tracing::debug!(error = %e, "h3 setup"))
        .ok()?;
    loop {
        let resolver = h3.accept().await.map_err(|e| tracing::debug!(error = %e, "h3 accept")).ok()??;
        let Ok((req, mut stream)) = resolver.resolve_request().await else { continue };
        match check_request(&req, app) {
            Ok(wanted) => return Some((req, stream, h3, wanted)),
            Err((status, why)) => {
                tracing::debug!(%status, why, path = req.uri().path(), "h3 request refused");
                let resp = Response::builder().status(status).body(());
                if let Ok(resp) = resp {
                    let _ = stream.send_response(resp).await;
                    let _ = stream.send_data(Bytes::from(why)).await;
                    let _ = stream.finish().await;
                }
            }
        }
    }
}

/// A stream's writer: what it is sent, and how to stop it.
#[derive(Debug, Clone)]
struct StreamTx {
    id: u64,
    tx: mpsc::Sender<StreamCmd>,
    /// Resets the stream (and stops its reader) at once.
    kill: Kill,
}

#[derive(Debug)]
enum StreamCmd {
    Frame(Bytes),
    /// Finish the stream cleanly, then say so.
    Finish(Option<oneshot::Sender<()>>),
}

/// Where each conversation's events go on this connection.
#[derive(Debug, Default)]
struct Streams {
    control: Option<StreamTx>,
    bound: HashMap<ConversationId, StreamTx>,
    /// Conversations whose stream was reset as a slow consumer: their events are dropped
    /// (not moved to the control stream) until the client joins them again.
    dropped: std::collections::HashSet<ConversationId>,
}

/// What the connection's tasks share.
#[derive(Debug)]
struct Shared {
    streams: Mutex<Streams>,
    inbound: mpsc::Sender<Inbound>,
    codec: Codec,
    /// The client has sent a datagram, so it reads them: typing goes that way.
    datagrams: AtomicBool,
    queue_len: usize,
    /// The connection's closer, once the session exists.
    closer: OnceLock<Arc<Closer>>,
    tasks: TaskTracker,
    done: CancellationToken,
}

impl Shared {
    fn streams(&self) -> MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the session, waiting for room in a task of its own when the queue is full (the
    /// caller may be the dispatcher, which must never wait on the session).
    fn tell(&self, item: Inbound) {
        if let Err(mpsc::error::TrySendError::Full(item)) = self.inbound.try_send(item) {
            let tx = self.inbound.clone();
            let done = self.done.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = tx.send(item) => {}
                    _ = done.cancelled() => {}
                }
            });
        }
    }

    fn close(&self, reason: CloseReason) {
        if let Some(c) = self.closer.get() {
            c.close(reason);
        }
    }

    /// Unbinds `c` if it is still bound to stream `id`; true if it was.
    fn unbind(&self, c: &ConversationId, id: u64) -> bool {
        let mut s = self.streams();
        if s.bound.get(c).is_some_and(|t| t.id == id) {
            s.bound.remove(c);
            true
        } else {
            false
        }
    }
}

/// A session opened before the CONNECT was answered, or why it was refused.
type Opened = Result<(Session, ConnOutput), AuthError>;

async fn run(wt: Arc<Wt>, quic: quinn::Connection, codec: Codec, opened: Opened, app: App) {
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let shared = Arc::new(Shared {
        streams: Mutex::new(Streams::default()),
        inbound: in_tx,
        codec,
        datagrams: AtomicBool::new(false),
        queue_len: app.node.hub.limits().outbound_queue.max(1),
        closer: OnceLock::new(),
        tasks: TaskTracker::new(),
        done: CancellationToken::new(),
    });

    // The control stream comes first; the session runs once it is there.
    let control = tokio::select! {
        r = tokio::time::timeout(app.settings.handshake_timeout, wt.accept_bi()) => match r {
            Ok(Ok(Some(AcceptedBi::BidiStream(_, s)))) => Some(s),
            _ => None,
        },
        _ = app.node.shutdown.cancelled() => None,
    };
    let Some(control) = control else {
        let _ = wt.close(u32::from(CloseReason::Timeout.code()), "no control stream").await;
        return linger_then_close(&quic).await;
    };
    let control_id = control.send_id().into_inner();
    let control_tx = open_stream(&shared, control, control_id, true);
    shared.streams().control = Some(control_tx.clone());

    let (session, output) = match opened {
        Ok(o) => o,
        Err(e) => return refuse(&app, &wt, &quic, &shared, &control_tx, &e).await,
    };
    let closer = Arc::clone(&session.conn().closer);
    let _ = shared.closer.set(Arc::clone(&closer));
    spawn_accept_loop(&shared, &wt);
    spawn_datagram_reader(&shared, &wt);
    spawn_close_watcher(&shared, &wt, &quic);
    let dispatcher = shared.tasks.spawn(dispatch(Arc::clone(&shared), output, Arc::clone(&wt), quic.clone()));

    let mut in_rx = in_rx;
    let inbound = futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx));
    session::run(session, inbound, app.node.shutdown.clone()).await;
    // The dispatcher says goodbye on the control stream unless the client left first.
    let _ = dispatcher.await;
    let reason = closer.reason().unwrap_or(CloseReason::Normal);
    finish(&wt, &quic, &shared, reason).await;
}

/// Ends the session: the close capsule with the reason's code (unless the client closed it),
/// every task stopped, then the QUIC connection once the client has closed it or after a grace
/// period (closing it at once could destroy the capsule in flight).
async fn finish(wt: &Wt, quic: &quinn::Connection, shared: &Shared, reason: CloseReason) {
    if reason != CloseReason::Normal {
        // A browser errors every stream when the capsule arrives, discarding what the page has
        // not read yet: give it a moment to read `connection:closed` first (or to close).
        tokio::select! {
            _ = tokio::time::sleep(CLOSE_GRACE) => {}
            _ = quic.closed() => {}
        }
        let _ = tokio::time::timeout(CLOSE_DEADLINE, wt.close(u32::from(reason.code()), reason.as_str())).await;
    }
    shared.done.cancel();
    shared.tasks.close();
    let _ = tokio::time::timeout(CLOSE_DEADLINE, shared.tasks.wait()).await;
    if reason == CloseReason::Normal {
        quic.close(0u32.into(), b"");
    } else {
        linger_then_close(quic).await;
    }
}

async fn linger_then_close(quic: &quinn::Connection) {
    let _ = tokio::time::timeout(CLOSE_DEADLINE, quic.closed()).await;
    quic.close(0u32.into(), b"");
}

/// A bad or missing token: one `error` event and `connection:closed` on the control stream,
/// then the close capsule (4001/4003), as the WebSocket transport does with a close frame.
async fn refuse(app: &App, wt: &Wt, quic: &quinn::Connection, shared: &Shared, control: &StreamTx, e: &AuthError) {
    let (event, reason) = session::refusal(&app.node, e);
    for ev in [event, closing_event(app.node.hub.ids(), reason, app.node.clock.now())] {
        if let Ok(Some(bytes)) = ev.encoded(&shared.codec) {
            let _ = control.tx.send(StreamCmd::Frame(bytes)).await;
        }
    }
    let (ack, acked) = oneshot::channel();
    if control.tx.send(StreamCmd::Finish(Some(ack))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, acked).await;
    }
    finish(wt, quic, shared, reason).await;
}

/// How a stream is stopped early, and with which code.
#[derive(Debug, Clone)]
struct Kill {
    token: CancellationToken,
    code: Arc<AtomicU32>,
}

impl Kill {
    fn now(&self, code: u32) {
        self.code.store(code, Ordering::Relaxed);
        self.token.cancel();
    }
}

/// Starts a stream's reader and writer; returns the writer's handle.
fn open_stream(shared: &Arc<Shared>, stream: WtBidi, id: u64, control: bool) -> StreamTx {
    let (send, recv) = stream.split();
    let (tx, rx) = mpsc::channel(shared.queue_len);
    let kill = Kill { token: shared.done.child_token(), code: Arc::new(AtomicU32::new(stream_code::SESSION_GONE)) };
    let handle = StreamTx { id, tx, kill };
    shared.tasks.spawn(write_stream(send, rx, handle.kill.clone()));
    shared.tasks.spawn(read_stream(Arc::clone(shared), recv, handle.clone(), control));
    handle
}

async fn write_stream(mut send: WtSend, mut rx: mpsc::Receiver<StreamCmd>, kill: Kill) {
    let mut framed = Vec::with_capacity(1024);
    // A command taken while batching frames, handled next.
    let mut pending: Option<StreamCmd> = None;
    loop {
        let cmd = match pending.take() {
            Some(c) => Some(c),
            None => tokio::select! {
                biased;
                _ = kill.token.cancelled() => break,
                c = rx.recv() => c,
            },
        };
        match cmd {
            Some(StreamCmd::Frame(payload)) => {
                // One write per frame, and more frames if they are already waiting: the QUIC
                // connection's driver may run between two writes and send a packet for each.
                framed.clear();
                encode_frame(&payload, &mut framed);
                while framed.len() < 16 * 1024 {
                    match rx.try_recv() {
                        Ok(StreamCmd::Frame(next)) => encode_frame(&next, &mut framed),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // A client that stops reading blocks this write, and only this stream's.
                let write = send.write_all(&framed);
                tokio::select! {
                    biased;
                    _ = kill.token.cancelled() => break,
                    r = write => if r.is_err() { return },
                }
            }
            Some(StreamCmd::Finish(ack)) => {
                let _ = send.shutdown().await;
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            None => {
                let _ = send.shutdown().await;
                return;
            }
        }
    }
    send.reset(u64::from(kill.code.load(Ordering::Relaxed)));
}

async fn read_stream(shared: Arc<Shared>, mut recv: WtRecv, me: StreamTx, control: bool) {
    let codec = shared.codec.clone();
    let mut frames = FrameDecoder::with_skip_limit(codec.max_frame, HARD_FRAME_LIMIT);
    let mut route = control.then_some(Route::Control);
    // Per stream: small, since idle connections are the common case (benchmarks.md, density).
    let mut buf = vec![0u8; 4 * 1024];
    'read: loop {
        let n = tokio::select! {
            biased;
            _ = me.kill.token.cancelled() => break,
            r = recv.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let mut too_large = frames.push(&buf[..n]).err();
        loop {
            if let Some(e) = too_large.take() {
                let size = usize::try_from(e.size).unwrap_or(usize::MAX);
                let err = DecodeError::from(CodecError::FrameTooLarge { size, limit: e.limit });
                if !deliver(&shared, &mut route, &me, Err(err)).await {
                    break 'read;
                }
                if frames.is_broken() {
                    recv.stop_sending(u64::from(stream_code::FRAME_TOO_LARGE));
                    if control {
                        shared.close(CloseReason::TooBig);
                    }
                    me.kill.now(stream_code::FRAME_TOO_LARGE);
                    break 'read;
                }
            }
            match frames.next_frame() {
                Ok(Some(payload)) => {
                    if !deliver(&shared, &mut route, &me, codec.decode_client(&payload)).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => too_large = Some(e),
            }
        }
    }
    if shared.done.is_cancelled() {
        return;
    }
    if control {
        // Closing the control stream ends the session.
        shared.tell(Inbound::Closed);
    } else if let Some(Route::Conversation(c)) = route {
        // Closing a conversation's stream leaves the conversation (SPEC §3).
        if shared.unbind(&c, me.id) {
            let _ = me.tx.try_send(StreamCmd::Finish(None));
            shared.tell(Inbound::RouteClosed(Route::Conversation(c)));
        }
    }
}

/// Hands one decoded frame to the session. The first frame of a stream other than the control
/// stream binds it: a `conversation:join` makes it that conversation's stream; anything else
/// is answered on the control stream, as is everything after it on that stream. False once
/// the session is gone.
async fn deliver(
    shared: &Shared,
    route: &mut Option<Route>,
    me: &StreamTx,
    decoded: Result<confab_codec::ClientEnvelope, DecodeError>,
) -> bool {
    let r = match route {
        Some(r) => r.clone(),
        None => {
            let r = match &decoded {
                Ok(env) => match &env.event {
                    ClientEvent::Join(j) => {
                        let c = j.conversation_id.clone();
                        let mut streams = shared.streams();
                        streams.dropped.remove(&c);
                        // A second stream for the same conversation replaces the first.
                        if let Some(old) = streams.bound.insert(c.clone(), me.clone()) {
                            let _ = old.tx.try_send(StreamCmd::Finish(None));
                        }
                        drop(streams);
                        Route::Conversation(c)
                    }
                    _ => Route::Control,
                },
                Err(_) => Route::Control,
            };
            *route = Some(r.clone());
            r
        }
    };
    tokio::select! {
        r = shared.inbound.send(Inbound::Event(r, Box::new(decoded))) => r.is_ok(),
        _ = shared.done.cancelled() => false,
    }
}

fn spawn_accept_loop(shared: &Arc<Shared>, wt: &Arc<Wt>) {
    let (s, w) = (Arc::clone(shared), Arc::clone(wt));
    shared.tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = w.accept_bi() => a,
                _ = s.done.cancelled() => return,
            };
            match accepted {
                Ok(Some(AcceptedBi::BidiStream(_, stream))) => {
                    let id = stream.send_id().into_inner();
                    open_stream(&s, stream, id, false);
                }
                // One session per connection: other requests are refused.
                Ok(Some(AcceptedBi::Request(_, mut req))) => req.stop_stream(h3::error::Code::H3_REQUEST_REJECTED),
                Ok(None) | Err(_) => {
                    s.tell(Inbound::Closed);
                    return;
                }
            }
        }
    });
    // The protocol has no use for client unidirectional streams: refuse them so they do not
    // pile up.
    let (s, w) = (Arc::clone(shared), Arc::clone(wt));
    shared.tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = w.accept_uni() => a,
                _ = s.done.cancelled() => return,
            };
            match accepted {
                Ok(Some((_, mut stream))) => stream.stop_sending(0),
                Ok(None) | Err(_) => return,
            }
        }
    });
}

/// Datagrams carry one envelope each (no length prefix). Unreliable by nature: dropped when
/// the session is busy.
fn spawn_datagram_reader(shared: &Arc<Shared>, wt: &Arc<Wt>) {
    let mut reader = wt.datagram_reader();
    let s = Arc::clone(shared);
    shared.tasks.spawn(async move {
        loop {
            let datagram = tokio::select! {
                d = reader.read_datagram() => d,
                _ = s.done.cancelled() => return,
            };
            let Ok(datagram) = datagram else { return };
            s.datagrams.store(true, Ordering::Relaxed);
            let decoded = s.codec.decode_client(datagram.payload());
            let _ = s.inbound.try_send(Inbound::Event(Route::Control, Box::new(decoded)));
        }
    });
}

/// The client's session close (capsule or FIN), or the connection's end: the session ends
/// within a moment, with the reason the connection gives.
fn spawn_close_watcher(shared: &Arc<Shared>, wt: &Arc<Wt>, quic: &quinn::Connection) {
    let (s, w, q) = (Arc::clone(shared), Arc::clone(wt), quic.clone());
    shared.tasks.spawn(async move {
        let lost = tokio::select! {
            r = w.closed() => {
                if let Ok(close) = &r {
                    tracing::debug!(code = close.code, reason = %close.reason, "webtransport session closed by the client");
                }
                None
            }
            e = q.closed() => Some(e),
            _ = s.done.cancelled() => return,
        };
        if let Some(quinn::ConnectionError::TimedOut) = lost.or_else(|| q.close_reason()) {
            s.close(CloseReason::Timeout);
        }
        s.tell(Inbound::Closed);
    });
}

/// Routes the session's queue to the streams: a conversation's events to its stream when it
/// has one, everything else to the control stream; typing and heartbeat answers as datagrams
/// when the client uses them. A conversation stream whose queue is full is reset (the client
/// re-joins with `since_seq`); a full control stream makes the connection a slow consumer.
async fn dispatch(shared: Arc<Shared>, mut out: ConnOutput, wt: Arc<Wt>, quic: quinn::Connection) {
    let mut datagrams = wt.datagram_sender();
    let closer = Arc::clone(&out.closer);
    loop {
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            ev = out.recv() => match ev {
                Some(Outgoing(ev, Pacing::Paced)) => route_paced(&shared, &out, ev).await,
                Some(Outgoing(ev, pacing)) => route(&shared, &out, &mut datagrams, &quic, ev, pacing),
                None => break,
            },
        }
    }
    let reason = out.closer.reason().unwrap_or(CloseReason::Normal);
    if reason != CloseReason::Normal {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, goodbye(&shared, &mut out, &mut datagrams, &quic, reason)).await;
    }
}

type Datagrams = h3_datagram::datagram_handler::DatagramSender<h3_quinn::datagram::SendDatagramHandler, Bytes>;

/// The event in this connection's dialect and format; `None` when there is nothing to send
/// (no form in the dialect, or it cannot be encoded: logged).
fn encode(shared: &Shared, ev: &SharedEvent) -> Option<Bytes> {
    ev.encoded(&shared.codec).map_err(|e| tracing::error!(error = %e, "encoding an event")).ok().flatten()
}

fn route(
    shared: &Shared,
    out: &ConnOutput,
    datagrams: &mut Datagrams,
    quic: &quinn::Connection,
    ev: Arc<SharedEvent>,
    pacing: Pacing,
) {
    let Some(bytes) = encode(shared, &ev) else { return };
    // The hub marks latest-wins traffic (typing); heartbeat answers are as disposable.
    let lossy = pacing == Pacing::Lossy;
    if (lossy || matches!(ev.envelope.event, ServerEvent::Heartbeat(_))) && shared.datagrams.load(Ordering::Relaxed) {
        let fits = quic.max_datagram_size().is_some_and(|m| bytes.len() + DATAGRAM_HEADER <= m);
        if fits && datagrams.send_datagram(bytes.clone()).is_ok() {
            return;
        }
    }
    let Some((target, bound)) = target_for(shared, &ev) else { return };
    match target.tx.try_send(StreamCmd::Frame(bytes)) {
        Ok(()) => out.written(&ev, pacing),
        Err(mpsc::error::TrySendError::Full(_)) if lossy => {}
        Err(mpsc::error::TrySendError::Full(_)) => match ev.conversation.as_ref().filter(|_| bound) {
            Some(c) => {
                // Marked dropped before the kill: the stream's reader, woken by it, may unbind
                // (and tell the session) first.
                shared.streams().dropped.insert(c.clone());
                target.kill.now(stream_code::SLOW_CONSUMER);
                if shared.unbind(c, target.id) {
                    shared.tell(Inbound::RouteClosed(Route::Conversation(c.clone())));
                }
            }
            None => out.closer.close(CloseReason::SlowConsumer),
        },
        // The stream is gone; its reader has told the session.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
    // `conversation:left` is the last event of a conversation's stream.
    if let ServerEvent::Left(l) = &ev.envelope.event {
        if bound && shared.unbind(&l.conversation_id, target.id) {
            let _ = target.tx.try_send(StreamCmd::Finish(None));
        }
    }
}

/// Where `ev` goes: its conversation's stream (`true`) or the control stream; `None` to drop it.
fn target_for(shared: &Shared, ev: &SharedEvent) -> Option<(StreamTx, bool)> {
    let mut s = shared.streams();
    if let Some(c) = ev.conversation.as_ref().filter(|c| s.dropped.contains(*c)) {
        // A join on the control stream ends the drop; anything else is dropped.
        if !matches!(ev.envelope.event, ServerEvent::Joined(_)) {
            return None;
        }
        s.dropped.remove(c);
    }
    match ev.conversation.as_ref().and_then(|c| s.bound.get(c)) {
        Some(t) => Some((t.clone(), true)),
        None => s.control.clone().map(|t| (t, false)),
    }
}

/// A replayed event: waits for room on its stream, as the WebSocket writer waits on its socket
/// (the session is paced by the reader either way; other streams wait meanwhile).
async fn route_paced(shared: &Shared, out: &ConnOutput, ev: Arc<SharedEvent>) {
    let Some(bytes) = encode(shared, &ev) else { return };
    let Some((target, _)) = target_for(shared, &ev) else { return };
    // Only into the queue's first half: live events that follow the replay (messages sent
    // meanwhile) must still find room, or the stream would be taken for a slow consumer.
    let room = (shared.queue_len / 2).max(1);
    tokio::select! {
        permits = target.tx.reserve_many(room) => {
            if let Some(permit) = permits.ok().and_then(|mut p| p.next()) {
                permit.send(StreamCmd::Frame(bytes));
            }
        }
        _ = target.kill.token.cancelled() => {}
        _ = out.closer.closed() => {}
    }
}

/// Flushes what was queued (unless the queue is the problem), then `connection:closed` on the
/// control stream, and finishes every stream.
async fn goodbye(
    shared: &Shared,
    out: &mut ConnOutput,
    datagrams: &mut Datagrams,
    quic: &quinn::Connection,
    reason: CloseReason,
) {
    if reason != CloseReason::SlowConsumer {
        while let Some(Outgoing(ev, pacing)) = out.try_recv() {
            route(shared, out, datagrams, quic, ev, pacing);
        }
    }
    let (control, bound) = {
        let mut s = shared.streams();
        (s.control.clone(), std::mem::take(&mut s.bound))
    };
    for (_, t) in bound {
        if t.tx.try_send(StreamCmd::Finish(None)).is_err() {
            t.kill.now(stream_code::SESSION_GONE);
        }
    }
    let Some(control) = control else { return };
    if let Ok(Some(bytes)) = out.closing_event(reason).encoded(&shared.codec) {
        let _ = control.tx.send(StreamCmd::Frame(bytes)).await;
    }
    let (ack, acked) = oneshot::channel();
    if control.tx.send(StreamCmd::Finish(Some(ack))).await.is_ok() {
        let _ = acked.await;
    }
}
