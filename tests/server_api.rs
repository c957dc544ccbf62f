//! The HTTP APIs (SPEC §5, §8): the app backend's API with its key, and the clients' REST.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::{Server, http};

#[tokio::test]
async fn the_server_api_needs_its_key() {
    let s = Server::start(&[]);
    let (status, body) =
        http(&s.addr, "POST", "/api/v1/conversations", Some("ApiKey wrong"), Some(json!({"members": ["a"]})));
    assert_eq!((status, body["error"]["code"].clone()), (401, json!("UNAUTHORIZED")));
    let (status, _) = http(&s.addr, "POST", "/api/v1/conversations", None, Some(json!({"members": ["a"]})));
    assert_eq!(status, 401);
}

#[tokio::test]
async fn conversations_are_created_changed_and_deleted() {
    let s = Server::start(&[]);
    let (status, body) = s.api("POST", "/api/v1/conversations", Some(json!({"members": ["alice", "bob"]})));
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("conv_"));
    let (status, body) = s.api("POST", "/api/v1/conversations", Some(json!({"id": id, "members": ["x"]})));
    // Taken, not malformed: 409 (the same request with another id succeeds).
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("VALIDATION_ERROR")), "ids are unique");
    let (status, body) = s.api("POST", "/api/v1/conversations", Some(json!({"members": "alice"})));
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("VALIDATION_ERROR")));
    let (status, body) =
        s.api("POST", "/api/v1/conversations", Some(json!({"members": ["a", "b", "c"], "max_members": 2})));
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("CONVERSATION_FULL")));

    let mut carol = s.client("carol").await.ready().await;
    let rid = carol.send("conversation:join", json!({"conversation_id": id})).await;
    assert_eq!(carol.expect_error(&rid).await["code"], "FORBIDDEN");
    let (status, _) = s.api(
        "PUT",
        &format!("/api/v1/conversations/{id}/members"),
        Some(json!({"members": ["alice", "bob", "carol"]})),
    );
    assert_eq!(status, 200);
    carol.join(&id).await;
    let mut alice = s.client("alice").await.ready().await;
    alice.say(&id, "welcome carol").await;
    assert_eq!(carol.expect("message:new").await["data"]["message"]["content"], "welcome carol");

    let (status, _) = s.api("DELETE", &format!("/api/v1/conversations/{id}"), None);
    assert_eq!(status, 204);
    assert_eq!(carol.expect("conversation:left").await["data"]["conversation_id"], id.as_str());
    let rid = alice.send("message:send", json!({"conversation_id": id, "content": "gone?"})).await;
    assert_eq!(alice.expect_error(&rid).await["code"], "CONVERSATION_NOT_FOUND");
    let (status, _) = s.api("DELETE", &format!("/api/v1/conversations/{id}"), None);
    assert_eq!(status, 404);
}

#[tokio::test]
async fn published_events_reach_online_users_now_and_offline_users_on_connect() {
    let s = Server::start(&[]);
    let mut alice = s.client("alice").await.ready().await;
    let (status, body) = s.api(
        "POST",
        "/api/v1/publish",
        Some(json!({"user_ids": ["alice", "bob"], "type": "match:new", "data": {"id": "m1", "user": {"name": "Bob"}}})),
    );
    assert_eq!((status, body["delivered"].clone(), body["queued"].clone()), (200, json!(1), json!(1)));
    let m = alice.expect("match:new").await;
    assert_eq!(m["data"]["user"]["name"], "Bob");
    let mut bob = s.client("bob").await;
    bob.expect("connection:established").await;
    assert_eq!(bob.expect("match:new").await["data"]["id"], "m1");
    // Delivered once: the inbox is emptied.
    let mut bob2 = s.client("bob").await.ready().await;
    bob2.expect_none("match:new", Duration::from_millis(300)).await;
    let (status, body) =
        s.api("POST", "/api/v1/publish", Some(json!({"user_ids": ["a"], "type": "message:new", "data": {}})));
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("VALIDATION_ERROR")));
    let (status, body) = s.api("POST", "/api/v1/publish", Some(json!({"user_ids": ["bad id"], "type": "match:new"})));
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("VALIDATION_ERROR")));
    assert!(body["error"]["message"].as_str().unwrap().starts_with("user_ids:"), "{body}");
}

