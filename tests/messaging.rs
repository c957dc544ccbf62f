//! Messaging over WebSocket, end to end against the real binary: SPEC §4's send, join, read,
//! delete, typing, unread and delivery rows, each asserted on the wire with its recipients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::{Client, Server};

#[tokio::test]
async fn a_message_reaches_joined_members_once_in_order_with_its_fields() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    alice.join("c1").await;
    bob.join("c1").await;

    let mut sent = Vec::new();
    for i in 1..=20 {
        sent.push(alice.say("c1", &format!("hello {i}")).await);
    }
    for (i, m) in sent.iter().enumerate() {
        assert_eq!(m["seq"], i as u64 + 1, "gap-free seqs from 1");
        assert_eq!(m["sender_id"], "alice");
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    }
    for (i, m) in sent.iter().enumerate() {
        let new = bob.expect("message:new").await;
        let d = &new["data"];
        assert_eq!(d["message"]["id"], m["id"]);
        assert_eq!(d["message"]["content"], format!("hello {}", i + 1));
        assert_eq!(d["message"]["seq"], i as u64 + 1);
        assert_eq!(d["sender"]["id"], "alice");
        assert_eq!(d["sender"]["username"], "alice_name");
        // Seed 000's flat copy is only for its own path, /v1/ws.
        assert_eq!((d.get("id"), d.get("content")), (None, None), "no flat copy on /ws: {d}");
        assert!(new["message_id"].as_str().unwrap().starts_with("srv_"));
        assert!(new["timestamp"].is_string());
    }
    bob.expect_none("message:new", Duration::from_millis(300)).await;
    // The sender's own joined connection also gets message:new (seed 001's confirmation).
    for i in 1..=20 {
        let own = alice.expect("message:new").await;
        assert_eq!(own["data"]["message"]["seq"], i);
    }
}

#[tokio::test]
async fn seed_000s_path_gets_message_new_flat_as_well() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    // Seed 000's client: `/v1/ws?token=`, and it reads data.id and data.content.
    let mut old = Client::connect_to(&s.addr, &format!("/v1/ws?token={}", s.token("bob"))).await.ready().await;
    let mut packed =
        Client::connect_to(&s.addr, &format!("/v1/ws?codec=msgpack&token={}", s.token("bob"))).await.ready().await;
    old.join("c1").await;
    packed.join("c1").await;
    let m = alice.say("c1", "flat").await;
    let d = old.expect("message:new").await["data"].clone();
    assert_eq!((&d["id"], &d["content"], &d["conversation_id"]), (&m["id"], &json!("flat"), &json!("c1")));
    assert_eq!((&d["message"]["id"], &d["sender"]["id"]), (&m["id"], &json!("alice")), "seed 001's layout too");
    // No seed client speaks MessagePack: the nested layout alone.
    let d = packed.expect("message:new").await["data"].clone();
    assert_eq!((d.get("id"), &d["message"]["content"]), (None, &json!("flat")));
}

#[tokio::test]
async fn the_sender_hears_delivered_once_per_recipient() {
    let s = Server::start(&[]);
    s.conversation("g", &["alice", "bob", "carol"]);
    let mut alice = s.client("alice").await.ready().await;
    let mut bob = s.client("bob").await.ready().await;
    let mut bob2 = s.client("bob").await.ready().await;
    let mut carol = s.client("carol").await.ready().await;
    bob.join("g").await;
    bob2.join("g").await;
    carol.join("g").await;
    let m = alice.say("g", "hi all").await;
    let mut recipients = Vec::new();
    for _ in 0..2 {
        let d = alice.expect("message:delivered").await;
        assert_eq!(d["data"]["message_id"], m["id"]);
        recipients.push(d["data"]["user_id"].as_str().unwrap().to_string());
    }
    recipients.sort();
    assert_eq!(recipients, ["bob", "carol"], "one receipt per recipient, not per device");
    alice.expect_none("message:delivered", Duration::from_millis(300)).await;
    bob2.expect("message:new").await;
}

