//! The floor: the same 1:1 latency through bare relays on the same transports, with no auth,
//! no store, no rules, so that every report can show confab's overhead as a ratio.
//!
//! - WebSocket relay: `ws://ADDR/?token=ME~PEER`; every frame a client sends goes, unchanged,
//!   to PEER's socket.
//! - QUIC stream relay (quinn, no HTTP/3): a client opens one bidirectional stream and sends a
//!   first frame `ME~PEER`; every later frame goes to PEER's stream. Length-prefixed frames, as
//!   on confab's WebTransport streams; TLS 1.3 with a generated certificate, like confab's.
//!
//! The clients send the very bytes they would send confab (`message:send` envelopes); the
//! receiver decodes them as the client envelopes they are.

use crate::client::Target;
use bytes::Bytes;
use confab_codec::frame::{FrameDecoder, MAX_SERVER_FRAME_BYTES, encode_frame};
use confab_codec::{ClientEnvelope, Codec, Dialect, Format};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Frames waiting for one relay client; a relay that falls behind drops (it is the floor, not
/// a product).
const QUEUE: usize = 4096;

type Peers = Arc<Mutex<HashMap<String, mpsc::Sender<Bytes>>>>;

fn peers_lock(p: &Peers) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Bytes>>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The relays, on a runtime and threads of their own (like the in-process server).
pub(crate) struct Floor {
    pub(crate) ws: SocketAddr,
    pub(crate) quic: SocketAddr,
    /// SHA-256 (hex) of the QUIC relay's certificate.
    pub(crate) quic_hash: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    pub(crate) fn start(threads: usize) -> Result<Self, String> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(|e| e.to_string())?;
        let der = cert.cert.der().clone();
        let hash: String =
            ring::digest::digest(&ring::digest::SHA256, &der).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .map_err(|e| e.to_string())?;
        tls.alpn_protocols = vec![b"confab-floor".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));

        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .thread_name("floor-relay")
                .worker_threads(threads)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            rt.block_on(async move {
                let ws = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => return drop(tx.send(Err(e.to_string()))),
                };
                let endpoint = match quinn::Endpoint::server(server_config, ([127, 0, 0, 1], 0).into()) {
                    Ok(e) => e,
                    Err(e) => return drop(tx.send(Err(e.to_string()))),
                };
                let addrs = (ws.local_addr(), endpoint.local_addr());
                let (Ok(ws_addr), Ok(quic_addr)) = addrs else {
                    return drop(tx.send(Err("relay addresses".to_string())));
                };
                let _ = tx.send(Ok((ws_addr, quic_addr)));
                tokio::select! {
                    _ = ws_relay(ws) => {}
                    _ = quic_relay(endpoint) => {}
                    _ = stopped.cancelled() => {}
                }
            });
        });
        let (ws, quic) = rx.recv().map_err(|e| e.to_string())??;
        Ok(Self { ws, quic, quic_hash: hash, stop, thread: Some(thread) })
    }

    /// Where a floor client for `target`'s transport connects.
    pub(crate) fn target_for(&self, target: &Target) -> Target {
        match target {
            Target::Ws(_) | Target::Wss(..) => Target::Ws(self.ws.to_string()),
            Target::Wt(..) => Target::Wt(self.quic.to_string(), self.quic_hash.clone()),
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn ws_relay(listener: tokio::net::TcpListener) {
    let peers: Peers = Arc::default();
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let peers = Arc::clone(&peers);
        tokio::spawn(async move {
            let mut route = None;
            // The signature is tungstenite's: its error type is what it is.
            #[allow(clippy::result_large_err)]
            let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                route = req.uri().query().and_then(|q| q.strip_prefix("token=")).map(str::to_string);
                Ok(resp)
            };
            let Ok(ws) =
                tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(crate::client::ws_config())).await
            else {
                return;
            };
            let Some((me, peer)) = route.as_deref().and_then(|r| r.split_once('~')) else { return };
            let (me, peer) = (me.to_string(), peer.to_string());
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
            peers_lock(&peers).insert(me.clone(), tx);
            let writer = tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if sink.send(Message::Binary(b)).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(msg)) = stream.next().await {
                let bytes = match msg {
                    Message::Binary(b) => b,
                    Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let to = peers_lock(&peers).get(&peer).cloned();
                if let Some(to) = to {
                    let _ = to.try_send(bytes);
                }
            }
            peers_lock(&peers).remove(&me);
            writer.abort();
        });
    }
}

