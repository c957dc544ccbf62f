//! Property tests: any event round-trips through JSON and MessagePack; the frame decoder gives
//! the same frames for any chunking; no input of any shape panics the decoders.
//!
//! `PROPTEST_CASES=200000 cargo test --release -p confab-codec --test properties` is the long
//! run (the stand-in for a fuzzer on this stable toolchain); see `docs/protocol.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use confab_codec::event::*;
use confab_codec::frame::{FrameDecoder, encode_frame};
use confab_codec::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

const CODECS: [Codec; 2] = [Codec::new(Dialect::Winkr, Format::Json), Codec::new(Dialect::Winkr, Format::MsgPack)];

fn id_str() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:@+=~-]{1,40}"
}
fn conv() -> impl Strategy<Value = ConversationId> {
    id_str().prop_map(|s| ConversationId::parse(&s).unwrap())
}
fn msg_id() -> impl Strategy<Value = MessageId> {
    id_str().prop_map(|s| MessageId::parse(&s).unwrap())
}
fn user() -> impl Strategy<Value = UserId> {
    id_str().prop_map(|s| UserId::parse(&s).unwrap())
}
fn time() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800_000).prop_map(Timestamp::from_millis)
}
fn text() -> impl Strategy<Value = String> {
    "\\PC{1,300}".prop_filter("not blank", |s| !s.trim().is_empty())
}
fn url() -> impl Strategy<Value = String> {
    "[a-z0-9./_-]{1,60}".prop_map(|p| format!("https://cdn.example/{p}"))
}
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ]
}
fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![scalar(), Just(Value::Null)];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z_]{1,8}", value, 0..4).prop_map(|m| m.into_iter().collect())
}

fn send() -> impl Strategy<Value = SendMessage> {
    let body = prop_oneof![
        text().prop_map(|t| (MessageKind::Text, t, Map::new())),
        url().prop_map(|u| (MessageKind::Photo, u, Map::new())),
        url().prop_map(|u| (MessageKind::PhotoEphemeral, u, Map::new())),
        (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lng)| {
            let mut m = Map::new();
            m.insert("lat".into(), lat.into());
            m.insert("lng".into(), lng.into());
            (MessageKind::Location, String::new(), m)
        }),
        "[a-z ]{0,20}[a-z]".prop_map(|g| (MessageKind::Gift, g, Map::new())),
    ];
    (conv(), body, metadata(), proptest::option::of(id_str()), proptest::option::of(msg_id())).prop_map(
        |(conversation_id, (kind, content, mut meta), extra, local, reply_to)| {
            for (k, v) in extra {
                // reply_to inside metadata is read as the reply target; keep the two apart.
                if k != "reply_to" && !meta.contains_key(&k) {
                    meta.insert(k, v);
                }
            }
            SendMessage {
                conversation_id,
                content,
                kind,
                metadata: meta,
                local_id: local.map(|l| LocalId::parse(&l).unwrap()),
                reply_to,
                attachments: Vec::new(),
            }
        },
    )
}

