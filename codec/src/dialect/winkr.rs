//! The Winkr dialect (seeds 000 and 001, SPEC §4): `{type, data, timestamp, message_id}`.
//!
//! The typed model already has Winkr's shape, so this file is mostly the client-side wire
//! types (loose, so that a wrong value becomes a named field error rather than a parse
//! failure) and the names and aliases of each event.

use crate::check::{self, SendParts};
use crate::envelope::{self, EventSet, RawEnvelope};
use crate::error::{CodecError, DecodeError};
use crate::event::WithFlatFields;
use crate::event::client::*;
use crate::event::server::{ServerEnvelope, ServerEvent};
use crate::format::{EncodeError, Format};
use crate::ids::{ConversationId, MessageId, PhotoId, RequestId, Seq};
use crate::values::{PresenceStatus, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Client event names, canonical first, with the aliases the seeds use (SPEC §4).
const CLIENT_NAMES: &[&str] = &[
    "connection:established",
    "conversation:join",
    "conversation:leave",
    "message:send",
    "message:read",
    "message:viewed",
    "message:delete",
    "typing:start",
    "typing:stop",
    "status:update",
    "user:status",
    "ephemeral_photo:send",
    "ephemeral_photo:view",
    "history:get",
    "auth:refresh",
    "heartbeat",
];

pub(crate) fn decode_client(format: Format, bytes: &[u8]) -> Result<ClientEnvelope, DecodeError> {
    let RawEnvelope { kind, data: Checked(checked), message_id, timestamp, .. } =
        envelope::decode::<Checked>(format, bytes)?;
    let fail = |error: CodecError, request_id: Option<String>| DecodeError {
        error,
        request_event: Some(kind.clone()),
        request_id,
    };
    let request_id = match message_id.as_deref().map(|m| check::id("message_id", m, RequestId::parse)) {
        None => None,
        Some(Ok(id)) => Some(id),
        // An id that breaks the id rule is not echoed back.
        Some(Err(e)) => return Err(fail(e, None)),
    };
    let event = checked.map_err(|e| fail(e, message_id.clone()))?;
    // The client's clock: informational, clamped rather than refused (docs/protocol.md §1).
    let sent_at = match timestamp.as_deref().map(Timestamp::parse_clamped) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(r)) => return Err(fail(CodecError::invalid("timestamp", r), message_id)),
    };
    Ok(ClientEnvelope { event, request_id, sent_at })
}

pub(crate) fn decode_server(format: Format, bytes: &[u8]) -> Result<ServerEnvelope, DecodeError> {
    let raw: RawEnvelope<ServerEvent> = envelope::decode(format, bytes)?;
    let timestamp = raw.timestamp.as_deref().map(Timestamp::parse).transpose();
    let request_id = raw.request_id.as_deref().map(RequestId::parse).transpose();
    match (timestamp, request_id) {
        (Ok(timestamp), Ok(request_id)) => {
            Ok(ServerEnvelope { event: raw.data, timestamp, message_id: raw.message_id, request_id })
        }
        (Err(r), _) => Err(CodecError::invalid("timestamp", r).into()),
        (_, Err(r)) => Err(CodecError::invalid("request_id", r).into()),
    }
}

pub(crate) fn encode_server(
    format: Format,
    flat_messages: bool,
    env: &ServerEnvelope,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        data: ServerData<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timestamp: Option<Timestamp>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a RequestId>,
    }
    struct ServerData<'a>(&'a ServerEvent, bool);
    impl Serialize for ServerData<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match (self.0, self.1) {
                // Seed 000's clients read message:new's fields flat.
                (ServerEvent::MessageNew(m), true) => WithFlatFields(m).serialize(s),
                (event, _) => event.serialize_data(s),
            }
        }
    }
    let out_env = Out {
        kind: env.event.name(),
        data: ServerData(&env.event, flat_messages),
        timestamp: env.timestamp,
        message_id: env.message_id.as_deref(),
        request_id: env.request_id.as_ref(),
    };
    format.serialize_into(&out_env, out)
}

