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
