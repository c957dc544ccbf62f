//! The server API for the app backend (SPEC §5, §8), authenticated with
//! `Authorization: ApiKey KEY`: conversations and their members, published events, system
//! messages, presence.

use super::{ApiError, App, Body};
use crate::session;
use crate::store::NewMessage;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use confab_codec::event::{Left, Metadata, ServerEvent};
use confab_codec::{ConversationId, ErrorCode, MessageKind, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

fn check_key(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|h| h.strip_prefix("ApiKey "));
    // Compared in full whatever the first difference, so timing says nothing about the key.
    let ok = given.is_some_and(|g| {
        let (a, b) = (g.trim().as_bytes(), app.settings.api_key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    if ok { Ok(()) } else { Err(ApiError(ErrorCode::Unauthorized, "Authorization: ApiKey <key> required".into())) }
}

fn users(field: &str, list: &[String]) -> Result<Vec<UserId>, ApiError> {
    let mut out: Vec<UserId> = list
        .iter()
        .map(|m| UserId::parse(m).map_err(|r| ApiError(ErrorCode::ValidationError, format!("{field}: {m:?} {r}"))))
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn conversation_id(id: &str) -> Result<ConversationId, ApiError> {
    super::parse_id("id", id, ConversationId::parse)
}

#[derive(Deserialize)]
pub(super) struct CreateConversation {
    id: Option<String>,
    members: Vec<String>,
    max_members: Option<u32>,
}

/// `POST /api/v1/conversations` `{"id"?, "members", "max_members"?}` → `{"id"}`.
pub(super) async fn create_conversation(
    State(app): State<App>,
    headers: HeaderMap,
    Body(req): Body<CreateConversation>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_key(&app, &headers)?;
    let id = match &req.id {
        Some(id) => conversation_id(id)?,
        None => ConversationId::generate("conv_", rand::random::<u128>() >> 32),
    };
    let members = users("members", &req.members)?;
    if req.max_members.is_some_and(|m| members.len() > m as usize) {
        return Err(ApiError(ErrorCode::ConversationFull, format!("{} members exceed max_members", members.len())));
    }
    let info = app.node.store.create_conversation(id.clone(), members, req.max_members).await?;
    app.node.cache_conversation(info, true);
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

#[derive(Deserialize)]
pub(super) struct SetMembers {
    members: Vec<String>,
}

/// `PUT /api/v1/conversations/{id}/members` `{"members"}`.
pub(super) async fn set_members(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<SetMembers>,
) -> Result<Json<Value>, ApiError> {
    check_key(&app, &headers)?;
    let c = conversation_id(&id)?;
    let members = users("members", &req.members)?;
    if let Some(info) = app.node.store.conversation(&c).await? {
        if info.max_members.is_some_and(|m| members.len() > m as usize) {
            return Err(ApiError(ErrorCode::ConversationFull, format!("{} members exceed max_members", members.len())));
        }
    }
    let info = app.node.store.set_members(&c, members).await?;
    let members: Vec<_> = info.members.iter().map(|m| m.user_id.clone()).collect();
    app.node.cache_conversation(info, true);
    Ok(Json(json!({"id": c, "members": members})))
}

/// `DELETE /api/v1/conversations/{id}`: joined connections hear `conversation:left`.
pub(super) async fn delete_conversation(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_key(&app, &headers)?;
    let c = conversation_id(&id)?;
    app.node.store.delete_conversation(&c).await?;
    let t = app.node.clock.now();
    let ev =
        app.node.hub.shared(ServerEvent::Left(Left { conversation_id: c.clone(), left_at: t }), t, Some(c.clone()));
    for conn in app.node.forget_conversation(&c) {
        conn.send(std::sync::Arc::clone(&ev));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct Publish {
    user_ids: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Metadata,
}

/// `POST /api/v1/publish` `{"user_ids", "type", "data"}`: online users get it now, the others
/// find it in their inbox on their next connection.
pub(super) async fn publish(
    State(app): State<App>,
    headers: HeaderMap,
    Body(req): Body<Publish>,
) -> Result<Json<Value>, ApiError> {
    check_key(&app, &headers)?;
    let users = users("user_ids", &req.user_ids)?;
    let online = session::publish(&app.node, &users, &req.kind, req.data)
        .await
        .map_err(|e| ApiError(ErrorCode::ValidationError, e))?;
    Ok(Json(json!({"delivered": online, "queued": users.len() - online})))
}

#[derive(Deserialize)]
pub(super) struct PostMessage {
    content: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    /// Who the message is from: `system` unless given (an AI assistant's id for `type: "ai"`).
    #[serde(default)]
    sender_id: Option<String>,
}

/// `POST /api/v1/conversations/{id}/messages` `{"content", "type": "system", "sender_id"?}`: a
/// message from the backend, stored and fanned out like any other (sender `system` by default).
pub(super) async fn post_message(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(req): Body<PostMessage>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_key(&app, &headers)?;
    let c = conversation_id(&id)?;
    let kind = match req.kind.as_deref() {
        None | Some("system") => MessageKind::System,
        Some(other) => MessageKind::from_name(other)
            .ok_or_else(|| ApiError(ErrorCode::InvalidMessageType, format!("unknown message type {other:?}")))?,
    };
    let n = req.content.chars().count();
    if n == 0 || n > confab_codec::event::MAX_TEXT_CHARS {
        return Err(ApiError(ErrorCode::ValidationError, format!("content: must be 1 to 2000 characters, got {n}")));
    }
    let info = app
        .node
        .store
        .conversation(&c)
        .await?
        .ok_or_else(|| ApiError(ErrorCode::ConversationNotFound, format!("conversation {c} not found")))?;
    app.node.cache_conversation(info, false);
    let sender = super::parse_id("sender_id", req.sender_id.as_deref().unwrap_or("system"), UserId::parse)?;
    let appended = app
        .node
        .store
        .append(NewMessage {
            conversation_id: c,
            sender_id: sender,
            kind,
            content: req.content,
            metadata: req.metadata,
            local_id: None,
            reply_to: None,
            created_at: app.node.clock.now(),
            requester: None,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"message": appended.message}))))
}

/// `GET /api/v1/presence/{user_id}`.
pub(super) async fn presence(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_key(&app, &headers)?;
    let user = super::parse_id("user_id", &user, UserId::parse)?;
    let p = app.node.presence.get(&user).await;
    Ok(Json(json!({
        "user_id": user,
        "online": p.online,
        "status": p.status,
        "message": p.message,
        "last_seen": p.last_seen,
        "connections": p.connections,
    })))
}
