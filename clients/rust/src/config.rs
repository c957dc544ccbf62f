//! How a client connects: the server, the token, how the certificate is trusted, which
//! transports to try, where the outbox lives, and the timings.

use crate::error::ClientError;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A token, fetched again at each (re)connect: an app returns its current one, refreshing it
/// first when it is about to expire.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Where tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    Fixed(String),
    Callback(Arc<dyn Fn() -> TokenFuture + Send + Sync>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fixed(_) => "TokenSource::Fixed(..)",
            Self::Callback(_) => "TokenSource::Callback(..)",
        })
    }
}

impl TokenSource {
    pub(crate) async fn get(&self) -> Result<String, String> {
        match self {
            Self::Fixed(t) => Ok(t.clone()),
            Self::Callback(f) => f().await,
        }
    }
}

/// Which transports to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// WebTransport first; WebSocket when UDP is blocked or the session does not open within
    /// [`Config::webtransport_deadline`]. WebTransport is tried again later.
    Auto,
    WebTransport,
    WebSocket,
}

/// Everything a client needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://HOST:PORT`: TLS over TCP for WebSocket (`/ws`), QUIC on the same port for
    /// WebTransport (`/wt`).
    pub server: String,
    pub token: TokenSource,
    /// The certificate's SHA-256 (a dev certificate): pins both transports. `None`: WebPKI.
    pub cert_sha256: Option<[u8; 32]>,
    pub transport: TransportChoice,
    /// An SQLite file that keeps unsent messages across restarts; `None`: memory only.
    pub outbox: Option<PathBuf>,
    /// How long WebTransport gets to open before `Auto` falls back to WebSocket.
    pub webtransport_deadline: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// A heartbeat goes out this often; a connection that has heard nothing for three of them
    /// is taken as dead. Longer saves battery; shorter notices a dead path sooner.
    pub keepalive: Duration,
    /// After `Auto` fell back to WebSocket, how long before WebTransport is tried again.
    pub retry_webtransport_after: Duration,
}

impl Config {
    pub fn new(server: impl Into<String>, token: TokenSource) -> Self {
        Self {
            server: server.into(),
            token,
            cert_sha256: None,
            transport: TransportChoice::Auto,
            outbox: None,
            webtransport_deadline: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
            retry_webtransport_after: Duration::from_secs(300),
        }
    }

    /// The server's host and port.
    pub(crate) fn authority(&self) -> Result<(String, u16), ClientError> {
        let bad = || ClientError::Config(format!("server {:?}: use https://HOST:PORT", self.server));
        let rest = self.server.strip_prefix("https://").ok_or_else(bad)?.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        Ok((host.to_owned(), port))
    }
}

/// A certificate hash from 64 hex digits.
pub fn parse_cert_hash(hex: &str) -> Result<[u8; 32], ClientError> {
    let hex = hex.trim();
    let bad = || ClientError::Config(format!("certificate hash {hex:?}: 64 hex digits"));
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_hashes() {
        let c = |s: &str| Config::new(s, TokenSource::Fixed("t".into())).authority();
        assert_eq!(c("https://localhost:4433"), Ok(("localhost".into(), 4433)));
        assert_eq!(c("https://[::1]:4433/"), Ok(("::1".into(), 4433)));
        for bad in ["http://x:1", "https://x", "https://:1", "https://x:99999", "https://a@b:1"] {
            assert!(c(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cert_hash(&"ab".repeat(32)), Ok([0xab; 32]));
        assert!(parse_cert_hash("abc").is_err());
        assert!(parse_cert_hash(&"zz".repeat(32)).is_err());
    }
}
