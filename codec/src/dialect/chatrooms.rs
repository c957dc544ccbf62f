//! The chatrooms dialect (seed 003): `{type, data}`. A chat socket
//! (`/api/v1/ws/chat/{chatId}`) is scoped to its chat; the personal socket
//! (`/api/v1/ws/{userId}`) hears direct messages from all the user's chats. The mapping, both
//! ways, is `docs/protocol.md` §12.

use super::loose::{self, Fields, Object};
use crate::check::{self, SendParts};
use crate::error::{CodecError, DecodeError};
use crate::event::client::*;
use crate::event::server::{Message, MessageNew, Sender, ServerEnvelope, ServerEvent};
use crate::format::{EncodeError, Format};
use crate::ids::{ConversationId, MessageId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

const NO_SCOPE: &str = "this request needs a chat socket: /api/v1/ws/chat/{chatId}";
/// The metadata key that marks a message as direct, naming its recipient.
const RECIPIENT: &str = "recipient_id";

pub(crate) fn decode_client(
    format: Format,
    bytes: &[u8],
    scope: Option<&ConversationId>,
) -> Result<ClientEnvelope, DecodeError> {
    let (m, kind, _) = loose::request(format, bytes, "type", None)?;
    let fail = loose::in_request(&kind, None);
    let empty = Object::new();
    let data = loose::nested(&m, "data", &empty).map_err(&fail)?;
    let d = Fields { m: data, path: "data" };
    let here = || loose::scoped(scope, NO_SCOPE);
    let event = match kind.as_str() {
        "send_message" => here().and_then(|c| send(&d, c, None)),
        "direct_message" => direct(&d, scope),
        // `user_id` is the client's own id in the seed; the server knows who is typing.
        "typing_indicator" => here().and_then(|conversation_id| {
            let r = ConversationRef { conversation_id };
            Ok(if d.bool("is_typing")? { ClientEvent::TypingStart(r) } else { ClientEvent::TypingStop(r) })
        }),
        "read_receipt" => here().and_then(|conversation_id| {
            Ok(ClientEvent::Read(ReadMark::new(conversation_id, d.id("message_id", MessageId::parse)?)))
        }),
        "new_message" | "new_direct_message" => {
            Err(CodecError::InvalidMessageType(format!("{kind} events are sent by the server only")))
        }
        other => Err(CodecError::UnknownType(other.to_owned())),
    }
    .map_err(&fail)?;
    Ok(ClientEnvelope { event, request_id: None, sent_at: None })
}

fn send(d: &Fields<'_>, c: ConversationId, recipient: Option<UserId>) -> Result<ClientEvent, CodecError> {
    let metadata = recipient.map(|r| [(RECIPIENT.to_owned(), Value::String(r.to_string()))].into_iter().collect());
    check::send(SendParts {
        conversation_id: c.to_string(),
        content: Some(d.str("content")?),
        kind: d.str_opt("message_type")?,
        metadata,
        local_id: None,
        reply_to: d.str_opt("parent_message_id")?,
    })
    .map(ClientEvent::Send)
}

/// A direct message is a message in the chat `chat_id` (the socket's own chat when absent),
/// marked with its recipient, so the recipient's personal socket hears it.
fn direct(d: &Fields<'_>, scope: Option<&ConversationId>) -> Result<ClientEvent, CodecError> {
    let recipient = d.id("recipient_id", UserId::parse)?;
    let chat = match d.str_opt("chat_id")? {
        Some(c) => ConversationId::parse(&c).map_err(|r| CodecError::invalid("data.chat_id", r))?,
        None => loose::scoped(scope, "data.chat_id: required on the personal socket")?,
    };
    send(d, chat, Some(recipient))
}

#[derive(Serialize)]
struct Out {
    #[serde(rename = "type")]
    kind: &'static str,
    data: Value,
}

pub(crate) fn encode_server(
    format: Format,
    env: &ServerEnvelope,
    personal: bool,
    out: &mut Vec<u8>,
) -> Result<bool, EncodeError> {
    let (kind, data) = match &env.event {
        // The sender hears its own message from the fan-out, as seed 003's component expects;
        // the separate acknowledgement has no form here.
        ServerEvent::MessageNew(MessageNew { message, sender }) => match message_event(personal, message) {
            Some(kind) => (kind, message_data(message, sender)),
            None => return Ok(false),
        },
        ServerEvent::Typing(t) if !personal => (
            "typing_indicator",
            json!({"is_typing": t.is_typing, "user_id": t.user_id, "chat_id": t.conversation_id, "username": t.username}),
        ),
        ServerEvent::Viewed(v) if !personal => (
            "read_receipt",
            json!({"message_id": v.message_id, "user_id": v.user_id, "chat_id": v.conversation_id, "read_at": v.viewed_at}),
        ),
        ServerEvent::Error(e) => ("error", json!({"code": e.code, "message": e.message, "details": e.details})),
        _ => return Ok(false),
    };
    loose::write(format, &Out { kind, data }, out)
}

/// Which event a message is on this socket: every message on a chat socket; only direct ones
/// on the personal socket.
fn message_event(personal: bool, m: &Message) -> Option<&'static str> {
    match (personal, m.metadata.contains_key(RECIPIENT)) {
        (false, _) => Some("new_message"),
        (true, true) => Some("new_direct_message"),
        (true, false) => None,
    }
}

fn message_data(m: &Message, sender: &Sender) -> Value {
    json!({
        "id": m.id,
        "chat_id": m.conversation_id,
        "sender_id": m.sender_id,
        "content": m.content,
        "message_type": m.kind.as_str(),
        "parent_message_id": m.reply_to,
        "recipient_id": m.metadata.get(RECIPIENT),
        "seq": m.seq,
        "created_at": m.created_at,
        "updated_at": m.updated_at.unwrap_or(m.created_at),
        "sender": {
            "id": m.sender_id,
            "username": sender.username,
            "avatar_url": sender.avatar_url,
            "email": null,
            "is_active": true,
            "created_at": null,
        },
    })
}
