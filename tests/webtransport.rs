//! WebTransport end to end (SPEC §3), with the Rust `wtransport` client (its own QUIC and
//! HTTP/3 stack) against the real binary over UDP: one control stream, one stream per
//! conversation, datagrams for typing, close codes in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::Server;
use support::wt::WtClient;

#[tokio::test]
async fn messages_flow_on_the_conversation_stream_once_in_order() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.wt("alice").await;
    let mut bob = s.wt_json("bob").await;
    alice.join("c1").await;
    bob.join("c1").await;

    let mut sent = Vec::new();
    for i in 1..=20 {
        sent.push(alice.say("c1", &format!("hello {i}")).await);
    }
    for (i, m) in sent.iter().enumerate() {
        assert_eq!(m["seq"], i as u64 + 1);
        let (origin, new) = bob.expect_on("message:new").await;
        assert_eq!(origin, "c1", "a conversation's events come on its own stream");
        let d = &new["data"];
        assert_eq!(d["message"]["id"], m["id"]);
        assert_eq!(d["message"]["content"], format!("hello {}", i + 1));
        assert_eq!(d["sender"]["id"], "alice");
    }
    bob.expect_none("message:new", Duration::from_millis(300)).await;
    // Receipts: the sender hears delivered (on the conversation's stream), then viewed.
    let (origin, d) = alice.expect_on("message:delivered").await;
    assert_eq!(origin, "c1");
    assert_eq!(d["data"]["user_id"], "bob");
    bob.send_on("c1", "message:read", json!({"conversation_id": "c1", "message_id": sent[19]["id"]})).await;
    let (origin, v) = alice.expect_on("message:viewed").await;
    assert_eq!(origin, "c1");
    assert_eq!(v["data"]["user_id"], "bob");
}

#[tokio::test]
async fn typing_goes_as_datagrams_to_clients_that_use_them_and_on_the_stream_otherwise() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob", "carol"]);
    let mut alice = s.wt("alice").await;
    let mut bob = s.wt("bob").await;
    let mut carol = s.wt("carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.join("c1").await;
    }
    // Bob shows he reads datagrams by sending one: a heartbeat, answered as a datagram.
    bob.send_datagram("heartbeat", json!({"timestamp": "2026-11-22T10:00:00Z"}));
    let (origin, hb) = bob.expect_on("heartbeat").await;
    assert_eq!(origin, "datagram");
    assert_eq!(hb["data"]["timestamp"], "2026-11-22T10:00:00Z");

    alice.send_datagram("typing:start", json!({"conversation_id": "c1"}));
    let (origin, t) = bob.expect_on("typing:indicator").await;
    assert_eq!(origin, "datagram");
    assert_eq!(t["data"]["user_id"], "alice");
    assert_eq!(t["data"]["is_typing"], true);
    // Carol never sent a datagram: hers comes on the conversation's stream.
    let (origin, t) = carol.expect_on("typing:indicator").await;
    assert_eq!(origin, "c1");
    assert_eq!(t["data"]["is_typing"], true);
    alice.send_on("c1", "typing:stop", json!({"conversation_id": "c1"})).await;
    let (_, t) = carol.expect_on("typing:indicator").await;
    assert_eq!(t["data"]["is_typing"], false);
}

#[tokio::test]
async fn presence_and_connection_events_use_the_control_stream() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.wt("bob").await;
    let alice = s.wt("alice").await;
    let (origin, on) = bob.expect_on("user:online").await;
    assert_eq!(origin, "control");
    assert_eq!(on["data"]["user_id"], "alice");
    // A client's close ends its session within a second: contacts hear it went offline.
    let closed_at = Instant::now();
    alice.close();
    let (origin, off) = bob.expect_on("user:offline").await;
    assert_eq!(origin, "control");
    assert_eq!(off["data"]["user_id"], "alice");
    assert!(closed_at.elapsed() < Duration::from_secs(1), "session ended after {:?}", closed_at.elapsed());
}

