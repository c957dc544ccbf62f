//! A benchmark client speaking envelopes through the codec, over WebSocket or WebTransport,
//! split so that a task can send while another reads.
//!
//! WebTransport: the control stream carries what the client sends (and what comes back for
//! conversations without a stream); [`Tx::join`] opens a stream per conversation, as a real
//! client does, and hands its receiving side to [`Rx`], which reads all of its streams in the
//! reading task itself, as it reads a WebSocket: a reader task per stream, and the channel
//! from it, were a hand-off on every event that the WebSocket client does not make, and on
//! a load generator with two runtime threads on one core often a thread switch (benchmarks.md,
//! issue 19, tenth pass).

use bytes::Bytes;
use confab_codec::frame::{FrameDecoder, MAX_SERVER_FRAME_BYTES, encode_frame};
use confab_codec::{ClientEnvelope, Codec, ConversationId, Dialect, Format, ServerEnvelope};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which transport, and where it is.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Plain `ws://ADDR/ws`.
    Ws(String),
    /// `wss://ADDR/ws`, trusting the certificate with this SHA-256 (hex): the same TLS cost as
    /// WebTransport, for a like-for-like comparison.
    Wss(String, String),
    /// `https://ADDR/wt`, trusting the certificate with this SHA-256 (hex).
    Wt(String, String),
}

impl Target {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Ws(_) => "websocket",
            Self::Wss(..) => "websocket+tls",
            Self::Wt(..) => "webtransport",
        }
    }
}

/// Bytes this client's frames took, as the transport frames them (payload and framing; not
/// TCP/IP, TLS or QUIC packet overhead).
#[derive(Debug, Default)]
pub(crate) struct FrameBytes {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Frames (WebSocket messages, or length-prefixed frames on a QUIC stream) received.
    pub(crate) frames: AtomicU64,
}