#[tokio::test]
async fn members_online_but_not_joined_get_unread_counts() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    alice.say("c1", "one").await;
    let last = alice.say("c1", "two").await;
    let u1 = bob.expect("conversation:unread").await;
    let u2 = bob.expect("conversation:unread").await;
    assert_eq!(u1["data"]["unread_count"], 1);
    assert_eq!(u2["data"]["unread_count"], 2);
    assert_eq!(u2["data"]["last_message"]["id"], last["id"]);
    assert_eq!(u2["data"]["last_message"]["content"], "two");
    bob.expect_none("message:new", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn local_id_makes_send_idempotent() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    let data = json!({"conversation_id": "c1", "content": "once", "local_id": "l-1"});
    let r1 = alice.send("message:send", data.clone()).await;
    let a = alice.expect("message:sent").await;
    let r2 = alice.send("message:send", data).await;
    let b = alice.expect("message:sent").await;
    assert_eq!((a["request_id"].as_str(), b["request_id"].as_str()), (Some(r1.as_str()), Some(r2.as_str())));
    assert_eq!(a["data"]["id"], b["data"]["id"]);
    assert_eq!(a["data"]["seq"], 1);
    assert_eq!(b["data"]["local_id"], "l-1");
    bob.expect("message:new").await;
    bob.expect_none("message:new", Duration::from_millis(300)).await;
    assert_eq!(alice.say("c1", "next").await["seq"], 2, "the duplicate took no seq");
}

#[tokio::test]
async fn read_receipts_go_to_other_members_and_the_readers_other_devices() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    let mut bob_phone = s.client("bob").await.ready().await;
    let m = alice.say("c1", "read me").await;
    bob.send("message:read", json!({"conversation_id": "c1", "message_id": m["id"]})).await;
    for c in [&mut alice, &mut bob_phone] {
        let v = c.expect("message:viewed").await;
        assert_eq!(v["data"]["message_id"], m["id"]);
        assert_eq!(v["data"]["user_id"], "bob");
        assert_eq!(v["data"]["seq"], 1);
    }
    bob.expect_none("message:viewed", Duration::from_millis(200)).await;
    // Reading the same message again moves nothing, so nobody hears about it.
    bob.send("message:viewed", json!({"conversation_id": "c1", "message_id": m["id"]})).await;
    alice.expect_none("message:viewed", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn only_the_sender_deletes_and_every_member_hears_it() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    let m = alice.say("c1", "oops").await;
    let rid = bob.send("message:delete", json!({"conversation_id": "c1", "message_id": m["id"]})).await;
    assert_eq!(bob.expect_error(&rid).await["code"], "PERMISSION_DENIED");
    alice.send("message:delete", json!({"conversation_id": "c1", "message_id": m["id"]})).await;
    for c in [&mut alice, &mut bob] {
        let d = c.expect("message:deleted").await;
        assert_eq!(
            (d["data"]["message_id"].clone(), d["data"]["deleted_by"].clone()),
            (m["id"].clone(), json!("alice"))
        );
    }
    let rid = alice.send("message:delete", json!({"conversation_id": "c1", "message_id": m["id"]})).await;
    assert_eq!(alice.expect_error(&rid).await["code"], "NOT_FOUND");
    let rid = alice.send("history:get", json!({"conversation_id": "c1"})).await;
    let h = alice.expect("history").await;
    assert_eq!(
        (h["request_id"].as_str(), h["data"]["messages"].as_array().map(Vec::len)),
        (Some(rid.as_str()), Some(0))
    );
}

