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

use crate::app::App;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use confab_codec::ErrorCode;
use confab_codec::wire::path;
use serde_json::json;

pub fn router(app: App) -> axum::Router {
    let mut r = axum::Router::new()
        .route(path::WS, get(crate::transport::ws::upgrade))
        .route(path::WS_V1, get(crate::transport::ws::upgrade))
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
            S::RateLimited { .. } => ErrorCode::RateLimited,
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
