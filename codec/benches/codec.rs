//! Encode and decode of a typical `message:new`, JSON vs MessagePack, and of a typical
//! `message:send` (what the server decodes per message). Bytes per envelope are printed first.
//!
//! `cargo bench -p confab-codec`; figures in `docs/benchmarks.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use confab_codec::event::*;
use confab_codec::*;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn typical_message_new() -> ServerEnvelope {
    let message = Message {
        id: MessageId::parse("msg_01HZX3K9V7Q2M8R4T6Y1").unwrap(),
        conversation_id: ConversationId::parse("conv_8f14e45fceea167a").unwrap(),
        seq: Some(Seq(1042)),
        sender_id: UserId::parse("user_456789").unwrap(),
        content: "Hey! Are we still on for dinner tonight? I found a great new place downtown.".into(),
        kind: MessageKind::Text,
        metadata: Default::default(),
        created_at: Timestamp::from_millis(1_764_585_000_123),
        updated_at: None,
        is_read: None,
        local_id: Some(LocalId::parse("local_7d1f2a").unwrap()),
        reply_to: None,
    };
    let sender = Sender {
        id: message.sender_id.clone(),
        username: Some("jane_doe".into()),
        avatar_url: Some("https://cdn.example.com/avatars/456789.jpg".into()),
    };
    ServerEnvelope {
        event: ServerEvent::MessageNew(MessageNew { message, sender }),
        timestamp: Some(Timestamp::from_millis(1_764_585_000_125)),
        message_id: Some("srv_4f9a1c".into()),
        request_id: None,
    }
}

fn typical_send() -> ClientEnvelope {
    ClientEnvelope {
        event: ClientEvent::Send(SendMessage {
            conversation_id: ConversationId::parse("conv_8f14e45fceea167a").unwrap(),
            content: "Hey! Are we still on for dinner tonight? I found a great new place downtown.".into(),
            kind: MessageKind::Text,
            metadata: Default::default(),
            local_id: Some(LocalId::parse("local_7d1f2a").unwrap()),
            reply_to: None,
            attachments: Vec::new(),
        }),
        request_id: Some(RequestId::parse("msg_1764585000000_k3j9x9q2a").unwrap()),
        sent_at: None,
    }
}

fn benches(c: &mut Criterion) {
    let new = typical_message_new();
    let send = typical_send();
    for format in [Format::Json, Format::MsgPack] {
        let codec = Codec::new(Dialect::Winkr, format);
        let n = codec.encode_server(&new).unwrap().len();
        let s = codec.encode_client(&send).unwrap().len();
        println!("bytes {:<7} message:new {n:>4}  message:send {s:>4}", format.name());
    }
    for format in [Format::Json, Format::MsgPack] {
        let codec = Codec::new(Dialect::Winkr, format);
        let bytes = codec.encode_server(&new).unwrap();
        let mut buf = Vec::with_capacity(1024);
        c.bench_function(&format!("message:new encode {}", format.name()), |b| {
            b.iter(|| {
                buf.clear();
                codec.encode_server_into(black_box(&new), &mut buf).unwrap();
                black_box(buf.len())
            })
        });
        c.bench_function(&format!("message:new decode {}", format.name()), |b| {
            b.iter(|| codec.decode_server(black_box(&bytes)).unwrap())
        });
        let sent = codec.encode_client(&send).unwrap();
        c.bench_function(&format!("message:send decode {}", format.name()), |b| {
            b.iter(|| codec.decode_client(black_box(&sent)).unwrap())
        });
    }
}

criterion_group! {
    name = codec;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(codec);
