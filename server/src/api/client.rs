//! Client REST (SPEC §5), authenticated with the user's JWT (`Authorization: Bearer`).

use super::bodies::{ConversationList, ConversationRow, ErrorBody, HistoryPage};
use super::{ApiError, App, Segment};
use crate::auth::Identity;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use confab_codec::event::MAX_HISTORY_LIMIT;
use confab_codec::{ConversationId, ErrorCode, Seq};
use serde::Deserialize;

fn identity(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization: Bearer <token> required"))?;
    app.node.auth.verify(token.trim()).map_err(|e| ApiError::new(e.code(), e.to_string()))
}

/// The user's conversations, with unread counts, the last message and who is online.
#[utoipa::path(
    get,
    path = "/v1/chat/conversations",
    tag = "client",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's conversations", body = ConversationList),
        (status = 401, description = "No token, or an expired or invalid one", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn conversations(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<ConversationList>, ApiError> {
    let me = identity(&app, &headers)?;
    let list = app.node.store.conversations_of(&me.user_id).await?;
    let mut rows = Vec::with_capacity(list.len());
    for c in list {
        let others: Vec<_> = c.members.iter().filter(|m| **m != me.user_id).cloned().collect();
        // Who is online now; `user:online`/`user:offline` keep a connected client current.
        let mut online = Vec::new();
        for m in &others {
            if app.node.presence.get(m).await.online {
                online.push(m.clone());
            }
        }
        rows.push(ConversationRow {
            updated_at: c.last_message.as_ref().map(|m| m.created_at),
            id: c.id,
            members: c.members,
            other_user_ids: others,
            online_user_ids: online,
            last_seq: c.last_seq,
            read_seq: c.read_seq,
            unread_count: c.unread_count,
            last_message: c.last_message,
        });
    }
    Ok(Json(ConversationList { conversations: rows }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// Messages before this sequence number (the first one of the page before).
    before_seq: Option<u64>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of a conversation's history, oldest first.
#[utoipa::path(
    get,
    path = "/v1/chat/conversations/{id}/messages",
    tag = "client",
    security(("bearer" = [])),
    params(("id" = super::bodies::Id, Path, description = "The conversation"), Page),
    responses(
        (status = 200, description = "Up to `limit` messages before `before_seq`", body = HistoryPage),
        (status = 400, description = "A bad id, `before_seq` or `limit`", body = ErrorBody),
        (status = 401, description = "No token, or an expired or invalid one", body = ErrorBody),
        (status = 403, description = "The caller is not a member", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn messages(
    State(app): State<App>,
    headers: HeaderMap,
    Segment(id): Segment,
    super::Params(page): super::Params<Page>,
) -> Result<Json<HistoryPage>, ApiError> {
    let me = identity(&app, &headers)?;
    let c = super::parse_id("id", &id, ConversationId::parse)?;
    let info = super::existing_conversation(&app, &c).await?;
    if !info.members.iter().any(|m| m.user_id == me.user_id) {
        return Err(ApiError::new(ErrorCode::Forbidden, format!("not a member of conversation {c}")));
    }
    let limit = page.limit.unwrap_or(50);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            format!("limit: must be 1 to {MAX_HISTORY_LIMIT}, got {limit}"),
        ));
    }
    // Stores keep sequence numbers as signed 64-bit integers; anything above is "before all".
    let before = page.before_seq.map(|s| Seq(s.min(i64::MAX as u64)));
    let (messages, has_more) = app.node.store.history(&c, before, limit).await?;
    Ok(Json(HistoryPage { conversation_id: c, messages, has_more }))
}

/// A file sent inline with a message (seed 004). The random id in the URL is the capability (an
/// `<img src>` cannot send a token); the type is one of a few safe ones, never HTML, and
/// `nosniff` keeps a browser from guessing otherwise.
#[utoipa::path(
    get,
    path = "/v1/attachments/{id}",
    tag = "client",
    params(("id" = super::bodies::Id, Path, description = "The attachment's id (`att_...`), from the message")),
    responses(
        (status = 200, description = "The file: an image, a PDF, plain text, or octets", content(
            ("image/jpeg"), ("image/png"), ("image/gif"), ("image/webp"), ("application/pdf"),
            ("text/plain; charset=utf-8"), ("application/octet-stream"),
        )),
        (status = 400, description = "A path that is not text", body = ErrorBody),
        (status = 404, description = "No such attachment", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn attachment(
    State(app): State<App>,
    Segment(id): Segment,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let not_found = || ApiError::new(ErrorCode::NotFound, format!("attachment {id} not found"));
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