#[tokio::test]
async fn events_of_conversations_without_a_stream_come_on_the_control_stream() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.wt("alice").await;
    let mut bob = s.wt("bob").await;
    // Joined on the control stream: the conversation's events come there.
    let rid = bob.send("conversation:join", json!({"conversation_id": "c1"})).await;
    let (origin, j) = bob.expect_on("conversation:joined").await;
    assert_eq!((origin.as_str(), &j["request_id"]), ("control", &json!(rid)));
    let rid = alice.send("message:send", json!({"conversation_id": "c1", "content": "hi", "type": "text"})).await;
    let (origin, sent) = alice.expect_on("message:sent").await;
    assert_eq!((origin.as_str(), &sent["request_id"]), ("control", &json!(rid)));
    let (origin, new) = bob.expect_on("message:new").await;
    assert_eq!(origin, "control");
    assert_eq!(new["data"]["message"]["content"], "hi");
}

#[tokio::test]
async fn closing_a_conversation_stream_leaves_the_conversation() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.wt_alice_and_bob("c1").await;
    bob.close_stream("c1").await;
    // Give the server a moment to see the FIN, then: bob no longer joined, so he hears the
    // message as an unread count on the control stream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.say("c1", "are you there?").await;
    let (origin, u) = bob.expect_on("conversation:unread").await;
    assert_eq!(origin, "control");
    assert_eq!(u["data"]["unread_count"], 1);
    bob.expect_none("message:new", Duration::from_millis(300)).await;
    // An explicit leave on a stream: the answer is that stream's last event.
    alice.send_on("c1", "conversation:leave", json!({"conversation_id": "c1"})).await;
    let (origin, _) = alice.expect_on("conversation:left").await;
    assert_eq!(origin, "c1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = alice.recv_within(Duration::from_millis(100)).await;
    assert!(alice.ended.iter().any(|o| o == "c1"), "the server finished the left stream: {:?}", alice.ended);
}

#[tokio::test]
async fn errors_come_on_the_stream_of_the_request_with_documented_codes() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    s.conversation("secret", &["bob", "carol"]);
    let mut alice = s.wt("alice").await;
    // Joining a conversation one is not a member of, on its own stream.
    let (send, recv) = alice.conn.open_bi().await.unwrap().await.unwrap();
    drop((send, recv));
    let rid = alice.send("conversation:join", json!({"conversation_id": "secret"})).await;
    let (origin, e) = alice.expect_error(&rid).await;
    assert_eq!(origin, "control");
    assert_eq!(e["code"], "FORBIDDEN");
    // A frame that is not MessagePack.
    assert!(alice.write_control(&support::wt::frame(b"\xc1\xc1 not msgpack")).await);
    let (_, e) = alice.expect_on("error").await;
    assert_eq!(e["data"]["code"], "VALIDATION_ERROR");
    // A frame over 32 KiB: refused, skipped, and the stream goes on.
    let mut big = Vec::new();
    confab_codec::frame::put_varint(40_000, &mut big);
    big.extend(std::iter::repeat_n(b'x', 40_000));
    assert!(alice.write_control(&big).await);
    let (_, e) = alice.expect_on("error").await;
    assert_eq!(e["data"]["code"], "MESSAGE_TOO_LARGE");
    alice.join("c1").await;
    let m = alice.say("c1", "still here").await;
    assert_eq!(m["seq"], 1);
    // A frame over 1 MiB cannot be skipped: the session closes with 1009.
    let mut huge = Vec::new();
    confab_codec::frame::put_varint(2 << 20, &mut huge);
    assert!(alice.write_control(&huge).await);
    let (code, reason) = alice.expect_close().await;
    assert_eq!((code, reason.as_str()), (1009, "message_too_big"));
}

#[tokio::test]
async fn a_bad_token_gets_an_error_then_close_code_4003() {
    let s = Server::start(&[]);
    let mut c = WtClient::connect(&s.h3_addr, &s.cert_sha256, "token=not-a-jwt").await;
    let (origin, e) = c.expect_on("error").await;
    assert_eq!(origin, "control");
    assert_eq!(e["data"]["code"], "TOKEN_INVALID");
    let closing = c.expect("connection:closed").await;
    assert_eq!(closing["data"]["code"], 4003);
    assert_eq!(c.expect_close().await, (4003, "unauthorized".to_string()));

    let mut c = WtClient::connect(&s.h3_addr, &s.cert_sha256, "").await;
    assert_eq!(c.expect("error").await["data"]["code"], "UNAUTHORIZED");
    assert_eq!(c.expect_close().await.0, 4003);
}

