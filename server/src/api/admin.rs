//! The admin console (`/admin`, `clients/admin/`) and the API it reads (`/api/v1/admin/...`),
//! signed in with the server API's key: outside dev mode that key is always configured, never
//! a default. The page is plain static files; the figures come from this node (its hub, its
//! trends and incidents) and, in cluster mode, the nodes' leases in the shared store.

use super::bodies::{
    ActivityList, ActivityRow, CertificateState, ConnectionCounts, DeviceRow, ErrorBody, IncidentRow, KindCount,
    NodeRow, Overview, Presence, UserState,
};
use super::server::check_key;
use super::{ApiError, App, Params, Segment};
use crate::error::CloseReason;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use confab_codec::{ConnectionId, ErrorCode, Timestamp, UserId};
use serde::Deserialize;
use std::time::Duration;

const PAGE: &str = include_str!("../../../clients/admin/index.html");
const SCRIPT: &str = include_str!("../../../clients/admin/admin.js");

/// The console's own files only; no framing (clickjacking a disconnect button), no referrer.
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

/// Incidents in the overview.
const INCIDENTS_SHOWN: usize = 50;
/// How long the cluster's nodes may take to read.
const NODES_TIMEOUT: Duration = Duration::from_secs(2);

/// The admin console.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin",
    responses((status = 200, description = "The console's page; it asks for the API key", content_type = "text/html", body = String))
)]
pub(super) async fn page() -> impl IntoResponse {
    file("text/html; charset=utf-8", PAGE)
}

/// The console's script.
#[utoipa::path(
    get,
    path = "/admin/admin.js",
    tag = "admin",
    responses((status = 200, description = "The console's script", content_type = "text/javascript", body = String))
)]
pub(super) async fn script() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let [a, b, c, d] = PAGE_HEADERS;
    ([(header::CONTENT_TYPE, content_type), a, b, c, d], body)
}

