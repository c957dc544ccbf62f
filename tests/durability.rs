//! SPEC §6: every acknowledged message survives `kill -9` and a restart, once, with its id and
//! seq, and the sequence goes on where it stopped. Also recovery: a client that reconnects and
//! joins with `since_seq` gets exactly what it missed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::Server;

async fn all_messages(s: &Server, user: &str, conv: &str) -> Vec<Value> {
    let mut c = s.client(user).await.ready().await;
    let mut out = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut q = json!({"conversation_id": conv, "limit": 100});
        if let Some(b) = before {
            q["before_seq"] = json!(b);
        }
        c.send("history:get", q).await;
        let h = c.expect("history").await;
        let page = h["data"]["messages"].as_array().unwrap().clone();
        before = page.first().and_then(|m| m["seq"].as_u64());
        let more = h["data"]["has_more"] == true;
        out.splice(0..0, page);
        if !more {
            return out;
        }
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9_once_and_in_order() {
    let mut s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob", "carol"]);
    let mut senders = Vec::new();
    for user in ["alice", "bob", "carol"] {
        senders.push(s.client(user).await.ready().await);
    }
    // Three senders at once, 60 messages each, every one waited for.
    let mut acked = Vec::new();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0..60 {
                    mine.push(c.say("c1", &format!("u{i} n{n}")).await);
                }
                mine
            })
        })
        .collect();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    s.kill9();
    s.restart();
    let stored = all_messages(&s, "alice", "c1").await;
    assert_eq!(stored.len(), 180);
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=180).collect::<Vec<_>>(), "no gap, no duplicate");
    for a in &acked {
        let found: Vec<_> = stored.iter().filter(|m| m["id"] == a["id"]).collect();
        assert_eq!(found.len(), 1, "{a}");
        assert_eq!((found[0]["seq"].clone(), found[0]["content"].clone()), (a["seq"].clone(), a["content"].clone()));
    }
    let mut alice = s.client("alice").await.ready().await;
    assert_eq!(alice.say("c1", "after restart").await["seq"], 181);
}

/// The `n`th message of a burst, with a `local_id` so that it can be resent safely.
fn burst(n: usize) -> Value {
    json!({"conversation_id": "c1", "content": format!("burst {n}"), "local_id": format!("b{n}")})
}

#[tokio::test]
async fn kill_9_during_a_burst_loses_nothing_that_was_acknowledged() {
    burst_then_kill_9(&[]).await;
}

/// `--sync normal` acknowledges before the disk has the commit, but a crash of the process
/// alone (the kernel keeps the written WAL) must still lose nothing acknowledged.
#[tokio::test]
async fn kill_9_with_sync_normal_loses_nothing_that_was_acknowledged() {
    burst_then_kill_9(&["--sync", "normal"]).await;
}

async fn burst_then_kill_9(args: &[&str]) {
    let mut s = Server::start(args);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    // Fire 300 sends without waiting, then kill the server while answers are in flight.
    for n in 0..300 {
        alice.send("message:send", burst(n)).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 50 {
        let e = alice.expect("message:sent").await;
        acked.push(e["data"].clone());
    }
    s.kill9();
    while let Some(e) = alice.recv_within(Duration::from_millis(500)).await {
        if e["type"] == "message:sent" {
            acked.push(e["data"].clone());
        }
    }
    s.restart();
    let stored = all_messages(&s, "alice", "c1").await;
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "gap-free after the crash");
    for a in &acked {
        assert_eq!(stored.iter().filter(|m| m["id"] == a["id"]).count(), 1, "acknowledged {a} must be stored once");
    }
    // Resending everything with the same local ids adds only what was lost.
    let mut alice = s.client("alice").await.ready().await;
    for n in 0..300 {
        alice.send("message:send", burst(n)).await;
        alice.expect("message:sent").await;
    }
    let stored = all_messages(&s, "alice", "c1").await;
    assert_eq!(stored.len(), 300, "local_id made the resend exact");
}

