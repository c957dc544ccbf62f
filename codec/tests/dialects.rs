//! Golden vectors of the other seed dialects (SPEC §7): every example of seeds 002 (systimz),
//! 003 (chatrooms) and 004 (actions), under `tests/vectors/seed00{2,3,4}/`. Client examples
//! decode to the expected typed request; for each server example, the typed event with the
//! example's values encodes to JSON that contains the example (same keys, same values), in
//! both formats. `tests/vectors/README.md` lists the few documented differences.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use confab_codec::event::*;
use confab_codec::{
    ClientEvent, Codec, ConnectionId, ConversationId, Dialect, ErrorCode, Format, MessageId, MessageKind, RequestId,
    Seq, ServerEvent, Timestamp, UserId,
};
use serde_json::{Value, json};
use std::path::Path;

fn vector(seed: &str, side: &str, name: &str) -> Vec<u8> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(seed).join(side).join(format!("{name}.json"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files(seed: &str, side: &str) -> Vec<String> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(seed).join(side);
    let mut out: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn codec(d: Dialect, scope: Option<&str>) -> Codec {
    Codec::new(d, Format::Json).with_scope(scope.map(|s| ConversationId::parse(s).unwrap()))
}

fn t(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn env(event: ServerEvent, at: &str) -> ServerEnvelope {
    ServerEnvelope { event, timestamp: Some(t(at)), message_id: None, request_id: None }
}

/// Placeholders in the seeds that stand for values the server fills in (`"timestamp"`), and
/// fields it cannot know (a sender's e-mail): any value of the right kind will do there.
fn placeholder(path: &str, original: &Value) -> bool {
    original == "timestamp" || path.ends_with(".sender.email") || path.ends_with(".sender.created_at")
}

/// `original` is contained in `encoded`: every key with an equal value; times as instants.
fn assert_contained(original: &Value, encoded: &Value, path: &str) {
    if placeholder(path, original) {
        return;
    }
    match (original, encoded) {
        (Value::Object(o), Value::Object(e)) => {
            for (k, v) in o {
                let found = e.get(k).unwrap_or_else(|| panic!("{path}.{k} missing in {encoded}"));
                assert_contained(v, found, &format!("{path}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(e)) => {
            assert_eq!(o.len(), e.len(), "{path}: array length");
            for (i, (a, b)) in o.iter().zip(e).enumerate() {
                assert_contained(a, b, &format!("{path}[{i}]"));
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            let (ta, tb) = (Timestamp::parse(a), Timestamp::parse(b));
            assert!(ta.is_ok() && ta == tb, "{path}: {a:?} became {b:?}");
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

/// Encodes `env` in both formats and checks the JSON against the seed's example; the
/// MessagePack form carries the same document.
fn assert_encodes_as(dialect: Dialect, env: &ServerEnvelope, seed: &str, name: &str) {
    let json_codec = Codec::new(dialect, Format::Json);
    let encoded: Value = serde_json::from_slice(&json_codec.encode_server(env).unwrap()).unwrap();
    let original: Value = serde_json::from_slice(&vector(seed, "server", name)).unwrap();
    assert_contained(&original, &encoded, &format!("{seed}/{name}"));
    let packed = Codec::new(dialect, Format::MsgPack).encode_server(env).unwrap();
    let unpacked: Value = rmp_serde::from_slice(&packed).unwrap();
    assert_eq!(unpacked, encoded, "{seed}/{name} via msgpack");
}

fn message(id: &str, conv: &str, sender: &str, content: &str, kind: MessageKind, at: &str) -> Message {
    Message {
        id: MessageId::parse(id).unwrap(),
        conversation_id: ConversationId::parse(conv).unwrap(),
        seq: Some(Seq(7)),
        sender_id: UserId::parse(sender).unwrap(),
        content: content.into(),
        kind,
        metadata: Default::default(),
        created_at: t(at),
        updated_at: None,
        is_read: None,
        local_id: None,
        reply_to: None,
    }
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn cid(s: &str) -> ConversationId {
    ConversationId::parse(s).unwrap()
}

fn push(v: Value) -> Push {
    Push(v.as_object().unwrap().clone())
}

// ---- seed 002: systimz ----

#[test]
fn systimz_client_examples_decode() {
    assert_eq!(files("seed002", "client"), ["message", "status"]);
    let c = codec(Dialect::Systimz, Some("conv-1"));
    let m = c.decode_client(&vector("seed002", "client", "message")).unwrap();
    let ClientEvent::Send(s) = m.event else { panic!("{m:?}") };
    assert_eq!((s.conversation_id.as_str(), s.content.as_str(), s.kind), ("conv-1", "Hello!", MessageKind::Text));
    let st = c.decode_client(&vector("seed002", "client", "status")).unwrap();
    assert_eq!(st.event, ClientEvent::TypingStart(ConversationRef { conversation_id: cid("conv-1") }));
    // Without a scope, a message has nowhere to go: a field error, not a guess.
    let e = codec(Dialect::Systimz, None).decode_client(&vector("seed002", "client", "message")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ValidationError);
    assert_eq!(e.request_event.as_deref(), Some("message"));
}

#[test]
fn systimz_server_examples_encode() {
    assert_eq!(
        files("seed002", "server"),
        ["avatar_update", "broadcast", "connection", "error", "message", "status", "system"]
    );
    let at = "2024-01-11T12:00:00Z";
    let mut m = message("msg-1", "conv-1", "assistant", "string", MessageKind::Ai, at);
    m.metadata.insert("text".into(), json!("string"));
    let mut e = env(
        ServerEvent::MessageNew(MessageNew {
            message: m,
            sender: Sender { id: uid("assistant"), username: None, avatar_url: None },
        }),
        at,
    );
    e.message_id = Some("msg-123".into());
    assert_encodes_as(Dialect::Systimz, &e, "seed002", "message");

    let typing = Typing {
        conversation_id: cid("conv-1"),
        user_id: uid("string"),
        username: None,
        is_typing: true,
        timestamp: None,
    };
    let mut e = env(ServerEvent::Typing(typing), at);
    e.message_id = Some("status-123".into());
    assert_encodes_as(Dialect::Systimz, &e, "seed002", "status");

    let mut e = env(
        ServerEvent::AvatarUpdate(push(json!({"avatarId": "string", "action": "speaking", "metadata": "string"}))),
        at,
    );
    e.message_id = Some("avatar-123".into());
    assert_encodes_as(Dialect::Systimz, &e, "seed002", "avatar_update");

    let limited = ErrorData {
        code: ErrorCode::RateLimited,
        message: "Message rate limit exceeded".into(),
        details: Some(json!({"limit": 10, "interval": 1, "retry_after": 10})),
        request_event: None,
        request_id: None,
    };
    let mut e = env(ServerEvent::Error(limited), at);
    e.message_id = Some("error-123".into());
    assert_encodes_as(Dialect::Systimz, &e, "seed002", "error");

    let est = Established {
        user_id: uid("user-1"),
        connection_id: ConnectionId::parse("conn-1").unwrap(),
        active_conversations: None,
        heartbeat_interval: None,
        transport: None,
        codec: None,
        timestamp: Some(t(at)),
        certificate_sha256: None,
    };
    assert_encodes_as(Dialect::Systimz, &env(ServerEvent::Established(est), at), "seed002", "connection");
    let b = push(json!({"message": "New features are live", "severity": "info"}));
    assert_encodes_as(Dialect::Systimz, &env(ServerEvent::Broadcast(b), at), "seed002", "broadcast");
    let s = push(json!({"event": "maintenance", "scheduledTime": "2024-01-12T02:00:00Z", "duration": 3600}));
    assert_encodes_as(Dialect::Systimz, &env(ServerEvent::SystemNotice(s), at), "seed002", "system");
}

#[test]
fn systimz_maps_errors_and_shutdown_to_its_own_events() {
    let c = Codec::new(Dialect::Systimz, Format::Json);
    let at = "2024-01-11T12:00:00Z";
    let err = |code| {
        let data = ErrorData { code, message: "m".into(), details: None, request_event: None, request_id: None };
        let v: Value = serde_json::from_slice(&c.encode_server(&env(ServerEvent::Error(data), at)).unwrap()).unwrap();
        (v["payload"]["code"].as_str().unwrap().to_owned(), v["payload"]["details"]["reason"].clone())
    };
    assert_eq!(err(ErrorCode::TokenExpired), ("AUTH_FAILED".to_owned(), json!("TOKEN_EXPIRED")));
    assert_eq!(err(ErrorCode::Forbidden).0, "INVALID_MESSAGE");
    assert_eq!(err(ErrorCode::InternalError).0, "SERVER_ERROR");
    let closed = Closed { reason: "server_shutdown".into(), code: 1001, timestamp: None };
    let v: Value = serde_json::from_slice(&c.encode_server(&env(ServerEvent::Closed(closed), at)).unwrap()).unwrap();
    assert_eq!((v["type"].as_str(), v["payload"]["event"].as_str()), (Some("system"), Some("shutdown")));
    // Events the dialect has no form for are skipped, not sent in another dialect's shape.
    let joined = Joined {
        conversation_id: cid("c"),
        joined_at: t(at),
        last_seq: None,
        others_read_seq: None,
        others_delivered_seq: None,
    };
    assert!(!c.encode_server_into(&env(ServerEvent::Joined(joined), at), &mut Vec::new()).unwrap());
}

// ---- seed 003: chatrooms ----

#[test]
fn chatrooms_client_examples_decode() {
    assert_eq!(files("seed003", "client"), ["direct_message", "read_receipt", "send_message", "typing_indicator"]);
    let c = codec(Dialect::Chatrooms, Some("chat-1"));
    let send = c.decode_client(&vector("seed003", "client", "send_message")).unwrap();
    let ClientEvent::Send(s) = send.event else { panic!("{send:?}") };
    assert_eq!((s.conversation_id.as_str(), s.content.as_str(), s.reply_to), ("chat-1", "Your message content", None));
    let dm = c.decode_client(&vector("seed003", "client", "direct_message")).unwrap();
    let ClientEvent::Send(d) = dm.event else { panic!("{dm:?}") };
    assert_eq!(d.conversation_id.as_str(), "chat-uuid-here");
    assert_eq!(d.metadata.get("recipient_id"), Some(&json!("recipient-user-uuid")));
    let typing = c.decode_client(&vector("seed003", "client", "typing_indicator")).unwrap();
    assert_eq!(typing.event, ClientEvent::TypingStart(ConversationRef { conversation_id: cid("chat-1") }));
    let read = c.decode_client(&vector("seed003", "client", "read_receipt")).unwrap();
    assert_eq!(read.event, ClientEvent::Read(ReadMark::new(cid("chat-1"), MessageId::parse("uuid").unwrap())));
    // The personal socket has no chat: a chat request there names what to do instead.
    let e = codec(Dialect::ChatroomsPersonal, None)
        .decode_client(&vector("seed003", "client", "send_message"))
        .unwrap_err();
    assert!(e.error.to_string().contains("/api/v1/ws/chat/"), "{e}");
    // A thread reply keeps its parent.
    let reply = br#"{"type":"send_message","data":{"content":"re","message_type":"text","parent_message_id":"m-1"}}"#;
    let ClientEvent::Send(r) = c.decode_client(reply).unwrap().event else { panic!() };
    assert_eq!(r.reply_to.map(|m| m.to_string()).as_deref(), Some("m-1"));
}

#[test]
fn chatrooms_server_examples_encode() {
    assert_eq!(files("seed003", "server"), ["new_direct_message", "new_message"]);
    let at = "2025-01-01T12:00:00Z";
    let m = message("uuid", "uuid", "uuid", "Message content", MessageKind::Text, at);
    let sender = Sender { id: uid("uuid"), username: Some("username".into()), avatar_url: None };
    let new = env(ServerEvent::MessageNew(MessageNew { message: m.clone(), sender: sender.clone() }), at);
    assert_encodes_as(Dialect::Chatrooms, &new, "seed003", "new_message");
    // The personal socket hears direct messages only.
    let mut skipped = Vec::new();
    assert!(!Codec::new(Dialect::ChatroomsPersonal, Format::Json).encode_server_into(&new, &mut skipped).unwrap());
    let mut dm = m;
    dm.metadata.insert("recipient_id".into(), json!("user-2"));
    let dm = env(ServerEvent::MessageNew(MessageNew { message: dm, sender }), at);
    assert_encodes_as(Dialect::ChatroomsPersonal, &dm, "seed003", "new_direct_message");
}

// ---- seed 004: actions ----

#[test]
fn actions_client_examples_decode() {
    assert_eq!(files("seed004", "client"), ["heartbeat", "mark_read", "send_message", "typing"]);
    let c = Codec::new(Dialect::Actions, Format::Json);
    let send = c.decode_client(&vector("seed004", "client", "send_message")).unwrap();
    assert_eq!(send.request_id, Some(RequestId::parse("temp_123").unwrap()), "local_id is the request id");
    let ClientEvent::Send(s) = send.event else { panic!() };
    assert_eq!((s.conversation_id.as_str(), s.content.as_str()), ("789", "Hello!"));
    assert_eq!(s.local_id.map(|l| l.to_string()).as_deref(), Some("temp_123"));
    assert_eq!(s.reply_to.map(|l| l.to_string()).as_deref(), Some("456"));
    assert_eq!(s.attachments.len(), 1);
    assert_eq!((s.attachments[0].kind.as_str(), s.attachments[0].filename.as_deref()), ("image", Some("photo.jpg")));
    assert!(!s.attachments[0].bytes.is_empty());
    let typing = c.decode_client(&vector("seed004", "client", "typing")).unwrap();
    assert_eq!(typing.event, ClientEvent::TypingStart(ConversationRef { conversation_id: cid("789") }));
    let read = c.decode_client(&vector("seed004", "client", "mark_read")).unwrap();
    // Both ids the seed lists, in its order: the server reports each one read.
    let expected = ReadMark {
        conversation_id: cid("789"),
        message_id: MessageId::parse("902").unwrap(),
        others: vec![MessageId::parse("901").unwrap()],
    };
    assert_eq!(read.event, ClientEvent::Read(expected));
    let hb = c.decode_client(&vector("seed004", "client", "heartbeat")).unwrap();
    assert!(matches!(hb.event, ClientEvent::Heartbeat(_)));
}

#[test]
fn actions_server_examples_encode() {
    assert_eq!(
        files("seed004", "server"),
        ["chat_message", "connection_established", "error", "messages_read", "typing_indicator"]
    );
    let at = "2023-12-01T12:00:00Z";
    let est = Established {
        user_id: uid("123"),
        connection_id: ConnectionId::parse("user_123_456").unwrap(),
        active_conversations: Some(vec![cid("789"), cid("101")]),
        heartbeat_interval: Some(30),
        transport: Some("websocket".into()),
        codec: Some("json".into()),
        timestamp: Some(t(at)),
        certificate_sha256: None,
    };
    assert_encodes_as(Dialect::Actions, &env(ServerEvent::Established(est), at), "seed004", "connection_established");

    let mut m = message("901", "789", "123", "Hello!", MessageKind::Text, at);
    m.local_id = Some(confab_codec::LocalId::parse("temp_123").unwrap());
    m.metadata.insert("attachments".into(), json!([{"id": "att_123", "type": "image", "url": "https://..."}]));
    assert_encodes_as(Dialect::Actions, &env(ServerEvent::MessageSent(m), at), "seed004", "chat_message");

    let failed = ErrorData {
        code: ErrorCode::InternalError,
        message: "Failed to send message".into(),
        details: None,
        request_event: Some("message:send".into()),
        request_id: Some("temp_123".into()),
    };
    assert_encodes_as(Dialect::Actions, &env(ServerEvent::Error(failed), at), "seed004", "error");

    let typing = Typing {
        conversation_id: cid("789"),
        user_id: uid("123"),
        username: None,
        is_typing: true,
        timestamp: Some(t(at)),
    };
    assert_encodes_as(Dialect::Actions, &env(ServerEvent::Typing(typing), at), "seed004", "typing_indicator");
}

#[test]
fn actions_messages_read_names_every_message_read() {
    // Seed 004 pairs `mark_read ["901","902"]` with `messages_read ["901","902"]`: every id
    // the request named; a read of one message (another dialect's) names that one.
    let at = "2023-12-01T12:00:00Z";
    let viewed = Viewed {
        message_id: MessageId::parse("902").unwrap(),
        conversation_id: cid("789"),
        viewed_at: t(at),
        user_id: Some(uid("123")),
        seq: Some(Seq(9)),
        message_ids: vec![MessageId::parse("901").unwrap(), MessageId::parse("902").unwrap()],
    };
    let codec = Codec::new(Dialect::Actions, Format::Json);
    let bytes = codec.encode_server(&env(ServerEvent::Viewed(viewed.clone()), at)).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let original: Value = serde_json::from_slice(&vector("seed004", "server", "messages_read")).unwrap();
    assert_contained(&original, &v, "seed004/messages_read");
    let one = Viewed { message_ids: Vec::new(), ..viewed };
    let v: Value = serde_json::from_slice(&codec.encode_server(&env(ServerEvent::Viewed(one), at)).unwrap()).unwrap();
    assert_eq!(v["data"]["message_ids"], json!(["902"]));
}

#[test]
fn actions_refuses_bad_requests_with_named_fields_and_the_local_id() {
    let c = Codec::new(Dialect::Actions, Format::Json);
    let cases: [(&[u8], &str); 6] = [
        (br#"{"action":"send_message","conversation_id":"c","content":"","local_id":"l1"}"#, "content"),
        (br#"{"action":"send_message","conversation_id":"c","content":"x","local_id":"l1","attachments":[{"type":"image","file":"@@@"}]}"#, "attachments[0].file"),
        (br#"{"action":"send_message","conversation_id":"c","content":"x","local_id":"l1","attachments":[{"type":"image","file":"aGk=","filename":"../x"}]}"#, "attachments[0].filename"),
        (br#"{"action":"mark_read","conversation_id":"c","message_ids":[]}"#, "message_ids"),
        (br#"{"action":"typing","conversation_id":"c"}"#, "is_typing"),
        (br#"{"action":"typing","conversation_id":"bad id","is_typing":true}"#, "conversation_id"),
    ];
    for (bytes, field) in cases {
        let e = c.decode_client(bytes).unwrap_err();
        assert!(e.error.to_string().starts_with(field), "{}: {e}", String::from_utf8_lossy(bytes));
    }
    let e = c
        .decode_client(br#"{"action":"send_message","conversation_id":"c","content":"","local_id":"l1"}"#)
        .unwrap_err();
    assert_eq!(e.request_id.as_deref(), Some("l1"));
    let e = c.decode_client(br#"{"action":"fly"}"#).unwrap_err();
    assert_eq!(e.error.to_string(), r#"type: unknown event type "fly""#);
    let e = c.decode_client(br#"[1,2]"#).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ValidationError);
    // Files only, no text, is a message too.
    let ok = c
        .decode_client(
            br#"{"action":"send_message","conversation_id":"c","attachments":[{"type":"file","file":"aGk="}]}"#,
        )
        .unwrap();
    let ClientEvent::Send(s) = ok.event else { panic!() };
    assert_eq!((s.content.as_str(), s.attachments[0].bytes.as_slice()), ("", b"hi".as_slice()));
}
