//! The systimz dialect (seed 002): `{type, payload, timestamp, id}`, one conversation per
//! connection (its scope). The mapping, both ways, is `docs/protocol.md` §11.

use super::loose::{self, Fields, Object};
use crate::check::{self, SendParts};
use crate::error::{CodecError, DecodeError, ErrorCode};
use crate::event::client::*;
use crate::event::server::{ErrorData, Message, ServerEnvelope, ServerEvent};
use crate::format::{EncodeError, Format};
use crate::ids::ConversationId;
use crate::values::{MessageKind, PresenceStatus, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};

const NO_SCOPE: &str = "this connection has no conversation: connect with ?conversation_id=";

pub(crate) fn decode_client(
    format: Format,
    bytes: &[u8],
    scope: Option<&ConversationId>,
) -> Result<ClientEnvelope, DecodeError> {
    let (m, kind, request_id) = loose::request(format, bytes, "type", Some("id"))?;
    let fail = loose::in_request(&kind, request_id.as_ref());
    let empty = Object::new();
    let payload = loose::nested(&m, "payload", &empty).map_err(&fail)?;
    let p = Fields { m: payload, path: "payload" };
    let event = match kind.as_str() {
        "message" => message(&p, scope),
        "status" => status(&p, scope),
        "avatar_update" | "connection" | "broadcast" | "system" | "error" => {
            Err(CodecError::InvalidMessageType(format!("{kind} events are sent by the server only")))
        }
        other => Err(CodecError::UnknownType(other.to_owned())),
    }
    .map_err(&fail)?;
    let sent_at = loose::sent_at(&m).map_err(&fail)?;
    Ok(ClientEnvelope { event, request_id, sent_at })
}

fn message(p: &Fields<'_>, scope: Option<&ConversationId>) -> Result<ClientEvent, CodecError> {
    match p.str_opt("type")?.as_deref() {
        None | Some("user") => {}
        Some("ai") => {
            return Err(CodecError::InvalidMessageType(
                "ai messages are posted by the backend through the server API".into(),
            ));
        }
        Some(other) => {
            return Err(CodecError::InvalidMessageType(format!("payload.type must be user or ai, got {other:?}")));
        }
    }
    // Seed 002's metadata is a string; the model's is an object, so it travels as `text`.
    let metadata = match p.m.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = check::short_text("payload.metadata", Some(s.clone()), MAX_TEXT_CHARS)?;
            s.map(|s| [("text".to_owned(), Value::String(s))].into_iter().collect())
        }
        Some(Value::Object(o)) => Some(o.clone()),
        Some(_) => return Err(CodecError::invalid("payload.metadata", "must be a string")),
    };
    let conversation_id = loose::scoped(scope, NO_SCOPE)?;
    check::send(SendParts {
        conversation_id: conversation_id.to_string(),
        content: Some(p.str("content")?),
        kind: None,
        metadata,
        local_id: None,
        reply_to: None,
    })
    .map(ClientEvent::Send)
}

fn status(p: &Fields<'_>, scope: Option<&ConversationId>) -> Result<ClientEvent, CodecError> {
    let here = || loose::scoped(scope, NO_SCOPE).map(|conversation_id| ConversationRef { conversation_id });
    match p.str("status")?.as_str() {
        "typing" => Ok(ClientEvent::TypingStart(here()?)),
        // Back to plain `online`: the user stopped typing (presence follows the connection).
        "online" => Ok(ClientEvent::TypingStop(here()?)),
        "offline" => Ok(ClientEvent::SetStatus(SetStatus { status: PresenceStatus::Offline, message: None })),
        other => {
            Err(CodecError::invalid("payload.status", format!("must be typing, online or offline, got {other:?}")))
        }
    }
}

#[derive(Serialize)]
struct Out<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: Value,
    timestamp: Timestamp,
    id: &'a str,
}

