//! The JSON bodies the HTTP API takes and gives. The handlers build their answers from these
//! types, and the OpenAPI document describes the same types (`utoipa::ToSchema`), so the two
//! cannot disagree. The protocol's own values (ids, times, a message) are serialized by the
//! codec; here they are described with `value_type` schemas of the same shape.

use confab_codec::event::Message;
use confab_codec::event::Metadata;
use confab_codec::{ConversationId, PresenceStatus, Seq, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// The id rule (`confab_codec::ids::check_id`) as a JSON Schema pattern; a test holds them
/// together.
const ID_PATTERN: &str = "^[A-Za-z0-9_.:@+=~-]+$";

/// An id: conversations, users, messages. 1 to 128 of `A-Z a-z 0-9 - _ . : @ + = ~`.
pub(super) struct Id;

impl utoipa::PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ID_PATTERN))
            .min_length(Some(1))
            .max_length(Some(confab_codec::ids::MAX_ID_LEN))
            .description(Some("1 to 128 of `A-Z a-z 0-9 - _ . : @ + = ~`"))
            .into()
    }
}

impl ToSchema for Id {}

/// A message type (docs/protocol.md §5).
pub(super) struct MessageType;

impl utoipa::PartialSchema for MessageType {
    fn schema() -> RefOr<Schema> {
        let names = confab_codec::MessageKind::ALL.map(|k| k.as_str());
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).into()
    }
}

impl ToSchema for MessageType {}

/// The events the app backend may publish to users.
pub(super) struct PushType;

impl utoipa::PartialSchema for PushType {
    fn schema() -> RefOr<Schema> {
        let names = confab_codec::event::PUSH_EVENT_NAMES;
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).into()
    }
}

impl ToSchema for PushType {}

/// `{"error": {"code", "message"}}`: every error answer of the JSON API.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorBody {
    pub(super) error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ErrorDetail {
    /// The protocol's error code (docs/protocol.md §9): `VALIDATION_ERROR`, `UNAUTHORIZED`,
    /// `TOKEN_EXPIRED`, `TOKEN_INVALID`, `FORBIDDEN`, `PERMISSION_DENIED`, `NOT_FOUND`,
    /// `CONVERSATION_NOT_FOUND`, `CONVERSATION_FULL`, `RATE_LIMITED`, `MESSAGE_TOO_LARGE`,
    /// `INVALID_MESSAGE_TYPE`, `SERVICE_UNAVAILABLE`, `INTERNAL_ERROR`.
    #[schema(example = "VALIDATION_ERROR")]
    pub(super) code: String,
    /// What was wrong, for a person.
    pub(super) message: String,
}

/// A stored message (docs/protocol.md §5), as the WebSocket and WebTransport events carry it.
#[derive(Debug, ToSchema)]
#[schema(as = Message)]
#[allow(dead_code)] // described, never built: the codec serializes `confab_codec::Message`
pub(super) struct MessageSchema {
    #[schema(example = "msg_01HX...")]
    id: String,
    conversation_id: String,
    /// The conversation's sequence number: gap-free, from 1.
    seq: u64,
    sender_id: String,
    content: String,
    /// `text`, `photo`, `photo_ephemeral`, `location`, `gift`, `system` or `ai`.
    #[schema(rename = "type")]
    kind: String,
    /// Free-form JSON object (a location's `lat`/`lng`, a photo's size...).
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2025-12-01T10:30:00.123Z")]
    created_at: String,
    updated_at: Option<String>,
    is_read: Option<bool>,
    /// The sender's own id for the message, echoed back to it.
    local_id: Option<String>,
    reply_to: Option<String>,
}

/// `GET /v1/chat/conversations`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConversationList {
    pub(super) conversations: Vec<ConversationRow>,
}

/// One of the user's conversations.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConversationRow {
    #[schema(value_type = String)]
    pub(super) id: ConversationId,
    #[schema(value_type = Vec<String>)]
    pub(super) members: Vec<UserId>,
    /// The members other than the caller.
    #[schema(value_type = Vec<String>)]
    pub(super) other_user_ids: Vec<UserId>,
    /// Those of them online now.
    #[schema(value_type = Vec<String>)]
    pub(super) online_user_ids: Vec<UserId>,
    #[schema(value_type = u64)]
    pub(super) last_seq: Seq,
    /// The caller's read mark.
    #[schema(value_type = u64)]
    pub(super) read_seq: Seq,
    pub(super) unread_count: u64,
    #[schema(value_type = Option<MessageSchema>)]
    pub(super) last_message: Option<Message>,
    #[schema(value_type = Option<String>)]
    pub(super) updated_at: Option<Timestamp>,
}

