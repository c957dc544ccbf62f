//! Golden vectors: every JSON example of seeds 000 and 001 (kept verbatim under
//! `tests/vectors/`) decodes to the expected typed event, and re-encodes to JSON that carries
//! every field of the original with the same value, so a client written against the seed reads
//! what it expects. See `tests/vectors/README.md` for what "the same" allows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use confab_codec::event::*;
use confab_codec::{Codec, Dialect, Format, MessageKind, PresenceStatus, Timestamp};
use serde_json::Value;
use std::path::{Path, PathBuf};

const JSON: Codec = Codec::new(Dialect::Winkr, Format::Json);
const MSGPACK: Codec = Codec::new(Dialect::Winkr, Format::MsgPack);

/// The Winkr seeds' vectors; the other dialects' are read by `tests/dialects.rs`.
fn vectors(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for seed in ["seed000", "seed001"] {
        let d = root.join(seed).join(dir);
        if let Ok(entries) = std::fs::read_dir(&d) {
            out.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

fn name_of(p: &Path) -> String {
    let seed = p.parent().and_then(Path::parent).and_then(Path::file_name).unwrap().to_string_lossy();
    format!("{seed}/{}", p.file_stem().unwrap().to_string_lossy())
}

/// Client aliases re-encode under their canonical name (SPEC §4).
fn canonical(kind: &str) -> &str {
    match kind {
        "message:viewed" => "message:read",
        "user:status" => "status:update",
        k => k,
    }
}

/// `original` is contained in `encoded`: every object key of the original exists with an
/// equal value; times compare as instants; the envelope's `event` key is read as `type`.
fn assert_contained(original: &Value, encoded: &Value, path: &str, client: bool) {
    match (original, encoded) {
        (Value::Object(o), Value::Object(e)) => {
            for (k, v) in o {
                let key = if path.is_empty() && k == "event" { "type" } else { k.as_str() };
                let found = e.get(key).unwrap_or_else(|| panic!("{path}.{key} missing in {encoded}"));
                if path.is_empty() && key == "type" {
                    let kind = v.as_str().unwrap();
                    assert_eq!(if client { canonical(kind) } else { kind }, found.as_str().unwrap(), "type");
                    continue;
                }
                assert_contained(v, found, &format!("{path}.{key}"), client);
            }
        }
        (Value::Array(o), Value::Array(e)) => {
            assert_eq!(o.len(), e.len(), "{path}: array length");
            for (i, (a, b)) in o.iter().zip(e).enumerate() {
                assert_contained(a, b, &format!("{path}[{i}]"), client);
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            let (ta, tb) = (Timestamp::parse(a), Timestamp::parse(b));
            assert!(ta.is_ok() && ta == tb, "{path}: {a:?} became {b:?}");
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

fn t(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

#[test]
fn every_seed_client_example_decodes_and_round_trips() {
    let files = vectors("client");
    assert_eq!(files.len(), 19, "client vectors: {files:?}");
    for file in files {
        let name = name_of(&file);
        let bytes = std::fs::read(&file).unwrap();
        let env = JSON.decode_client(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_client(&name, &env);

        let original: Value = serde_json::from_slice(&bytes).unwrap();
        let encoded: Value = serde_json::from_slice(&JSON.encode_client(&env).unwrap()).unwrap();
        assert_contained(&original, &encoded, "", true);
        // The same envelope through MessagePack decodes to the same typed event.
        let packed = MSGPACK.encode_client(&env).unwrap();
        assert_eq!(MSGPACK.decode_client(&packed).unwrap(), env, "{name} via msgpack");
    }
}

#[test]
fn every_seed_server_example_decodes_and_round_trips() {
    let files = vectors("server");
    assert_eq!(files.len(), 16, "server vectors: {files:?}");
    for file in files {
        let name = name_of(&file);
        let bytes = std::fs::read(&file).unwrap();
        let env = JSON.decode_server(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_server(&name, &env.event);

        let original: Value = serde_json::from_slice(&bytes).unwrap();
        // Seed 000's clients connect to `/v1/ws`, whose codec writes `message:new` flat too.
        let codec = if name.starts_with("seed000") { JSON.with_flat_messages(true) } else { JSON };
        let encoded: Value = serde_json::from_slice(&codec.encode_server(&env).unwrap()).unwrap();
        assert_contained(&original, &encoded, "", false);
        let packed = MSGPACK.encode_server(&env).unwrap();
        assert_eq!(MSGPACK.decode_server(&packed).unwrap(), env, "{name} via msgpack");
    }
}

fn check_client(name: &str, env: &ClientEnvelope) {
    let conv = |c: &ConversationRef| c.conversation_id.to_string();
    match (name, &env.event) {
        ("seed000/connection_established", ClientEvent::Hello(h)) => {
            assert_eq!((h.client_version.as_deref(), h.platform.as_deref()), (Some("1.0"), Some("web")));
        }
        ("seed000/conversation_join", ClientEvent::Join(j)) => {
            assert_eq!((j.conversation_id.as_str(), j.since_seq), ("conv_123456789", None));
        }
        ("seed001/conversation_join", ClientEvent::Join(j)) => assert_eq!(j.conversation_id.as_str(), "conv-uuid-1"),
        ("seed000/conversation_leave", ClientEvent::Leave(c)) => assert_eq!(conv(c), "conv_123456789"),
        ("seed001/conversation_leave", ClientEvent::Leave(c)) => assert_eq!(conv(c), "conv-uuid-1"),
        ("seed000/message_send", ClientEvent::Send(s)) => {
            assert_eq!((s.content.as_str(), s.kind), ("Hello, world!", MessageKind::Text));
            assert_eq!(s.reply_to.as_ref().map(|r| r.as_str()), Some("msg_987654321"));
        }
        ("seed001/message_send", ClientEvent::Send(s)) => {
            assert_eq!((s.conversation_id.as_str(), s.content.as_str()), ("conv-uuid-1", "Hey! How are you?"));
            assert!(s.metadata.is_empty() && s.local_id.is_none());
        }
        ("seed000/message_viewed", ClientEvent::Read(m)) | ("seed001/message_read", ClientEvent::Read(m)) => {
            assert!(m.message_id.as_str().starts_with("msg"));
        }
        ("seed001/message_delete", ClientEvent::Delete(m)) => assert_eq!(m.message_id.as_str(), "msg-uuid-1"),
        ("seed000/typing_start" | "seed001/typing_start", ClientEvent::TypingStart(c))
        | ("seed000/typing_stop" | "seed001/typing_stop", ClientEvent::TypingStop(c)) => {
            assert!(conv(c).starts_with("conv"));
        }
        ("seed000/status_update", ClientEvent::SetStatus(s)) => {
            assert_eq!((s.status, s.message.as_deref()), (PresenceStatus::Online, Some("Working from home")));
        }
        ("seed001/user_status", ClientEvent::SetStatus(s)) => assert_eq!(s.status, PresenceStatus::Online),
        ("seed000/ephemeral_photo_send", ClientEvent::EphemeralSend(e)) => {
            assert_eq!((e.photo_url.as_str(), e.expires_in), ("https://example.com/photo.jpg", 10));
        }
        ("seed000/ephemeral_photo_view", ClientEvent::EphemeralView(v)) => assert_eq!(v.photo_id.as_str(), "photo_123"),
        ("seed000/heartbeat", ClientEvent::Heartbeat(h)) => assert!(h.timestamp.is_some()),
        (name, ev) => panic!("{name}: unexpected {ev:?}"),
    }
    if name.starts_with("seed000") {
        // Seed 000's send() always adds a message id and an ISO time.
        assert!(env.request_id.is_some(), "{name}");
        assert_eq!(env.sent_at, Some(t("2025-12-01T10:30:00Z")), "{name}");
    }
}

fn check_server(name: &str, ev: &ServerEvent) {
    match (name, ev) {
        ("seed000/message_new", ServerEvent::MessageNew(m)) => {
            // Seed 000's flat layout: the message fields are the data itself.
            assert_eq!((m.message.id.as_str(), m.message.sender_id.as_str()), ("msg_987654321", "user_456789"));
            assert_eq!(m.sender.id.as_str(), "user_456789");
        }
        ("seed001/message_new", ServerEvent::MessageNew(m)) => {
            assert_eq!(m.message.content, "Hey! How are you?");
            assert_eq!(m.message.is_read, Some(false));
            assert_eq!(m.sender.username.as_deref(), Some("jane_doe"));
        }
        ("seed000/typing_indicator", ServerEvent::Typing(t)) => assert!(t.is_typing && t.username.is_none()),
        ("seed001/typing_indicator", ServerEvent::Typing(t)) => assert_eq!(t.username.as_deref(), Some("jane_doe")),
        ("seed000/status_update", ServerEvent::StatusUpdate(s)) => {
            assert_eq!((s.status, s.last_seen), (PresenceStatus::Online, Some(t("2025-12-01T10:25:00Z"))));
        }
        ("seed001/connection_established", ServerEvent::Established(e)) => {
            assert_eq!((e.user_id.as_str(), e.connection_id.as_str()), ("user-uuid-1", "conn-uuid-1"));
        }
        ("seed001/connection_closed", ServerEvent::Closed(c)) => {
            assert_eq!((c.reason.as_str(), c.code), ("normal_closure", 1000))
        }
        ("seed001/conversation_joined", ServerEvent::Joined(j)) => assert_eq!(j.joined_at, t("2025-01-01T12:00:00Z")),
        ("seed001/conversation_left", ServerEvent::Left(l)) => assert_eq!(l.conversation_id.as_str(), "conv-uuid-1"),
        ("seed001/conversation_unread", ServerEvent::Unread(u)) => {
            assert_eq!(u.unread_count, 3);
            assert_eq!(u.last_message.as_ref().map(|m| m.kind), Some(MessageKind::Text));
        }
        ("seed001/error", ServerEvent::Error(e)) => {
            assert_eq!(e.code, confab_codec::ErrorCode::ValidationError);
            assert_eq!(e.request_event.as_deref(), Some("message:send"));
        }
        ("seed001/message_deleted", ServerEvent::Deleted(d)) => assert_eq!(d.deleted_by.as_str(), "user-uuid-1"),
        ("seed001/message_delivered", ServerEvent::Delivered(d)) => {
            assert_eq!(d.delivered_at, t("2025-01-01T12:00:05Z"))
        }
        ("seed001/message_viewed", ServerEvent::Viewed(v)) => assert_eq!(v.viewed_at, t("2025-01-01T12:00:10Z")),
        ("seed001/user_online", ServerEvent::UserOnline(u)) => assert_eq!(u.username.as_deref(), Some("jane_doe")),
        ("seed001/user_offline", ServerEvent::UserOffline(u)) => assert_eq!(u.offline_at, t("2025-01-01T12:30:00Z")),
        (name, ev) => panic!("{name}: unexpected {ev:?}"),
    }
}
