//! Every way a client frame can be wrong gets the documented code, names the field, and keeps
//! the request's type and id when they can be read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use confab_codec::{Codec, CodecError, DecodeError, Dialect, ErrorCode, Format, MAX_FRAME_BYTES};
use serde_json::json;

const JSON: Codec = Codec::new(Dialect::Winkr, Format::Json);
const MSGPACK: Codec = Codec::new(Dialect::Winkr, Format::MsgPack);

fn decode(v: serde_json::Value) -> DecodeError {
    JSON.decode_client(v.to_string().as_bytes()).expect_err("must be refused")
}

fn send(data: serde_json::Value) -> DecodeError {
    decode(json!({"type": "message:send", "data": data, "message_id": "req_1"}))
}

#[test]
fn text_over_2000_characters_is_message_too_large() {
    let e = send(json!({"conversation_id": "c1", "content": "x".repeat(2001), "type": "text"}));
    assert_eq!(e.code(), ErrorCode::MessageTooLarge);
    assert_eq!(e.to_string(), "content: must be 1 to 2000 characters, got 2001");
    assert_eq!((e.request_event.as_deref(), e.request_id.as_deref()), (Some("message:send"), Some("req_1")));
}

#[test]
fn empty_text_is_a_validation_error_on_content() {
    let e = send(json!({"conversation_id": "c1", "content": "", "type": "text"}));
    assert_eq!((e.code(), e.error.field()), (ErrorCode::ValidationError, Some("content")));
}

#[test]
fn unknown_message_types_are_invalid_message_type() {
    let e = send(json!({"conversation_id": "c1", "content": "hi", "type": "video"}));
    assert_eq!(e.code(), ErrorCode::InvalidMessageType);
    let e = send(json!({"conversation_id": "c1", "content": "hi", "type": "system"}));
    assert_eq!(e.code(), ErrorCode::InvalidMessageType);
}

#[test]
fn a_wrong_json_type_names_the_field_and_keeps_the_request_id() {
    let e = send(json!({"conversation_id": "c1", "content": 5}));
    assert_eq!((e.code(), e.error.field()), (ErrorCode::ValidationError, Some("content")));
    assert!(e.to_string().contains("expected a string"), "{e}");
    assert_eq!(e.request_id.as_deref(), Some("req_1"));
}

#[test]
fn a_missing_field_is_named() {
    let e = send(json!({"content": "hi"}));
    assert_eq!(e.error.field(), Some("conversation_id"));
    assert_eq!(e.request_event.as_deref(), Some("message:send"));
}

#[test]
fn a_nested_wrong_value_names_its_path() {
    let e = send(json!({"conversation_id": "c1", "type": "location", "metadata": {"lat": 100, "lng": 0}}));
    assert_eq!(e.error.field(), Some("metadata.lat"));
    let e = send(json!({"conversation_id": "c1", "content": "hi", "metadata": [1]}));
    assert_eq!(e.error.field(), Some("metadata"));
}

#[test]
fn unknown_event_types_are_validation_errors_that_echo_the_type() {
    let e = decode(json!({"type": "message:explode", "data": {}, "message_id": "r9"}));
    assert_eq!(e.error, CodecError::UnknownType("message:explode".into()));
    assert_eq!(e.code(), ErrorCode::ValidationError);
    assert_eq!((e.request_event.as_deref(), e.request_id.as_deref()), (Some("message:explode"), Some("r9")));
}

#[test]
fn a_missing_or_non_string_type_is_refused() {
    assert_eq!(decode(json!({"data": {}})).error, CodecError::MissingType);
    assert_eq!(decode(json!({"type": null})).error, CodecError::MissingType);
    assert_eq!(decode(json!({"type": 7})).error.field(), Some("type"));
}

#[test]
fn malformed_documents_are_validation_errors() {
    for bytes in [&b"{"[..], b"not json", b"[1,2]", b"\"type\"", b"", b"{\"type\":\"heartbeat\"} trailing"] {
        let e = JSON.decode_client(bytes).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ValidationError, "{:?}", String::from_utf8_lossy(bytes));
        assert!(matches!(e.error, CodecError::Malformed { .. }), "{e:?}");
    }
    for bytes in [&[0xc1u8][..], &[0x92, 0x01, 0x02], &[0x81, 0xa4]] {
        let e = MSGPACK.decode_client(bytes).unwrap_err();
        assert!(matches!(e.error, CodecError::Malformed { .. }), "{e:?}");
    }
}

#[test]
fn frames_over_32_kib_are_refused_before_parsing() {
    let big = vec![b' '; MAX_FRAME_BYTES + 1];
    let e = JSON.decode_client(&big).unwrap_err();
    assert_eq!(e.error, CodecError::FrameTooLarge { size: MAX_FRAME_BYTES + 1, limit: MAX_FRAME_BYTES });
    assert_eq!(e.code(), ErrorCode::MessageTooLarge);
}

#[test]
fn bad_ids_are_refused_with_the_rule() {
    let e = decode(json!({"type": "conversation:join", "data": {"conversation_id": "../etc/passwd"}}));
    assert_eq!((e.code(), e.error.field()), (ErrorCode::ValidationError, Some("conversation_id")));
    // A request id that breaks the rule is not echoed back.
    let e = decode(json!({"type": "heartbeat", "message_id": "has space"}));
    assert_eq!((e.error.field(), e.request_id), (Some("message_id"), None));
}

#[test]
fn range_checks_on_numbers_and_enums() {
    let e = decode(json!({"type": "history:get", "data": {"conversation_id": "c", "limit": 101}}));
    assert_eq!(e.error.field(), Some("limit"));
    let e = decode(json!({"type": "history:get", "data": {"conversation_id": "c", "before_seq": -1}}));
    assert_eq!(e.error.field(), Some("before_seq"));
    let e = decode(
        json!({"type": "ephemeral_photo:send", "data": {"conversation_id": "c", "photo_url": "https://x/p", "expires_in": 0}}),
    );
    assert_eq!(e.error.field(), Some("expires_in"));
    let e = decode(json!({"type": "status:update", "data": {"status": "sleeping"}}));
    assert_eq!(e.error.field(), Some("status"));
    let e = decode(json!({"type": "message:read", "data": {"conversation_id": "c"}}));
    assert_eq!(e.error.field(), Some("message_id"));
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let deep = format!("{{\"type\":\"heartbeat\",\"data\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    assert!(JSON.decode_client(deep.as_bytes()).is_err());
    let mut packed = vec![0x82, 0xa4, b't', b'y', b'p', b'e', 0xa9];
    packed.extend_from_slice(b"heartbeat");
    packed.extend_from_slice(&[0xa4, b'd', b'a', b't', b'a']);
    packed.extend(std::iter::repeat_n(0x91, 30_000));
    packed.push(0xc0);
    assert!(MSGPACK.decode_client(&packed).is_err());
}

#[test]
fn aliases_and_unknown_fields_are_accepted() {
    let ok = JSON
        .decode_client(
            json!({"event": "user:status", "payload": {"status": "away", "mood": "x"}, "extra": 1})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(ok.event.name(), "status:update");
    // Data before type, and no data at all, both decode.
    assert!(JSON.decode_client(br#"{"data":{"conversation_id":"c"},"type":"typing:start"}"#).is_ok());
    assert!(JSON.decode_client(br#"{"type":"heartbeat"}"#).is_ok());
    assert!(JSON.decode_client(br#"{"type":"heartbeat","data":null}"#).is_ok());
}
