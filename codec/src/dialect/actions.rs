//! The actions dialect (seed 004): requests `{action, ...fields}`, events `{type, data}`
//! (`chat_message` carries `message`, `error` carries `error`). A connection listens to all
//! of its user's conversations; `local_id` is the request id, so failures carry it back.
//! The mapping, both ways, is `docs/protocol.md` §13.

use super::loose::{self, Fields};
use crate::check::{self, SendParts};
use crate::error::{CodecError, DecodeError};
use crate::event::client::*;
use crate::event::server::{ErrorData, Message, ServerEnvelope, ServerEvent, Viewed};
use crate::format::{EncodeError, Format};
use crate::ids::{ConversationId, MessageId, RequestId};
use crate::values::{Timestamp, char_len};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};

/// Most ids in one `mark_read`.
pub(crate) const MAX_READ_IDS: usize = 100;

pub(crate) fn decode_client(format: Format, bytes: &[u8]) -> Result<ClientEnvelope, DecodeError> {
    let (m, kind, local_id) = loose::request(format, bytes, "action", Some("local_id"))?;
    let f = Fields { m: &m, path: "" };
    // `local_id` names a send; other actions carry none.
    let request_id = local_id.filter(|_| kind == "send_message");
    let fail = loose::in_request(&kind, request_id.as_ref());
    let conversation = || f.id("conversation_id", ConversationId::parse);
    let event = match kind.as_str() {
        "send_message" => send(&f),
        "typing" => conversation().and_then(|conversation_id| {
            let r = ConversationRef { conversation_id };
            Ok(if f.bool("is_typing")? { ClientEvent::TypingStart(r) } else { ClientEvent::TypingStop(r) })
        }),
        "mark_read" => conversation().and_then(|conversation_id| read_mark(&f, conversation_id)),
        "heartbeat" => Ok(ClientEvent::Heartbeat(Heartbeat::default())),
        other => Err(CodecError::UnknownType(other.to_owned())),
    }
    .map_err(&fail)?;
    let sent_at = loose::sent_at(&m).map_err(&fail)?;
    Ok(ClientEnvelope { event, request_id, sent_at })
}

fn send(f: &Fields<'_>) -> Result<ClientEvent, CodecError> {
    let attachments = attachments(f)?;
    let content = f.str_opt("content")?.unwrap_or_default();
    // A message may be only its attachments; the text checks apply to text that is there.
    let blank_with_files = content.trim().is_empty() && !attachments.is_empty();
    let mut msg = check::send(SendParts {
        conversation_id: f.str("conversation_id")?,
        content: Some(if blank_with_files { "-".into() } else { content }),
        kind: None,
        metadata: None,
        local_id: f.str_opt("local_id")?,
        reply_to: f.str_opt("reply_to")?,
    })?;
    if blank_with_files {
        msg.content.clear();
    }
    msg.attachments = attachments;
    Ok(ClientEvent::Send(msg))
}

/// `mark_read` names the messages read, in any order. Every one is kept (a repeated id once):
/// the server reports each one that exists as read, and moves the watermark to the newest.
fn read_mark(f: &Fields<'_>, conversation_id: ConversationId) -> Result<ClientEvent, CodecError> {
    let ids = f.array("message_ids")?.ok_or_else(|| CodecError::invalid("message_ids", "required"))?;
    if ids.is_empty() || ids.len() > MAX_READ_IDS {
        return Err(CodecError::invalid(
            "message_ids",
            format!("must hold 1 to {MAX_READ_IDS} ids, got {}", ids.len()),
        ));
    }
    let mut listed: Vec<MessageId> = Vec::with_capacity(ids.len());
    for (i, v) in ids.iter().enumerate() {
        let s = v.as_str().ok_or_else(|| CodecError::invalid(format!("message_ids[{i}]"), "must be a string"))?;
        let id = MessageId::parse(s).map_err(|r| CodecError::invalid(format!("message_ids[{i}]"), r))?;
        if !listed.contains(&id) {
            listed.push(id);
        }
    }
    let last = listed.pop().ok_or_else(|| CodecError::invalid("message_ids", "required"))?;
    Ok(ClientEvent::Read(ReadMark { conversation_id, message_id: last, others: listed }))
}