#[tokio::test]
async fn typing_reaches_other_joined_members_and_clears_itself_after_6_s() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    alice.join("c1").await;
    bob.join("c1").await;
    alice.send("typing:start", json!({"conversation_id": "c1"})).await;
    let t = bob.expect("typing:indicator").await;
    assert_eq!((t["data"]["user_id"].clone(), t["data"]["is_typing"].clone()), (json!("alice"), json!(true)));
    alice.expect_none("typing:indicator", Duration::from_millis(200)).await;
    alice.send("typing:stop", json!({"conversation_id": "c1"})).await;
    assert_eq!(bob.expect("typing:indicator").await["data"]["is_typing"], false);
    // Without a stop, the server clears it.
    alice.send("typing:start", json!({"conversation_id": "c1"})).await;
    assert_eq!(bob.expect("typing:indicator").await["data"]["is_typing"], true);
    let start = std::time::Instant::now();
    let cleared = loop {
        match bob.recv_within(Duration::from_secs(8)).await {
            Some(e) if e["type"] == "typing:indicator" => break e,
            Some(_) => continue,
            None => panic!("typing was never cleared"),
        }
    };
    assert_eq!(cleared["data"]["is_typing"], false);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(8), "{waited:?}");
}

#[tokio::test]
async fn json_and_msgpack_clients_share_a_conversation() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    let mut bob = s.client_msgpack("bob").await.ready().await;
    alice.join("c1").await;
    bob.join("c1").await;
    alice.say("c1", "from json").await;
    let new = bob.expect("message:new").await;
    assert_eq!(new["data"]["message"]["content"], "from json");
    assert!(new["data"].get("id").is_none(), "MessagePack gets the nested form only");
    let m = bob.say("c1", "from msgpack \u{1F600}").await;
    assert_eq!(m["content"], "from msgpack \u{1F600}");
    let own = alice.expect("message:new").await;
    assert_eq!(own["data"]["message"]["content"], "from json", "alice's own message first");
    let got = alice.expect("message:new").await;
    assert_eq!(got["data"]["message"]["content"], "from msgpack \u{1F600}");
}

#[tokio::test]
async fn history_pages_backwards_with_has_more() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    for i in 1..=5 {
        alice.say("c1", &format!("m{i}")).await;
    }
    alice.send("history:get", json!({"conversation_id": "c1", "limit": 2})).await;
    let h = alice.expect("history").await;
    let seqs: Vec<_> = h["data"]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, h["data"]["has_more"].clone()), (vec![4, 5], json!(true)));
    alice.send("history:get", json!({"conversation_id": "c1", "before_seq": 4, "limit": 10})).await;
    let h = alice.expect("history").await;
    let seqs: Vec<_> = h["data"]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, h["data"]["has_more"].clone()), (vec![1, 2, 3], json!(false)));
}

