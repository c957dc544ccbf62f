//! Client REST (SPEC §5), authenticated with the user's JWT (`Authorization: Bearer`).

use super::{ApiError, App};
use crate::auth::Identity;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use confab_codec::event::MAX_HISTORY_LIMIT;
use confab_codec::{ConversationId, ErrorCode, Seq};
use serde::Deserialize;
use serde_json::{Value, json};

fn identity(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(ErrorCode::Unauthorized, "Authorization: Bearer <token> required".into()))?;
    app.node.auth.verify(token.trim()).map_err(|e| ApiError(e.code(), e.to_string()))
}

/// `GET /v1/chat/conversations`: the user's conversations with unread counts and last message.
pub(super) async fn conversations(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let me = identity(&app, &headers)?;
    let list = app.node.store.conversations_of(&me.user_id).await?;
    let mut rows: Vec<Value> = Vec::with_capacity(list.len());
    for c in list {
        let others: Vec<_> = c.members.iter().filter(|m| **m != me.user_id).collect();
        // Who is online now; `user:online`/`user:offline` keep a connected client current.
        let mut online = Vec::new();
        for m in &others {
            if app.node.presence.get(m).await.online {
                online.push(*m);
            }
        }
        rows.push({
            json!({
                "id": c.id,
                "members": c.members,
                "other_user_ids": others,
                "online_user_ids": online,
                "last_seq": c.last_seq,
                "read_seq": c.read_seq,
                "unread_count": c.unread_count,
                "last_message": c.last_message,
                "updated_at": c.last_message.as_ref().map(|m| m.created_at),
            })
        });
    }
    Ok(Json(json!({"conversations": rows})))
}

#[derive(Deserialize)]
pub(super) struct Page {
    before_seq: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/chat/conversations/{id}/messages?before_seq=&limit=`: a page of history, oldest first.
pub(super) async fn messages(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    super::Params(page): super::Params<Page>,
) -> Result<Json<Value>, ApiError> {
    let me = identity(&app, &headers)?;
    let c = super::parse_id("id", &id, ConversationId::parse)?;
    let info = app
        .node
        .store
        .conversation(&c)
        .await?
        .ok_or_else(|| ApiError(ErrorCode::ConversationNotFound, format!("conversation {c} not found")))?;
    if !info.members.iter().any(|m| m.user_id == me.user_id) {
        return Err(ApiError(ErrorCode::Forbidden, format!("not a member of conversation {c}")));
    }
    let limit = page.limit.unwrap_or(50);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError(
            ErrorCode::ValidationError,
            format!("limit: must be 1 to {MAX_HISTORY_LIMIT}, got {limit}"),
        ));
    }
    let (messages, has_more) = app.node.store.history(&c, page.before_seq.map(Seq), limit).await?;
    Ok(Json(json!({"conversation_id": c, "messages": messages, "has_more": has_more})))
}

/// `GET /v1/attachments/{id}`: a file sent inline with a message (seed 004). The random id
/// in the URL is the capability (an `<img src>` cannot send a token); the type is one of a few
/// safe ones, never HTML, and `nosniff` keeps a browser from guessing otherwise.
pub(super) async fn attachment(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let not_found = || ApiError(ErrorCode::NotFound, format!("attachment {id} not found"));
    if id.len() > 64 || !id.starts_with("att_") {
        return Err(not_found());
    }
    let a = app.node.store.attachment(&id).await?.ok_or_else(not_found)?;
    let ext = a.filename.as_deref().and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
    let content_type = match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "private, max-age=31536000, immutable"),
    ];
    Ok((headers, a.bytes).into_response())
}