// Multi-threaded: `terminate` blocks its thread until the server exits, and the client's QUIC
// driver must meanwhile read the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_and_shutdown_close_codes_reach_the_client() {
    let mut s = Server::start(&[]);
    let q = format!("token={}", s.token_for("alice", 2));
    let mut alice = WtClient::connect(&s.h3_addr, &s.cert_sha256, &q).await.ready().await;
    assert_eq!(alice.expect("error").await["data"]["code"], "TOKEN_EXPIRED");
    assert_eq!(alice.expect_close().await, (4001, "token_expired".to_string()));

    let mut bob = s.wt("bob").await;
    tokio::task::block_in_place(|| s.terminate());
    let closing = bob.expect("connection:closed").await;
    assert_eq!(closing["data"]["reason"], "server_shutdown");
    assert_eq!(bob.expect_close().await, (1001, "server_shutdown".to_string()));
}

#[tokio::test]
async fn a_reconnecting_client_replays_what_it_missed_on_the_new_stream() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.wt_alice_and_bob("c1").await;
    alice.say("c1", "one").await;
    assert_eq!(bob.expect("message:new").await["data"]["message"]["seq"], 1);
    bob.close();
    for t in ["two", "three", "four"] {
        alice.say("c1", t).await;
    }
    let mut bob = s.wt("bob").await;
    let j = bob.join_since("c1", Some(1)).await;
    assert_eq!(j["data"]["last_seq"], 4);
    for (seq, text) in [(2, "two"), (3, "three"), (4, "four")] {
        let (origin, m) = bob.expect_on("message:new").await;
        assert_eq!(origin, "c1");
        assert_eq!(m["data"]["message"]["seq"], seq);
        assert_eq!(m["data"]["message"]["content"], text);
    }
    bob.expect_none("message:new", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn websocket_json_and_webtransport_msgpack_share_a_conversation() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    let mut bob = s.wt("bob").await;
    alice.join("c1").await;
    bob.join("c1").await;
    let m = alice.say("c1", "from a browser").await;
    let (origin, new) = bob.expect_on("message:new").await;
    assert_eq!(origin, "c1");
    assert_eq!(new["data"]["message"]["id"], m["id"]);
    assert_eq!(new["data"]["message"]["content"], "from a browser");
    let r = bob.say("c1", "from a phone").await;
    let new = alice.expect("message:new").await;
    let new = if new["data"]["message"]["id"] == m["id"] { alice.expect("message:new").await } else { new };
    assert_eq!(new["data"]["message"]["id"], r["id"]);
    assert_eq!(new["data"]["message"]["content"], "from a phone");
    bob.send_on("c1", "typing:start", json!({"conversation_id": "c1"})).await;
    assert_eq!(alice.expect("typing:indicator").await["data"]["user_id"], "bob");
}

/// `n` texts of 2,000 bytes into `conv`, 50 at a time, each acknowledged.
async fn send_2k_texts(sender: &mut support::Client, conv: &str, n: u64) {
    let text = "x".repeat(2000);
    for _ in 0..n / 50 {
        for _ in 0..50 {
            sender.send("message:send", json!({"conversation_id": conv, "content": text, "type": "text"})).await;
        }
        for _ in 0..50 {
            sender.expect("message:sent").await;
        }
        sender.seen.clear();
    }
}