pub(crate) fn encode_client(format: Format, env: &ClientEnvelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        data: ClientData<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a RequestId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timestamp: Option<Timestamp>,
    }
    struct ClientData<'a>(&'a ClientEvent);
    impl Serialize for ClientData<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                ClientEvent::Hello(d) => d.serialize(s),
                ClientEvent::Join(d) => d.serialize(s),
                ClientEvent::Leave(d) | ClientEvent::TypingStart(d) | ClientEvent::TypingStop(d) => d.serialize(s),
                ClientEvent::Send(d) => d.serialize(s),
                ClientEvent::Read(d) => d.serialize(s),
                ClientEvent::Delete(d) => d.serialize(s),
                ClientEvent::SetStatus(d) => d.serialize(s),
                ClientEvent::EphemeralSend(d) => d.serialize(s),
                ClientEvent::EphemeralView(d) => d.serialize(s),
                ClientEvent::History(d) => d.serialize(s),
                ClientEvent::AuthRefresh(d) => d.serialize(s),
                ClientEvent::Heartbeat(d) => d.serialize(s),
            }
        }
    }
    let out_env = Out {
        kind: env.event.name(),
        data: ClientData(&env.event),
        message_id: env.request_id.as_ref(),
        timestamp: env.sent_at,
    };
    format.serialize_into(&out_env, out)
}

impl EventSet for ServerEvent {
    fn deserialize_data<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        ServerEvent::deserialize_data(kind, d)
    }
    fn is_known(kind: &str) -> bool {
        ServerEvent::NAMES.contains(&kind)
    }
}

/// A client event whose wire form parsed; the checks may still have failed.
#[derive(Debug)]
struct Checked(Result<ClientEvent, CodecError>);

impl EventSet for Checked {
    fn deserialize_data<'de, D: Deserializer<'de>>(kind: &str, d: D) -> Result<Self, D::Error> {
        let checked = match kind {
            "connection:established" => HelloW::deserialize(d)?.check(),
            "conversation:join" => JoinW::deserialize(d)?.check(),
            "conversation:leave" => ConvW::deserialize(d)?.check().map(ClientEvent::Leave),
            "typing:start" => ConvW::deserialize(d)?.check().map(ClientEvent::TypingStart),
            "typing:stop" => ConvW::deserialize(d)?.check().map(ClientEvent::TypingStop),
            "message:send" => SendW::deserialize(d)?.check(),
            "message:read" | "message:viewed" => MessageRefW::deserialize(d)?
                .check()
                .map(|m| ClientEvent::Read(ReadMark::new(m.conversation_id, m.message_id))),
            "message:delete" => MessageRefW::deserialize(d)?.check().map(ClientEvent::Delete),
            "status:update" | "user:status" => StatusW::deserialize(d)?.check(),
            "ephemeral_photo:send" => EphemeralSendW::deserialize(d)?.check(),
            "ephemeral_photo:view" => EphemeralViewW::deserialize(d)?.check(),
            "history:get" => HistoryW::deserialize(d)?.check(),
            "auth:refresh" => AuthRefreshW::deserialize(d)?.check(),
            "heartbeat" => HeartbeatW::deserialize(d)?.check(),
            other => return Err(serde::de::Error::custom(format_args!("unknown event type {other:?}"))),
        };
        Ok(Checked(checked))
    }
    fn is_known(kind: &str) -> bool {
        CLIENT_NAMES.contains(&kind)
    }
}

#[derive(Deserialize)]
struct HelloW {
    client_version: Option<String>,
    platform: Option<String>,
}

impl HelloW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        Ok(ClientEvent::Hello(Hello {
            client_version: check::short_text("client_version", self.client_version, MAX_CLIENT_INFO_CHARS)?,
            platform: check::short_text("platform", self.platform, MAX_CLIENT_INFO_CHARS)?,
        }))
    }
}

#[derive(Deserialize)]
struct JoinW {
    conversation_id: String,
    since_seq: Option<u64>,
}

impl JoinW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        Ok(ClientEvent::Join(Join {
            conversation_id: check::id("conversation_id", &self.conversation_id, ConversationId::parse)?,
            since_seq: self.since_seq.map(Seq),
        }))
    }
}

#[derive(Deserialize)]
struct ConvW {
    conversation_id: String,
}

impl ConvW {
    fn check(self) -> Result<ConversationRef, CodecError> {
        Ok(ConversationRef {
            conversation_id: check::id("conversation_id", &self.conversation_id, ConversationId::parse)?,
        })
    }
}

#[derive(Deserialize)]
struct SendW {
    conversation_id: String,
    content: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    metadata: Option<Metadata>,
    local_id: Option<String>,
    reply_to: Option<String>,
}