#[tokio::test]
async fn rejoining_with_since_seq_replays_exactly_what_was_missed() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    for i in 1..=3 {
        alice.say("c1", &format!("seen {i}")).await;
        bob.expect("message:new").await;
    }
    bob.close().await;
    for i in 4..=7 {
        alice.say("c1", &format!("missed {i}")).await;
    }
    let mut bob = s.client("bob").await.ready().await;
    bob.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 3})).await;
    let joined = bob.expect("conversation:joined").await;
    assert_eq!(joined["data"]["last_seq"], 7);
    for i in 4..=7 {
        let m = bob.expect("message:new").await;
        assert_eq!(
            (m["data"]["message"]["seq"].clone(), m["data"]["message"]["content"].clone()),
            (json!(i), json!(format!("missed {i}")))
        );
    }
    bob.expect_none("message:new", Duration::from_millis(300)).await;
    // Live messages follow the replay.
    alice.say("c1", "live 8").await;
    assert_eq!(bob.expect("message:new").await["data"]["message"]["seq"], 8);
}

#[tokio::test]
async fn messages_sent_during_a_replay_arrive_once_after_it() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    for i in 1..=400 {
        alice.send("message:send", json!({"conversation_id": "c1", "content": format!("m{i}")})).await;
    }
    for _ in 0..400 {
        alice.expect("message:sent").await;
    }
    let mut bob = s.client("bob").await.ready().await;
    bob.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 0})).await;
    // While bob's replay is running, more messages land.
    for i in 401..=450 {
        alice.send("message:send", json!({"conversation_id": "c1", "content": format!("m{i}")})).await;
    }
    bob.expect("conversation:joined").await;
    let mut seqs = Vec::new();
    while seqs.len() < 450 {
        let m = bob.expect("message:new").await;
        seqs.push(m["data"]["message"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=450).collect::<Vec<_>>(), "every message once, in order");
    bob.expect_none("message:new", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_since_seq_past_the_end_replays_nothing() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    alice.say("c1", "one").await;
    for since in [json!(1), json!(99), json!(u64::MAX)] {
        bob.send("conversation:join", json!({"conversation_id": "c1", "since_seq": since})).await;
        assert_eq!(bob.expect("conversation:joined").await["data"]["last_seq"], 1);
        bob.expect_none("message:new", Duration::from_millis(200)).await;
    }
}

/// Issue 7's crash test at scale: 40 clients in 8 conversations fire 50 sends each without
/// waiting, and the server is killed (`kill -9`) once 300 have been acknowledged, answers
/// still in flight. After the restart every conversation is gap-free from seq 1, and every
/// acknowledged message is in it once, with its seq and content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_from_many_clients_loses_nothing_acknowledged() {
    const CONVS: usize = 8;
    const PER_CONV: usize = 5;
    let mut s = Server::start(&[]);
    let mut clients = Vec::new();
    for c in 0..CONVS {
        let members: Vec<String> = (0..PER_CONV).map(|k| format!("k{c}_{k}")).collect();
        s.conversation(&format!("b{c}"), &members.iter().map(String::as_str).collect::<Vec<_>>());
        for m in &members {
            clients.push((c, s.client(m).await.ready().await));
        }
    }
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let mut tasks = Vec::new();
    for (i, (c, mut client)) in clients.into_iter().enumerate() {
        let acked = std::sync::Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                let data = json!({"conversation_id": format!("b{c}"), "content": format!("{i}/{n}"), "local_id": format!("l{n}")});
                if !client.try_send_value(json!({"type": "message:send", "data": data})).await {
                    break;
                }
            }
            while let Some(e) = client.recv_within(Duration::from_secs(2)).await {
                if e["type"] == "message:sent" {
                    acked.lock().unwrap().push(e["data"].clone());
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut s = tokio::task::spawn_blocking(move || {
        s.kill9();
        s
    })
    .await
    .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < CONVS * PER_CONV * 50, "the kill came mid-burst ({} of 2000 acknowledged)", acked.len());
    s.restart();
    let mut total = 0;
    for c in 0..CONVS {
        let stored = all_messages(&s, &format!("k{c}_0"), &format!("b{c}")).await;
        let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "b{c}: gap-free after the crash");
        for a in acked.iter().filter(|a| a["conversation_id"] == format!("b{c}")) {
            let found: Vec<_> = stored.iter().filter(|m| m["id"] == a["id"]).collect();
            assert_eq!(found.len(), 1, "acknowledged {a} must be stored once");
            assert_eq!((&found[0]["seq"], &found[0]["content"]), (&a["seq"], &a["content"]));
        }
        total += stored.len();
    }
    eprintln!("{} acknowledged before the kill, {total} stored", acked.len());
    assert!(total >= acked.len());
}
