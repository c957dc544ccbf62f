//! The two encodings of an envelope: JSON and MessagePack (with field names, so a JavaScript
//! MessagePack decoder reads a plain object). Everything format-specific lives here; the rest
//! of the codec is written once against serde.

use serde::Serialize;
use serde::de::DeserializeSeed;

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
                // rmp-serde cannot say where a borrowed-slice document ends, and its reader
                // that can copies every string (a third of decode time); so find the end first.
                match msgpack_document_len(bytes) {
                    Some(n) if n == bytes.len() => {}
                    Some(_) => return Err(FormatError("trailing bytes after the document".into())),
                    None => return Err(FormatError("truncated or invalid MessagePack".into())),
                }
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(MAX_DEPTH);
                seed.deserialize(&mut de).map_err(|e| FormatError(e.to_string()))
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

/// The length of the first MessagePack value in `b`, or `None` if `b` ends inside it or uses
/// the reserved byte 0xc1. Iterative: nesting depth costs nothing here.
pub(crate) fn msgpack_document_len(b: &[u8]) -> Option<usize> {
    fn be(b: &[u8], at: usize, n: usize) -> Option<usize> {
        let bytes = b.get(at..at + n)?;
        Some(bytes.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    }
    let mut pos = 0usize;
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let m = *b.get(pos)?;
        // (header bytes, payload bytes, child values)
        let (head, body, children) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * usize::from(m & 0x0f)),
            0x90..=0x9f => (1, 0, usize::from(m & 0x0f)),
            0xa0..=0xbf => (1, usize::from(m & 0x1f), 0),
            0xc4 | 0xd9 => (2, be(b, pos + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(b, pos + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(b, pos + 1, 4)?, 0),
            0xc7 => (3, be(b, pos + 1, 1)?, 0),
            0xc8 => (4, be(b, pos + 1, 2)?, 0),
            0xc9 => (6, be(b, pos + 1, 4)?, 0),
            0xca | 0xce | 0xd2 => (5, 0, 0),
            0xcb | 0xcf | 0xd3 => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => (3, 0, be(b, pos + 1, 2)?),
            0xdd => (5, 0, be(b, pos + 1, 4)?),
            0xde => (3, 0, 2 * be(b, pos + 1, 2)?),
            0xdf => (5, 0, 2 * be(b, pos + 1, 4)?),
            0xc1 => return None,
        };
        pos = pos.checked_add(head)?.checked_add(body)?;
        pending = pending.checked_add(children)?;
        // Every value takes at least a byte: more pending values than bytes left is a lie.
        if pos > b.len() || pending > b.len() - pos {
            return None;
        }
    }
    Some(pos)
}

/// A deserialization failure in the format's own words, before `envelope` classifies it.
#[derive(Debug)]
pub(crate) struct FormatError(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_document_length_matches_the_encoder() {
        let v = serde_json::json!({"a": [1, -1, 300, -300, 70000, 1.5, "x", null, true, {"b": "y".repeat(300)}], "c": u64::MAX});
        let mut out = Vec::new();
        Format::MsgPack.serialize_into(&v, &mut out).unwrap();
        assert_eq!(msgpack_document_len(&out), Some(out.len()));
        out.push(0);
        assert_eq!(msgpack_document_len(&out), Some(out.len() - 1));
        assert_eq!(msgpack_document_len(&out[..out.len() - 3]), None);
        assert_eq!(msgpack_document_len(&[0xdf, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(msgpack_document_len(&[0xc1]), None);
    }
}

/// An event could not be encoded. Only possible for values built outside the codec's checks
/// (a metadata map that MessagePack cannot hold, say); the server answers `INTERNAL_ERROR`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(pub String);