#[tokio::test]
async fn a_stalled_conversation_stream_does_not_hold_up_the_others() {
    let s = Server::start(&["--outbound-queue", "200"]);
    s.conversation("a", &["alice", "bob"]);
    s.conversation("b", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    let mut bob = s.wt("bob").await;
    // Bob joins `a` on a stream whose reader never reads: it stalls once QUIC flow control
    // (about 1.25 MB per stream by default) is spent.
    let (mut a_send, a_recv) = bob.conn.open_bi().await.unwrap().await.unwrap();
    let join = json!({"type": "conversation:join", "data": {"conversation_id": "a"}, "message_id": "ja"});
    let mut packed = Vec::new();
    serde::Serialize::serialize(&join, &mut rmp_serde::Serializer::new(&mut packed).with_struct_map()).unwrap();
    a_send.write_all(&support::wt::frame(&packed)).await.unwrap();
    bob.join("b").await;
    alice.join("a").await;

    // About 2 MB in `a`: more than the stream's flow-control window plus its queue of 200, so
    // the server ends up resetting that stream as a slow consumer.
    let n = 1000;
    send_2k_texts(&mut alice, "a", n).await;
    let m = alice.say("b", "meanwhile in b").await;
    let (origin, new) = bob.expect_on("message:new").await;
    assert_eq!(origin, "b", "only b's stream is being read");
    assert_eq!(new["data"]["message"]["id"], m["id"]);
    // `a`'s stream holds what flow control let through, then the reset.
    let mut a_recv = a_recv;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), a_recv.read(&mut buf)).await.expect("stream a stuck") {
            Ok(Some(k)) => got += k,
            Ok(None) => break "finished",
            Err(_) => break "reset",
        }
    };
    assert_eq!(end, "reset", "after {got} bytes");
    assert!(got < n as usize * 2000, "the stream was stalled, not drained ({got} bytes)");

    // Nothing is lost: a new stream for `a` replays all of it, in order.
    let j = bob.join_since("a", Some(0)).await;
    assert_eq!(j["data"]["last_seq"], n);
    for seq in 1..=n {
        let (origin, m) = bob.expect_on("message:new").await;
        assert_eq!(origin, "a");
        assert_eq!(m["data"]["message"]["seq"], seq);
    }
}