fn client_event() -> impl Strategy<Value = ClientEvent> {
    let conv_ref = || conv().prop_map(|conversation_id| ConversationRef { conversation_id });
    let msg_ref =
        || (conv(), msg_id()).prop_map(|(conversation_id, message_id)| MessageRef { conversation_id, message_id });
    prop_oneof![
        (proptest::option::of("[a-z0-9.]{1,20}"), proptest::option::of("[a-z]{1,10}"))
            .prop_map(|(client_version, platform)| ClientEvent::Hello(Hello { client_version, platform })),
        (conv(), proptest::option::of(any::<u64>()))
            .prop_map(|(conversation_id, s)| ClientEvent::Join(Join { conversation_id, since_seq: s.map(Seq) })),
        conv_ref().prop_map(ClientEvent::Leave),
        send().prop_map(ClientEvent::Send),
        msg_ref().prop_map(|m| ClientEvent::Read(ReadMark::new(m.conversation_id, m.message_id))),
        msg_ref().prop_map(ClientEvent::Delete),
        conv_ref().prop_map(ClientEvent::TypingStart),
        conv_ref().prop_map(ClientEvent::TypingStop),
        (prop::sample::select(PresenceStatus::ALL.to_vec()), proptest::option::of("\\PC{0,100}"))
            .prop_map(|(status, message)| ClientEvent::SetStatus(SetStatus { status, message })),
        (conv(), url(), 1u32..=300).prop_map(|(conversation_id, photo_url, expires_in)| {
            ClientEvent::EphemeralSend(EphemeralSend { conversation_id, photo_url, expires_in })
        }),
        id_str().prop_map(|p| ClientEvent::EphemeralView(EphemeralView { photo_id: PhotoId::parse(&p).unwrap() })),
        (conv(), proptest::option::of(any::<u64>()), 1u32..=100).prop_map(|(conversation_id, b, limit)| {
            ClientEvent::History(HistoryQuery { conversation_id, before_seq: b.map(Seq), limit })
        }),
        "[A-Za-z0-9._-]{1,300}".prop_map(|token| ClientEvent::AuthRefresh(AuthRefresh { token })),
        proptest::option::of(prop_oneof!["\\PC{0,30}".prop_map(Value::from), any::<i64>().prop_map(Value::from)])
            .prop_map(|timestamp| ClientEvent::Heartbeat(Heartbeat { timestamp })),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (send(), msg_id(), user(), any::<u64>(), time(), proptest::option::of(any::<bool>())).prop_map(
        |(s, id, sender_id, seq, created_at, is_read)| Message {
            id,
            conversation_id: s.conversation_id,
            seq: Some(Seq(seq)),
            sender_id,
            content: s.content,
            kind: s.kind,
            metadata: s.metadata,
            created_at,
            updated_at: None,
            is_read,
            local_id: s.local_id,
            reply_to: s.reply_to,
        },
    )
}

fn server_event() -> impl Strategy<Value = ServerEvent> {
    prop_oneof![
        (message(), proptest::option::of("\\PC{1,20}")).prop_map(|(m, username)| {
            let sender = Sender { id: m.sender_id.clone(), username, avatar_url: None };
            ServerEvent::MessageNew(MessageNew { message: m, sender })
        }),
        message().prop_map(ServerEvent::MessageSent),
        (conv(), prop::collection::vec(message(), 0..4), any::<bool>()).prop_map(
            |(conversation_id, messages, has_more)| {
                ServerEvent::History(History { conversation_id, messages, has_more })
            }
        ),
        (conv(), user(), any::<bool>(), proptest::option::of(time())).prop_map(
            |(conversation_id, user_id, is_typing, timestamp)| {
                ServerEvent::Typing(Typing { conversation_id, user_id, username: None, is_typing, timestamp })
            }
        ),
        (conv(), any::<u64>(), proptest::option::of(message())).prop_map(|(conversation_id, unread_count, m)| {
            ServerEvent::Unread(Unread { conversation_id, unread_count, last_message: m.map(|m| m.preview()) })
        }),
        (msg_id(), conv(), time(), proptest::option::of(user()), proptest::option::of(any::<u32>())).prop_map(
            |(message_id, conversation_id, delivered_at, user_id, count)| {
                ServerEvent::Delivered(Delivered {
                    message_id,
                    conversation_id,
                    delivered_at,
                    user_id,
                    seq: count.map(|n| Seq(u64::from(n) + 1)),
                    delivered_count: count,
                    recipient_count: count.map(|n| n.saturating_add(1)),
                })
            }
        ),
        ("\\PC{0,40}", proptest::option::of("[a-z_]{1,10}")).prop_map(|(message, field)| {
            ServerEvent::Error(ErrorData {
                code: ErrorCode::RateLimited,
                message,
                details: field.map(|f| serde_json::json!({"field": f})),
                request_event: Some("message:send".into()),
                request_id: None,
            })
        }),
        metadata().prop_map(|m| ServerEvent::MatchNew(Push(m))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_events_round_trip(event in client_event(), rid in proptest::option::of(id_str()), at in proptest::option::of(time())) {
        let env = ClientEnvelope { event, request_id: rid.map(|r| RequestId::parse(&r).unwrap()), sent_at: at };
        for codec in CODECS {
            let bytes = codec.encode_client(&env).unwrap();
            prop_assert_eq!(&codec.decode_client(&bytes).unwrap(), &env, "{:?}", codec.format);
        }
    }

    #[test]
    fn server_events_round_trip(event in server_event(), at in time(), rid in proptest::option::of(id_str())) {
        let env = ServerEnvelope {
            event,
            timestamp: Some(at),
            message_id: Some("srv_1".into()),
            request_id: rid.map(|r| RequestId::parse(&r).unwrap()),
        };
        for codec in CODECS.map(|c| c.with_max_frame(usize::MAX)) {
            let bytes = codec.encode_server(&env).unwrap();
            prop_assert_eq!(&codec.decode_server(&bytes).unwrap(), &env, "{:?}", codec.format);
        }
    }

    #[test]
    fn frames_survive_any_chunking(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20_000), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            encode_frame(p, &mut stream);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut out = Vec::new();
        for w in points.windows(2) {
            decoder.push(&stream[w[0]..w[1]]).unwrap();
            while let Some(f) = decoder.next_frame().unwrap() {
                out.push(f.to_vec());
            }
        }
        prop_assert_eq!(out, payloads);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for codec in CODECS {
            let _ = codec.decode_client(&bytes);
            let _ = codec.decode_server(&bytes);
        }
        for codec in seed_codecs() {
            let _ = codec.decode_client(&bytes);
        }
        let mut d = FrameDecoder::new(64);
        if d.push(&bytes).is_ok() {
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }

    #[test]
    fn arbitrary_data_for_every_event_type_never_panics(
        kind in prop::sample::select(vec![
            "connection:established", "conversation:join", "conversation:leave", "message:send",
            "message:read", "message:viewed", "message:delete", "typing:start", "typing:stop",
            "status:update", "user:status", "ephemeral_photo:send", "ephemeral_photo:view",
            "history:get", "auth:refresh", "heartbeat", "message:new", "history", "error", "bogus",
        ]),
        data in metadata(),
        fields in prop::collection::btree_map(
            prop::sample::select(vec!["conversation_id", "content", "type", "metadata", "message_id", "status", "limit", "since_seq", "photo_url", "expires_in", "token", "local_id", "reply_to"]),
            scalar(),
            0..6,
        ),
    ) {
        let mut d = data;
        for (k, v) in fields {
            d.insert(k.to_string(), v);
        }
        let env = serde_json::json!({"type": kind, "data": d, "message_id": "r1"});
        for codec in CODECS {
            let mut bytes = Vec::new();
            match codec.format {
                Format::Json => bytes = serde_json::to_vec(&env).unwrap(),
                Format::MsgPack => env.serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map()).unwrap(),
            }
            if let Err(e) = codec.decode_client(&bytes) {
                // Every refusal carries a code and, where readable, the request's type.
                let _ = e.code();
                prop_assert!(e.request_event.is_some() || matches!(e.error, CodecError::FrameTooLarge { .. }), "{:?}", e);
            }
            let _ = codec.decode_server(&bytes);
        }
    }
}

/// The other seeds' dialects, scoped where their frames need a conversation.
fn seed_codecs() -> Vec<Codec> {
    let scope = ConversationId::parse("c1").ok();
    let mut out = Vec::new();
    for format in [Format::Json, Format::MsgPack] {
        for d in [Dialect::Systimz, Dialect::Chatrooms, Dialect::ChatroomsPersonal, Dialect::Actions] {
            out.push(Codec::new(d, format).with_scope(scope.clone()));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Seeds 002-004's requests with arbitrary fields: a request or a named refusal that
    /// carries the request's name, never a panic.
    #[test]
    fn arbitrary_seed_dialect_requests_never_panic(
        kind in prop::sample::select(vec![
            "message", "status", "avatar_update", "send_message", "direct_message", "typing_indicator",
            "read_receipt", "typing", "mark_read", "heartbeat", "new_message", "bogus",
        ]),
        fields in prop::collection::btree_map(
            prop::sample::select(vec![
                "content", "type", "metadata", "status", "message_type", "parent_message_id", "recipient_id",
                "chat_id", "is_typing", "message_id", "conversation_id", "local_id", "reply_to", "attachments",
                "message_ids", "file", "filename",
            ]),
            prop_oneof![scalar(), prop::collection::vec(scalar(), 0..3).prop_map(Value::from),
                metadata().prop_map(Value::Object)],
            0..8,
        ),
    ) {
        let body: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let docs = [
            serde_json::json!({"type": kind, "payload": body.clone(), "id": "r1"}),
            serde_json::json!({"type": kind, "data": body.clone()}),
            {
                let mut flat = body.clone();
                flat.insert("action".into(), Value::from(kind));
                Value::Object(flat)
            },
        ];
        for codec in seed_codecs() {
            for doc in &docs {
                let mut bytes = Vec::new();
                match codec.format {
                    Format::Json => bytes = serde_json::to_vec(doc).unwrap(),
                    Format::MsgPack => doc.serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map()).unwrap(),
                }
                if let Err(e) = codec.decode_client(&bytes) {
                    let _ = e.code();
                    // Only a request whose name is missing or unreadable goes without it.
                    let nameless = matches!(&e.error, CodecError::MissingType)
                        || matches!(&e.error, CodecError::InvalidField { field, .. } if field == "type" || field == "action");
                    prop_assert!(e.request_event.is_some() || nameless, "{:?}", e);
                }
            }
        }
    }
}

use serde::Serialize;
