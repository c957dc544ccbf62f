//! What the HTTP handlers and the transports share: the node, and the settings that decide how
//! a connection is accepted (origins, codec negotiation, frame limits, keepalive). Both the
//! API's router and the transports depend on this; neither depends on the other.

use confab_codec::wire::{self, Endpoint};
use confab_codec::{Codec, Dialect, Format, Seq};
use confab_core::node::Node;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Settings the HTTP and transport handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dev: bool,
    pub api_key: String,
    pub max_frame_bytes: usize,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub handshake_timeout: Duration,
    /// WebTransport's congestion controller (`--quic-congestion`).
    pub quic_congestion: crate::transport::wt::Congestion,
    /// Browser origins allowed to connect; empty: any (see `config`).
    pub allowed_origins: Vec<String>,
    /// The dialect of connections whose endpoint, query and subprotocols name none.
    pub default_dialect: Dialect,
    /// The configured public base URL (no trailing slash).
    pub public_url: Option<String>,
    /// The HTTPS (and WebTransport) port once bound, for `/client-config`.
    pub https_port: std::sync::OnceLock<u16>,
}

impl Settings {
    /// Whether the request's `Origin` may connect (none: not a browser, always allowed; an
    /// origin that is not text matches nothing).
    pub fn origin_allowed(&self, headers: &axum::http::HeaderMap) -> bool {
        let origin = headers.get(axum::http::header::ORIGIN).map(|o| o.to_str().unwrap_or("\u{fffd}"));
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(o) => self.allowed_origins.iter().any(|a| a == o.trim_end_matches('/')),
        }
    }

    /// A connection's codec from its endpoint, its query and its offered subprotocols
    /// ([`wire::negotiate`]); `Err` is the 400 answer's text. Both transports take these the
    /// same way.
    pub fn codec<'a>(
        &self,
        query: &'a HashMap<String, String>,
        offered: impl Iterator<Item = &'a str>,
        default_format: Format,
        endpoint: &Endpoint,
    ) -> Result<Codec, String> {
        let defaults =
            wire::Defaults { dialect: self.default_dialect, format: default_format, max_frame: self.max_frame_bytes };
        wire::negotiate(|k| query.get(k).map(String::as_str), offered, endpoint, defaults)
    }

    /// The base of the absolute URLs a connection is given (attachments): the configured public
    /// URL, else the connection's own `scheme://host`; `None` when the request names no
    /// usable host (a client that sends none gets paths).
    pub fn base_url(&self, scheme: &str, host: Option<&str>) -> Option<Arc<str>> {
        if let Some(u) = &self.public_url {
            return Some(u.as_str().into());
        }
        let host = host?.trim();
        // An authority and nothing else: no user info, path or spaces.
        let ok = !host.is_empty()
            && host.parse::<axum::http::uri::Authority>().is_ok_and(|a| a.as_str() == host && !host.contains('@'));
        ok.then(|| format!("{scheme}://{host}").into())
    }

    /// `?since_seq=`: where a connection scoped to one conversation resumes.
    pub fn resume(query: &HashMap<String, String>) -> Result<Option<Seq>, String> {
        wire::resume(|k| query.get(k).map(String::as_str))
    }
}

/// The scheme of the listener a request came on (an extension the accept loop's router adds).
#[derive(Debug, Clone, Copy)]
pub struct Scheme(pub &'static str);

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct App {
    pub node: Arc<Node>,
    pub settings: Arc<Settings>,
    /// The admin console's figures over time.
    pub trends: Arc<crate::trends::Trends>,
}

impl App {
    /// The SHA-256 (hex) of the certificate new handshakes get (it changes on SIGHUP and dev
    /// renewal), when there is a TLS listener.
    pub fn cert_sha256(&self) -> Option<String> {
        self.node.certificate.as_ref().map(|c| c.sha256_hex())
    }
}
