//! What the server sends (SPEC §4, the answers column and the server-only events).
//!
//! These types serialize in the Winkr shape and deserialize from it too (that is how the
//! benchmark client, the tests and a Rust SDK read the server). Fields that the seeds' own
//! examples leave out are optional here so that every seed example decodes; the server always
//! fills them.

use super::client::Metadata;
use crate::error::ErrorCode;
use crate::ids::{ConnectionId, ConversationId, LocalId, MessageId, PhotoId, RequestId, Seq, UserId};
use crate::values::{MessageKind, PresenceStatus, Timestamp};
use serde::{Deserialize, Serialize};

/// One server event with the envelope fields around it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEnvelope {
    pub event: ServerEvent,
    /// When the server made the event.
    pub timestamp: Option<Timestamp>,
    /// The server's id for this envelope (`srv_...`).
    pub message_id: Option<String>,
    /// The client's `message_id` of the request this answers.
    pub request_id: Option<RequestId>,
}

impl ServerEnvelope {
    pub fn new(event: ServerEvent) -> Self {
        Self { event, timestamp: None, message_id: None, request_id: None }
    }
}

macro_rules! server_events {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal,)*) => {
        /// Every server-to-client event of the contract.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ServerEvent {
            $($(#[$doc])* $variant($ty),)*
        }

        impl ServerEvent {
            /// The event's Winkr name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            /// Every Winkr server event name.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub(crate) fn serialize_data<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Self::$variant(d) => d.serialize(s),)*
                }
            }

            pub(crate) fn deserialize_data<'de, D: serde::Deserializer<'de>>(
                name: &str,
                d: D,
            ) -> Result<Self, D::Error> {
                match name {
                    $($name => <$ty>::deserialize(d).map(Self::$variant),)*
                    other => Err(serde::de::Error::custom(format_args!("unknown event type {other:?}"))),
                }
            }
        }
    };
}

server_events! {
    /// Sent once the connection is authenticated and ready.
    Established(Established) = "connection:established",
    /// Answers `auth:refresh`: the connection now runs on the new token.
    Authenticated(Authenticated) = "connection:authenticated",
    /// Sent just before the server closes the connection.
    Closed(Closed) = "connection:closed",
    Joined(Joined) = "conversation:joined",
    Left(Left) = "conversation:left",
    /// Unread count for a conversation the user is a member of but has not joined.
    Unread(Unread) = "conversation:unread",
    /// To the sender, once the message is durably stored.
    MessageSent(Message) = "message:sent",
    /// To members who joined the conversation.
    MessageNew(MessageNew) = "message:new",
    /// To the sender, once per recipient, when a recipient's device got the message.
    Delivered(Delivered) = "message:delivered",
    /// Read watermark moved: to the other members and the reader's other devices.
    Viewed(Viewed) = "message:viewed",
    Deleted(Deleted) = "message:deleted",
    Typing(Typing) = "typing:indicator",
    UserOnline(UserOnline) = "user:online",
    UserOffline(UserOffline) = "user:offline",
    /// Answers `status:update` to its sender.
    StatusUpdated(StatusUpdated) = "user:status_updated",
    /// A contact's status changed.
    StatusUpdate(StatusUpdate) = "status:update",
    EphemeralNew(EphemeralNew) = "ephemeral_photo:new",
    EphemeralViewed(EphemeralViewed) = "ephemeral_photo:viewed",
    EphemeralExpired(EphemeralExpired) = "ephemeral_photo:expired",
    History(History) = "history",
    Heartbeat(HeartbeatAck) = "heartbeat",
    MatchNew(Push) = "match:new",
    MatchUpdated(Push) = "match:updated",
    MatchDeleted(Push) = "match:deleted",
    ProfileViewed(Push) = "profile:viewed",
    ProfileUpdated(Push) = "profile:updated",
    ProfileOnline(Push) = "profile:online",
    ProfileOffline(Push) = "profile:offline",
    /// An assistant's avatar state (seed 002), pushed by the backend.
    AvatarUpdate(Push) = "avatar_update",
    /// A notice to users (seed 002: `message`, `severity`), pushed by the backend.
    Broadcast(Push) = "broadcast",
    /// Planned maintenance (seed 002: `event`, `scheduledTime`, `duration`), pushed by the backend.
    SystemNotice(Push) = "system",
    Error(ErrorData) = "error",
}

/// The events the app backend may push to users through the server API (SPEC §5).
pub const PUSH_EVENT_NAMES: [&str; 10] = [
    "match:new",
    "match:updated",
    "match:deleted",
    "profile:viewed",
    "profile:updated",
    "profile:online",
    "profile:offline",
    "avatar_update",
    "broadcast",
    "system",
];

