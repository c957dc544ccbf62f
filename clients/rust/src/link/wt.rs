//! The WebTransport transport: `https://HOST:PORT/wt` over QUIC, MessagePack. A control stream,
//! one stream per joined conversation (so a lost packet in one conversation never delays
//! another), typing as datagrams (docs/protocol.md §10b).

use super::Incoming;
use crate::config::Config;
use crate::wire;
use serde_json::Value;
use std::collections::HashMap;
use tokio::sync::mpsc;
use wtransport::endpoint::endpoint_side::Client;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

/// Conversation streams a session may have open at once: the server allows 128
/// bidirectional QUIC streams, and the CONNECT request and the control stream take two
/// (docs/protocol.md §10b). One more could wait for credit that never comes.
const CONVERSATION_STREAMS: usize = 126;
/// How long a new conversation stream may take to open.
const OPEN_STREAM: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Wt {
    conn: Connection,
    endpoint: Endpoint<Client>,
    control: SendStream,
    conversations: HashMap<String, SendStream>,
    /// A stream did not open in time: the server gives no more (see `join`).
    no_more_streams: bool,
    tx: mpsc::Sender<Incoming>,
}

impl Wt {
    pub(super) async fn open(
        config: &Config,
        host: &str,
        port: u16,
        auth: &str,
        tx: mpsc::Sender<Incoming>,
    ) -> Result<Wt, String> {
        let builder = ClientConfig::builder().with_bind_default();
        let builder = match config.cert_sha256 {
            Some(hash) => builder.with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)]),
            None => builder.with_custom_tls(crate::tls::client_config(None, b"h3")?),
        };
        // Liveness: QUIC pings keep a quiet path open and notice a dead one.
        let quic = builder
            .keep_alive_interval(Some(config.keepalive))
            .max_idle_timeout(Some(config.keepalive * 3))
            .map_err(|e| e.to_string())?
            .build();
        let endpoint = Endpoint::client(quic).map_err(|e| format!("webtransport endpoint: {e}"))?;
        let url = format!("https://{host}:{port}/wt?{auth}&codec=msgpack");
        let conn = endpoint.connect(url).await.map_err(|e| format!("webtransport: {e}"))?;
        let (control, recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("webtransport stream: {e}"))?
            .await
            .map_err(|e| format!("webtransport stream: {e}"))?;
        read_stream(recv, tx.clone());
        let (c, dtx) = (conn.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                match c.receive_datagram().await {
                    Ok(d) => {
                        if let Some(v) = wire::from_msgpack(&d.payload()) {
                            if dtx.send(Incoming::Event(v)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let closed = match e {
                            wtransport::error::ConnectionError::ApplicationClosed(a) => Incoming::Closed {
                                code: u16::try_from(a.code().into_inner()).ok(),
                                reason: String::from_utf8_lossy(a.reason()).into_owned(),
                            },
                            other => Incoming::Closed { code: None, reason: other.to_string() },
                        };
                        let _ = dtx.send(closed).await;
                        return;
                    }
                }
            }
        });
        Ok(Wt { conn, endpoint, control, conversations: HashMap::new(), no_more_streams: false, tx })
    }

    pub(super) async fn send(&mut self, env: &Value, conversation: Option<&str>) -> Result<(), String> {
        let bytes = wire::frame(&wire::to_msgpack(env));
        let stream = match conversation.and_then(|c| self.conversations.get_mut(c)) {
            Some(s) => s,
            None => &mut self.control,
        };
        stream.write_all(&bytes).await.map_err(|e| e.to_string())
    }

    /// A join opens the conversation's stream; its first frame is the join. Past the streams
    /// the server allows, the join goes on the control stream and the conversation lives there
    /// (docs/protocol.md §10b, "How many").
    pub(super) async fn join(&mut self, conversation: &str, env: &Value) -> Result<(), String> {
        let new = !self.conversations.contains_key(conversation);
        if self.no_more_streams || (new && self.conversations.len() >= CONVERSATION_STREAMS) {
            return self.send(env, None).await;
        }
        // A stream the server has no credit for would wait for ever, and the whole client with
        // it (a server other than confab may give credit back late, or never): after a short
        // wait the conversation goes on the control stream instead, and so do the ones after it
        // on this session.
        let opening = async { self.conn.open_bi().await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string()) };
        let (mut send, recv) = match tokio::time::timeout(OPEN_STREAM, opening).await {
            Ok(opened) => opened?,
            Err(_) => {
                tracing::warn!("no stream credit from the server: conversations join on the control stream");
                self.no_more_streams = true;
                return self.send(env, None).await;
            }
        };
        send.write_all(&wire::frame(&wire::to_msgpack(env))).await.map_err(|e| e.to_string())?;
        read_stream(recv, self.tx.clone());
        // A second stream for the same conversation moves it there; the server ends the old one.
        self.conversations.insert(conversation.to_owned(), send);
        Ok(())
    }

    /// A leave goes on the conversation's stream, which then ends: its place is free for
    /// another conversation.
    pub(super) async fn leave(&mut self, conversation: &str, env: &Value) -> Result<(), String> {
        self.send(env, Some(conversation)).await?;
        if let Some(mut stream) = self.conversations.remove(conversation) {
            let _ = stream.finish().await;
        }
        Ok(())
    }

    pub(super) fn datagram(&mut self, env: &Value) -> Result<(), String> {
        self.conn.send_datagram(wire::to_msgpack(env)).map_err(|e| e.to_string())
    }

    /// Moves the session to a new UDP socket (the device changed networks): QUIC connection
    /// migration, no new handshake. Returns the new local address.
    pub(super) fn rebind(&self) -> Result<std::net::SocketAddr, String> {
        let old = self.endpoint.local_addr().map_err(|e| e.to_string())?;
        let any: std::net::SocketAddr = if old.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|e: std::net::AddrParseError| e.to_string())?;
        let socket = std::net::UdpSocket::bind(any).map_err(|e| format!("a new socket: {e}"))?;
        self.endpoint.rebind(socket).map_err(|e| format!("rebind: {e}"))?;
        self.endpoint.local_addr().map_err(|e| e.to_string())
    }

    pub(super) fn close(self) {
        self.conn.close(wtransport::VarInt::from_u32(1000), b"client closed");
    }
}

/// Reads a stream's frames into the client's channel until it ends.
fn read_stream(mut recv: RecvStream, tx: mpsc::Sender<Incoming>) {
    tokio::spawn(async move {
        let mut frames = confab_codec::frame::FrameDecoder::new(confab_codec::frame::MAX_SERVER_FRAME_BYTES);
        // Chunks straight from QUIC's receive buffer: no buffer of its own per stream, which
        // an idle conversation would hold for nothing.
        while let Ok(Some(chunk)) = recv.quic_stream_mut().read_chunk(16 * 1024, true).await {
            if frames.push(&chunk.bytes).is_err() {
                return;
            }
            while let Ok(Some(f)) = frames.next_frame() {
                if let Some(v) = wire::from_msgpack(&f) {
                    if tx.send(Incoming::Event(v)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}
