//! Field checks shared by every dialect: turn a wire value into a domain value, or into a
//! [`CodecError`] that names the field and says what is wrong in words a client developer
//! understands. Each dialect's wire types call these; none of them knows a dialect.

use crate::error::CodecError;
use crate::event::client::{MAX_GIFT_CHARS, MAX_PHOTO_BYTES, MAX_TEXT_CHARS, MAX_URL_CHARS, Metadata, SendMessage};
use crate::ids::{ConversationId, LocalId, MessageId};
use crate::values::{MessageKind, char_len};
use serde_json::Value;

/// Builds an id, naming `field` in the error.
pub(crate) fn id<T>(field: &str, s: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, CodecError> {
    parse(s).map_err(|reason| CodecError::invalid(field, reason))
}

/// Text that a store can keep: no U+0000 (PostgreSQL's `text` cannot hold it, and no client
/// means it).
pub fn storable(field: &str, s: &str) -> Result<(), CodecError> {
    if s.contains('\0') {
        return Err(CodecError::invalid(field, "must not contain the NUL character (U+0000)"));
    }
    Ok(())
}

/// An optional free text of at most `max` characters; longer is a validation error.
pub(crate) fn short_text(field: &str, s: Option<String>, max: usize) -> Result<Option<String>, CodecError> {
    match s {
        Some(s) if char_len(&s) > max => {
            Err(CodecError::invalid(field, format!("must be at most {max} characters, got {}", char_len(&s))))
        }
        Some(s) => {
            storable(field, &s)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

/// Text of `1..=max` characters. Over the limit is `MESSAGE_TOO_LARGE`; empty (or only
/// whitespace) is a validation error.
pub(crate) fn content_text(field: &'static str, s: &str, max: usize) -> Result<(), CodecError> {
    let n = char_len(s);
    if n > max {
        return Err(CodecError::TooLong { field, min: 1, max, got: n });
    }
    if s.trim().is_empty() {
        return Err(CodecError::invalid(field, format!("must be 1 to {max} characters, got {n} (blank)")));
    }
    storable(field, s)
}

/// An absolute `http`/`https` URL with no whitespace or control characters.
pub(crate) fn url(field: &str, s: &str) -> Result<(), CodecError> {
    let n = char_len(s);
    if n > MAX_URL_CHARS {
        return Err(CodecError::invalid(field, format!("must be at most {MAX_URL_CHARS} characters, got {n}")));
    }
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.chars().any(|c| c.is_whitespace() || c.is_control()) => Ok(()),
        _ => Err(CodecError::invalid(field, "must be an absolute http(s) URL")),
    }
}

/// Checks a message's content against its kind (SPEC §4 "Message types and limits").
fn body(kind: MessageKind, content: &str, metadata: &Metadata) -> Result<(), CodecError> {
    match kind {
        MessageKind::Text => content_text("content", content, MAX_TEXT_CHARS),
        MessageKind::Photo | MessageKind::PhotoEphemeral => {
            url("content", content)?;
            match metadata.get("size_bytes") {
                None => Ok(()),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= MAX_PHOTO_BYTES => Ok(()),
                    Some(n) => Err(CodecError::PhotoTooLarge { bytes: n }),
                    None => Err(CodecError::invalid("metadata.size_bytes", "must be a non-negative integer")),
                },
            }
        }
        MessageKind::Location => {
            coordinate(metadata, "lat", 90.0)?;
            coordinate(metadata, "lng", 180.0)?;
            if char_len(content) > MAX_TEXT_CHARS {
                return Err(CodecError::TooLong {
                    field: "content",
                    min: 0,
                    max: MAX_TEXT_CHARS,
                    got: char_len(content),
                });
            }
            storable("content", content)
        }
        MessageKind::Gift => content_text("content", content, MAX_GIFT_CHARS),
        MessageKind::System => {
            Err(CodecError::InvalidMessageType("system messages are sent by the server only".into()))
        }
        MessageKind::Ai => {
            Err(CodecError::InvalidMessageType("ai messages are posted by the backend through the server API".into()))
        }
    }
}

fn coordinate(metadata: &Metadata, name: &str, bound: f64) -> Result<(), CodecError> {
    let field = format!("metadata.{name}");
    match metadata.get(name).and_then(Value::as_f64) {
        Some(x) if x.is_finite() && x.abs() <= bound => Ok(()),
        Some(x) => Err(CodecError::invalid(field, format!("must be between -{bound} and {bound}, got {x}"))),
        None => Err(CodecError::invalid(field, "required: a number")),
    }
}

/// The wire form of a `message:send`, before checks; shared by dialects that carry the same
/// fields under other names.
#[derive(Debug, Default)]
pub(crate) struct SendParts {
    pub(crate) conversation_id: String,
    pub(crate) content: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) metadata: Option<Metadata>,
    pub(crate) local_id: Option<String>,
    pub(crate) reply_to: Option<String>,
}

/// Checks a message send. A missing `type` means text; `reply_to` may also come inside
/// `metadata` (seed 000 puts it there).
pub(crate) fn send(p: SendParts) -> Result<SendMessage, CodecError> {
    let conversation_id = id("conversation_id", &p.conversation_id, ConversationId::parse)?;
    let kind = match p.kind.as_deref() {
        None => MessageKind::Text,
        Some(name) => MessageKind::from_name(name).ok_or_else(|| {
            CodecError::InvalidMessageType(format!(
                "unknown message type {name:?}; expected text, photo, photo_ephemeral, location or gift"
            ))
        })?,
    };
    let metadata = p.metadata.unwrap_or_default();
    let content = p.content.unwrap_or_default();
    body(kind, &content, &metadata)?;
    let local_id = p.local_id.map(|l| id("local_id", &l, LocalId::parse)).transpose()?;
    let reply_to = match p.reply_to {
        Some(r) => Some(id("reply_to", &r, MessageId::parse)?),
        None => match metadata.get("reply_to") {
            Some(Value::String(r)) => Some(id("metadata.reply_to", r, MessageId::parse)?),
            _ => None,
        },
    };
    Ok(SendMessage { conversation_id, content, kind, metadata, local_id, reply_to, attachments: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn nul_is_refused_in_stored_text() {
        let parts = |content: &str, kind: &str| SendParts {
            conversation_id: "c1".into(),
            content: Some(content.into()),
            kind: Some(kind.into()),
            metadata: Some(serde_json::from_value(serde_json::json!({"lat": 1.0, "lng": 2.0})).unwrap()),
            ..SendParts::default()
        };
        for (content, kind) in [("a\0b", "text"), ("\0", "gift"), ("here\0", "location")] {
            let e = send(parts(content, kind)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationError, "{kind}: {e}");
        }
        assert!(send(parts("fine", "text")).is_ok());
        assert!(short_text("message", Some("a\0".into()), 10).is_err());
        assert_eq!(short_text("message", Some("ok".into()), 10).unwrap().as_deref(), Some("ok"));
    }

    fn parts(kind: &str, content: &str, metadata: Value) -> SendParts {
        SendParts {
            conversation_id: "c1".into(),
            content: Some(content.into()),
            kind: Some(kind.into()),
            metadata: metadata.as_object().cloned(),
            ..SendParts::default()
        }
    }

    #[test]
    fn text_limits_are_in_characters_not_bytes() {
        let ok = "\u{1F600}".repeat(2000);
        assert!(send(parts("text", &ok, Value::Null)).is_ok());
        let e = send(parts("text", &"é".repeat(2001), Value::Null)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::MessageTooLarge);
        assert_eq!(e.to_string(), "content: must be 1 to 2000 characters, got 2001");
        let e = send(parts("text", "   ", Value::Null)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationError);
    }

    #[test]
    fn each_kind_checks_its_payload() {
        assert!(send(parts("photo", "https://cdn.example/p.jpg", Value::Null)).is_ok());
        assert!(send(parts("photo", "javascript:alert(1)", Value::Null)).is_err());
        let big = serde_json::json!({"size_bytes": MAX_PHOTO_BYTES + 1});
        assert_eq!(send(parts("photo", "https://x/p.jpg", big)).unwrap_err().code(), ErrorCode::MessageTooLarge);
        assert!(send(parts("location", "", serde_json::json!({"lat": 48.8, "lng": 2.35}))).is_ok());
        let e = send(parts("location", "", serde_json::json!({"lat": 91, "lng": 0}))).unwrap_err();
        assert_eq!(e.field(), Some("metadata.lat"));
        assert!(send(parts("gift", "rose", Value::Null)).is_ok());
        assert_eq!(send(parts("system", "hi", Value::Null)).unwrap_err().code(), ErrorCode::InvalidMessageType);
        assert_eq!(send(parts("video", "hi", Value::Null)).unwrap_err().code(), ErrorCode::InvalidMessageType);
    }

    #[test]
    fn reply_to_is_read_from_metadata_too() {
        let m = send(parts("text", "hi", serde_json::json!({"reply_to": "msg_9"}))).unwrap();
        assert_eq!(m.reply_to.map(|r| r.to_string()).as_deref(), Some("msg_9"));
    }
}
