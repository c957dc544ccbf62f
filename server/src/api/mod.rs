//! The HTTP side, on the same listener as the WebSocket endpoints (SPEC §5):
//!
//! - `client`: REST for clients, with their JWT (`/v1/chat/...`);
//! - `server`: the API for the app backend, with the API key (`/api/v1/...`);
//! - `ops`: `/healthz`, `/metrics`, and `/dev/token` in dev mode.
//!
//! Errors are JSON `{"error": {"code", "message"}}` with the protocol's codes and a matching
//! HTTP status (`ApiError`).

mod client;
mod demo;
mod ops;
mod server;

use crate::session::Ctx;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use confab_codec::{Codec, ConversationId, Dialect, ErrorCode, Format, Seq};
use serde_json::json;
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
    /// Browser origins allowed to connect; empty: any (see `config`).
    pub allowed_origins: Vec<String>,
    /// The dialect of connections whose endpoint, query and subprotocols name none.
    pub default_dialect: Dialect,
    /// The configured public base URL (no trailing slash).
    pub public_url: Option<String>,
    /// The HTTPS (and WebTransport) port once bound, for `/client-config`.
    pub https_port: std::sync::OnceLock<u16>,
    /// The TLS certificates (replaced on SIGHUP and dev renewal), for `/cert-hash`.
    pub certs: Option<Arc<crate::tls::CertStore>>,
}

impl Settings {
    /// The current certificate's SHA-256 (hex), when there is a TLS listener.
    pub fn cert_sha256(&self) -> Option<String> {
        self.certs.as_ref().map(|c| c.sha256_hex())
    }

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

    /// A connection's codec from its endpoint, its query (`codec`, `dialect`,
    /// `conversation_id`) and its offered subprotocols; `Err` is the 400 answer's text. Both
    /// transports take these the same way (SPEC §7: the endpoint's dialect first, then
    /// `?dialect=`, then a `confab.<dialect>` subprotocol, then the configured default).
    pub fn codec<'a>(
        &self,
        query: &HashMap<String, String>,
        mut offered: impl Iterator<Item = &'a str>,
        default_format: Format,
        endpoint: &Endpoint,
    ) -> Result<Codec, String> {
        let format = match query.get("codec") {
            None => default_format,
            Some(c) => Format::from_name(c).ok_or_else(|| format!("unknown codec {c:?}: use json or msgpack"))?,
        };
        let dialect = match (endpoint.dialect, query.get("dialect")) {
            (Some(d), _) => d,
            (None, Some(d)) => Dialect::from_name(d)
                .ok_or_else(|| format!("unknown dialect {d:?}: use winkr, systimz, chatrooms or actions"))?,
            (None, None) => offered
                .find_map(|p| p.strip_prefix("confab.").and_then(Dialect::from_name))
                .unwrap_or(self.default_dialect),
        };
        let scope = match endpoint.scope.as_deref().or(query.get("conversation_id").map(String::as_str)) {
            Some(c) if dialect.needs_scope() => {
                Some(ConversationId::parse(c).map_err(|r| format!("conversation_id: {r}"))?)
            }
            _ => None,
        };
        // Seed 003 on a generic endpoint: a chat socket with `?conversation_id=`, else the
        // user's personal socket (the token says whose).
        let dialect =
            if dialect == Dialect::Chatrooms && scope.is_none() { Dialect::ChatroomsPersonal } else { dialect };
        // Seed 004 sends files inline, in base64: its frames may be as large as the transports'
        // hard limit, not only the contract's 32 KiB.
        let max_frame = if dialect == Dialect::Actions {
            self.max_frame_bytes.max(ATTACHMENT_FRAME_BYTES)
        } else {
            self.max_frame_bytes
        };
        Ok(Codec::new(dialect, format).with_max_frame(max_frame).with_scope(scope))
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
        query
            .get("since_seq")
            .map(|s| s.parse::<u64>().map(Seq).map_err(|_| format!("since_seq: {s:?} is not a non-negative integer")))
            .transpose()
    }
}

/// Largest frame of the actions dialect, whose messages carry files inline (1 MiB, the
/// transports' hard limit).
pub const ATTACHMENT_FRAME_BYTES: usize = 1024 * 1024;

/// The scheme of the listener a request came on (an extension the accept loop's router adds).
#[derive(Debug, Clone, Copy)]
pub struct Scheme(pub &'static str);

/// What a connection's endpoint fixes (seed 003's paths name their dialect and chat).
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub dialect: Option<Dialect>,
    pub scope: Option<String>,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct App {
    pub ctx: Ctx,
    pub settings: Arc<Settings>,
}

pub fn router(app: App) -> axum::Router {
    let mut r = axum::Router::new()
        .route("/ws", get(crate::transport::ws::upgrade))
        .route("/v1/ws", get(crate::transport::ws::upgrade))
        .route("/api/v1/ws/chat/{chat_id}", get(crate::transport::ws::upgrade_chat))
        .route("/api/v1/ws/{user_id}", get(crate::transport::ws::upgrade_personal))
        .route("/v1/attachments/{id}", get(client::attachment))
        .route("/", get(demo::index))
        .route("/client/confab.js", get(demo::client_module))
        .route("/client-config", get(demo::client_config))
        .route("/demo/photo.svg", get(demo::photo))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/chat/conversations", get(client::conversations))
        .route("/v1/chat/conversations/{id}/messages", get(client::messages))
        .route("/api/v1/conversations", post(server::create_conversation))
        .route("/api/v1/conversations/{id}", axum::routing::delete(server::delete_conversation))
        .route("/api/v1/conversations/{id}/members", put(server::set_members))
        .route("/api/v1/conversations/{id}/messages", post(server::post_message))
        .route("/api/v1/publish", post(server::publish))
        .route("/api/v1/presence/{user_id}", get(server::presence));
    if app.settings.dev {
        r = r
            .route("/dev/token", get(ops::dev_token))
            .route("/cert-hash", get(ops::cert_hash))
            .route("/dev/demo", post(demo::dev_demo));
    }
    r.with_state(app)
}

/// An HTTP API error: a protocol code and a message.
#[derive(Debug)]
pub struct ApiError(pub ErrorCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            ErrorCode::ValidationError | ErrorCode::MessageTooLarge | ErrorCode::InvalidMessageType => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::TokenInvalid => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::NotFound | ErrorCode::ConversationNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ConversationFull => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ConnectionError | ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({"error": {"code": self.0, "message": self.1}}))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        let code = match &e {
            S::ConversationNotFound(_) => ErrorCode::ConversationNotFound,
            S::NotFound(_) => ErrorCode::NotFound,
            S::ConversationExists(_) => ErrorCode::ValidationError,
            S::NotOwner => ErrorCode::PermissionDenied,
            S::Unavailable(_) => ErrorCode::ServiceUnavailable,
            S::Database(_) | S::Closed => ErrorCode::InternalError,
        };
        ApiError(code, e.to_string())
    }
}

/// Parses an id from a path, query or body field; a bad one is a `VALIDATION_ERROR` naming `field`.
pub(crate) fn parse_id<T>(field: &str, s: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, ApiError> {
    parse(s).map_err(|r| ApiError(ErrorCode::ValidationError, format!("{field}: {r}")))
}

/// Reads the query string, turning serde's rejection into a `VALIDATION_ERROR`.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError(ErrorCode::ValidationError, e.body_text())),
        }
    }
}

/// Reads a JSON body, turning serde's rejection into a `VALIDATION_ERROR`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError(ErrorCode::ValidationError, e.body_text())),
        }
    }
}
