//! The browser client and the demo page (`clients/js/`), served from the binary: `GET /` (the
//! demo), `GET /client/confab.js` (the client module), `GET /client-config` (what a page
//! needs to connect), and in dev mode `POST /dev/demo` (the demo's conversations).

use super::bodies::{ClientConfig, DemoConversation, DemoConversations, ErrorBody};
use super::{ApiError, App};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use confab_codec::{ConversationId, UserId};

const INDEX: &str = include_str!("../../../clients/js/demo/index.html");
const CLIENT: &str = include_str!("../../../clients/js/confab.js");

/// The demo's people and conversations.
const DEMO: [(&str, &[&str]); 4] = [
    ("demo-alice-bob", &["alice", "bob"]),
    ("demo-alice-carol", &["alice", "carol"]),
    ("demo-bob-carol", &["bob", "carol"]),
    ("demo-team", &["alice", "bob", "carol"]),
];

/// The demo page: a chat in the browser, WebTransport first.
#[utoipa::path(
    get,
    path = "/",
    tag = "demo",
    responses((status = 200, description = "The demo page", content_type = "text/html", body = String))
)]
pub(super) async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX)
}

/// The browser client, an ES module (`clients/js/`).
#[utoipa::path(
    get,
    path = "/client/confab.js",
    tag = "demo",
    responses((status = 200, description = "The client module", content_type = "text/javascript", body = String))
)]
pub(super) async fn client_module() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], CLIENT)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PhotoQuery {
    /// The picture's hue, in degrees (default 210).
    #[param(minimum = 0, maximum = 65535)]
    hue: Option<u16>,
}

/// A generated picture for the demo's ephemeral photos (photo URLs must be http(s)).
#[utoipa::path(
    get,
    path = "/demo/photo.svg",
    tag = "demo",
    params(PhotoQuery),
    responses(
        (status = 200, description = "An SVG picture", content_type = "image/svg+xml", body = String),
        (status = 400, description = "A bad hue", body = ErrorBody),
    )
)]
pub(super) async fn photo(super::Params(q): super::Params<PhotoQuery>) -> impl IntoResponse {
    let h = q.hue.unwrap_or(210) % 360;
    let h2 = (h + 60) % 360;
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="220" viewBox="0 0 160 110"><defs><linearGradient id="g" x2="1" y2="1"><stop offset="0" stop-color="hsl({h},80%,62%)"/><stop offset="1" stop-color="hsl({h2},75%,45%)"/></linearGradient></defs><rect width="160" height="110" fill="url(#g)"/><circle cx="122" cy="28" r="13" fill="#ffffffaa"/><path d="M0 110 L52 52 L88 86 L112 64 L160 110Z" fill="#00000055"/></svg>"##
    );
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "max-age=86400")], svg)
}

/// What a page needs to connect; it builds its URLs from its own host. The certificate hash is
/// only given in dev mode (a real certificate needs none).
#[utoipa::path(
    get,
    path = "/client-config",
    tag = "demo",
    responses((status = 200, description = "The client's settings", body = ClientConfig))
)]
pub(super) async fn client_config(State(app): State<App>) -> Json<ClientConfig> {
    let s = &app.settings;
    Json(ClientConfig {
        webtransport_port: s.https_port.get().copied(),
        websocket_path: confab_codec::wire::path::WS,
        dev: s.dev,
        cert_sha256: if s.dev { app.cert_sha256() } else { None },
    })
}

/// Dev mode: creates the demo's conversations (once) and lists them.
#[utoipa::path(
    post,
    path = "/dev/demo",
    tag = "dev",
    responses(
        (status = 200, description = "The demo's conversations", body = DemoConversations),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn dev_demo(State(app): State<App>) -> Result<Json<DemoConversations>, ApiError> {
    let mut out = Vec::new();
    for (id, members) in DEMO {
        let c = super::parse_id("id", id, ConversationId::parse)?;
        if app.node.store.conversation(&c).await?.is_none() {
            let members = members
                .iter()
                .map(|m| UserId::parse(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::new(confab_codec::ErrorCode::InternalError, format!("demo member: {e}")))?;
            let info = app.node.store.create_conversation(c.clone(), members, None).await?;
            app.node.cache_conversation(info, true);
        }
        out.push(DemoConversation { id, members });
    }
    Ok(Json(DemoConversations { conversations: out }))
}
