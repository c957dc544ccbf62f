//! Receipts reach a sender in causal order and in bounded numbers: `message:sent` (which
//! gives the message's id) before any `message:delivered` for it, on both transports; and in
//! groups of a thousand and ten thousand members online, at the default queue size, the
//! sender keeps its connection, hears every `message:sent`, and gets one receipt per message
//! with how many members have it, not one per member (docs/protocol.md §5, receipts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Client, Server};

const TRIES: usize = 40;

/// What a sender reads, in order, up to the first receipt.
async fn until_a_receipt(mut next: impl AsyncFnMut() -> Value) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let e = next().await;
        let done = e["type"] == "message:delivered";
        events.push(e);
        if done {
            return events;
        }
    }
}

/// Whether `message:sent` for request `rid` came before any receipt for its message.
fn sent_then_delivered(events: &[Value], rid: &str) -> Result<(), String> {
    let sent = events.iter().position(|e| e["type"] == "message:sent" && e["request_id"] == rid);
    let Some(sent) = sent else { return Err("no message:sent".into()) };
    let id = &events[sent]["data"]["id"];
    match events.iter().position(|e| e["type"] == "message:delivered" && e["data"]["message_id"] == *id) {
        Some(d) if d < sent => Err(format!("message:delivered came {} events before message:sent", sent - d)),
        _ => Ok(()),
    }
}

#[tokio::test]
async fn message_sent_comes_before_any_receipt_for_it_over_websocket() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    let mut wrong = Vec::new();
    for i in 0..TRIES {
        let rid = alice.send("message:send", json!({"conversation_id": "c1", "content": format!("m{i}")})).await;
        let events =
            until_a_receipt(async || alice.recv_within(support::WAIT).await.expect("alice heard nothing")).await;
        if let Err(why) = sent_then_delivered(&events, &rid) {
            wrong.push(format!("try {i}: {why}"));
        }
        bob.expect("message:new").await;
    }
    assert!(wrong.is_empty(), "receipts before acknowledgements: {wrong:?}");
}

#[tokio::test]
async fn message_sent_comes_before_any_receipt_for_it_over_webtransport() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.wt_alice_and_bob("c1").await;
    let mut wrong = Vec::new();
    for i in 0..TRIES {
        let rid =
            alice.send_on("c1", "message:send", json!({"conversation_id": "c1", "content": format!("m{i}")})).await;
        let events =
            until_a_receipt(async || alice.recv_within(support::WAIT).await.expect("alice heard nothing").1).await;
        if let Err(why) = sent_then_delivered(&events, &rid) {
            wrong.push(format!("try {i}: {why}"));
        }
        bob.expect("message:new").await;
    }
    assert!(wrong.is_empty(), "receipts before acknowledgements: {wrong:?}");
}

/// The soft and hard limits on open files of this process (`/proc/self/limits`).
fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut n = line.split_whitespace().skip(3).map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    Some((n.next()?, n.next()?))
}

/// Whether this process (and the server it starts, which inherits them) may open `needed`
/// files: raises the soft limit to the hard one if it must (no privilege needed, `prlimit`).
fn room_for_files(needed: u64) -> bool {
    let Some((soft, hard)) = open_files_limit() else { return true };
    if soft < needed && hard >= needed {
        let pid = std::process::id().to_string();
        let _ =
            std::process::Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={hard}:{hard}")]).status();
    }
    let ok = open_files_limit().is_some_and(|(soft, _)| soft >= needed);
    if !ok {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "CI needs {needed} open files (ulimit -n)");
        eprintln!("SKIPPED: {needed} open files needed, the limit is {soft} (ulimit -n)");
    }
    ok
}

/// `members` users online in one conversation (Winkr, not joined: each hears
/// `conversation:unread`), and their first member sending `messages` messages at once.
async fn a_big_group(members: usize, messages: usize) {
    // A socket per member here, and one per member in the server.
    if !room_for_files(members as u64 + 200) {
        return;
    }
    // Default queue sizes: only the rate limits are raised, so that one sender may send fast.
    let s = Server::start(&[]);
    let ids: Vec<String> = (0..members).map(|i| format!("u{i}")).collect();
    let (status, body) = s.api("POST", "/api/v1/conversations", Some(json!({"id": "big", "members": ids})));
    assert_eq!(status, 201, "{body}");

    let mut others: Vec<Client> = Vec::with_capacity(members - 1);
    let mut connecting = FuturesUnordered::new();
    let mut next = 1;
    while others.len() < members - 1 {
        while next < members && connecting.len() < 200 {
            let (addr, path) = (s.addr.clone(), format!("/ws?token={}", s.mint(&ids[next])));
            connecting.push(async move { Client::connect_lean(&addr, &path).await.ready().await });
            next += 1;
        }
        others.push(connecting.next().await.unwrap());
    }
    let mut sender = Client::connect_lean(&s.addr, &format!("/ws?token={}", s.mint("u0"))).await.ready().await;
    sender.join("big").await;

    let mut rids = Vec::new();
    for i in 0..messages {
        rids.push(
            sender.send("message:send", json!({"conversation_id": "big", "content": format!("hello {i}")})).await,
        );
    }
    // Every acknowledgement, and receipts that say the last message reached everyone.
    let mut sent = std::collections::HashMap::new();
    let mut receipts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let everyone = json!(members - 1);
    let last_reached_all = |receipts: &Vec<Value>, last: &Value| {
        receipts.iter().any(|d| d["message_id"] == *last && d["delivered_count"] == everyone)
    };
    while sent.len() < messages
        || !last_reached_all(&receipts, &sent.get(&rids[messages - 1]).cloned().unwrap_or_default())
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(e) = sender.recv_within(left).await else {
            panic!(
                "sender: closed {:?}; {} of {messages} acknowledged; receipts {receipts:?}",
                sender.closed,
                sent.len()
            )
        };
        match e["type"].as_str() {
            Some("message:sent") => {
                sent.insert(e["request_id"].as_str().unwrap().to_string(), e["data"]["id"].clone());
            }
            Some("message:delivered") => receipts.push(e["data"].clone()),
            _ => {}
        }
    }
    assert!(rids.iter().all(|r| sent.contains_key(r)), "every message acknowledged");
    for d in &receipts {
        assert_eq!(d["recipient_count"], everyone, "{d}");
        assert!(d.get("user_id").is_none(), "a big group's receipt names no single member: {d}");
    }
    assert!(receipts.len() <= messages, "{} receipts for {messages} messages", receipts.len());
    sender.expect_none("connection:closed", Duration::from_millis(300)).await;

    // Every member heard every message, as an unread count of the last one.
    let last = format!("hello {}", messages - 1);
    let mut missed = 0;
    for c in &mut others {
        let mut heard = false;
        while let Some(e) = c.recv_within(Duration::from_secs(5)).await {
            if e["type"] == "conversation:unread" && e["data"]["last_message"]["content"] == last.as_str() {
                assert_eq!(e["data"]["unread_count"], messages, "{e}");
                heard = true;
                break;
            }
        }
        missed += usize::from(!heard);
    }
    assert_eq!(missed, 0, "members who missed the last message");
}

#[tokio::test]
async fn a_sender_in_a_group_of_a_thousand_online_keeps_its_connection_and_acknowledgements() {
    a_big_group(1_000, 5).await;
}

#[tokio::test]
async fn a_sender_in_a_group_of_ten_thousand_online_keeps_its_connection_and_acknowledgements() {
    a_big_group(10_000, 5).await;
}
