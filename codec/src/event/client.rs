//! What a client can ask of the server (SPEC §4, client-to-server table), as checked values.
//!
//! These types are what the session layer sees, whatever the dialect. A value of them has
//! passed validation: ids follow the id rule, texts are within their limits, numbers in range.
//! They serialize in the Winkr shape, which is how the benchmark client and tests send them;
//! decoding goes through each dialect's wire types and checks (see `dialect`).

use crate::ids::{ConversationId, LocalId, MessageId, PhotoId, RequestId, Seq};
use crate::values::{MessageKind, PresenceStatus, Timestamp};
use serde::Serialize;

/// A message's free-form `metadata` object (seed 001 `metadata: {}`).
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// One client request, with the envelope fields the server uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEnvelope {
    pub event: ClientEvent,
    /// The client's `message_id`, echoed as `request_id` on the answer.
    pub request_id: Option<RequestId>,
    /// The client's `timestamp`, if it sent one. Informational only.
    pub sent_at: Option<Timestamp>,
}

impl ClientEnvelope {
    pub fn new(event: ClientEvent) -> Self {
        Self { event, request_id: None, sent_at: None }
    }
}

/// Every client-to-server event of the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `connection:established`: the client says who it is; recorded, not answered.
    Hello(Hello),
    /// `conversation:join`
    Join(Join),
    /// `conversation:leave`
    Leave(ConversationRef),
    /// `message:send`
    Send(SendMessage),
    /// `message:read` (alias `message:viewed`): read up to and including a message.
    Read(ReadMark),
    /// `message:delete`
    Delete(MessageRef),
    /// `typing:start`
    TypingStart(ConversationRef),
    /// `typing:stop`
    TypingStop(ConversationRef),
    /// `status:update` (alias `user:status`)
    SetStatus(SetStatus),
    /// `ephemeral_photo:send`
    EphemeralSend(EphemeralSend),
    /// `ephemeral_photo:view`
    EphemeralView(EphemeralView),
    /// `history:get`
    History(HistoryQuery),
    /// `auth:refresh`
    AuthRefresh(AuthRefresh),
    /// `heartbeat`
    Heartbeat(Heartbeat),
}

impl ClientEvent {
    /// The canonical Winkr name of the event (the first name in the dialect's table).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "connection:established",
            Self::Join(_) => "conversation:join",
            Self::Leave(_) => "conversation:leave",
            Self::Send(_) => "message:send",
            Self::Read(_) => "message:read",
            Self::Delete(_) => "message:delete",
            Self::TypingStart(_) => "typing:start",
            Self::TypingStop(_) => "typing:stop",
            Self::SetStatus(_) => "status:update",
            Self::EphemeralSend(_) => "ephemeral_photo:send",
            Self::EphemeralView(_) => "ephemeral_photo:view",
            Self::History(_) => "history:get",
            Self::AuthRefresh(_) => "auth:refresh",
            Self::Heartbeat(_) => "heartbeat",
        }
    }
}

/// Longest `client_version` / `platform` accepted, in characters.
pub const MAX_CLIENT_INFO_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Hello {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Join {
    pub conversation_id: ConversationId,
    /// Replay every message with a greater seq after joining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<Seq>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationRef {
    pub conversation_id: ConversationId,
}

/// Longest text message, in characters (SPEC §4).
pub const MAX_TEXT_CHARS: usize = 2000;
/// Longest photo URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest gift name, in characters.
pub const MAX_GIFT_CHARS: usize = 100;
/// Largest referenced photo, when the client states its size (SPEC §4: 10 MB).
pub const MAX_PHOTO_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendMessage {
    pub conversation_id: ConversationId,
    /// The text, the photo URL, or the gift's name, by kind; may be empty for a location.
    pub content: String,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// Files sent inline (seed 004); the server stores them and the message carries their URLs.
    #[serde(skip)]
    pub attachments: Vec<Attachment>,
}

/// Most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 10;
/// Longest attachment file name, in characters.
pub const MAX_FILENAME_CHARS: usize = 255;

/// One file sent inline with a message, decoded from base64.
#[derive(Clone, PartialEq)]
pub struct Attachment {
    /// What it is (`image`, `file`, ...), as the client said; 1 to 32 characters.
    pub kind: String,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("kind", &self.kind)
            .field("filename", &self.filename)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageRef {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
}

/// What a client has read: everything up to and including `message_id`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadMark {
    pub conversation_id: ConversationId,
    /// The message read up to (seed 004: the last one its request lists).
    pub message_id: MessageId,
    /// Seed 004's `mark_read` names every message read, in any order: the others it listed, in
    /// its order. The server works out which is the newest.
    #[serde(skip)]
    pub others: Vec<MessageId>,
}

impl ReadMark {
    pub fn new(conversation_id: ConversationId, message_id: MessageId) -> Self {
        Self { conversation_id, message_id, others: Vec::new() }
    }

    /// Every message named, in the request's order.
    pub fn ids(&self) -> impl Iterator<Item = &MessageId> {
        self.others.iter().chain(std::iter::once(&self.message_id))
    }
}

/// Longest status message, in characters.
pub const MAX_STATUS_MESSAGE_CHARS: usize = 140;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetStatus {
    pub status: PresenceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Bounds of an ephemeral photo's life after its first view, in seconds.
pub const EPHEMERAL_SECONDS: std::ops::RangeInclusive<u32> = 1..=300;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EphemeralSend {
    pub conversation_id: ConversationId,
    pub photo_url: String,
    pub expires_in: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EphemeralView {
    pub photo_id: PhotoId,
}

/// Most messages one `history:get` returns (SPEC §4).
pub const MAX_HISTORY_LIMIT: u32 = 100;
/// What `history:get` returns when the client names no limit.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryQuery {
    pub conversation_id: ConversationId,
    /// Only messages with a smaller seq; the newest when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<Seq>,
    /// 1 to 100.
    pub limit: u32,
}

/// Longest token accepted by `auth:refresh`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthRefresh {
    pub token: String,
}

/// A client heartbeat; its `timestamp` (a string or a number) is echoed back untouched.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Heartbeat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<serde_json::Value>,
}
