//! The WebSocket endpoints as HTTP routes: each hands its request to the transport
//! (`transport::ws`), which checks the origin and the token, negotiates the codec and
//! upgrades. Here they are only named and described.

use crate::app::{App, Scheme};
use crate::transport::ws;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::collections::HashMap;

/// The query parameters every WebSocket endpoint takes (docs/protocol.md §2).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // described here, read by the transport from the raw query
struct Connect {
    /// The user's JWT; or `Authorization: Bearer`, or a `bearer.<token>` subprotocol.
    token: Option<String>,
    /// `json` (text frames, the default) or `msgpack` (binary frames); or the subprotocol
    /// `confab.msgpack`.
    codec: Option<String>,
    /// `winkr` (the default), `systimz`, `chatrooms` or `actions` (docs/protocol.md §14).
    dialect: Option<String>,
    /// Resume a connection scoped to one conversation after this sequence number.
    since_seq: Option<u64>,
}

/// What a WebSocket endpoint answers: `101`, and then the protocol runs over the socket; the
/// refusals before it are plain text (a refused token is told on the socket: an `error` event
/// and close 4003).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // described here, answered by axum and the transport
enum UpgradeAnswer {
    /// Switched to the WebSocket protocol
    #[response(status = 101)]
    Switched,
    /// Not a WebSocket handshake, or a bad codec, dialect or resume point
    #[response(status = 400, content_type = "text/plain")]
    BadRequest(String),
    /// The `Origin` is not in `allowed-origins`
    #[response(status = 403, content_type = "text/plain")]
    Forbidden(String),
    /// The connection cannot be upgraded
    #[response(status = 426, content_type = "text/plain")]
    NotUpgradable(String),
}

/// The Winkr dialect unless the query or a subprotocol names another.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "websocket",
    summary = "Open a WebSocket session (the Winkr dialect unless another is named)",
    params(Connect),
    responses(UpgradeAnswer)
)]
pub(super) async fn ws(
    state: State<App>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    ws::upgrade(state, false, query, headers, scheme, upgrade).await
}

/// Seed 000's path: `message:new` carries the message's fields flat as well.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "websocket",
    summary = "Open a WebSocket session (seed 000's path)",
    params(Connect),
    responses(UpgradeAnswer)
)]
pub(super) async fn ws_v1(
    state: State<App>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    ws::upgrade(state, true, query, headers, scheme, upgrade).await
}

/// Seed 003: the chatrooms dialect, scoped to one chat.
#[utoipa::path(
    get,
    path = "/api/v1/ws/chat/{chat_id}",
    tag = "websocket",
    summary = "Open a WebSocket session scoped to one chat (seed 003)",
    params(("chat_id" = super::bodies::Id, Path, description = "The conversation"), Connect),
    responses(UpgradeAnswer)
)]
pub(super) async fn chat(
    state: State<App>,
    chat_id: Path<String>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    ws::upgrade_chat(state, chat_id, query, headers, scheme, upgrade).await
}

/// Seed 003: the user's personal socket; the token must be that user's (else close 4004).
#[utoipa::path(
    get,
    path = "/api/v1/ws/{user_id}",
    tag = "websocket",
    summary = "Open a user's personal WebSocket (seed 003)",
    params(("user_id" = super::bodies::Id, Path, description = "The token's user"), Connect),
    responses(UpgradeAnswer)
)]
pub(super) async fn personal(
    state: State<App>,
    user_id: Path<String>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    ws::upgrade_personal(state, user_id, query, headers, scheme, upgrade).await
}
