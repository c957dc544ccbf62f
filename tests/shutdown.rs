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