/// `GET /v1/chat/conversations/{id}/messages`: a page of history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HistoryPage {
    #[schema(value_type = String)]
    pub(super) conversation_id: ConversationId,
    #[schema(value_type = Vec<MessageSchema>)]
    pub(super) messages: Vec<Message>,
    /// Older messages exist: ask again with `before_seq` = the first one's `seq`.
    pub(super) has_more: bool,
}

/// `POST /api/v1/conversations`.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct CreateConversation {
    /// Chosen by the backend, or generated (`conv_...`).
    #[schema(value_type = Option<Id>)]
    pub(super) id: Option<String>,
    /// User ids; duplicates count once.
    #[schema(value_type = Vec<Id>)]
    pub(super) members: Vec<String>,
    /// The most members the conversation may ever have.
    #[serde(default, deserialize_with = "whole_u32")]
    #[schema(minimum = 0, maximum = 4_294_967_295_u64)]
    pub(super) max_members: Option<u32>,
}

/// The new conversation's id.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Created {
    #[schema(value_type = String)]
    pub(super) id: ConversationId,
}

/// `PUT /api/v1/conversations/{id}/members`: the whole new member list.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct SetMembers {
    #[schema(value_type = Vec<Id>)]
    pub(super) members: Vec<String>,
}

/// The conversation's members now.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Members {
    #[schema(value_type = String)]
    pub(super) id: ConversationId,
    #[schema(value_type = Vec<String>)]
    pub(super) members: Vec<UserId>,
}

/// `POST /api/v1/publish`: an app event for some users, now or at their next connection.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct Publish {
    #[schema(value_type = Vec<Id>)]
    pub(super) user_ids: Vec<String>,
    /// The event's name.
    #[serde(rename = "type")]
    #[schema(rename = "type", value_type = PushType)]
    pub(super) kind: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(super) data: Metadata,
}

/// How many of the users were online (told now) and how many will hear it at their next
/// connection.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Published {
    pub(super) delivered: usize,
    pub(super) queued: usize,
}

/// `POST /api/v1/conversations/{id}/messages`: a message from the backend.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct PostMessage {
    /// 1 to 2000 characters, without NUL (U+0000).
    #[schema(min_length = 1, max_length = 2000, pattern = "^[^\\u0000]*$")]
    pub(super) content: String,
    /// `system` (the default) or another message type (`ai`, `text`...).
    #[serde(rename = "type", default)]
    #[schema(rename = "type", value_type = Option<MessageType>)]
    pub(super) kind: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(super) metadata: Metadata,
    /// Who the message is from: `system` unless given (an AI assistant's id for `type: "ai"`).
    #[serde(default)]
    #[schema(value_type = Option<Id>)]
    pub(super) sender_id: Option<String>,
}

/// The stored message.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Posted {
    #[schema(value_type = MessageSchema)]
    pub(super) message: Message,
}

/// `GET /api/v1/presence/{user_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Presence {
    #[schema(value_type = String)]
    pub(super) user_id: UserId,
    pub(super) online: bool,
    /// `online`, `away`, `busy` or `offline`.
    #[schema(value_type = String)]
    pub(super) status: PresenceStatus,
    /// The user's status message.
    pub(super) message: Option<String>,
    /// When they were last online (while offline).
    #[schema(value_type = Option<String>)]
    pub(super) last_seen: Option<Timestamp>,
    /// Their open connections, on every node.
    pub(super) connections: usize,
}

impl Presence {
    pub(super) fn of(user_id: UserId, p: confab_core::presence::PresenceInfo) -> Self {
        Self {
            user_id,
            online: p.online,
            status: p.status,
            message: p.message,
            last_seen: p.last_seen,
            connections: p.connections,
        }
    }
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Readiness {
    pub(super) ready: bool,
    /// `ok` when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) store: Option<&'static str>,
    /// Why not: the store unreachable or refusing writes, the broker unreachable, shutting down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
}

/// `GET /dev/token`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DevToken {
    pub(super) token: String,
    /// Unix seconds.
    pub(super) expires_at: i64,
}

/// `GET /cert-hash`: for WebTransport's `serverCertificateHashes`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CertHash {
    #[schema(example = "sha-256")]
    pub(super) algorithm: &'static str,
    pub(super) hex: String,
    /// The same 32 bytes as numbers.
    pub(super) value: Vec<u8>,
}

/// `GET /client-config`: what a page needs to connect.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ClientConfig {
    pub(super) webtransport_port: Option<u16>,
    pub(super) websocket_path: &'static str,
    pub(super) dev: bool,
    /// Dev mode only: the dev certificate's SHA-256.
    pub cert_sha256: Option<String>,
}