fn attachments(f: &Fields<'_>) -> Result<Vec<Attachment>, CodecError> {
    let Some(list) = f.array("attachments")? else { return Ok(Vec::new()) };
    if list.len() > MAX_ATTACHMENTS {
        return Err(CodecError::invalid(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} per message, got {}", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let field = |name: &str| format!("attachments[{i}].{name}");
            let o =
                v.as_object().ok_or_else(|| CodecError::invalid(format!("attachments[{i}]"), "must be an object"))?;
            let a = Fields { m: o, path: "" };
            let kind = a.str("type").map_err(|_| CodecError::invalid(field("type"), "required: a string"))?;
            if kind.is_empty()
                || char_len(&kind) > 32
                || !kind.chars().all(|c| c.is_ascii_alphanumeric() || "-_/.".contains(c))
            {
                return Err(CodecError::invalid(field("type"), "must be 1 to 32 characters of A-Z a-z 0-9 - _ / ."));
            }
            let filename =
                a.str_opt("filename").map_err(|_| CodecError::invalid(field("filename"), "must be a string"))?;
            let filename = check::short_text(&field("filename"), filename, MAX_FILENAME_CHARS)?;
            if filename.as_deref().is_some_and(|n| n.chars().any(|c| c.is_control() || c == '/' || c == '\\')) {
                return Err(CodecError::invalid(field("filename"), "must not hold control characters or slashes"));
            }
            let file = a.str("file").map_err(|_| CodecError::invalid(field("file"), "required: base64 content"))?;
            // A browser's `readAsDataURL` gives `data:<type>;base64,<content>`.
            let b64 = match file.split_once(";base64,") {
                Some((head, rest)) if head.starts_with("data:") => rest,
                _ => file.as_str(),
            };
            let bytes = decode_base64(b64.trim())
                .map_err(|e| CodecError::invalid(field("file"), format!("not base64: {e}")))?;
            if bytes.is_empty() {
                return Err(CodecError::invalid(field("file"), "must not be empty"));
            }
            Ok(Attachment { kind, filename, bytes })
        })
        .collect()
}

/// Base64 as clients write it: the standard alphabet or the URL-safe one, padded or not,
/// with or without zeroed trailing bits.
fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let alphabet = if s.contains(['-', '_']) { &URL_SAFE } else { &STANDARD };
    GeneralPurpose::new(alphabet, config).decode(s)
}

#[derive(Serialize)]
struct Out {
    #[serde(rename = "type")]
    kind: &'static str,
    data: Value,
}

#[derive(Serialize)]
struct MessageOut {
    #[serde(rename = "type")]
    kind: &'static str,
    message: Value,
}

#[derive(Serialize)]
struct ErrorOut {
    #[serde(rename = "type")]
    kind: &'static str,
    error: Value,
}

pub(crate) fn encode_server(format: Format, env: &ServerEnvelope, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
    let at = env.timestamp.unwrap_or(Timestamp::EPOCH);
    let (kind, data) = match &env.event {
        ServerEvent::MessageSent(m) => {
            return loose::write(format, &MessageOut { kind: "chat_message", message: message(m) }, out);
        }
        // The same `chat_message` as the acknowledgement (same id, local_id and status), so a
        // sender that hears both keeps one (seed 004 dedupes by id).
        ServerEvent::MessageNew(n) => {
            let mut m = message(&n.message);
            if let Some(o) = m.as_object_mut() {
                o.insert("sender".into(), json!(n.sender));
            }
            return loose::write(format, &MessageOut { kind: "chat_message", message: m }, out);
        }
        ServerEvent::Error(e) => {
            return loose::write(format, &ErrorOut { kind: "error", error: error(e, env.request_id.as_ref()) }, out);
        }
        ServerEvent::Established(e) => (
            "connection.established",
            json!({
                "client_id": e.connection_id,
                "user_id": e.user_id,
                "active_conversations": e.active_conversations.as_deref().unwrap_or_default(),
                "timestamp": e.timestamp.unwrap_or(at),
            }),
        ),
        ServerEvent::Typing(t) => (
            "typing_indicator",
            json!({"user_id": t.user_id, "conversation_id": t.conversation_id, "is_typing": t.is_typing, "timestamp": t.timestamp.unwrap_or(at)}),
        ),
        ServerEvent::Viewed(v) => (
            "messages_read",
            json!({"user_id": v.user_id, "conversation_id": v.conversation_id, "message_ids": read_ids(v), "timestamp": v.viewed_at}),
        ),
        ServerEvent::Heartbeat(h) => ("heartbeat", json!({"server_time": h.server_time.unwrap_or(at)})),
        _ => return Ok(false),
    };
    loose::write(format, &Out { kind, data }, out)
}

/// Every message a read names: those its request listed, or the one it read up to.
fn read_ids(v: &Viewed) -> &[MessageId] {
    if v.message_ids.is_empty() { std::slice::from_ref(&v.message_id) } else { &v.message_ids }
}

fn message(m: &Message) -> Value {
    json!({
        "id": m.id,
        "local_id": m.local_id,
        "sender_id": m.sender_id,
        "conversation_id": m.conversation_id,
        "content": m.content,
        "message_type": m.kind.as_str(),
        "reply_to": m.reply_to,
        "seq": m.seq,
        "sent_at": m.created_at,
        "status": "sent",
        "attachments": m.metadata.get("attachments").cloned().unwrap_or_else(|| json!([])),
    })
}

/// Seed 004's only code is `MESSAGE_FAILED`, for a failed send; the model's code rides along
/// in `reason`. Other failures carry the model's code itself.
fn error(e: &ErrorData, request_id: Option<&RequestId>) -> Value {
    // Decode errors name the dialect's request; the session's name the model's event.
    let failed_send = matches!(e.request_event.as_deref(), Some("send_message" | "message:send"));
    let code = if failed_send { "MESSAGE_FAILED" } else { e.code.as_str() };
    let local_id = e.request_id.as_deref().or(request_id.map(RequestId::as_str));
    json!({"code": code, "reason": e.code, "message": e.message, "local_id": local_id, "details": e.details})
}
