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

pub(super) struct Wt {
    conn: Connection,
    endpoint: Endpoint<Client>,
    control: SendStream,
    conversations: HashMap<String, SendStream>,
    tx: mpsc::Sender<Incoming>,
}

impl Wt {
    pub(super) async fn open(
        config: &Config,
        host: &str,
        port: u16,
        token: &str,
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
        let url = format!("https://{host}:{port}/wt?token={token}&codec=msgpack");
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
        Ok(Wt { conn, endpoint, control, conversations: HashMap::new(), tx })
    }

    pub(super) async fn send(&mut self, env: &Value, conversation: Option<&str>) -> Result<(), String> {
        let bytes = wire::frame(&wire::to_msgpack(env));
        let stream = match conversation.and_then(|c| self.conversations.get_mut(c)) {
            Some(s) => s,
            None => &mut self.control,
        };
        stream.write_all(&bytes).await.map_err(|e| e.to_string())
    }

    /// A join opens the conversation's stream; its first frame is the join.
    pub(super) async fn join(&mut self, conversation: &str, env: &Value) -> Result<(), String> {
        let (mut send, recv) =
            self.conn.open_bi().await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        send.write_all(&wire::frame(&wire::to_msgpack(env))).await.map_err(|e| e.to_string())?;
        read_stream(recv, self.tx.clone());
        // A second stream for the same conversation moves it there; the server ends the old one.
        self.conversations.insert(conversation.to_owned(), send);
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
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(Some(n)) = recv.read(&mut buf).await {
            let Some(chunk) = buf.get(..n) else { return };
            if frames.push(chunk).is_err() {
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