pub(crate) fn encode_server(format: Format, env: &ServerEnvelope, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
    let at = env.timestamp.unwrap_or(Timestamp::EPOCH);
    let (kind, payload) = match &env.event {
        ServerEvent::Established(e) => {
            ("connection", json!({"userId": e.user_id, "connectionId": e.connection_id, "timestamp": at}))
        }
        // The sender's own connection hears its message as `message` once, from the fan-out
        // (which comes after the commit); the separate acknowledgement has no form here.
        ServerEvent::MessageNew(n) => ("message", message_payload(&n.message)),
        ServerEvent::Typing(t) => {
            let status = if t.is_typing { "typing" } else { "online" };
            ("status", json!({"status": status, "userId": t.user_id, "conversationId": t.conversation_id}))
        }
        ServerEvent::UserOnline(u) => ("status", json!({"status": "online", "userId": u.user_id})),
        ServerEvent::UserOffline(u) => ("status", json!({"status": "offline", "userId": u.user_id})),
        ServerEvent::StatusUpdate(s) => {
            let status = if s.status == PresenceStatus::Offline { "offline" } else { "online" };
            ("status", json!({"status": status, "userId": s.user_id}))
        }
        ServerEvent::AvatarUpdate(p) => ("avatar_update", Value::Object(p.0.clone())),
        ServerEvent::Broadcast(p) => {
            let mut p = p.0.clone();
            p.entry("timestamp").or_insert_with(|| json!(at));
            ("broadcast", Value::Object(p))
        }
        ServerEvent::SystemNotice(p) => ("system", Value::Object(p.0.clone())),
        // Seed 002: `system` `shutdown` comes before a graceful shutdown.
        ServerEvent::Closed(c) if c.reason == "server_shutdown" => {
            ("system", json!({"event": "shutdown", "scheduledTime": at, "duration": 0}))
        }
        ServerEvent::Error(e) => ("error", error_payload(e, at)),
        _ => return Ok(false),
    };
    // The request's own id where this answers one (an error names it in its data).
    let answered = match &env.event {
        ServerEvent::Error(e) => e.request_id.as_deref(),
        _ => None,
    };
    let id = env.request_id.as_ref().map(|r| r.as_str()).or(answered).or(env.message_id.as_deref()).unwrap_or("");
    loose::write(format, &Out { kind, payload, timestamp: at, id }, out)
}

fn message_payload(m: &Message) -> Value {
    let kind = match m.kind {
        MessageKind::Ai => "ai",
        MessageKind::System => "system",
        _ => "user",
    };
    let mut p = json!({
        "content": m.content,
        "type": kind,
        "messageType": m.kind.as_str(),
        "messageId": m.id,
        "conversationId": m.conversation_id,
        "userId": m.sender_id,
        "seq": m.seq,
        "createdAt": m.created_at,
    });
    let metadata = match m.metadata.get("text") {
        Some(Value::String(s)) if m.metadata.len() == 1 => Some(s.clone()),
        _ if m.metadata.is_empty() => None,
        _ => serde_json::to_string(&m.metadata).ok(),
    };
    if let (Some(md), Some(o)) = (metadata, p.as_object_mut()) {
        o.insert("metadata".into(), Value::String(md));
    }
    p
}

/// Seed 002's four codes; the model's own code rides along in `details.reason`.
fn error_payload(e: &ErrorData, at: Timestamp) -> Value {
    let code = match e.code {
        ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::TokenInvalid => "AUTH_FAILED",
        ErrorCode::RateLimited => "RATE_LIMIT",
        ErrorCode::InternalError | ErrorCode::ConnectionError | ErrorCode::ServiceUnavailable => "SERVER_ERROR",
        _ => "INVALID_MESSAGE",
    };
    let mut details = match &e.details {
        Some(Value::Object(d)) => d.clone(),
        _ => Object::new(),
    };
    if e.code == ErrorCode::RateLimited {
        let interval = details.get("interval").and_then(Value::as_u64).unwrap_or(1);
        let retry = details.get("retry_after").and_then(Value::as_i64).unwrap_or(1);
        details.insert("interval".into(), json!(interval_name(interval)));
        details.insert("resetTime".into(), json!(at.plus_millis(retry.saturating_mul(1000))));
    }
    details.insert("reason".into(), json!(e.code.as_str()));
    json!({"code": code, "message": e.message, "details": details})
}

fn interval_name(seconds: u64) -> String {
    match seconds {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        n => format!("{n} seconds"),
    }
}
