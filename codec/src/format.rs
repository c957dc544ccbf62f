//! The two encodings of an envelope: JSON and MessagePack (with field names, so a JavaScript
//! MessagePack decoder reads a plain object). Everything format-specific lives here; the rest
//! of the codec is written once against serde.

use serde::Serialize;
use serde::de::DeserializeSeed;
use std::io::Cursor;

/// How envelopes are encoded on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// UTF-8 JSON text (the WebSocket default).
    Json,
    /// MessagePack with field names (the WebTransport default).
    MsgPack,
}

/// Deepest nesting accepted in a client document (serde_json's own default), so that a small
/// frame of `[[[[...` cannot exhaust the stack in either format.
pub const MAX_DEPTH: usize = 128;

impl Format {
    /// The name used in `?codec=` and in `connection:established`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MsgPack => "msgpack",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "msgpack" | "messagepack" => Some(Self::MsgPack),
            _ => None,
        }
    }

    /// Whether a WebSocket carries this format in text (JSON) or binary frames.
    pub const fn is_text(self) -> bool {
        matches!(self, Self::Json)
    }

    /// Deserializes one whole document through `seed`. Trailing bytes are an error.
    /// The error is the format's own message, for `CodecError::Malformed` or a field error.
    pub(crate) fn deserialize_seed<'de, S: DeserializeSeed<'de>>(
        self,
        bytes: &'de [u8],
        seed: S,
    ) -> Result<S::Value, FormatError> {
        match self {
            Self::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let value = seed.deserialize(&mut de).map_err(|e| FormatError(e.to_string()))?;
                de.end().map_err(|e| FormatError(e.to_string()))?;
                Ok(value)
            }
            Self::MsgPack => {
                let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
                de.set_max_depth(MAX_DEPTH);
                let value = seed.deserialize(&mut de).map_err(|e| FormatError(e.to_string()))?;
                if de.position() != bytes.len() as u64 {
                    return Err(FormatError("trailing bytes after the document".into()));
                }
                Ok(value)
            }
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub(crate) fn serialize_into<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Json => serde_json::to_writer(out, value).map_err(|e| EncodeError(e.to_string())),
            Self::MsgPack => {
                let mut ser = rmp_serde::Serializer::new(out).with_struct_map();
                value.serialize(&mut ser).map_err(|e| EncodeError(e.to_string()))
            }
        }
    }
}

/// A deserialization failure in the format's own words, before `envelope` classifies it.
#[derive(Debug)]
pub(crate) struct FormatError(pub(crate) String);

/// An event could not be encoded. Only possible for values built outside the codec's checks
/// (a metadata map that MessagePack cannot hold, say); the server answers `INTERNAL_ERROR`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(pub String);
