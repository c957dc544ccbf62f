//! One connection to the server, on either transport: what the client sends, and a channel of
//! what arrives (events, and the close). The client (`client.rs`) never knows which transport
//! it holds beyond the name it reports.

mod ws;
mod wt;

use crate::config::Config;
use crate::event::TransportKind;
use serde_json::Value;
use tokio::sync::mpsc;

/// What a connection hears.
#[derive(Debug)]
pub(crate) enum Incoming {
    Event(Value),
    /// The connection ended: the server's close code and reason, when it gave them.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// Events waiting for the client; a reader waits (the transport's flow control) when it is full.
const INCOMING: usize = 1024;

enum Inner {
    Ws(ws::Ws),
    Wt(wt::Wt),
}

pub(crate) struct Link {
    pub(crate) kind: TransportKind,
    inner: Inner,
    pub(crate) incoming: mpsc::Receiver<Incoming>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Link {
    /// Opens a connection on `kind` with `token`, within the config's deadline.
    pub(crate) async fn open(config: &Config, kind: TransportKind, token: &str) -> Result<Link, String> {
        let (host, port) = config.authority().map_err(|e| e.to_string())?;
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        // The token as a query parameter, escaped: a callback may hand over anything.
        let auth = serde_urlencoded::to_string([("token", token)]).map_err(|e| e.to_string())?;
        let (tx, incoming) = mpsc::channel(INCOMING);
        let deadline = match kind {
            TransportKind::WebTransport => config.webtransport_deadline.min(config.connect_timeout),
            TransportKind::WebSocket => config.connect_timeout,
        };
        let opening = async {
            match kind {
                TransportKind::WebSocket => ws::Ws::open(config, &host, port, &auth, tx).await.map(Inner::Ws),
                TransportKind::WebTransport => wt::Wt::open(config, &host, port, &auth, tx).await.map(Inner::Wt),
            }
        };
        let inner = tokio::time::timeout(deadline, opening)
            .await
            .map_err(|_| format!("{} did not open within {deadline:?}", kind.name()))??;
        Ok(Link { kind, inner, incoming })
    }

    /// Sends a request: on WebTransport on the conversation's stream when it has one.
    pub(crate) async fn send(&mut self, env: &Value, conversation: Option<&str>) -> Result<(), String> {
        match &mut self.inner {
            Inner::Ws(w) => w.send(env).await,
            Inner::Wt(w) => w.send(env, conversation).await,
        }
    }

    /// Joins: on WebTransport the join opens the conversation's own stream.
    pub(crate) async fn join(&mut self, conversation: &str, env: &Value) -> Result<(), String> {
        match &mut self.inner {
            Inner::Ws(w) => w.send(env).await,
            Inner::Wt(w) => w.join(conversation, env).await,
        }
    }

    /// Leaves: on WebTransport the conversation's stream then ends.
    pub(crate) async fn leave(&mut self, conversation: &str, env: &Value) -> Result<(), String> {
        match &mut self.inner {
            Inner::Ws(w) => w.send(env).await,
            Inner::Wt(w) => w.leave(conversation, env).await,
        }
    }

    /// Latest-wins traffic (typing): a datagram on WebTransport, a frame on WebSocket.
    pub(crate) async fn send_unreliable(&mut self, env: &Value) -> Result<(), String> {
        match &mut self.inner {
            Inner::Ws(w) => w.send(env).await,
            Inner::Wt(w) => w.datagram(env),
        }
    }

    /// The device changed networks: WebTransport moves its session to a new socket and returns
    /// the new local address; a WebSocket cannot move (`Err`: reconnect).
    pub(crate) fn network_changed(&mut self) -> Result<std::net::SocketAddr, String> {
        match &mut self.inner {
            Inner::Ws(_) => Err("network changed: a WebSocket reconnects".into()),
            Inner::Wt(w) => w.rebind(),
        }
    }

    pub(crate) async fn close(self) {
        match self.inner {
            Inner::Ws(w) => w.close().await,
            Inner::Wt(w) => w.close(),
        }
    }
}
