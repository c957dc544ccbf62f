//! Envelopes on the wire: `{type, data, message_id}` as JSON (WebSocket) or MessagePack with
//! field names (WebTransport), and WebTransport's length-prefixed frames (docs/protocol.md §7,
//! §8). The client keeps events as JSON values: it reads only the fields it acts on and hands
//! the server's message objects to the app as they came.

use serde_json::{Value, json};

/// An envelope for a request.
pub(crate) fn envelope(kind: &str, data: Value, request_id: &str) -> Value {
    json!({"type": kind, "data": data, "message_id": request_id})
}

pub(crate) fn to_msgpack(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    // A `Value` always serializes.
    let _ = serde::Serialize::serialize(v, &mut rmp_serde::Serializer::new(&mut buf).with_struct_map());
    buf
}

pub(crate) fn from_msgpack(b: &[u8]) -> Option<Value> {
    rmp_serde::from_slice(b).ok()
}

/// One length-prefixed frame.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    confab_codec::frame::encode_frame(payload, &mut out);
    out
}

/// The event's type (empty when it has none).
pub(crate) fn kind(v: &Value) -> &str {
    v["type"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_round_trips_and_frames_decode() {
        let v = envelope("message:send", json!({"conversation_id": "c1", "content": "hé"}), "r1");
        let bytes = frame(&to_msgpack(&v));
        let mut d = confab_codec::frame::FrameDecoder::new(1 << 20);
        d.push(&bytes).unwrap();
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(from_msgpack(&f), Some(v));
        assert_eq!(from_msgpack(&[0xc1]), None);
    }
}
