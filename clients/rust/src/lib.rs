//! confab-client: the native client for confab, the one Rust core that phone apps (through
//! generated bindings) and the terminal chat (`confab-chat`) share.
//!
//! An app-level API, not a socket wrapper: [`Client::connect`] with a [`Config`], then
//! `join`, `leave`, `send` (returns the message's `local_id` at once, and works offline),
//! `mark_read`, `typing`, `history`, `status`, and one stream of [`Event`]s: messages once each
//! and in order, each sent message's states (sending → sent → delivered → read, or failed),
//! typing, presence, unread counts, the connection and its transport.
//!
//! - WebTransport first (MessagePack, a QUIC stream per joined conversation, typing as
//!   datagrams), WebSocket (`wss://…/ws`) when UDP is blocked or the session does not open in
//!   time; WebTransport is tried again later.
//! - Never loses a message: reconnects with backoff and jitter, re-joins with `since_seq`,
//!   drops repeats by `seq`, and keeps unsent messages in an outbox file (SQLite) until the
//!   server acknowledges them, exactly once thanks to `local_id`.
//! - The same file keeps each conversation's recent messages (a cold start shows them at
//!   once, and resumes from the last one) and which transport worked on each network.
//! - A refused token (close 4001 without a new one, 4003, 4004) stops it with an error.
//!
//! `clients/rust/README.md` has an example and what the client guarantees.
//!
//! # Layout
//! - `config`: the server, the token source, trust, transports, outbox, timings.
//! - `client`: the handle and the task that owns the connection.
//! - `link`: one connection on WebSocket or WebTransport.
//! - `store`: the client file (SQLite): the outbox, recent messages, the transport per network.
//! - `event`, `error`: what the app hears.
//! - `wire`, `tls`: envelopes and frames; certificate pinning.

mod client;
pub mod config;
mod error;
mod event;
mod link;
mod store;
mod tls;
mod wire;

pub use client::{Client, Events};
pub use config::{Config, TokenSource, TransportChoice, parse_cert_hash};
pub use error::ClientError;
pub use event::{Event, MessageState, TransportKind};
pub use store::RECENT;

/// A conversation's last `limit` cached messages (at most [`RECENT`]), oldest first, read
/// from a client file without a client: what an app shows at a cold start, before
/// [`Client::connect`] returns.
pub fn cached_messages(
    file: &std::path::Path,
    conversation_id: &str,
    limit: usize,
) -> Result<Vec<serde_json::Value>, ClientError> {
    store::Store::open(Some(file))?.recent(conversation_id, limit)
}

/// A dev server's token for `user_id` (`GET /dev/token`; dev mode only), trusting the pinned
/// certificate, or any with `None`.
pub async fn dev_token(server: &str, pin: Option<[u8; 32]>, user_id: &str) -> Result<String, ClientError> {
    // Escaped: a user id with a space or a line break must not reshape the request.
    let query = serde_urlencoded::to_string([("user_id", user_id)]).map_err(|e| ClientError::Config(e.to_string()))?;
    let answer = dev_get(server, pin, &format!("/dev/token?{query}")).await?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Connection("the server gave no token".into()))
}

/// Fetches `path` from a dev server over HTTPS (`/dev/token?...`, `/cert-hash`), trusting the
/// pinned certificate, or any certificate when `pin` is `None`: dev mode only, where the
/// certificate is self-signed and its hash is what is being fetched.
pub async fn dev_get(server: &str, pin: Option<[u8; 32]>, path: &str) -> Result<serde_json::Value, ClientError> {
    let config = Config::new(server, TokenSource::Fixed(String::new()));
    let (host, port) = config.authority()?;
    let e = |what: &str, err: &dyn std::fmt::Display| ClientError::Connection(format!("{what}: {err}"));
    let tls = tls::dev_config(pin).map_err(|x| e("tls", &x))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|x| e("connect", &x))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|x| e("server name", &x))?;
    let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|x| e("tls", &x))?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|x| e("write", &x))?;
    let mut response = Vec::new();
    // A server that closes without TLS close_notify still sent the whole body.
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| e("answer", &"no body"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(e("answer", &head.lines().next().unwrap_or_default()));
    }
    serde_json::from_str(body).map_err(|x| e("answer", &x))
}
