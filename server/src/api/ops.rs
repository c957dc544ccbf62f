//! Operations endpoints: health, metrics, and the dev-mode token minting.

use super::{ApiError, App};
use axum::Json;
use axum::extract::State;
use confab_codec::{ErrorCode, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: ready to take traffic (the listeners are bound, or this would not answer):
/// the store answers within a second, takes writes, and the server is not shutting down. 503
/// otherwise, with the reason.
pub(super) async fn readyz(State(app): State<App>) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode;
    if app.node.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": "shutting down"})));
    }
    // Cluster mode: a node that cannot hear the others would show its clients a partial chat.
    if let Err(why) = app.node.broker.healthy() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": why})));
    }
    // Writes have been failing (a full disk): try one, since a node out of rotation may get
    // none from clients to learn that they work again.
    if let Err(why) = app.node.store.writable() {
        let probe = tokio::time::timeout(std::time::Duration::from_secs(1), app.node.store.probe_write()).await;
        if !matches!(probe, Ok(Ok(()))) {
            let reason = format!("store refusing writes: {why}");
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": reason})));
        }
    }
    let Ok(probe) = confab_codec::ConversationId::parse("readyz-probe") else {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"ready": false, "reason": "probe id"})));
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), app.node.store.conversation(&probe)).await {
        Ok(Ok(_)) => (StatusCode::OK, Json(json!({"ready": true, "store": "ok"}))),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": format!("store: {e}")}))),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "store did not answer within 1 s"})),
        ),
    }
}

/// Prometheus / OpenMetrics text format.
pub(super) async fn metrics(State(app): State<App>) -> String {
    let (users, _) = app.node.presence.online_count();
    app.node.metrics.users_online.set(users as i64);
    app.node.metrics.sample_process(app.node.tasks.len());
    app.node.metrics.render()
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    user_id: String,
    username: Option<String>,
    /// Lifetime in seconds (default one day).
    ttl: Option<i64>,
}

/// Dev mode only (SPEC §8): `GET /dev/token?user_id=ID&username=NAME` → `{"token"}`.
pub(super) async fn dev_token(
    State(app): State<App>,
    super::Params(q): super::Params<TokenQuery>,
) -> Result<Json<Value>, ApiError> {
    let user = super::parse_id("user_id", &q.user_id, UserId::parse)?;
    let ttl = q.ttl.unwrap_or(86_400).clamp(1, 30 * 86_400);
    let exp = app.node.clock.now().as_millis() / 1000 + ttl;
    let token = app.node.auth.mint(&user, q.username.as_deref(), exp).ok_or_else(|| {
        ApiError(ErrorCode::InternalError, "this server verifies tokens with a public key and cannot mint them".into())
    })?;
    Ok(Json(json!({"token": token, "expires_at": exp})))
}

/// Dev mode only (SPEC §5): the certificate's SHA-256, for `serverCertificateHashes`.
pub(super) async fn cert_hash(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let hex = app.cert_sha256().ok_or_else(|| ApiError(ErrorCode::NotFound, "no TLS listener".into()))?;
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    Ok(Json(json!({"algorithm": "sha-256", "hex": hex, "value": bytes})))
}
