//! The server API for the app backend (SPEC §5, §8), authenticated with
//! `Authorization: ApiKey KEY`: conversations and their members, published events, system
//! messages, presence.

use super::bodies::{
    CreateConversation, Created, ErrorBody, Members, PostMessage, Posted, Presence, Publish, Published, SetMembers,
};
use super::{ApiError, App, Body, Segment};
use crate::session;
use crate::store::NewMessage;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use confab_codec::event::{Left, ServerEvent};
use confab_codec::{ConversationId, ErrorCode, MessageKind, UserId};

pub(super) fn check_key(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|h| h.strip_prefix("ApiKey "));
    // Compared in full whatever the first difference, so timing says nothing about the key.
    let ok = given.is_some_and(|g| {
        let (a, b) = (g.trim().as_bytes(), app.settings.api_key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    if ok { Ok(()) } else { Err(ApiError::new(ErrorCode::Unauthorized, "Authorization: ApiKey <key> required")) }
}

fn users(field: &str, list: &[String]) -> Result<Vec<UserId>, ApiError> {
    let mut out: Vec<UserId> = list
        .iter()
        .map(|m| UserId::parse(m).map_err(|r| ApiError::new(ErrorCode::ValidationError, format!("{field}: {m:?} {r}"))))
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn conversation_id(id: &str) -> Result<ConversationId, ApiError> {
    super::parse_id("id", id, ConversationId::parse)
}

/// Creates a conversation with its members.
#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "server",
    security(("api_key" = [])),
    request_body = CreateConversation,
    responses(
        (status = 201, description = "Created", body = Created),
        (status = 400, description = "A bad body or id; or the id is taken", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
        (status = 409, description = "More members than `max_members`", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn create_conversation(
    State(app): State<App>,
    headers: HeaderMap,
    Body(req): Body<CreateConversation>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    check_key(&app, &headers)?;
    let id = match &req.id {
        Some(id) => conversation_id(id)?,
        None => ConversationId::generate("conv_", rand::random::<u128>() >> 32),
    };
    let members = users("members", &req.members)?;
    if req.max_members.is_some_and(|m| members.len() > m as usize) {
        return Err(ApiError::new(
            ErrorCode::ConversationFull,
            format!("{} members exceed max_members", members.len()),
        ));
    }
    let info = app.node.store.create_conversation(id.clone(), members, req.max_members).await?;
    app.node.cache_conversation(info, true);
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// Replaces a conversation's members; those removed hear `conversation:left`.
#[utoipa::path(
    put,
    path = "/api/v1/conversations/{id}/members",
    tag = "server",
    security(("api_key" = [])),
    params(("id" = super::bodies::Id, Path, description = "The conversation")),
    request_body = SetMembers,
    responses(
        (status = 200, description = "The members now", body = Members),
        (status = 400, description = "A bad body or id", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "More members than `max_members`", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn set_members(
    State(app): State<App>,
    headers: HeaderMap,
    Segment(id): Segment,
    Body(req): Body<SetMembers>,
) -> Result<Json<Members>, ApiError> {
    check_key(&app, &headers)?;
    let c = conversation_id(&id)?;
    let members = users("members", &req.members)?;
    if let Some(info) = app.node.store.conversation(&c).await? {
        if info.max_members.is_some_and(|m| members.len() > m as usize) {
            return Err(ApiError::new(
                ErrorCode::ConversationFull,
                format!("{} members exceed max_members", members.len()),
            ));
        }
    }
    let info = app.node.store.set_members(&c, members).await?;
    let members: Vec<_> = info.members.iter().map(|m| m.user_id.clone()).collect();
    app.node.cache_conversation(info, true);
    Ok(Json(Members { id: c, members }))
}

/// Deletes a conversation and its messages; joined connections hear `conversation:left`.
#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}",
    tag = "server",
    security(("api_key" = [])),
    params(("id" = super::bodies::Id, Path, description = "The conversation")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A bad id", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn delete_conversation(
    State(app): State<App>,
    headers: HeaderMap,
    Segment(id): Segment,
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

/// An app event (`match:new`...) for some users: online users get it now, the others find it in
/// their inbox at their next connection.
#[utoipa::path(
    post,
    path = "/api/v1/publish",
    tag = "server",
    security(("api_key" = [])),
    request_body = Publish,
    responses(
        (status = 200, description = "Told or queued", body = Published),
        (status = 400, description = "A bad body, user id or event type", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
        (status = 503, description = "The store cannot be reached", body = ErrorBody),
    )
)]
pub(super) async fn publish(
    State(app): State<App>,
    headers: HeaderMap,
    Body(req): Body<Publish>,
) -> Result<Json<Published>, ApiError> {
    check_key(&app, &headers)?;
    let users = users("user_ids", &req.user_ids)?;
    let online = session::publish(&app.node, &users, &req.kind, req.data)
        .await
        .map_err(|e| ApiError::new(ErrorCode::ValidationError, e))?;
    Ok(Json(Published { delivered: online, queued: users.len() - online }))
}

/// A message from the backend, stored and fanned out like any other (sender `system` by
/// default).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "server",
    security(("api_key" = [])),
    params(("id" = super::bodies::Id, Path, description = "The conversation")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "Stored and sent to the members", body = Posted),
        (status = 400, description = "A bad body, id, content or message type", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 429, description = "The sender's message limits are spent", body = ErrorBody),
        (status = 503, description = "The store cannot be reached or refuses writes", body = ErrorBody),
    )
)]
pub(super) async fn post_message(
    State(app): State<App>,
    headers: HeaderMap,
    Segment(id): Segment,
    Body(req): Body<PostMessage>,
) -> Result<(StatusCode, Json<Posted>), ApiError> {
    check_key(&app, &headers)?;
    let c = conversation_id(&id)?;
    let kind = match req.kind.as_deref() {
        None | Some("system") => MessageKind::System,
        Some(other) => MessageKind::from_name(other)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidMessageType, format!("unknown message type {other:?}")))?,
    };
    let n = req.content.chars().count();
    if n == 0 || n > confab_codec::event::MAX_TEXT_CHARS {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            format!("content: must be 1 to 2000 characters, got {n}"),
        ));
    }
    confab_codec::storable("content", &req.content)
        .map_err(|e| ApiError::new(ErrorCode::ValidationError, e.to_string()))?;
    let info = super::existing_conversation(&app, &c).await?;
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
    Ok((StatusCode::CREATED, Json(Posted { message: appended.message })))
}

/// A user's presence: online, status, last seen, connections on every node.
#[utoipa::path(
    get,
    path = "/api/v1/presence/{user_id}",
    tag = "server",
    security(("api_key" = [])),
    params(("user_id" = super::bodies::Id, Path, description = "The user")),
    responses(
        (status = 200, description = "The user's presence", body = Presence),
        (status = 400, description = "A bad user id", body = ErrorBody),
        (status = 401, description = "No API key, or a wrong one", body = ErrorBody),
    )
)]
pub(super) async fn presence(
    State(app): State<App>,
    headers: HeaderMap,
    Segment(user): Segment,
) -> Result<Json<Presence>, ApiError> {
    check_key(&app, &headers)?;
    let user = super::parse_id("user_id", &user, UserId::parse)?;
    let p = app.node.presence.get(&user).await;
    Ok(Json(Presence::of(user, p)))
}