#[tokio::test]
async fn leaving_stops_message_new_and_answers_left() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    let rid = bob.send("conversation:leave", json!({"conversation_id": "c1"})).await;
    let left = bob.expect("conversation:left").await;
    assert_eq!(
        (left["request_id"].as_str(), left["data"]["conversation_id"].as_str()),
        (Some(rid.as_str()), Some("c1"))
    );
    alice.say("c1", "after leave").await;
    // Still a member and online: an unread count, not the message.
    bob.expect("conversation:unread").await;
    bob.expect_none("message:new", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn heartbeat_is_echoed() {
    let s = Server::start(&[]);
    let mut alice = s.client("alice").await.ready().await;
    let rid = alice.send("heartbeat", json!({"timestamp": "2025-12-01T10:30:00.000Z"})).await;
    let h = alice.expect("heartbeat").await;
    assert_eq!(h["request_id"], rid);
    assert_eq!(h["data"]["timestamp"], "2025-12-01T10:30:00.000Z");
    assert!(h["data"]["server_time"].is_string());
}

#[tokio::test]
async fn one_user_in_several_conversations_gets_each_where_it_belongs() {
    let s = Server::start(&[]);
    s.conversation("with-bob", &["alice", "bob"]);
    s.conversation("with-carol", &["alice", "carol"]);
    s.conversation("group", &["alice", "bob", "carol"]);
    let mut alice = s.client("alice").await.ready().await;
    let mut bob = s.client("bob").await.ready().await;
    let mut carol = s.client("carol").await.ready().await;
    alice.join("with-bob").await;
    alice.join("group").await;
    bob.say("with-bob", "hi alice").await;
    carol.say("with-carol", "psst").await;
    carol.say("group", "hello all").await;
    let a = alice.expect("message:new").await;
    assert_eq!(
        (a["data"]["message"]["conversation_id"].as_str(), a["data"]["message"]["content"].as_str()),
        (Some("with-bob"), Some("hi alice"))
    );
    let u = alice.expect("conversation:unread").await;
    assert_eq!(
        (u["data"]["conversation_id"].as_str(), u["data"]["unread_count"].as_u64()),
        (Some("with-carol"), Some(1))
    );
    let g = alice.expect("message:new").await;
    let g = &g["data"]["message"];
    assert_eq!((g["conversation_id"].as_str(), g["seq"].as_u64()), (Some("group"), Some(1)));
    // Each conversation counts its own seqs.
    assert_eq!(bob.say("group", "me too").await["seq"], 2);
    assert_eq!(bob.say("with-bob", "again").await["seq"], 2);
    // Bob hears about the group (unread: he has not joined it), never about carol's private one.
    bob.expect_none("message:new", Duration::from_millis(200)).await;
    assert!(bob.seen.iter().any(|e| e["type"] == "conversation:unread" && e["data"]["conversation_id"] == "group"));
    assert!(!bob.seen.iter().any(
        |e| e["data"]["conversation_id"] == "with-carol" || e["data"]["message"]["conversation_id"] == "with-carol"
    ));
}

#[tokio::test]
async fn an_offline_recipient_triggers_delivered_when_it_catches_up_and_only_once() {
    let mut s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    let m = alice.say("c1", "while you were away").await;
    alice.expect_none("message:delivered", Duration::from_millis(300)).await;
    // Bob's phone catches up: alice hears it was delivered.
    let mut phone = s.client("bob").await.ready().await;
    phone.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 0})).await;
    assert_eq!(phone.expect("message:new").await["data"]["message"]["id"], m["id"]);
    let d = alice.expect("message:delivered").await;
    assert_eq!((d["data"]["message_id"].clone(), d["data"]["user_id"].clone()), (m["id"].clone(), json!("bob")));
    // His laptop replays the same message: nothing new for alice, then or after a restart.
    let mut laptop = s.client("bob").await.ready().await;
    laptop.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 0})).await;
    laptop.expect("message:new").await;
    alice.expect_none("message:delivered", Duration::from_millis(300)).await;
    s.kill9();
    s.restart();
    let mut alice = s.client("alice").await.ready().await;
    let mut again = s.client("bob").await.ready().await;
    again.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 0})).await;
    again.expect("message:new").await;
    alice.expect_none("message:delivered", Duration::from_millis(300)).await;
}

/// A phone whose clock was reset still sends: the envelope's `timestamp` is informational
/// (protocol.md §1), so one before 1970 is taken as it is clamped, never refused, and the
/// message's `created_at` is the server's. In Winkr and in the seed dialects alike.
#[tokio::test]
async fn a_client_clock_before_1970_does_not_stop_a_message() {
    let s = Server::start(&[]);
    let (mut alice, _bob) = s.alice_and_bob("c1").await;
    for (i, clock) in ["1970-01-01T00:00:00+02:00", "0001-01-01T00:00:00Z"].into_iter().enumerate() {
        let rid = format!("clock-{i}");
        let data = json!({"conversation_id": "c1", "content": format!("sent at {clock}")});
        alice
            .send_raw_value(json!({"type": "message:send", "data": data, "message_id": rid, "timestamp": clock}))
            .await;
        let sent = alice.expect("message:sent").await;
        assert_eq!(sent["request_id"], rid.as_str(), "{sent}");
        assert!(sent["data"]["created_at"].as_str().unwrap() > "2026", "the server's clock: {sent}");
    }
    let path = format!("/ws?dialect=actions&token={}", s.token("alice"));
    let mut actions = support::Client::connect_to(&s.addr, &path).await;
    actions.expect("connection.established").await;
    let send = json!({"action": "send_message", "conversation_id": "c1", "content": "old phone", "local_id": "l1", "timestamp": "0001-01-01T00:00:00Z"});
    actions.send_raw_value(send).await;
    assert_eq!(actions.expect("chat_message").await["message"]["local_id"], "l1");
}

