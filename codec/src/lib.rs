//! confab's wire protocol, sans-IO: the typed event model, the envelopes of each client
//! dialect, their JSON and MessagePack encodings, validation of every field a client sends,
//! and length-prefixed framing for byte streams. No sockets, no clock, no async runtime: the
//! server, the benchmark client, the tests and a future mobile SDK all use this same code.
//!
//! Decoding a client frame is one call, [`Codec::decode_client`], which returns a checked
//! [`ClientEnvelope`] or a [`DecodeError`] whose [`ErrorCode`] is the protocol's.
//!
//! # Layout
//! - [`ids`]: identifier newtypes (`UserId`, `ConversationId`, `MessageId`, `Seq`, ...).
//! - [`values`]: timestamps, message kinds, presence statuses.
//! - [`event`]: the typed model: client requests and server events.
//! - [`dialect`]: `Dialect` and `Codec`, and one module per client API (Winkr today).
//! - [`format`]: JSON and MessagePack.
//! - [`frame`]: QUIC-varint length prefixes and the incremental frame decoder.
//! - [`error`]: wire error codes and the codec's errors mapped onto them.
//! - [`wire`]: the connection contract: paths, subprotocols, query negotiation, close codes
//!   and their reconnect advice, stream reset codes, timings.
//! - `envelope` (private): the one-pass envelope reader and its error diagnosis.
//! - `check` (private): field checks shared by every dialect.

mod check;
pub use check::storable;
pub mod dialect;
mod envelope;
pub mod error;
pub mod event;
pub mod format;
pub mod frame;
pub mod ids;
pub mod values;
pub mod wire;

pub use dialect::{Codec, Dialect};
pub use error::{CodecError, DecodeError, ErrorCode};
pub use event::{ClientEnvelope, ClientEvent, ServerEnvelope, ServerEvent};
pub use format::{EncodeError, Format};
pub use frame::{FrameDecoder, MAX_FRAME_BYTES};
pub use ids::{ConnectionId, ConversationId, LocalId, MessageId, PhotoId, RequestId, Seq, UserId};
pub use values::{MessageKind, PresenceStatus, Timestamp};
