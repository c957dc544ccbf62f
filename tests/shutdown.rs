//! Graceful shutdown (SPEC §3 close code 1001): SIGTERM tells every client, closes them with
//! 1001, and the process exits promptly; nothing acknowledged is lost across the restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::Server;

#[tokio::test]
async fn sigterm_tells_every_client_and_exits_in_time() {
    let mut s = Server::start(&["--max-connections-per-user", "10"]);
    s.conversation("c1", &["alice", "bob"]);
    let mut clients = Vec::new();
    for i in 0..20 {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let mut c = s.client(user).await.ready().await;
        c.join("c1").await;
        clients.push(c);
    }
    let m = clients[0].say("c1", "before shutdown").await;
    let took = tokio::task::spawn_blocking(move || {
        let t = s.terminate();
        (s, t)
    });
    for c in &mut clients {
        let closed = c.expect("connection:closed").await;
        assert_eq!(
            (closed["data"]["reason"].clone(), closed["data"]["code"].clone()),
            (json!("server_shutdown"), json!(1001))
        );
        assert_eq!(c.expect_close().await.0, 1001);
    }
    let (mut s, took) = took.await.unwrap();
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    s.restart();
    let mut bob = s.client("bob").await.ready().await;
    bob.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 0})).await;
    let replayed = bob.expect("message:new").await;
    assert_eq!(replayed["data"]["message"]["id"], m["id"]);
}

/// Issue 7's graceful restart: 200 clients in 20 conversations, one sender per conversation
/// sending until the server tells it to go. SIGTERM: every client gets `connection:closed`
/// {`server_shutdown`, 1001} and close 1001, the process exits within the drain time; after a
/// restart each client re-joins with `since_seq` = the last seq it saw and then holds every
/// message of its conversation once, seqs 1..=last without a gap, every acknowledged one
/// among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_restart_without_loss() {
    const CONVS: usize = 20;
    const PER_CONV: usize = 10;
    let mut s = Server::start(&["--drain-timeout-ms", "5000"]);
    let user = |c: usize, k: usize| format!("u{c}_{k}");
    for c in 0..CONVS {
        let members: Vec<String> = (0..PER_CONV).map(|k| user(c, k)).collect();
        s.conversation(&format!("c{c}"), &members.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let mut tasks = Vec::new();
    // Senders start once every client has joined (a later joiner would miss the first ones).
    let go = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for c in 0..CONVS {
        for k in 0..PER_CONV {
            let mut client = s.client(&user(c, k)).await.ready().await;
            client.join(&format!("c{c}")).await;
            let conv = format!("c{c}");
            let go = std::sync::Arc::clone(&go);
            tasks.push(tokio::spawn(async move {
                // Returns (seqs seen, seqs acknowledged to this client as sender).
                let (mut seen, mut acked) = (Vec::new(), Vec::new());
                let mut next_send = tokio::time::Instant::now();
                let mut sent = 0u32;
                loop {
                    let going = go.load(std::sync::atomic::Ordering::Relaxed);
                    if !going {
                        next_send = tokio::time::Instant::now();
                    }
                    if k == 0 && going && tokio::time::Instant::now() >= next_send {
                        let data = json!({"conversation_id": conv, "content": format!("m{sent}"), "local_id": format!("l{sent}")});
                        if !client.try_send_value(json!({"type": "message:send", "data": data})).await {
                            break;
                        }
                        sent += 1;
                        next_send += Duration::from_millis(20);
                    }
                    let Some(e) = client.recv_within(Duration::from_millis(5)).await else {
                        if client.closed.is_some() {
                            break;
                        }
                        continue;
                    };
                    match e["type"].as_str() {
                        Some("message:new") => seen.push(e["data"]["message"]["seq"].as_u64().unwrap()),
                        Some("message:sent") => acked.push(e["data"]["seq"].as_u64().unwrap()),
                        Some("connection:closed") => {
                            assert_eq!((&e["data"]["reason"], &e["data"]["code"]), (&json!("server_shutdown"), &json!(1001)));
                        }
                        _ => {}
                    }
                }
                assert_eq!(client.closed.as_ref().map(|c| c.0), Some(1001), "{conv} {k}");
                (conv, k, seen, acked)
            }));
        }
    }
    go.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut s, took) = tokio::task::spawn_blocking(move || {
        let t = s.terminate();
        (s, t)
    })
    .await
    .unwrap();
    assert!(took < Duration::from_secs(6), "exit took {took:?}, the drain time is 5 s");
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let acked_total: usize = results.iter().map(|r| r.3.len()).sum();
    assert!(acked_total >= CONVS * 20, "the senders were sending: {acked_total} acknowledged");
    s.restart();
    for (conv, k, seen, acked) in results {
        // What this client saw before is 1..=n in order, once.
        assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>(), "{conv}/{k} before the restart");
        let mut c = s.client(&user(conv[1..].parse().unwrap(), k)).await.ready().await;
        let since = seen.len() as u64;
        let rid = c.send("conversation:join", json!({"conversation_id": conv, "since_seq": since})).await;
        let joined = c.expect("conversation:joined").await;
        assert_eq!(joined["request_id"], rid);
        let last = joined["data"]["last_seq"].as_u64().unwrap();
        let mut all = seen.clone();
        while (all.len() as u64) < last {
            let m = c.expect("message:new").await;
            all.push(m["data"]["message"]["seq"].as_u64().unwrap());
        }
        assert_eq!(all, (1..=last).collect::<Vec<_>>(), "{conv}/{k}: every message once, in order");
        assert!(acked.iter().all(|a| *a <= last), "{conv}/{k}: an acknowledged message is missing");
        c.close().await;
    }
}
