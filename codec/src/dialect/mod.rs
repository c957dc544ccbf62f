//! Dialects: the client APIs the server speaks, each mapped to and from the typed model.
//!
//! The session layer only ever sees [`ClientEnvelope`] and [`ServerEnvelope`]; a [`Codec`]
//! (dialect + format + frame limit + scope) is what a connection uses to turn bytes into them
//! and back. Adding a dialect means a variant here and a module beside `winkr`; nothing outside
//! the codec. A dialect may have no form for some events (chatrooms has no presence events):
//! encoding one writes nothing and says so, and the transport skips it.

mod actions;
mod chatrooms;
mod loose;
mod systimz;
mod winkr;

use crate::error::{CodecError, DecodeError};
use crate::event::{ClientEnvelope, ServerEnvelope};
use crate::format::{EncodeError, Format};
use crate::frame::MAX_FRAME_BYTES;
use crate::ids::ConversationId;

/// A client API (SPEC §4, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Seeds 000 and 001: `{type, data, timestamp, message_id}`.
    Winkr,
    /// Seed 002: `{type, payload, timestamp, id}`, one conversation per connection.
    Systimz,
    /// Seed 003 on `/api/v1/ws/chat/{chatId}`: `{type, data}`, bound to that chat.
    Chatrooms,
    /// Seed 003 on `/api/v1/ws/{userId}`: the personal socket, direct messages only.
    ChatroomsPersonal,
    /// Seed 004: requests `{action, ...}`, events `{type, data | message | error}`.
    Actions,
}

impl Dialect {
    pub const ALL: [Dialect; 5] = [Self::Winkr, Self::Systimz, Self::Chatrooms, Self::ChatroomsPersonal, Self::Actions];

    /// The name used in `?dialect=` and `Sec-WebSocket-Protocol: confab.<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Winkr => "winkr",
            Self::Systimz => "systimz",
            Self::Chatrooms | Self::ChatroomsPersonal => "chatrooms",
            Self::Actions => "actions",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "winkr" => Some(Self::Winkr),
            "systimz" => Some(Self::Systimz),
            "chatrooms" => Some(Self::Chatrooms),
            "actions" => Some(Self::Actions),
            _ => None,
        }
    }

    /// A small dense index, for per-dialect caches of encoded events.
    pub const fn index(self) -> usize {
        match self {
            Self::Winkr => 0,
            Self::Systimz => 1,
            Self::Chatrooms => 2,
            Self::ChatroomsPersonal => 3,
            Self::Actions => 4,
        }
    }

    /// Whether the dialect's frames name no conversation, so that a connection needs a scope
    /// (the one conversation its requests go to).
    pub const fn needs_scope(self) -> bool {
        matches!(self, Self::Systimz | Self::Chatrooms)
    }

    /// Whether the dialect has no `join` request, so that a connection listens to every
    /// conversation of its user from the start.
    pub const fn listens_to_all(self) -> bool {
        matches!(self, Self::Actions | Self::ChatroomsPersonal)
    }
}

/// How one connection encodes envelopes: its dialect, its format, its frame limit, and, for
/// dialects whose frames name no conversation, the conversation they mean.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    pub dialect: Dialect,
    pub format: Format,
    /// Largest frame decoded; bigger ones are refused before parsing (`MESSAGE_TOO_LARGE`).
    pub max_frame: usize,
    /// The conversation requests without a conversation id go to (SPEC §7).
    pub scope: Option<ConversationId>,
    /// Winkr over JSON: `message:new` also carries the message's own fields beside `message`
    /// and `sender`, for seed 000's clients, which read them there and connect to `/v1/ws`
    /// (protocol.md). Off elsewhere: a quarter of each delivered message's bytes.
    pub flat_messages: bool,
}

impl Codec {
    /// A codec with the contract's 32 KiB frame limit.
    pub const fn new(dialect: Dialect, format: Format) -> Self {
        Self { dialect, format, max_frame: MAX_FRAME_BYTES, scope: None, flat_messages: false }
    }

    pub fn with_flat_messages(self, flat_messages: bool) -> Self {
        Self { flat_messages, ..self }
    }

    /// Whether this codec writes `message:new` in seed 000's flat layout as well.
    pub fn writes_flat_messages(&self) -> bool {
        self.flat_messages && self.dialect == Dialect::Winkr && self.format == Format::Json
    }

    pub fn with_max_frame(self, max_frame: usize) -> Self {
        Self { max_frame, ..self }
    }

    pub fn with_scope(self, scope: Option<ConversationId>) -> Self {
        Self { scope, ..self }
    }

    /// Decodes one client frame into a checked request, or says what is wrong with it.
    pub fn decode_client(&self, bytes: &[u8]) -> Result<ClientEnvelope, DecodeError> {
        self.check_size(bytes)?;
        let scope = self.scope.as_ref();
        match self.dialect {
            Dialect::Winkr => winkr::decode_client(self.format, bytes),
            Dialect::Systimz => systimz::decode_client(self.format, bytes, scope),
            Dialect::Chatrooms | Dialect::ChatroomsPersonal => chatrooms::decode_client(self.format, bytes, scope),
            Dialect::Actions => actions::decode_client(self.format, bytes),
        }
    }

    /// Encodes a server event, appending to `out` (so a caller can put a frame prefix first).
    /// `Ok(false)`: the dialect has no form for this event; nothing was written, send nothing.
    pub fn encode_server_into(&self, env: &ServerEnvelope, out: &mut Vec<u8>) -> Result<bool, EncodeError> {
        match self.dialect {
            Dialect::Winkr => winkr::encode_server(self.format, self.writes_flat_messages(), env, out).map(|()| true),
            Dialect::Systimz => systimz::encode_server(self.format, env, out),
            Dialect::Chatrooms => chatrooms::encode_server(self.format, env, false, out),
            Dialect::ChatroomsPersonal => chatrooms::encode_server(self.format, env, true, out),
            Dialect::Actions => actions::encode_server(self.format, env, out),
        }
    }

    /// Encodes a server event; an event the dialect has no form for is an error here.
    pub fn encode_server(&self, env: &ServerEnvelope) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        if self.encode_server_into(env, &mut out)? {
            Ok(out)
        } else {
            Err(EncodeError(format!("the {} dialect has no form for {}", self.dialect.name(), env.event.name())))
        }
    }

    /// Decodes a server frame (for clients: the benchmark, tests, SDKs). Winkr only: the other
    /// dialects are spoken by their own clients, which bring their own decoders.
    pub fn decode_server(&self, bytes: &[u8]) -> Result<ServerEnvelope, DecodeError> {
        self.check_size(bytes)?;
        match self.dialect {
            Dialect::Winkr => winkr::decode_server(self.format, bytes),
            d => Err(CodecError::Malformed {
                format: self.format.name(),
                reason: format!("decoding server events of the {} dialect is not supported", d.name()),
            }
            .into()),
        }
    }

    /// Encodes a client request (for clients), appending to `out`. Winkr only, like
    /// [`Codec::decode_server`].
    pub fn encode_client_into(&self, env: &ClientEnvelope, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self.dialect {
            Dialect::Winkr => winkr::encode_client(self.format, env, out),
            d => Err(EncodeError(format!("encoding client requests of the {} dialect is not supported", d.name()))),
        }
    }

    pub fn encode_client(&self, env: &ClientEnvelope) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode_client_into(env, &mut out)?;
        Ok(out)
    }

    fn check_size(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        if bytes.len() > self.max_frame {
            return Err(CodecError::FrameTooLarge { size: bytes.len(), limit: self.max_frame }.into());
        }
        Ok(())
    }
}
