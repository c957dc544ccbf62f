//! The HTTP side, on the same listener as the WebSocket endpoints (SPEC §5):
//!
//! - `client`: REST for clients, with their JWT (`/v1/chat/...`);
//! - `server`: the API for the app backend, with the API key (`/api/v1/...`);
//! - `ops`: `/healthz`, `/readyz`, `/metrics`, `/api/openapi.json`, and `/dev/token` in dev
//!   mode;
//! - `admin`: the admin console (`/admin`) and its API (`/api/v1/admin/...`, the API key);
//! - `sockets`: the WebSocket endpoints, handed to the transport;
//! - `demo`: the browser client and the demo page;
//! - `bodies`: the JSON bodies, which the OpenAPI document describes.
//!
//! Errors are JSON `{"error": {"code", "message"}}` with the protocol's codes and a matching
//! HTTP status (`ApiError`).

mod admin;
mod bodies;
mod client;
mod demo;
mod ops;
mod server;
mod sockets;

use crate::app::App;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_codec::ErrorCode;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The server's HTTP routes. Each is added through [`documented`], so every route is in the
/// OpenAPI document served at `/api/openapi.json` (and written to `docs/openapi.json` by
/// `confab openapi`).
pub fn router(app: App) -> axum::Router {
    let (router, doc) = documented(app.settings.dev).split_for_parts();
    let doc: Arc<str> = doc.to_pretty_json().unwrap_or_default().into();
    router.layer(axum::Extension(OpenApiJson(doc))).with_state(app)
}

/// The OpenAPI 3.1 document of a server in dev mode (`dev`) or not: dev mode adds `/dev/*`.
pub fn openapi(dev: bool) -> utoipa::openapi::OpenApi {
    documented(dev).split_for_parts().1
}

/// Every route, with its description.
fn documented(dev: bool) -> OpenApiRouter<App> {
    let mut r = OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(sockets::ws))
        .routes(routes!(sockets::ws_v1))
        .routes(routes!(sockets::chat))
        .routes(routes!(sockets::personal))
        .routes(routes!(client::conversations))
        .routes(routes!(client::messages))
        .routes(routes!(client::attachment))
        .routes(routes!(server::create_conversation))
        .routes(routes!(server::delete_conversation))
        .routes(routes!(server::set_members))
        .routes(routes!(server::post_message))
        .routes(routes!(server::publish))
        .routes(routes!(server::presence))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(demo::index))
        .routes(routes!(demo::client_module))
        .routes(routes!(demo::client_config))
        .routes(routes!(demo::photo))
        .routes(routes!(admin::page))
        .routes(routes!(admin::script))
        .routes(routes!(admin::overview))
        .routes(routes!(admin::conversations))
        .routes(routes!(admin::user))
        .routes(routes!(admin::disconnect));
    if dev {
        r = r.routes(routes!(ops::dev_token)).routes(routes!(ops::cert_hash)).routes(routes!(demo::dev_demo));
    }
    r
}

/// The serialized document, for `GET /api/openapi.json`.
#[derive(Clone)]
struct OpenApiJson(Arc<str>);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "confab",
        description = "The HTTP side of confab, a realtime chat server: the client REST API (the \
                       user's JWT), the server API for the app backend (the API key), the \
                       WebSocket endpoints, operations and, in dev mode, tokens. The realtime \
                       protocol itself is in docs/protocol.md.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&Security),
    tags(
        (name = "client", description = "Client REST, with the user's JWT (`Authorization: Bearer`)."),
        (name = "server", description = "The server API for the app backend (`Authorization: ApiKey KEY`)."),
        (name = "websocket", description = "WebSocket endpoints (SPEC §3); WebTransport is at `/wt` over HTTP/3."),
        (name = "ops", description = "Health, readiness, metrics and this document."),
        (name = "demo", description = "The browser client and the demo page."),
        (name = "dev", description = "Dev mode only: tokens and the dev certificate."),
        (name = "admin", description = "The admin console at `/admin` and what it reads (`Authorization: ApiKey KEY`)."),
    )
)]
struct Doc;

/// The two credentials: the server API's key and a user's JWT.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut key = ApiKeyValue::new("Authorization");
        key.description = Some("`ApiKey KEY`: the configured `api-key`.".to_owned());
        components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(key)));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A user's JWT: HS256, RS256 or ES256, with `sub` and `exp`."))
                    .build(),
            ),
        );
    }
}

/// An HTTP API error: a protocol code and a message, with the HTTP status the code implies
/// unless another is given.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), status: None }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or(match self.code {
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
        });
        let code = serde_json::to_value(self.code).ok().and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_default();
        (status, Json(bodies::ErrorBody { error: bodies::ErrorDetail { code, message: self.message } })).into_response()
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
        let mut error = ApiError::new(code, e.to_string());
        // Taken, rather than malformed: the same request with another id would succeed.
        if matches!(e, S::ConversationExists(_)) {
            error.status = Some(StatusCode::CONFLICT);
        }
        error
    }
}

/// Parses an id from a path, query or body field; a bad one is a `VALIDATION_ERROR` naming `field`.
pub(crate) fn parse_id<T>(field: &str, s: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, ApiError> {
    parse(s).map_err(|r| ApiError::new(ErrorCode::ValidationError, format!("{field}: {r}")))
}

/// The path's parameters (`{id}`, or a tuple for several), turning axum's rejection (bad
/// percent-encoding) into a `VALIDATION_ERROR`.
#[derive(Debug)]
pub struct Segment<T = String>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Segment<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Segment(v)),
            Err(e) => Err(ApiError::new(ErrorCode::ValidationError, e.body_text())),
        }
    }
}

/// The conversation `c`, or `CONVERSATION_NOT_FOUND`.
pub(crate) async fn existing_conversation(
    app: &App,
    c: &confab_codec::ConversationId,
) -> Result<crate::store::ConversationInfo, ApiError> {
    app.node
        .store
        .conversation(c)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::ConversationNotFound, format!("conversation {c} not found")))
}

/// Reads the query string, turning serde's rejection into a `VALIDATION_ERROR`.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::new(ErrorCode::ValidationError, e.body_text())),
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
            Err(e) => Err(ApiError::new(ErrorCode::ValidationError, e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every route goes through [`super::documented`]: a route added straight to an axum router
    /// (`.route`, `.nest`, `.merge`) would be missing from the OpenAPI document.
    #[test]
    fn no_route_bypasses_the_document() {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        assert!(files.len() > 10);
        // Built, so that this file does not hold the calls it looks for.
        let calls = ["route", "route_service", "nest", "nest_service", "merge"].map(|m| format!(".{m}("));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for call in &calls {
                    assert!(
                        !code.contains(call.as_str()),
                        "{}:{}: {call} adds a route the OpenAPI document lacks",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }

    /// `docs/openapi.json` is what `confab openapi` prints today.
    #[test]
    fn the_committed_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let committed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let current = serde_json::to_value(super::openapi(true)).unwrap();
        assert!(
            committed == current,
            "docs/openapi.json is stale: cargo run -p confab-server -- openapi > docs/openapi.json"
        );
    }

    #[test]
    fn dev_routes_are_documented_only_in_dev_mode() {
        let paths = |dev| super::openapi(dev).paths.paths.into_keys().collect::<Vec<_>>();
        let (dev, production) = (paths(true), paths(false));
        for p in ["/dev/token", "/cert-hash", "/dev/demo"] {
            assert!(dev.iter().any(|d| d == p) && !production.iter().any(|d| d == p), "{p}");
        }
    }
}