#[tokio::test]
async fn system_messages_are_stored_and_fanned_out() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    alice.join("c1").await;
    let (status, body) =
        s.api("POST", "/api/v1/conversations/c1/messages", Some(json!({"content": "You matched!", "type": "system"})));
    assert_eq!(status, 201, "{body}");
    let m = alice.expect("message:new").await;
    assert_eq!(
        (m["data"]["message"]["type"].clone(), m["data"]["message"]["sender_id"].clone()),
        (json!("system"), json!("system"))
    );
    assert_eq!(m["data"]["message"]["seq"], 1);
    let (status, _) = s.api("POST", "/api/v1/conversations/nope/messages", Some(json!({"content": "x"})));
    assert_eq!(status, 404);
}

#[tokio::test]
async fn presence_reports_online_and_last_seen() {
    let s = Server::start(&[]);
    let alice = s.client("alice").await.ready().await;
    let (_, p) = s.api("GET", "/api/v1/presence/alice", None);
    assert_eq!((p["online"].clone(), p["connections"].clone()), (json!(true), json!(1)));
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, p) = s.api("GET", "/api/v1/presence/alice", None);
    assert_eq!(p["online"], false);
    assert!(p["last_seen"].is_string());
}

#[tokio::test]
async fn clients_list_conversations_and_read_history_over_rest() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    s.conversation("c2", &["alice", "carol"]);
    let mut bob = s.client("bob").await.ready().await;
    for i in 1..=3 {
        bob.say("c1", &format!("b{i}")).await;
    }
    let auth = format!("Bearer {}", s.token("alice"));
    let (status, body) = http(&s.addr, "GET", "/v1/chat/conversations", Some(&auth), None);
    assert_eq!(status, 200);
    let list = body["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let c1 = list.iter().find(|c| c["id"] == "c1").unwrap();
    assert_eq!((c1["unread_count"].clone(), c1["last_message"]["content"].clone()), (json!(3), json!("b3")));
    let (status, body) = http(&s.addr, "GET", "/v1/chat/conversations/c1/messages?limit=2", Some(&auth), None);
    assert_eq!(status, 200);
    let seqs: Vec<_> = body["messages"].as_array().unwrap().iter().map(|m| m["seq"].clone()).collect();
    assert_eq!((seqs, body["has_more"].clone()), (vec![json!(2), json!(3)], json!(true)));
    let carol = format!("Bearer {}", s.token("carol"));
    let (status, body) = http(&s.addr, "GET", "/v1/chat/conversations/c1/messages", Some(&carol), None);
    assert_eq!((status, body["error"]["code"].clone()), (403, json!("FORBIDDEN")));
    let (status, _) = http(&s.addr, "GET", "/v1/chat/conversations", None, None);
    assert_eq!(status, 401);
    let (status, body) = http(&s.addr, "GET", "/v1/chat/conversations/c1/messages?limit=lots", Some(&auth), None);
    assert_eq!((status, body["error"]["code"].clone()), (400, json!("VALIDATION_ERROR")), "{body}");
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let s = Server::start(&["--typing-per-minute", "1"]);
    let (status, _) = http(&s.addr, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
    let (mut c, mut bob) = s.alice_and_bob("c1").await;
    c.join("c1").await;
    bob.join("c1").await;
    c.send("heartbeat", json!({})).await;
    c.expect("heartbeat").await;
    let rid = c.send("history:get", json!({"conversation_id": "bad id"})).await;
    c.expect_error(&rid).await;
    c.say("c1", "hello").await;
    bob.expect("message:new").await;
    c.send("typing:start", json!({"conversation_id": "c1"})).await;
    let rid = c.send("typing:start", json!({"conversation_id": "c1"})).await;
    assert_eq!(c.expect_error(&rid).await["code"], "RATE_LIMITED");
    let (status, body) = http(&s.addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    let has = |needle: &str| assert!(text.contains(needle), "{needle} missing in {text}");
    has(r#"confab_connections{transport="websocket",codec="json",dialect="winkr"} 2"#);
    has("confab_users_online 2");
    has("confab_store_commit_seconds_bucket");
    has(r#"confab_events_in_total{event="heartbeat"} 1"#);
    has(r#"confab_errors_total{code="VALIDATION_ERROR"} 1"#);
    has(r#"confab_sessions_opened_total{transport="websocket",codec="json",dialect="winkr"} 2"#);
    has(r#"confab_events_out_total{event="message:new"} 2"#);
    has(r#"confab_events_out_total{event="message:sent"} 1"#);
    has(r#"confab_rate_limited_total{limit="typing"} 1"#);
    has("confab_outbound_queue_depth_count");
    // Bob's and Alice's copies of the message, each written to its socket.
    has("confab_message_latency_seconds_count 2");
    let gauge = |name: &str| -> i64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(gauge("confab_open_fds") > 5, "{text}");
    assert!(gauge("confab_resident_memory_bytes") > 1_000_000, "{text}");
    assert!(gauge("confab_tasks") >= 2, "two connections' tasks: {text}");
}

/// Dialects without a join request (seed 003's personal socket, seed 004) listen to all of
/// their user's conversations: one created, or one the user is added to, after the connection
/// opened is heard at once, on both transports; Winkr hears its unread count.
#[tokio::test]
async fn conversations_created_or_joined_later_are_heard_at_once_on_every_dialect() {
    let s = Server::start(&[]);
    s.conversation("first", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    let token = s.token("bob");
    let ws = |path: &str| {
        let url = format!("{path}token={token}");
        let addr = s.addr.clone();
        async move { support::Client::connect_to(&addr, &url).await }
    };
    let mut actions = ws("/ws?dialect=actions&").await;
    actions.expect("connection.established").await;
    let mut personal = ws("/api/v1/ws/bob?").await;
    // A member with no connection that listens to all hears Winkr's unread counts.
    let mut winkr = s.client("dave").await.ready().await;
    let mut actions_wt = support::wt::WtClient::connect(
        &s.h3_addr,
        &s.cert_sha256,
        &format!("dialect=actions&codec=json&token={token}"),
    )
    .await;
    actions_wt.expect("connection.established").await;

    // A conversation created after they connected.
    s.conversation("later", &["alice", "bob", "dave"]);
    let later = json!({"conversation_id": "later", "content": "new chat", "metadata": {"recipient_id": "bob"}});
    alice.send("message:send", later).await;
    assert_eq!(actions.expect("chat_message").await["message"]["content"], "new chat");
    assert_eq!(actions_wt.expect("chat_message").await["message"]["content"], "new chat");
    assert_eq!(personal.expect("new_direct_message").await["data"]["chat_id"], "later");
    assert_eq!(winkr.expect("conversation:unread").await["data"]["conversation_id"], "later");

    // An existing conversation bob is added to.
    s.conversation("team", &["alice", "carol"]);
    let (status, body) =
        s.api("PUT", "/api/v1/conversations/team/members", Some(json!({"members": ["alice", "bob", "carol", "dave"]})));
    assert_eq!(status, 200, "{body}");
    let team = json!({"conversation_id": "team", "content": "welcome", "metadata": {"recipient_id": "bob"}});
    alice.send("message:send", team).await;
    assert_eq!(actions.expect("chat_message").await["message"]["conversation_id"], "team");
    assert_eq!(actions_wt.expect("chat_message").await["message"]["conversation_id"], "team");
    assert_eq!(personal.expect("new_direct_message").await["data"]["chat_id"], "team");
    assert_eq!(winkr.expect("conversation:unread").await["data"]["conversation_id"], "team");

    // Removed again: nothing more from it.
    s.api("PUT", "/api/v1/conversations/team/members", Some(json!({"members": ["alice", "carol"]})));
    alice.send("message:send", json!({"conversation_id": "team", "content": "bye bob"})).await;
    alice.expect("message:sent").await;
    actions.expect_none("chat_message", Duration::from_millis(300)).await;
}