/// `GET /api/v1/admin/overview`: the admin console's dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Overview {
    pub(super) version: &'static str,
    pub(super) dev: bool,
    /// When this node started, and how long ago (seconds).
    #[schema(value_type = String)]
    pub(super) started_at: Timestamp,
    pub(super) uptime_s: i64,
    pub(super) connections: ConnectionCounts,
    /// Users with a connection on this node.
    pub(super) users_online: usize,
    /// Every 2 s over the last ten minutes, oldest first.
    #[schema(value_type = Vec<crate::trends::Point>)]
    pub(super) trends: Vec<crate::trends::Point>,
    /// The TLS certificate new handshakes get; absent without a TLS listener.
    pub(super) certificate: Option<CertificateState>,
    /// 1 while the store takes writes.
    pub(super) store_writable: bool,
    /// Cluster mode: every node sharing the store, by presence's leases; absent for a node
    /// alone.
    pub(super) nodes: Option<Vec<NodeRow>>,
    /// Set when the nodes could not be read.
    pub(super) nodes_error: Option<String>,
    /// The latest errors sent to clients and connections closed for cause, newest first.
    pub(super) incidents: Vec<IncidentRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConnectionCounts {
    pub(super) total: usize,
    pub(super) by_kind: Vec<KindCount>,
}

/// Connections of one kind.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KindCount {
    /// `websocket` or `webtransport`.
    pub(super) transport: &'static str,
    /// `winkr`, `systimz`, `chatrooms`, `chatrooms_personal` or `actions`.
    pub(super) dialect: &'static str,
    /// `json` or `msgpack`.
    pub(super) codec: &'static str,
    pub(super) count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CertificateState {
    pub(super) sha256: String,
    #[schema(value_type = String)]
    pub(super) not_after: Timestamp,
    /// Days until `not_after` (negative once expired).
    pub(super) days_left: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NodeRow {
    pub(super) id: String,
    /// The node that answered.
    pub(super) this_node: bool,
    /// Whether its lease is current: a node that stops renewing it is swept within seconds.
    pub(super) live: bool,
    #[schema(value_type = String)]
    pub(super) lease_until: Timestamp,
    pub(super) users: u64,
    pub(super) connections: u64,
}

/// An error sent to a client, or a connection closed for cause.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct IncidentRow {
    #[schema(value_type = String)]
    pub(super) at: Timestamp,
    /// The protocol's error code (`RATE_LIMITED`...) or the close reason (`slow_consumer`...).
    pub(super) code: &'static str,
    #[schema(value_type = String)]
    pub(super) user_id: UserId,
    pub(super) connection_id: String,
    /// The request that failed.
    pub(super) event: Option<String>,
    pub(super) message: String,
}

/// `GET /api/v1/admin/conversations`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ActivityList {
    pub(super) conversations: Vec<ActivityRow>,
}

/// A conversation this node holds (a member is connected here, or was lately).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ActivityRow {
    #[schema(value_type = String)]
    pub(super) id: ConversationId,
    #[schema(value_type = Vec<String>)]
    pub(super) members: Vec<UserId>,
    /// Connections here that joined it.
    pub(super) joined: usize,
    /// The last message fanned out here.
    pub(super) last_seq: Option<u64>,
    #[schema(value_type = Option<String>)]
    pub(super) last_activity: Option<Timestamp>,
}

/// `GET /api/v1/admin/users/{user_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserState {
    pub(super) presence: Presence,
    /// The user's connections on this node.
    pub(super) devices: Vec<DeviceRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeviceRow {
    pub(super) connection_id: String,
    pub(super) transport: &'static str,
    pub(super) dialect: &'static str,
    pub(super) codec: &'static str,
}

/// `POST /dev/demo`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DemoConversations {
    pub(super) conversations: Vec<DemoConversation>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DemoConversation {
    pub(super) id: &'static str,
    pub(super) members: &'static [&'static str],
}

/// A `u32` from any JSON number with no fraction: JSON Schema's `integer` admits `5.0`, and
/// so does this API.
fn whole_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let n: Option<serde_json::Number> = Option::deserialize(d)?;
    let Some(n) = n else { return Ok(None) };
    let whole = n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
    whole
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number from 0 to 4294967295")))
}

#[cfg(test)]
mod tests {
    use super::ID_PATTERN;

    /// The pattern's character class admits exactly the characters `check_id` admits.
    #[test]
    fn the_id_pattern_is_the_id_rule() {
        let class = ID_PATTERN.trim_start_matches("^[").trim_end_matches("]+$");
        let admitted = |c: char| {
            c.is_ascii_alphanumeric() && class.contains("A-Za-z0-9") || (c.is_ascii_punctuation() && class.contains(c))
        };
        for b in 0u8..=255 {
            let c = char::from(b);
            let s = c.to_string();
            assert_eq!(admitted(c), confab_codec::ids::check_id(&s).is_ok(), "{c:?}");
        }
    }
}
