//! What the client tells the app: one stream of events. Serialized with `event` as the tag,
//! they are also `confab-chat --json`'s output lines (SPEC §8).

use serde::Serialize;
use serde_json::Value;

/// The transport a connection runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    WebTransport,
    WebSocket,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::WebTransport => "webtransport",
            Self::WebSocket => "websocket",
        }
    }
}

/// Where a message the app sent stands. Only ever moves forward, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// In the outbox: not yet acknowledged by the server (kept across reconnects and restarts).
    Sending,
    /// Stored by the server (`message:sent`).
    Sent,
    /// On a recipient's device.
    Delivered,
    /// Read by a recipient.
    Read,
    /// Refused by the server for good (the `error` event says why).
    Failed,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Connected (again), on `transport`; joined conversations are being resumed.
    Connected {
        transport: TransportKind,
    },
    /// The device's network changed and the WebTransport session moved to a new local address
    /// without reconnecting (QUIC connection migration). On WebSocket a reconnect follows
    /// instead.
    NetworkChanged {
        local_address: String,
    },
    /// The connection is gone; the client reconnects by itself unless an `error` said it was
    /// refused.
    Disconnected {
        reason: String,
    },
    Joined {
        conversation_id: String,
        last_seq: u64,
    },
    Left {
        conversation_id: String,
    },
    /// A message, once, in `seq` order per conversation: the server's message object.
    Message {
        message: Value,
    },
    /// A message this client sent moved on.
    State {
        local_id: String,
        conversation_id: String,
        state: MessageState,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    Typing {
        conversation_id: String,
        user_id: String,
        is_typing: bool,
    },
    Presence {
        user_id: String,
        online: bool,
    },
    Unread {
        conversation_id: String,
        unread_count: u64,
    },
    History {
        conversation_id: String,
        /// Oldest first.
        messages: Vec<Value>,
        has_more: bool,
    },
    /// The server refused something (`code` as in docs/protocol.md §6).
    Error {
        code: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        local_id: Option<String>,
    },
}