impl FrameBytes {
    /// Counts a WebSocket frame from a server with this payload: unmasked, so a 2-byte header,
    /// 4 past 125 bytes.
    pub(crate) fn ws_frame_received(&self, payload: usize) {
        let header = if payload < 126 { 2 } else { 4 };
        self.received.fetch_add((payload + header) as u64, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// The sending half.
pub(crate) struct Tx {
    inner: TxInner,
    codec: Codec,
    pub(crate) bytes: Arc<FrameBytes>,
}

enum TxInner {
    Ws(SplitSink<Ws, Message>),
    Wt {
        conn: wtransport::Connection,
        control: wtransport::SendStream,
        /// The receiving sides of the streams [`Tx::join`] opens, for [`Rx`].
        opened: mpsc::Sender<wtransport::RecvStream>,
        _endpoint: wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    },
}

/// The reading half.
pub(crate) struct Rx {
    inner: RxInner,
    codec: Codec,
    bytes: Arc<FrameBytes>,
}

enum RxInner {
    Ws(SplitStream<Ws>),
    Wt { streams: futures_util::stream::SelectAll<Events>, opened: mpsc::Receiver<wtransport::RecvStream> },
}

/// One WebTransport stream's events, decoded.
type Events = std::pin::Pin<Box<dyn futures_util::Stream<Item = ServerEnvelope> + Send>>;

/// The benchmark's WebSocket settings, client and floor relay alike: tungstenite zeroes its
/// whole read buffer (128 KiB by default) before every read, and with thousands of sockets on
/// the same two cores as the server that was a tenth of all CPU time; confab's own WebSocket
/// reads into 4 KiB (`server/src/transport/ws.rs`), and so does the benchmark.
pub(crate) fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A plain WebSocket to `addr` (no TLS, Nagle off), the benchmark's settings.
pub(crate) async fn plain_ws(addr: &str, url: String) -> Result<Ws, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Small frames both ways: Nagle's algorithm would hold them back.
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Server frames can exceed the client limit (history); nothing here sends them.
fn codec(format: Format) -> Codec {
    Codec::new(Dialect::Winkr, format).with_max_frame(MAX_SERVER_FRAME_BYTES)
}

pub(crate) async fn connect(target: &Target, token: &str, format: Format) -> Result<(Tx, Rx), String> {
    match target {
        Target::Ws(addr) => connect_ws(addr, None, token, format).await,
        Target::Wss(addr, hash) => connect_ws(addr, Some(hash), token, format).await,
        Target::Wt(addr, hash) => connect_wt(addr, hash, token, format).await,
    }
}

async fn connect_ws(addr: &str, tls: Option<&str>, token: &str, format: Format) -> Result<(Tx, Rx), String> {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{addr}/ws?token={token}&codec={}", format.name());
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Small frames both ways: Nagle's algorithm would hold them back.
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = match tls {
        None => tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        Some(hash) => {
            let connector = tokio_rustls::TlsConnector::from(pinned_tls(parse_hash(hash)?)?);
            let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            tokio_tungstenite::MaybeTlsStream::Rustls(tls)
        }
    };
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await.map_err(|e| e.to_string())?;
    let (sink, stream) = ws.split();
    let bytes = Arc::new(FrameBytes::default());
    let codec = codec(format);
    Ok((
        Tx { inner: TxInner::Ws(sink), codec: codec.clone(), bytes: Arc::clone(&bytes) },
        Rx { inner: RxInner::Ws(stream), codec, bytes },
    ))
}

/// [`pinned_tls`] from a hex hash.
pub(crate) fn pinned_tls_config(hex: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    pinned_tls(parse_hash(hex)?)
}

/// A TLS client that trusts exactly the certificate with this SHA-256, as browsers'
/// `serverCertificateHashes` does for WebTransport.
fn pinned_tls(hash: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { hash, provider: Arc::clone(&provider) });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Pinned {
    hash: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.hash {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate hash mismatch".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(format!("certificate hash {hex:?} is not 64 hex digits"));
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

async fn connect_wt(addr: &str, hash: &str, token: &str, format: Format) -> Result<(Tx, Rx), String> {
    let mut config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(parse_hash(hash)?)])
        .build();
    // As a mobile client on quinn would: the ACK frequency extension, both ways (the server
    // asks for acknowledgements within 5 ms, and so does the client).
    let mut transport = quinn::TransportConfig::default();
    transport.ack_frequency_config(Some(confab_server::transport::wt::ack_frequency()));
    config.quic_config_mut().transport_config(Arc::new(transport));
    let endpoint = wtransport::Endpoint::client(config).map_err(|e| e.to_string())?;
    let url = format!("https://{addr}/wt?token={token}&codec={}", format.name());
    let conn = endpoint.connect(&url).await.map_err(|e| e.to_string())?;
    let (control, recv) = conn.open_bi().await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let codec = codec(format);
    let bytes = Arc::new(FrameBytes::default());
    let (opened, opened_rx) = mpsc::channel(64);
    let mut streams = futures_util::stream::SelectAll::new();
    streams.push(events(recv, codec.clone(), Arc::clone(&bytes)));
    Ok((
        Tx {
            inner: TxInner::Wt { conn, control, opened, _endpoint: endpoint },
            codec: codec.clone(),
            bytes: Arc::clone(&bytes),
        },
        Rx { inner: RxInner::Wt { streams, opened: opened_rx }, codec, bytes },
    ))
}

/// A stream's frames, decoded as they are read; the stream ends at its end or at a frame that
/// cannot be read.
fn events(recv: wtransport::RecvStream, codec: Codec, bytes: Arc<FrameBytes>) -> Events {
    let frames = FrameDecoder::new(MAX_SERVER_FRAME_BYTES);
    let state = (recv, frames, vec![0u8; 64 * 1024], codec, bytes);
    Box::pin(futures_util::stream::unfold(state, |(mut recv, mut frames, mut buf, codec, bytes)| async move {
        loop {
            while let Ok(Some(f)) = frames.next_frame() {
                bytes.frames.fetch_add(1, Ordering::Relaxed);
                if let Ok(env) = codec.decode_server(&f) {
                    return Some((env, (recv, frames, buf, codec, bytes)));
                }
            }
            let n = recv.read(&mut buf).await.ok()??;
            bytes.received.fetch_add(n as u64, Ordering::Relaxed);
            frames.push(&buf[..n]).ok()?;
        }
    }))
}

impl Tx {
    /// Queues an envelope without flushing; call [`Tx::flush`] after a batch.
    pub(crate) async fn feed(&mut self, env: &ClientEnvelope) -> Result<(), String> {
        let bytes = self.codec.encode_client(env).map_err(|e| e.to_string())?;
        match &mut self.inner {
            TxInner::Ws(sink) => {
                // Client frames are masked: 2-byte header (4 past 125 bytes) and a 4-byte key.
                let header = if bytes.len() < 126 { 6 } else { 8 };
                self.bytes.sent.fetch_add((bytes.len() + header) as u64, Ordering::Relaxed);
                let msg = if self.codec.format.is_text() {
                    Message::Text(String::from_utf8(bytes).map_err(|e| e.to_string())?.into())
                } else {
                    Message::Binary(Bytes::from(bytes))
                };
                sink.feed(msg).await.map_err(|e| e.to_string())
            }
            TxInner::Wt { control, .. } => {
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                encode_frame(&bytes, &mut framed);
                self.bytes.sent.fetch_add(framed.len() as u64, Ordering::Relaxed);
                control.write_all(&framed).await.map_err(|e| e.to_string())
            }
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), String> {
        match &mut self.inner {
            TxInner::Ws(sink) => sink.flush().await.map_err(|e| e.to_string()),
            // QUIC streams send what is written; there is nothing to flush.
            TxInner::Wt { .. } => Ok(()),
        }
    }

    pub(crate) async fn send(&mut self, env: &ClientEnvelope) -> Result<(), String> {
        self.feed(env).await?;
        self.flush().await
    }

    /// Joins `conv`: on WebTransport on a stream of its own (whose events then arrive on the
    /// paired [`Rx`]), on WebSocket on the socket.
    pub(crate) async fn join(&mut self, join: &ClientEnvelope, _conv: &ConversationId) -> Result<(), String> {
        let TxInner::Wt { conn, opened, .. } = &mut self.inner else {
            return self.send(join).await;
        };
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        opened.send(recv).await.map_err(|_| "the reading half is gone".to_string())?;
        let mut framed = Vec::new();
        encode_frame(&self.codec.encode_client(join).map_err(|e| e.to_string())?, &mut framed);
        send.write_all(&framed).await.map_err(|e| e.to_string())?;
        // The stream must stay open (closing it leaves the conversation): keep its sending
        // half alive for as long as the connection.
        tokio::spawn(async move {
            let _ = send.stopped().await;
        });
        Ok(())
    }
}

impl Rx {
    /// The next server event; `None` when the connection ends.
    pub(crate) async fn next(&mut self) -> Option<ServerEnvelope> {
        match &mut self.inner {
            RxInner::Wt { streams, opened } => loop {
                tokio::select! {
                    biased;
                    Some(recv) = opened.recv() => streams.push(events(recv, self.codec.clone(), Arc::clone(&self.bytes))),
                    ev = streams.next(), if !streams.is_empty() => return ev,
                    else => return None,
                }
            },
            RxInner::Ws(stream) => loop {
                let msg = stream.next().await?.ok()?;
                let bytes: &[u8] = match &msg {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) => b,
                    Message::Close(_) => return None,
                    _ => continue,
                };
                self.bytes.ws_frame_received(bytes.len());
                let format = if matches!(msg, Message::Text(_)) { Format::Json } else { Format::MsgPack };
                if let Ok(env) = (Codec { format, ..self.codec.clone() }).decode_server(bytes) {
                    return Some(env);
                }
            },
        }
    }

    pub(crate) fn bytes(&self) -> &Arc<FrameBytes> {
        &self.bytes
    }
}