/// A stream the client stops reading for a while, but not long enough to be taken for a slow
/// consumer: what QUIC's flow control held back waits in the server's queue for that stream,
/// and reaches the client once it reads again, every message once and in order, on a stream
/// that stays open.
#[tokio::test]
async fn a_stream_that_pauses_then_reads_again_gets_every_message_once_in_order() {
    let s = Server::start(&["--outbound-queue", "200"]);
    s.conversation("a", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    let bob = s.wt("bob").await;
    let (mut a_send, mut a_recv) = bob.conn.open_bi().await.unwrap().await.unwrap();
    let join = json!({"type": "conversation:join", "data": {"conversation_id": "a"}, "message_id": "ja"});
    let mut packed = Vec::new();
    serde::Serialize::serialize(&join, &mut rmp_serde::Serializer::new(&mut packed).with_struct_map()).unwrap();
    a_send.write_all(&support::wt::frame(&packed)).await.unwrap();
    let mut frames = confab_codec::frame::FrameDecoder::new(confab_codec::frame::MAX_SERVER_FRAME_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    // The stream is `a`'s once the join is answered on it (before that, `a`'s events would go
    // to the control stream).
    let k = tokio::time::timeout(Duration::from_secs(5), a_recv.read(&mut buf)).await.unwrap().unwrap().unwrap();
    frames.push(&buf[..k]).unwrap();
    let joined: serde_json::Value = rmp_serde::from_slice(&frames.next_frame().unwrap().unwrap()).unwrap();
    assert_eq!(joined["type"], "conversation:joined");
    alice.join("a").await;

    // About 1.4 MB while Bob reads nothing: more than the stream's flow-control window (about
    // 1.25 MB), less than the window and the server's queue of 200 frames.
    let n: u64 = 650;
    send_2k_texts(&mut alice, "a", n).await;

    let mut seqs = Vec::new();
    // Bytes read, and the `message:new` seqs, until `last`.
    let mut read_until = async |seqs: &mut Vec<u64>, last: u64| {
        let mut bytes = 0usize;
        while seqs.last() != Some(&last) {
            let got =
                tokio::time::timeout(Duration::from_secs(5), a_recv.read(&mut buf)).await.expect("stream a stuck");
            let k = got.expect("stream a reset").expect("stream a finished");
            bytes += k;
            frames.push(&buf[..k]).unwrap();
            while let Some(f) = frames.next_frame().unwrap() {
                let v: serde_json::Value = rmp_serde::from_slice(&f).unwrap();
                if v["type"] == "message:new" {
                    seqs.push(v["data"]["message"]["seq"].as_u64().unwrap());
                }
            }
        }
        bytes
    };
    let bytes = read_until(&mut seqs, n).await;
    assert!(bytes > 1_250_000, "the stream's window was spent, so frames waited in the server ({bytes} bytes)");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "every message once, in order");
    // The stream is still the conversation's, and live.
    alice.say("a", "after the pause").await;
    read_until(&mut seqs, n + 1).await;
    assert_eq!(seqs.len() as u64, n + 1);
}

#[tokio::test]
async fn the_connect_request_is_checked_for_path_and_origin() {
    let s = Server::start(&["--allowed-origins", "https://app.example.com,http://localhost:3000"]);
    let token = s.token("alice");
    // Another path: refused before any session exists.
    let hash = s.cert_sha256.clone();
    let wrong_path =
        support::wt::try_connect_url(&format!("https://{}/other?token={token}", s.h3_addr), &hash, &[]).await;
    assert!(wrong_path.is_err(), "a CONNECT to /other must be refused");
    let url = format!("https://{}/wt?token={token}", s.h3_addr);
    // An origin not on the list: refused (HTTP 403).
    let evil = support::wt::try_connect_url(&url, &hash, &[("origin", "https://evil.example")]).await;
    assert!(evil.is_err(), "a foreign origin must be refused");
    // Listed origins, and native clients without an Origin header, get their session.
    for headers in [&[("origin", "https://app.example.com")][..], &[("origin", "http://localhost:3000/")][..], &[][..]]
    {
        let c = support::wt::try_connect_url(&url, &hash, headers).await;
        assert!(c.is_ok(), "{headers:?}: {:?}", c.err());
        c.unwrap().ready().await;
    }
    // The WebSocket endpoint applies the same list.
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let answer = support::raw_tcp(&s.addr, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// A session has 126 conversation streams (128 QUIC streams less the CONNECT request and the
/// control stream); closing one makes room for another at once, again and again (quinn gives
/// credit back in batches; docs/protocol.md §10b, "How many").
#[tokio::test]
async fn a_closed_conversation_stream_makes_room_for_another() {
    let s = Server::start(&[]);
    for i in 0..150 {
        s.conversation(&format!("k{i}"), &["alice"]);
    }
    let mut alice = s.wt("alice").await;
    for i in 0..126 {
        alice.join(&format!("k{i}")).await;
    }
    alice.close_stream("k0").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = alice.recv_within(Duration::from_millis(100)).await;
    assert!(alice.ended.iter().any(|o| o == "k0"), "the server finished k0: {:?}", alice.ended);
    let joined = tokio::time::timeout(Duration::from_secs(5), alice.join("k126")).await;
    assert!(joined.is_ok(), "no room for a stream after one closed");
    // And on: each close makes room for the next join (23 more, past quinn's first batch).
    for i in 127..150 {
        alice.close_stream(&format!("k{}", i - 126)).await;
        let joined = tokio::time::timeout(Duration::from_secs(5), alice.join(&format!("k{i}"))).await;
        let credit = alice.conn.quic_connection().stats().frame_rx.max_streams_bidi;
        assert!(joined.is_ok(), "no room for k{i} ({credit} MAX_STREAMS frames so far)");
    }
}

/// `--quic-congestion`: the other controllers carry a session as the default does. Enough
/// bytes that the window matters (300 KB, past any initial window), every message once, in
/// order.
#[tokio::test]
async fn every_congestion_controller_carries_a_burst_in_order() {
    for cc in ["new-reno", "bbr"] {
        let s = Server::start(&["--quic-congestion", cc]);
        let (mut alice, mut bob) = s.wt_alice_and_bob("c1").await;
        let body = "x".repeat(1500);
        let mut ids = Vec::new();
        for i in 1..=200 {
            ids.push(alice.say("c1", &format!("{i} {body}")).await["id"].clone());
        }
        for (i, id) in ids.iter().enumerate() {
            let (origin, new) = bob.expect_on("message:new").await;
            assert_eq!(origin, "c1", "{cc}");
            assert_eq!(&new["data"]["message"]["id"], id, "{cc}: message {} out of order", i + 1);
        }
        bob.expect_none("message:new", Duration::from_millis(300)).await;
    }
}