/// The dashboard: connections by kind, users online, messages per second and latency over the
/// last ten minutes, the certificate, the store, the cluster's nodes, recent errors.
#[utoipa::path(
    get,
    path = "/api/v1/admin/overview",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "This node's figures", body = Overview),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
    )
)]
pub(super) async fn overview(State(app): State<App>, headers: HeaderMap) -> Result<Json<Overview>, ApiError> {
    check_key(&app, &headers)?;
    let node = &app.node;
    let now = node.clock.now();
    let by_kind: Vec<KindCount> = node
        .hub
        .connection_counts()
        .into_iter()
        .map(|(k, count)| KindCount { transport: k.transport, dialect: k.dialect, codec: k.codec, count })
        .collect();
    let certificate = node.certificate.as_ref().map(|c| {
        let not_after = Timestamp::from_millis(c.not_after_s().saturating_mul(1000));
        let days_left = (not_after.as_millis() - now.as_millis()) as f64 / 86_400_000.0;
        CertificateState { sha256: c.sha256_hex(), not_after, days_left }
    });
    let (nodes, nodes_error) = if node.sequencer.is_some() {
        match tokio::time::timeout(NODES_TIMEOUT, node.presence.nodes()).await {
            Ok(Ok(nodes)) => (Some(nodes.into_iter().map(node_row).collect()), None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (None, Some(format!("the store did not answer within {NODES_TIMEOUT:?}"))),
        }
    } else {
        (None, None)
    };
    let incidents = node
        .incidents
        .recent(INCIDENTS_SHOWN)
        .into_iter()
        .map(|i| IncidentRow {
            at: i.at,
            code: i.code,
            user_id: i.user_id,
            connection_id: i.connection_id.to_string(),
            event: i.event,
            message: i.message,
        })
        .collect();
    let started_at = Timestamp::from_millis(app.trends.started_ms);
    Ok(Json(Overview {
        version: env!("CARGO_PKG_VERSION"),
        dev: app.settings.dev,
        started_at,
        uptime_s: (now.as_millis() - started_at.as_millis()) / 1000,
        connections: ConnectionCounts { total: by_kind.iter().map(|k| k.count).sum(), by_kind },
        users_online: node.presence.online_count().0,
        trends: app.trends.points(),
        certificate,
        store_writable: node.store.writable().is_ok(),
        nodes,
        nodes_error,
        incidents,
    }))
}

fn node_row(n: crate::presence::NodeState) -> NodeRow {
    NodeRow {
        id: n.id,
        this_node: n.this_node,
        live: n.live,
        lease_until: n.lease_until,
        users: n.users,
        connections: n.connections,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ActivityQuery {
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The conversations this node holds (a member is connected here), the most recently active
/// first, with their members.
#[utoipa::path(
    get,
    path = "/api/v1/admin/conversations",
    tag = "admin",
    security(("api_key" = [])),
    params(ActivityQuery),
    responses(
        (status = 200, description = "The conversations", body = ActivityList),
        (status = 400, description = "A bad limit", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
    )
)]
pub(super) async fn conversations(
    State(app): State<App>,
    headers: HeaderMap,
    Params(q): Params<ActivityQuery>,
) -> Result<Json<ActivityList>, ApiError> {
    check_key(&app, &headers)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(ErrorCode::ValidationError, format!("limit: must be 1 to 500, got {limit}")));
    }
    let conversations = app
        .node
        .hub
        .conversation_activity(limit as usize)
        .into_iter()
        .map(|c| ActivityRow {
            id: c.id,
            members: c.members,
            joined: c.joined,
            last_seq: c.last.map(|(seq, _)| seq.0),
            last_activity: c.last.map(|(_, at)| at),
        })
        .collect();
    Ok(Json(ActivityList { conversations }))
}

/// A user's presence (across nodes) and devices (connections on this node).
#[utoipa::path(
    get,
    path = "/api/v1/admin/users/{user_id}",
    tag = "admin",
    security(("api_key" = [])),
    params(("user_id" = super::bodies::Id, Path, description = "The user")),
    responses(
        (status = 200, description = "The user's presence and devices", body = UserState),
        (status = 400, description = "A bad user id", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
    )
)]
pub(super) async fn user(
    State(app): State<App>,
    headers: HeaderMap,
    Segment(user): Segment,
) -> Result<Json<UserState>, ApiError> {
    check_key(&app, &headers)?;
    let user = super::parse_id("user_id", &user, UserId::parse)?;
    let p = app.node.presence.get(&user).await;
    let devices = app
        .node
        .hub
        .devices(&user)
        .into_iter()
        .map(|d| DeviceRow {
            connection_id: d.connection_id.to_string(),
            transport: d.kind.transport,
            dialect: d.kind.dialect,
            codec: d.kind.codec,
        })
        .collect();
    Ok(Json(UserState { presence: Presence::of(user, p), devices }))
}

/// Disconnects one of a user's devices on this node: it is closed with 4004
/// (`disconnected_by_operator`), which tells a client not to reconnect by itself.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/users/{user_id}/connections/{connection_id}",
    tag = "admin",
    security(("api_key" = [])),
    params(
        ("user_id" = super::bodies::Id, Path, description = "The user"),
        ("connection_id" = super::bodies::Id, Path, description = "The device's connection, from the user's devices"),
    ),
    responses(
        (status = 204, description = "Closed"),
        (status = 400, description = "A bad id", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
        (status = 404, description = "No such connection of this user on this node", body = ErrorBody),
    )
)]
pub(super) async fn disconnect(
    State(app): State<App>,
    headers: HeaderMap,
    Segment((user, connection)): Segment<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_key(&app, &headers)?;
    let user = super::parse_id("user_id", &user, UserId::parse)?;
    let connection = super::parse_id("connection_id", &connection, ConnectionId::parse)?;
    if app.node.hub.disconnect(&user, &connection, CloseReason::Disconnected) {
        tracing::info!(user = %user, connection = %connection, "disconnected by an operator");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, format!("no connection {connection} of {user} on this node")))
    }
}
