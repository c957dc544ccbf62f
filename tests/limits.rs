//! SPEC §4 limits over a real connection: per-user message and typing limits shared by a
//! user's devices, connections per user, and a slow reader disconnected without hurting others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::{Client, Server};

#[tokio::test]
async fn thirty_messages_a_minute_per_user_across_devices() {
    let s = Server::start(&["--messages-per-minute", "30"]);
    s.conversation("c1", &["alice", "bob"]);
    let mut phone = s.client("alice").await.ready().await;
    let mut laptop = s.client("alice").await.ready().await;
    for i in 0..15 {
        phone.say("c1", &format!("p{i}")).await;
        laptop.say("c1", &format!("l{i}")).await;
    }
    let rid = phone.send("message:send", json!({"conversation_id": "c1", "content": "31st"})).await;
    let e = phone.expect_error(&rid).await;
    assert_eq!(e["code"], "RATE_LIMITED");
    assert_eq!((e["details"]["limit"].clone(), e["details"]["interval"].clone()), (json!(30), json!(60)));
    assert!(e["details"]["retry_after"].as_u64().unwrap() >= 1);
    // Typing is limited separately, not by the message limit.
    phone.send("typing:start", json!({"conversation_id": "c1"})).await;
    phone.expect_none("error", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn twenty_typing_events_a_minute() {
    let s = Server::start(&["--typing-per-minute", "20"]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    for _ in 0..20 {
        alice.send("typing:start", json!({"conversation_id": "c1"})).await;
    }
    let rid = alice.send("typing:start", json!({"conversation_id": "c1"})).await;
    assert_eq!(alice.expect_error(&rid).await["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn a_sixth_connection_is_refused_with_4008() {
    let s = Server::start(&["--max-connections-per-user", "5"]);
    let mut keep = Vec::new();
    for _ in 0..5 {
        keep.push(s.client("alice").await.ready().await);
    }
    let mut sixth = s.client("alice").await;
    let closed = sixth.expect("connection:closed").await;
    assert_eq!(closed["data"]["reason"], "too_many_connections");
    assert_eq!(sixth.expect_close().await.0, 4008);
    // Closing one makes room.
    keep.pop().unwrap().close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.client("alice").await.ready().await;
}

#[tokio::test]
async fn ten_new_connections_a_minute() {
    let s = Server::start(&["--connects-per-minute", "10"]);
    for _ in 0..10 {
        s.client("alice").await.ready().await.close().await;
    }
    let mut eleventh = s.client("alice").await;
    assert_eq!(eleventh.expect_close().await.0, 4008);
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_disconnected_and_others_keep_up() {
    let s = Server::start(&["--outbound-queue", "64"]);
    s.conversation("c1", &["alice", "bob", "slow"]);
    let mut alice = s.client("alice").await.ready().await;
    let mut bob = s.client("bob").await.ready().await;
    bob.join("c1").await;
    // The slow client joins and then never reads again.
    let mut slow = Client::connect(&s.addr, &format!("token={}", s.token("slow"))).await.ready().await;
    slow.join("c1").await;
    assert_eq!(s.api("GET", "/api/v1/presence/slow", None).1["online"], true);
    let rss_before = s.metric("confab_resident_memory_bytes") as usize;
    // ~28 KiB per message, so the socket buffers fill and the server's queue backs up.
    let pad = "x".repeat(28 * 1024);
    let mut n = 0;
    while s.api("GET", "/api/v1/presence/slow", None).1["online"] == true {
        assert!(n < 2000, "the slow reader was never disconnected");
        for _ in 0..20 {
            n += 1;
            let data = json!({"conversation_id": "c1", "content": format!("m{n}"), "metadata": {"pad": pad}});
            alice.send("message:send", data).await;
            alice.expect("message:sent").await;
            let m = bob.expect("message:new").await;
            assert_eq!(m["data"]["message"]["seq"], n, "bob keeps up, in order");
        }
    }
    // What the slow reader finds when it reads again: part of the backlog, then the end; if
    // the goodbye fit in the pipe, it names the reason.
    let mut got = 0;
    while let Some(e) = slow.recv_within(Duration::from_secs(3)).await {
        match e["type"].as_str() {
            Some("message:new") => got += 1,
            Some("connection:closed") => assert_eq!(e["data"]["reason"], "slow_consumer"),
            _ => {}
        }
    }
    eprintln!("slow reader got {got} of {n} messages before it was cut off");
    assert!(got < n, "the slow reader did not get everything ({got} of {n})");
    // The flood goes on after the cut: nothing of it stays in the server (the stalled reader's
    // backlog was bounded by its queue, 64 events, and went with it). Memory grows by the
    // store's page caches (2 MiB each for the writer and the reader) and allocator slack, not
    // by the flood's 56 MB.
    for _ in 0..1900 {
        n += 1;
        let data = json!({"conversation_id": "c1", "content": format!("m{n}"), "metadata": {"pad": pad}});
        alice.send("message:send", data).await;
        alice.expect("message:sent").await;
        assert_eq!(bob.expect("message:new").await["data"]["message"]["seq"], n);
    }
    let (grew, flood) =
        ((s.metric("confab_resident_memory_bytes") as usize).saturating_sub(rss_before), n as usize * 28 * 1024);
    assert!(flood > 12 * 4 * 1024 * 1024, "the flood must dwarf the page caches");
    eprintln!("server memory grew {} KiB during a flood of {} KiB", grew / 1024, flood / 1024);
    assert!(grew < flood / 2, "memory grew {} KiB during a flood of {} KiB", grew / 1024, flood / 1024);
    if let Some((code, _)) = slow.closed {
        assert_eq!(code, 1008);
    }
}