impl SendW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        check::send(SendParts {
            conversation_id: self.conversation_id,
            content: self.content,
            kind: self.kind,
            metadata: self.metadata,
            local_id: self.local_id,
            reply_to: self.reply_to,
        })
        .map(ClientEvent::Send)
    }
}

#[derive(Deserialize)]
struct MessageRefW {
    conversation_id: String,
    message_id: String,
}

impl MessageRefW {
    fn check(self) -> Result<MessageRef, CodecError> {
        Ok(MessageRef {
            conversation_id: check::id("conversation_id", &self.conversation_id, ConversationId::parse)?,
            message_id: check::id("message_id", &self.message_id, MessageId::parse)?,
        })
    }
}

#[derive(Deserialize)]
struct StatusW {
    status: String,
    message: Option<String>,
}

impl StatusW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        let status = PresenceStatus::from_name(&self.status).ok_or_else(|| {
            CodecError::invalid("status", format!("must be online, away, busy or offline, got {:?}", self.status))
        })?;
        let message = check::short_text("message", self.message, MAX_STATUS_MESSAGE_CHARS)?;
        Ok(ClientEvent::SetStatus(SetStatus { status, message }))
    }
}

#[derive(Deserialize)]
struct EphemeralSendW {
    conversation_id: String,
    photo_url: String,
    /// Seed 000's client defaults to 10 seconds.
    expires_in: Option<u64>,
}

impl EphemeralSendW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        let conversation_id = check::id("conversation_id", &self.conversation_id, ConversationId::parse)?;
        check::url("photo_url", &self.photo_url)?;
        let expires_in = self.expires_in.unwrap_or(10);
        let expires_in = u32::try_from(expires_in).ok().filter(|s| EPHEMERAL_SECONDS.contains(s)).ok_or_else(|| {
            let (lo, hi) = (EPHEMERAL_SECONDS.start(), EPHEMERAL_SECONDS.end());
            CodecError::invalid("expires_in", format!("must be {lo} to {hi} seconds, got {expires_in}"))
        })?;
        Ok(ClientEvent::EphemeralSend(EphemeralSend { conversation_id, photo_url: self.photo_url, expires_in }))
    }
}

#[derive(Deserialize)]
struct EphemeralViewW {
    photo_id: String,
}

impl EphemeralViewW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        Ok(ClientEvent::EphemeralView(EphemeralView {
            photo_id: check::id("photo_id", &self.photo_id, PhotoId::parse)?,
        }))
    }
}

#[derive(Deserialize)]
struct HistoryW {
    conversation_id: String,
    before_seq: Option<u64>,
    limit: Option<u64>,
}

impl HistoryW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        let conversation_id = check::id("conversation_id", &self.conversation_id, ConversationId::parse)?;
        let limit = match self.limit {
            None => DEFAULT_HISTORY_LIMIT,
            Some(n) if (1..=u64::from(MAX_HISTORY_LIMIT)).contains(&n) => n as u32,
            Some(n) => return Err(CodecError::invalid("limit", format!("must be 1 to {MAX_HISTORY_LIMIT}, got {n}"))),
        };
        Ok(ClientEvent::History(HistoryQuery { conversation_id, before_seq: self.before_seq.map(Seq), limit }))
    }
}

#[derive(Deserialize)]
struct AuthRefreshW {
    token: String,
}

impl AuthRefreshW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        if self.token.is_empty() || self.token.len() > MAX_TOKEN_BYTES {
            return Err(CodecError::invalid("token", format!("must be 1 to {MAX_TOKEN_BYTES} bytes")));
        }
        Ok(ClientEvent::AuthRefresh(AuthRefresh { token: self.token }))
    }
}

#[derive(Deserialize)]
struct HeartbeatW {
    timestamp: Option<serde_json::Value>,
}

impl HeartbeatW {
    fn check(self) -> Result<ClientEvent, CodecError> {
        match &self.timestamp {
            None | Some(serde_json::Value::String(_) | serde_json::Value::Number(_)) => {}
            Some(_) => return Err(CodecError::invalid("timestamp", "must be a string or a number")),
        }
        if let Some(serde_json::Value::String(s)) = &self.timestamp {
            check::short_text("timestamp", Some(s.clone()), 64)?;
        }
        Ok(ClientEvent::Heartbeat(Heartbeat { timestamp: self.timestamp }))
    }
}