impl ServerEvent {
    /// Builds a pushed event from its name; `None` if the name is not a push event.
    pub fn push(name: &str, data: Metadata) -> Option<Self> {
        let p = Push(data);
        Some(match name {
            "match:new" => Self::MatchNew(p),
            "match:updated" => Self::MatchUpdated(p),
            "match:deleted" => Self::MatchDeleted(p),
            "profile:viewed" => Self::ProfileViewed(p),
            "profile:updated" => Self::ProfileUpdated(p),
            "profile:online" => Self::ProfileOnline(p),
            "profile:offline" => Self::ProfileOffline(p),
            "avatar_update" => Self::AvatarUpdate(p),
            "broadcast" => Self::Broadcast(p),
            "system" => Self::SystemNotice(p),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Established {
    pub user_id: UserId,
    pub connection_id: ConnectionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_conversations: Option<Vec<ConversationId>>,
    /// Seconds between heartbeats the server expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<u32>,
    /// `websocket` or `webtransport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// `json` or `msgpack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// SHA-256 (hex) of the server's TLS certificate, when it has one: a client that pins a
    /// hash for WebTransport and had to fall back can tell a wrong hash from blocked UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authenticated {
    pub user_id: UserId,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    /// A snake_case reason (`normal_closure`, `server_shutdown`, `token_expired`, ...).
    pub reason: String,
    /// The WebSocket close code that follows (SPEC §3).
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    pub conversation_id: ConversationId,
    pub joined_at: Timestamp,
    /// The conversation's newest seq when the join happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<Seq>,
    /// The seq up to which every other member has read: a client ticks its own messages up to
    /// it as read, after a reload or a time offline as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others_read_seq: Option<Seq>,
    /// The seq up to which every other member's devices have had the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others_delivered_seq: Option<Seq>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Left {
    pub conversation_id: ConversationId,
    pub left_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unread {
    pub conversation_id: ConversationId,
    pub unread_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessagePreview>,
}

/// The short form of a message in `conversation:unread` (seed 001).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePreview {
    pub id: MessageId,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub sender_id: UserId,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
}

/// A stored message, as `message:sent`, inside `message:new`, and in `history`.
/// Serialized by hand in `event::message`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    /// Absent only in the seeds' examples; the server always sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    pub sender_id: UserId,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    #[serde(default)]
    pub metadata: Metadata,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

impl Message {
    pub fn preview(&self) -> MessagePreview {
        MessagePreview {
            id: self.id.clone(),
            content: self.content.clone(),
            kind: self.kind,
            sender_id: self.sender_id.clone(),
            created_at: self.created_at,
            seq: self.seq,
        }
    }
}

/// Who sent a message, as seed 001 shows it beside `message:new`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sender {
    pub id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `message:new`. On the wire it is seed 001's `{message, sender}` *and*, beside them, the
/// message's own fields, because seed 000's client reads `data.id`, `data.conversation_id`
/// and `data.content` directly (see `docs/protocol.md`). Serialization lives in `message_new`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageNew {
    pub message: Message,
    pub sender: Sender,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub delivered_at: Timestamp,
    /// The recipient whose device got the message, when one member's delivery is the news (in
    /// a conversation of two, always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The message's seq: the receipt covers the sender's messages up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// How many of the other members' devices have had the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_count: Option<u32>,
    /// How many other members the conversation has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Viewed {
    /// The newest message read (everything up to and including it is read).
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub viewed_at: Timestamp,
    /// The reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// Every message the request named, when it named several (seed 004's `mark_read`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ids: Vec<MessageId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub deleted_by: UserId,
    pub deleted_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Typing {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub is_typing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserOnline {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub online_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserOffline {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub offline_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdated {
    pub status: PresenceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub user_id: UserId,
    pub status: PresenceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

/// `ephemeral_photo:new`. Carries the photo id as both `id` (seed 000's client reads
/// `data.id`) and `photo_id` (what `ephemeral_photo:view` takes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralNew {
    pub id: PhotoId,
    pub photo_id: PhotoId,
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub photo_url: String,
    pub expires_in: u32,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralViewed {
    pub photo_id: PhotoId,
    pub conversation_id: ConversationId,
    pub viewer_id: UserId,
    pub viewed_at: Timestamp,
    /// When the photo expires: first view plus `expires_in`.
    pub expires_at: Timestamp,
    /// The URL, to the viewer only; never sent again after expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralExpired {
    pub photo_id: PhotoId,
    pub conversation_id: ConversationId,
    pub expired_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub conversation_id: ConversationId,
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// Answer to a client `heartbeat`: its timestamp echoed, and the server's time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HeartbeatAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<Timestamp>,
}

/// The data of an event the app backend pushed (`match:new`, `profile:viewed`, ...), as given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Push(pub Metadata);

/// The `error` event's data (SPEC §4 "Errors").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The type of the client event that failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_event: Option<String>,
    /// The client's `message_id` of the request that failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