/// A client that was away (a reload, a reconnect) learns at its join how far everyone else has
/// read and received, so its own messages' ticks are right without the receipts it missed.
#[tokio::test]
async fn a_join_tells_how_far_the_others_have_read_and_received() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    let first = alice.say("c1", "one").await;
    alice.say("c1", "two").await;
    bob.expect("message:new").await;
    bob.expect("message:new").await;
    bob.send("message:read", json!({"conversation_id": "c1", "message_id": first["id"]})).await;
    alice.expect("message:viewed").await;
    alice.close().await;

    let mut alice = s.client("alice").await.ready().await;
    let joined = alice.join("c1").await;
    assert_eq!(
        (&joined["data"]["last_seq"], &joined["data"]["others_read_seq"], &joined["data"]["others_delivered_seq"]),
        (&json!(2), &json!(1), &json!(2)),
        "{joined}"
    );
}

/// A client's text frame, masked as every client frame must be (tungstenite's encoder, the
/// test's bytes cut afterwards).
fn masked_text_frame(payload: String) -> Vec<u8> {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let mut frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([0x37, 0xfa, 0x21, 0x3d]);
    let mut bytes = Vec::new();
    frame.format(&mut bytes).unwrap();
    bytes
}

/// The server's reads, however the client's bytes are cut: two frames in one segment, a frame
/// bigger than the 256-byte read buffer dribbled a few bytes at a time with pauses (so reads
/// find nothing in the middle of a frame, and between frames, where the patched tungstenite
/// releases its buffer: vendor/tungstenite/PATCHES.md). Every message arrives once, in order,
/// whole.
#[tokio::test]
async fn frames_cut_anywhere_by_the_network_are_read_whole_once_and_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.client("bob").await.ready().await;
    bob.join("c1").await;

    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let head = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.token("alice"),
        s.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("connection:established") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the greeting: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
    // The server's frames are drained meanwhile so that its writes never wait on this test.
    let (mut rx, mut tx) = tcp.into_split();
    let drain = tokio::spawn(async move { while matches!(rx.read(&mut buf).await, Ok(n) if n > 0) {} });

    let send = |content: String| {
        let ev = json!({"type": "message:send", "data": {"conversation_id": "c1", "content": content, "type": "text"}});
        masked_text_frame(ev.to_string())
    };
    let long = "y".repeat(600);
    let mut two = send("first".into());
    two.extend(send("second".into()));
    tx.write_all(&two).await.unwrap();
    let third = send(long.clone());
    assert!(third.len() > 256, "bigger than the read buffer");
    for (i, piece) in third.chunks(7).enumerate() {
        tx.write_all(piece).await.unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    // A frame split inside its header, with a pause there.
    let fourth = send("fourth".into());
    tx.write_all(&fourth[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.write_all(&fourth[1..]).await.unwrap();

    let mut contents = Vec::new();
    for _ in 0..4 {
        let m = bob.expect("message:new").await;
        contents.push(m["data"]["message"]["content"].as_str().unwrap().to_owned());
    }
    assert_eq!(contents, vec!["first".to_owned(), "second".into(), long, "fourth".into()]);
    assert_eq!(s.stored("c1").len(), 4, "each stored once");
    drain.abort();
}
