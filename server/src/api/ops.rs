//! Operations endpoints: health, readiness, metrics, the OpenAPI document, and the dev-mode
//! token minting.

use super::bodies::{CertHash, DevToken, ErrorBody, Readiness};
use super::{ApiError, App, OpenApiJson};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use confab_codec::{ErrorCode, UserId};
use serde::Deserialize;

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String))
)]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

fn not_ready(reason: impl Into<String>) -> (StatusCode, Json<Readiness>) {
    (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { ready: false, store: None, reason: Some(reason.into()) }))
}

/// Ready to take traffic (the listeners are bound, or this would not answer): the store answers
/// within a second and takes writes, the broker (cluster mode) is connected, and the server is
/// not shutting down. 503 otherwise, with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, and why", body = Readiness),
    )
)]
pub(super) async fn readyz(State(app): State<App>) -> (StatusCode, Json<Readiness>) {
    if app.node.shutdown.is_cancelled() {
        return not_ready("shutting down");
    }
    // Cluster mode: a node that cannot hear the others would show its clients a partial chat.
    if let Err(why) = app.node.broker.healthy() {
        return not_ready(why);
    }
    // Writes have been failing (a full disk): try one, since a node out of rotation may get
    // none from clients to learn that they work again.
    if let Err(why) = app.node.store.writable() {
        let probe = tokio::time::timeout(std::time::Duration::from_secs(1), app.node.store.probe_write()).await;
        if !matches!(probe, Ok(Ok(()))) {
            return not_ready(format!("store refusing writes: {why}"));
        }
    }
    let Ok(probe) = confab_codec::ConversationId::parse("readyz-probe") else { return not_ready("probe id") };
    match tokio::time::timeout(std::time::Duration::from_secs(1), app.node.store.conversation(&probe)).await {
        Ok(Ok(_)) => (StatusCode::OK, Json(Readiness { ready: true, store: Some("ok"), reason: None })),
        Ok(Err(e)) => not_ready(format!("store: {e}")),
        Err(_) => not_ready("store did not answer within 1 s"),
    }
}

/// The metrics, in the Prometheus text format (docs/operations.md lists them).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub(super) async fn metrics(State(app): State<App>) -> String {
    let (users, _) = app.node.presence.online_count();
    app.node.metrics.users_online.set(users as i64);
    if let Some(c) = &app.node.certificate {
        app.node.metrics.certificate_expiry_seconds.set(c.not_after_s());
    }
    app.node.metrics.sample_process(app.node.tasks.len());
    app.node.metrics.render()
}

/// This document: OpenAPI 3.1, every HTTP route of this server.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = serde_json::Value))
)]
pub(super) async fn openapi_json(Extension(OpenApiJson(doc)): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TokenQuery {
    /// The token's user (`sub`).
    #[param(value_type = super::bodies::Id)]
    user_id: String,
    /// The display name claim.
    username: Option<String>,
    /// Lifetime in seconds (default one day, at most 30 days).
    ttl: Option<i64>,
}

/// Dev mode only (SPEC §8): a token for any user.
#[utoipa::path(
    get,
    path = "/dev/token",
    tag = "dev",
    params(TokenQuery),
    responses(
        (status = 200, description = "A token", body = DevToken),
        (status = 400, description = "A bad user id or ttl", body = ErrorBody),
        (status = 403, description = "This server verifies with a public key and cannot mint", body = ErrorBody),
    )
)]
pub(super) async fn dev_token(
    State(app): State<App>,
    super::Params(q): super::Params<TokenQuery>,
) -> Result<Json<DevToken>, ApiError> {
    let user = super::parse_id("user_id", &q.user_id, UserId::parse)?;
    let ttl = q.ttl.unwrap_or(86_400).clamp(1, 30 * 86_400);
    let exp = app.node.clock.now().as_millis() / 1000 + ttl;
    let token = app.node.auth.mint(&user, q.username.as_deref(), exp).ok_or_else(|| {
        ApiError::new(ErrorCode::Forbidden, "this server verifies tokens with a public key and cannot mint them")
    })?;
    Ok(Json(DevToken { token, expires_at: exp }))
}

/// Dev mode only (SPEC §5): the certificate's SHA-256, for `serverCertificateHashes`.
#[utoipa::path(
    get,
    path = "/cert-hash",
    tag = "dev",
    responses(
        (status = 200, description = "The certificate's hash", body = CertHash),
        (status = 404, description = "No TLS listener", body = ErrorBody),
    )
)]
pub(super) async fn cert_hash(State(app): State<App>) -> Result<Json<CertHash>, ApiError> {
    let hex = app.cert_sha256().ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no TLS listener"))?;
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    Ok(Json(CertHash { algorithm: "sha-256", hex, value: bytes }))
}