async fn quic_relay(endpoint: quinn::Endpoint) {
    let peers: Peers = Arc::default();
    while let Some(incoming) = endpoint.accept().await {
        let peers = Arc::clone(&peers);
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else { return };
            let mut frames = FrameDecoder::new(MAX_SERVER_FRAME_BYTES);
            let mut buf = vec![0u8; 64 * 1024];
            let mut route: Option<(String, String)> = None;
            let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
            let writer = tokio::spawn(async move {
                let mut framed = Vec::new();
                while let Some(b) = rx.recv().await {
                    framed.clear();
                    encode_frame(&b, &mut framed);
                    if send.write_all(&framed).await.is_err() {
                        break;
                    }
                }
            });
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                if frames.push(&buf[..n]).is_err() {
                    break;
                }
                while let Ok(Some(f)) = frames.next_frame() {
                    match &route {
                        None => {
                            let text = String::from_utf8_lossy(&f).to_string();
                            let Some((me, peer)) = text.split_once('~') else { break };
                            peers_lock(&peers).insert(me.to_string(), tx.clone());
                            route = Some((me.to_string(), peer.to_string()));
                        }
                        Some((_, peer)) => {
                            let to = peers_lock(&peers).get(peer).cloned();
                            if let Some(to) = to {
                                let _ = to.try_send(f);
                            }
                        }
                    }
                }
            }
            if let Some((me, _)) = route {
                peers_lock(&peers).remove(&me);
            }
            writer.abort();
            conn.close(0u32.into(), b"");
        });
    }
}

/// A floor client's sending half.
pub(crate) struct FloorTx {
    conn: FloorTxInner,
    codec: Codec,
}

enum FloorTxInner {
    Ws(
        futures_util::stream::SplitSink<
            tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
            Message,
        >,
    ),
    /// The stream, and the endpoint and connection it lives on (kept alive with it).
    Quic(quinn::SendStream, #[allow(dead_code)] (quinn::Endpoint, quinn::Connection)),
}

/// A floor client's reading half.
pub(crate) struct FloorRx {
    inner: FloorRxInner,
    codec: Codec,
}

enum FloorRxInner {
    Ws(
        futures_util::stream::SplitStream<
            tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        >,
    ),
    Quic(quinn::RecvStream, FrameDecoder, Vec<u8>),
}

pub(crate) async fn connect(
    target: &Target,
    me: &str,
    peer: &str,
    format: Format,
) -> Result<(FloorTx, FloorRx), String> {
    let codec = Codec::new(Dialect::Winkr, format).with_max_frame(MAX_SERVER_FRAME_BYTES);
    match target {
        Target::Ws(addr) | Target::Wss(addr, _) => {
            let ws = crate::client::plain_ws(addr, format!("ws://{addr}/?token={me}~{peer}")).await?;
            let (sink, stream) = ws.split();
            Ok((
                FloorTx { conn: FloorTxInner::Ws(sink), codec: codec.clone() },
                FloorRx { inner: FloorRxInner::Ws(stream), codec },
            ))
        }
        Target::Wt(addr, hash) => {
            let mut tls = (*crate::client::pinned_tls_config(hash)?).clone();
            tls.alpn_protocols = vec![b"confab-floor".to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
            let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).map_err(|e| e.to_string())?;
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let addr: SocketAddr = addr.parse().map_err(|e: std::net::AddrParseError| e.to_string())?;
            let conn =
                endpoint.connect(addr, "localhost").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut hello = Vec::new();
            encode_frame(format!("{me}~{peer}").as_bytes(), &mut hello);
            send.write_all(&hello).await.map_err(|e| e.to_string())?;
            Ok((
                FloorTx { conn: FloorTxInner::Quic(send, (endpoint, conn)), codec: codec.clone() },
                FloorRx {
                    inner: FloorRxInner::Quic(recv, FrameDecoder::new(MAX_SERVER_FRAME_BYTES), vec![0u8; 64 * 1024]),
                    codec,
                },
            ))
        }
    }
}

impl FloorTx {
    pub(crate) async fn send(&mut self, env: &ClientEnvelope) -> Result<(), String> {
        let bytes = self.codec.encode_client(env).map_err(|e| e.to_string())?;
        match &mut self.conn {
            FloorTxInner::Ws(sink) => {
                let msg = if self.codec.format.is_text() {
                    Message::Text(String::from_utf8(bytes).map_err(|e| e.to_string())?.into())
                } else {
                    Message::Binary(Bytes::from(bytes))
                };
                sink.send(msg).await.map_err(|e| e.to_string())
            }
            FloorTxInner::Quic(send, ..) => {
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                encode_frame(&bytes, &mut framed);
                send.write_all(&framed).await.map_err(|e| e.to_string())
            }
        }
    }
}

impl FloorRx {
    /// The next relayed envelope; `None` when the connection ends.
    pub(crate) async fn next(&mut self) -> Option<ClientEnvelope> {
        loop {
            match &mut self.inner {
                FloorRxInner::Ws(stream) => {
                    let msg = stream.next().await?.ok()?;
                    let bytes = match &msg {
                        Message::Binary(b) => b.clone(),
                        Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                        Message::Close(_) => return None,
                        _ => continue,
                    };
                    if let Ok(env) = self.codec.decode_client(&bytes) {
                        return Some(env);
                    }
                }
                FloorRxInner::Quic(recv, frames, buf) => {
                    if let Ok(Some(f)) = frames.next_frame() {
                        if let Ok(env) = self.codec.decode_client(&f) {
                            return Some(env);
                        }
                        continue;
                    }
                    let n = recv.read(buf).await.ok()??;
                    frames.push(&buf[..n]).ok()?;
                }
            }
        }
    }
}
