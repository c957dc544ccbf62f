//! The other seeds' dialects end to end (SPEC §7), against a real `confab` process: each
//! test replays its seed's own client flow (the messages its example client code sends, as it
//! sends them) and checks what that client would read. Then one conversation with a client of
//! every dialect, over WebSocket and WebTransport.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Client, Server, http};

const QUIET: Duration = Duration::from_millis(400);

async fn ws(s: &Server, path: &str, user: &str) -> Client {
    let sep = if path.contains('?') { '&' } else { '?' };
    Client::connect_to(&s.addr, &format!("{path}{sep}token={}", s.token(user))).await
}

/// Sends `frame` from `speaker` until `listener` hears `kind` (a typing indicator): then both
/// sessions have joined their scope (a session reads frames only after its joins), whichever
/// connected last.
async fn until_heard(speaker: &mut Client, frame: Value, listener: &mut Client, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        speaker.send_raw_value(frame.clone()).await;
        if let Some(e) = listener.recv_within(Duration::from_millis(100)).await {
            if e["type"] == kind {
                return e;
            }
            listener.seen.push(e);
        }
        assert!(tokio::time::Instant::now() < deadline, "{kind} never heard");
    }
}

/// Every event of type `kind` that arrives within `QUIET`, after those already seen.
async fn all_of(c: &mut Client, kind: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut rest = Vec::new();
    for e in c.seen.drain(..) {
        if e["type"] == kind { out.push(e) } else { rest.push(e) }
    }
    c.seen = rest;
    while let Some(e) = c.recv_within(QUIET).await {
        if e["type"] == kind { out.push(e) } else { c.seen.push(e) }
    }
    out
}

// ---- seed 002: systimz ----

#[tokio::test]
async fn systimz_chat_client_talks_to_its_assistant() {
    let mut s = Server::start(&[]);
    // `new ChatClient(token)` opens `/ws?token=`; the deployment names the dialect.
    let mut bob = ws(&s, "/ws?dialect=systimz", "bob").await;
    let hello = bob.expect("connection").await;
    assert_eq!(hello["payload"]["userId"], "bob");
    assert!(hello["payload"]["connectionId"].is_string() && hello["id"].is_string() && hello["timestamp"].is_string());

    // `chat.sendMessage('Hello, world!')`, exactly as the seed's client writes it.
    bob.send_raw_value(json!({"type": "message", "payload": {"content": "Hello, world!", "type": "user"}})).await;
    let echoed = bob.expect("message").await;
    assert_eq!(echoed["payload"]["content"], "Hello, world!");
    assert_eq!(echoed["payload"]["type"], "user");
    assert_eq!(echoed["payload"]["userId"], "bob");
    // Without `?conversation_id=`, the connection is the user's own conversation.
    assert_eq!(echoed["payload"]["conversationId"], "bob");

    // The AI backend answers through the server API, and moves the avatar.
    let (st, body) = s.api(
        "POST",
        "/api/v1/conversations/bob/messages",
        Some(json!({"content": "Hi Bob, how can I help?", "type": "ai", "sender_id": "assistant"})),
    );
    assert_eq!(st, 201, "{body}");
    let answer = bob.expect("message").await;
    assert_eq!(
        (&answer["payload"]["type"], &answer["payload"]["content"], &answer["payload"]["userId"]),
        (&json!("ai"), &json!("Hi Bob, how can I help?"), &json!("assistant"))
    );
    let avatar = json!({"avatarId": "ava-1", "action": "speaking"});
    let (st, body) =
        s.api("POST", "/api/v1/publish", Some(json!({"user_ids": ["bob"], "type": "avatar_update", "data": avatar})));
    assert_eq!(st, 200, "{body}");
    assert_eq!(bob.expect("avatar_update").await["payload"], avatar);
    let notice = json!({"message": "New voices are live", "severity": "info"});
    s.api("POST", "/api/v1/publish", Some(json!({"user_ids": ["bob"], "type": "broadcast", "data": notice})));
    let b = bob.expect("broadcast").await;
    assert_eq!((&b["payload"]["message"], &b["payload"]["severity"]), (&notice["message"], &notice["severity"]));

    // A client may not speak for the assistant; a bad message is INVALID_MESSAGE.
    bob.send_raw_value(json!({"type": "message", "payload": {"content": "I am the AI", "type": "ai"}})).await;
    let e = bob.expect("error").await;
    assert_eq!(e["payload"]["code"], "INVALID_MESSAGE");
    bob.send_raw_value(json!({"type": "message", "payload": {}, "id": "m-2"})).await;
    let e = bob.expect("error").await;
    assert_eq!((&e["payload"]["code"], &e["id"]), (&json!("INVALID_MESSAGE"), &json!("m-2")));
    assert_eq!(e["payload"]["details"]["field"], "payload.content");
    bob.send_message(tokio_tungstenite::tungstenite::Message::Text("{not json".into())).await;
    assert_eq!(bob.expect("error").await["payload"]["code"], "INVALID_MESSAGE");
    // Nothing the server refused was stored: the assistant's conversation holds two messages.
    let (_, page) =
        http(&s.addr, "GET", "/v1/chat/conversations/bob/messages", Some(&format!("Bearer {}", s.token("bob"))), None);
    let contents: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["Hello, world!", "Hi Bob, how can I help?"]);

    // Seed 002: `system` `shutdown` before a graceful shutdown, then the close.
    s.terminate();
    let sys = bob.expect("system").await;
    assert_eq!(sys["payload"]["event"], "shutdown");
    // Every frame has a real id, the goodbye too.
    assert!(sys["id"].as_str().is_some_and(|id| id.starts_with("srv_")), "{sys}");
    assert_eq!(bob.expect_close().await.0, 1001);
}

#[tokio::test]
async fn systimz_rate_limit_error_has_the_seeds_details() {
    // Seed 002's limits are the server's defaults: 10 frames/s per connection, burst 20.
    let s = Server::start(&["--conn-rate", "10", "--conn-burst", "20"]);
    s.conversation("room-1", &["carol"]);
    let mut carol = ws(&s, "/ws?dialect=systimz&conversation_id=room-1", "carol").await;
    carol.expect("connection").await;
    for i in 0..30 {
        carol
            .send_raw_value(
                json!({"type": "status", "payload": {"status": if i % 2 == 0 { "typing" } else { "online" }}}),
            )
            .await;
    }
    let e = carol.expect("error").await;
    assert_eq!(e["payload"]["code"], "RATE_LIMIT");
    let d = &e["payload"]["details"];
    assert_eq!((&d["limit"], &d["interval"]), (&json!(10), &json!("second")));
    assert!(d["resetTime"].as_str().is_some_and(|t| t > e["timestamp"].as_str().unwrap()), "{e}");
}

#[tokio::test]
async fn systimz_bad_token_is_auth_failed_and_foreign_conversation_is_refused() {
    let s = Server::start(&[]);
    let mut c = Client::connect_to(&s.addr, "/ws?dialect=systimz&token=nope").await;
    assert_eq!(c.expect("error").await["payload"]["code"], "AUTH_FAILED");
    assert_eq!(c.expect_close().await.0, 4003);
    s.conversation("private", &["alice"]);
    let mut eve = ws(&s, "/ws?dialect=systimz&conversation_id=private", "eve").await;
    assert_eq!(eve.expect("error").await["payload"]["code"], "INVALID_MESSAGE");
    assert_eq!(eve.expect_close().await.0, 4004);
}

// ---- seed 003: chatrooms ----

#[tokio::test]
async fn chatrooms_component_flow_messages_threads_typing_receipts() {
    let s = Server::start(&[]);
    s.conversation("chat-1", &["alice", "bob"]);
    // `websocketService.connect(chatId, token)`.
    let mut alice = ws(&s, "/api/v1/ws/chat/chat-1", "alice").await;
    let mut bob = ws(&s, "/api/v1/ws/chat/chat-1", "bob").await;
    // `sendTypingIndicator(true)`: once Alice hears it, both sockets are in the chat.
    let typing = json!({"type": "typing_indicator", "data": {"is_typing": true, "user_id": "bob"}});
    let t = until_heard(&mut bob, typing, &mut alice, "typing_indicator").await;
    assert_eq!((&t["data"]["is_typing"], &t["data"]["user_id"]), (&json!(true), &json!("bob")));

    // `sendMessage(content)`: both sockets get `new_message` once, with the nested sender.
    alice
        .send_raw_value(json!({"type": "send_message", "data": {"content": "Hi Bob", "message_type": "text", "parent_message_id": null}}))
        .await;
    let to_bob = all_of(&mut bob, "new_message").await;
    let to_alice = all_of(&mut alice, "new_message").await;
    assert_eq!((to_bob.len(), to_alice.len()), (1, 1), "bob: {to_bob:?} alice: {to_alice:?}");
    let m = &to_bob[0]["data"];
    assert_eq!((&m["content"], &m["chat_id"], &m["sender_id"]), (&json!("Hi Bob"), &json!("chat-1"), &json!("alice")));
    assert_eq!((&m["sender"]["username"], &m["message_type"]), (&json!("alice_name"), &json!("text")));
    assert!(m["parent_message_id"].is_null() && m["created_at"].is_string() && m["updated_at"].is_string());
    assert_eq!(to_alice[0]["data"]["id"], m["id"]);

    // The component answers every `new_message` with `sendReadReceipt(id)`.
    bob.send_raw_value(json!({"type": "read_receipt", "data": {"message_id": m["id"], "user_id": "bob"}})).await;
    let r = alice.expect("read_receipt").await;
    assert_eq!((&r["data"]["message_id"], &r["data"]["user_id"]), (&m["id"], &json!("bob")));

    // A thread reply.
    bob.send_raw_value(json!({"type": "send_message", "data": {"content": "Hi!", "message_type": "text", "parent_message_id": m["id"]}}))
        .await;
    let reply = alice.expect("new_message").await;
    assert_eq!((&reply["data"]["content"], &reply["data"]["parent_message_id"]), (&json!("Hi!"), &m["id"]));
    assert_eq!(all_of(&mut bob, "new_message").await.len(), 1, "Bob hears his own reply once");

    // A request the dialect does not know, and a message too long, are refused by name.
    bob.send_raw_value(json!({"type": "edit_message", "data": {}})).await;
    assert_eq!(bob.expect("error").await["data"]["code"], "VALIDATION_ERROR");
    bob.send_raw_value(json!({"type": "send_message", "data": {"content": "x".repeat(2001)}})).await;
    assert_eq!(bob.expect("error").await["data"]["code"], "MESSAGE_TOO_LARGE");
    bob.expect_none("new_message", QUIET).await;
}

#[tokio::test]
async fn chatrooms_personal_socket_hears_direct_messages_only() {
    let s = Server::start(&[]);
    s.conversation("team", &["alice", "bob", "carol"]);
    s.conversation("dm-ab", &["alice", "bob"]);
    let mut bob_personal = ws(&s, "/api/v1/ws/bob", "bob").await;
    let mut alice = ws(&s, "/api/v1/ws/chat/team", "alice").await;
    let mut bob_team = ws(&s, "/api/v1/ws/chat/team", "bob").await;
    let typing = json!({"type": "typing_indicator", "data": {"is_typing": true}});
    until_heard(&mut bob_team, typing, &mut alice, "typing_indicator").await;
    // The personal socket answers a request it does not know only after its joins.
    bob_personal.send_raw_value(json!({"type": "ping", "data": {}})).await;
    bob_personal.expect("error").await;
    // Give the personal socket's joins the same proof: it hears a direct message sent now.
    alice
        .send_raw_value(json!({"type": "direct_message", "data": {"content": "psst", "message_type": "text", "recipient_id": "bob", "chat_id": "dm-ab"}}))
        .await;
    let dm = bob_personal.expect("new_direct_message").await;
    assert_eq!(
        (&dm["data"]["content"], &dm["data"]["chat_id"], &dm["data"]["sender"]["id"]),
        (&json!("psst"), &json!("dm-ab"), &json!("alice"))
    );
    // A chat message goes to the chat sockets, not the personal one.
    alice
        .send_raw_value(json!({"type": "send_message", "data": {"content": "team news", "message_type": "text"}}))
        .await;
    assert_eq!(bob_team.expect("new_message").await["data"]["content"], "team news");
    bob_personal.expect_none("new_message", QUIET).await;
    assert_eq!(all_of(&mut bob_personal, "new_direct_message").await.len(), 0, "the DM came once");
    // The personal socket is its owner's only; a chat socket is its members' only.
    let mut thief = ws(&s, "/api/v1/ws/bob", "carol").await;
    assert_eq!(thief.expect("error").await["data"]["code"], "FORBIDDEN");
    assert_eq!(thief.expect_close().await.0, 4004);
    let mut outsider = ws(&s, "/api/v1/ws/chat/dm-ab", "carol").await;
    assert_eq!(outsider.expect("error").await["data"]["code"], "FORBIDDEN");
    assert_eq!(outsider.expect_close().await.0, 4004);
    let mut nobody = Client::connect_to(&s.addr, "/api/v1/ws/chat/team").await;
    assert_eq!(nobody.expect_close().await.0, 4003);
}

// ---- seed 004: actions ----

/// Attachment URLs are absolute: on the configured public URL when there is one, else on the
/// connection's own scheme and host (WebTransport's is https).
#[tokio::test]
async fn actions_attachment_urls_are_absolute_on_the_public_url_or_the_connection() {
    let file = json!([{"type": "file", "file": base64_encode(b"hello"), "filename": "a.txt"}]);
    let send = json!({"action": "send_message", "conversation_id": "789", "content": "", "attachments": file});
    let url = |m: &Value| m["message"]["attachments"][0]["url"].as_str().unwrap().to_string();

    let s = Server::start(&["--public-url", "https://chat.example.com/"]);
    s.conversation("789", &["123"]);
    let mut me = ws(&s, "/ws?dialect=actions", "123").await;
    me.expect("connection.established").await;
    me.send_raw_value(send.clone()).await;
    let got = url(&me.expect("chat_message").await);
    assert!(got.starts_with("https://chat.example.com/v1/attachments/att_"), "{got}");

    let s = Server::start(&[]);
    s.conversation("789", &["123"]);
    let q = format!("dialect=actions&codec=json&token={}", s.token("123"));
    let mut wt = support::wt::WtClient::connect(&s.h3_addr, &s.cert_sha256, &q).await;
    wt.expect("connection.established").await;
    wt.send_value(&send).await;
    let got = url(&wt.expect("chat_message").await);
    assert!(got.starts_with(&format!("https://{}/v1/attachments/att_", s.h3_addr)), "{got}");
}

/// Seed 004 pairs `mark_read ["901","902"]` with `messages_read ["901","902"]`: every id the
/// client marked that exists is reported, whatever the order, and the watermark moves to the
/// newest of them.
#[tokio::test]
async fn actions_mark_read_reports_every_message_named_in_any_order() {
    let s = Server::start(&[]);
    s.conversation("789", &["123", "456"]);
    let mut me = ws(&s, "/ws?dialect=actions", "123").await;
    me.expect("connection.established").await;
    let mut other = ws(&s, "/ws?dialect=actions", "456").await;
    other.expect("connection.established").await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        me.send_raw_value(json!({"action": "send_message", "conversation_id": "789", "content": text})).await;
        loop {
            let m = other.expect("chat_message").await;
            if m["message"]["content"] == text {
                ids.push(m["message"]["id"].clone());
                break;
            }
        }
    }
    // Newest first, as a client that walks its list from the bottom sends them.
    let marked = json!([ids[1], ids[0]]);
    other.send_raw_value(json!({"action": "mark_read", "conversation_id": "789", "message_ids": marked})).await;
    let read = me.expect("messages_read").await;
    assert_eq!(read["data"]["message_ids"], marked, "both ids, in the request's order: {read}");
    // The watermark is at the second message: the REST list counts one unread.
    let (_, list) = http(&s.addr, "GET", "/v1/chat/conversations", Some(&format!("Bearer {}", s.token("456"))), None);
    assert_eq!(list["conversations"][0]["unread_count"], 1, "{list}");
    // An id that is not there is left out; the ones that are, are reported.
    let marked = json!(["nope", ids[2]]);
    other.send_raw_value(json!({"action": "mark_read", "conversation_id": "789", "message_ids": marked})).await;
    assert_eq!(me.expect("messages_read").await["data"]["message_ids"], json!([ids[2]]));
    // None there at all: an error, and nobody is told.
    other.send_raw_value(json!({"action": "mark_read", "conversation_id": "789", "message_ids": ["a", "b"]})).await;
    assert_eq!(other.expect("error").await["error"]["code"], "NOT_FOUND");
    me.expect_none("messages_read", QUIET).await;
}

#[tokio::test]
async fn actions_client_sends_with_local_ids_attachments_and_read_marks() {
    let s = Server::start(&[]);
    s.conversation("789", &["123", "456"]);
    s.conversation("101", &["123"]);
    let mut me = ws(&s, "/ws?dialect=actions", "123").await;
    let est = me.expect("connection.established").await;
    assert_eq!(est["data"]["user_id"], "123");
    let mut convs: Vec<&str> =
        est["data"]["active_conversations"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    convs.sort_unstable();
    assert_eq!(convs, ["101", "789"]);
    let mut other = ws(&s, "/ws?dialect=actions", "456").await;
    other.expect("connection.established").await;
    let typing = json!({"action": "typing", "conversation_id": "789", "is_typing": true});
    let t = until_heard(&mut other, typing, &mut me, "typing_indicator").await;
    assert_eq!(
        (&t["data"]["user_id"], &t["data"]["conversation_id"], &t["data"]["is_typing"]),
        (&json!("456"), &json!("789"), &json!(true))
    );

    // Seed 004's send, with an inline file.
    let png: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    let b64 = base64_encode(&png);
    me.send_raw_value(json!({
        "action": "send_message", "conversation_id": "789", "content": "Hello!", "local_id": "temp_123",
        "attachments": [{"type": "image", "file": b64, "filename": "photo.png"}]
    }))
    .await;
    let mine = me.expect("chat_message").await;
    let m = &mine["message"];
    assert_eq!(
        (&m["local_id"], &m["status"], &m["content"], &m["sender_id"]),
        (&json!("temp_123"), &json!("sent"), &json!("Hello!"), &json!("123"))
    );
    let got = all_of(&mut other, "chat_message").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["message"]["id"], m["id"]);
    let att = &got[0]["message"]["attachments"][0];
    assert_eq!((&att["type"], &att["filename"], &att["size"]), (&json!("image"), &json!("photo.png"), &json!(3000)));
    // Absolute (seed 004's app has no page origin), on the connection's own scheme and host.
    let url = att["url"].as_str().unwrap();
    let path = url.strip_prefix(&format!("http://{}", s.addr)).unwrap_or_else(|| panic!("not absolute: {url}"));
    assert!(path.starts_with("/v1/attachments/att_"), "{url}");
    let (status, headers, body) = get_bytes(&s.addr, path);
    assert_eq!(status, 200);
    assert!(headers.contains("image/png") && headers.contains("nosniff"), "{headers}");
    assert_eq!(body, png, "the file comes back as sent");

    // `mark_read` moves the watermark; the sender hears `messages_read`.
    other.send_raw_value(json!({"action": "mark_read", "conversation_id": "789", "message_ids": [m["id"]]})).await;
    let read = me.expect("messages_read").await;
    assert_eq!((&read["data"]["user_id"], &read["data"]["message_ids"]), (&json!("456"), &json!([m["id"]])));

    // A failed send names its local id; the code is the seed's MESSAGE_FAILED.
    me.send_raw_value(
        json!({"action": "send_message", "conversation_id": "999", "content": "x", "local_id": "temp_124"}),
    )
    .await;
    let e = me.expect("error").await;
    assert_eq!(
        (&e["error"]["code"], &e["error"]["local_id"], &e["error"]["reason"]),
        (&json!("MESSAGE_FAILED"), &json!("temp_124"), &json!("CONVERSATION_NOT_FOUND"))
    );
    me.send_raw_value(json!({"action": "send_message", "conversation_id": "789", "content": "x", "local_id": "temp_125", "attachments": [{"type": "image", "file": "%%%"}]}))
        .await;
    let e = me.expect("error").await;
    assert_eq!((&e["error"]["code"], &e["error"]["local_id"]), (&json!("MESSAGE_FAILED"), &json!("temp_125")));
    // `startHeartbeat()`'s message is answered, so a client can count missed ones.
    me.send_raw_value(json!({"action": "heartbeat"})).await;
    assert!(me.expect("heartbeat").await["data"]["server_time"].is_string());
    // A retry of the same local id is the same message, stored once (seed 004's retry loop).
    me.send_raw_value(
        json!({"action": "send_message", "conversation_id": "789", "content": "Hello!", "local_id": "temp_123"}),
    )
    .await;
    let again = me.expect("chat_message").await;
    assert_eq!(again["message"]["id"], m["id"]);
    let bad = Client::connect_to(&s.addr, "/ws?dialect=actions&token=bad").await.expect_close().await;
    assert_eq!(bad.0, 4003);
}

// ---- every dialect in one conversation ----

#[tokio::test]
async fn one_conversation_every_dialect_each_in_its_own_shape() {
    let s = Server::start(&[]);
    every_dialect_in_one_conversation(&[s]).await;
}

/// The same across three nodes of a cluster (PostgreSQL and NATS): each dialect's client on
/// another node than the Winkr one, so every message and typing indicator crosses nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_conversation_every_dialect_across_three_nodes() {
    let Some(c) = support::cluster::Cluster::start(3) else { return };
    every_dialect_in_one_conversation(&c.nodes).await;
}

/// Winkr on the first node, then systimz, chatrooms, actions and actions over WebTransport on
/// the nodes in turn after it.
async fn every_dialect_in_one_conversation(nodes: &[Server]) {
    let on = |i: usize| &nodes[i % nodes.len()];
    on(0).conversation("mix", &["w", "sy", "ch", "ac", "wt"]);
    let mut w = on(0).client("w").await.ready().await;
    w.join("mix").await;
    let mut sy = ws(on(1), "/ws?dialect=systimz&conversation_id=mix", "sy").await;
    sy.expect("connection").await;
    let mut ch = ws(on(2), "/api/v1/ws/chat/mix", "ch").await;
    let mut ac = ws(on(3), "/ws?dialect=actions&codec=msgpack", "ac").await;
    ac.expect("connection.established").await;
    let q = format!("token={}&dialect=actions", on(4).token("wt"));
    let mut wt = support::wt::WtClient::connect(&on(4).h3_addr, &on(4).cert_sha256, &q).await;
    wt.expect("connection.established").await;
    // Winkr joined first; a typing indicator from each other client, heard by Winkr, says that
    // client's session has joined too (it reads frames only after its joins).
    sy.send_raw_value(json!({"type": "status", "payload": {"status": "typing"}})).await;
    ch.send_raw_value(json!({"type": "typing_indicator", "data": {"is_typing": true}})).await;
    ac.send_raw_value(json!({"action": "typing", "conversation_id": "mix", "is_typing": true})).await;
    wt.send_value(&json!({"action": "typing", "conversation_id": "mix", "is_typing": true})).await;
    let mut typists = Vec::new();
    for _ in 0..4 {
        let e = w.expect("typing:indicator").await;
        typists.push(e["data"]["user_id"].as_str().unwrap().to_owned());
    }
    typists.sort();
    assert_eq!(typists, ["ac", "ch", "sy", "wt"]);

    w.say("mix", "from winkr").await;
    sy.send_raw_value(json!({"type": "message", "payload": {"content": "from systimz", "type": "user"}})).await;
    ch.send_raw_value(json!({"type": "send_message", "data": {"content": "from chatrooms", "message_type": "text"}}))
        .await;
    ac.send_raw_value(
        json!({"action": "send_message", "conversation_id": "mix", "content": "from actions", "local_id": "l1"}),
    )
    .await;
    wt.send_value(
        &json!({"action": "send_message", "conversation_id": "mix", "content": "from webtransport", "local_id": "l2"}),
    )
    .await;

    let want = ["from actions", "from chatrooms", "from systimz", "from webtransport", "from winkr"];
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let winkr: Vec<String> = collect(&mut w, "message:new", |e| e["data"]["message"]["content"].clone()).await;
    assert_eq!(sorted(winkr.clone()), want);
    assert_eq!(winkr.len(), 5, "once each: {winkr:?}");
    let systimz = collect(&mut sy, "message", |e| e["payload"]["content"].clone()).await;
    assert_eq!(systimz.len(), 5, "{systimz:?}");
    assert_eq!(sorted(systimz), want);
    let chatrooms = collect(&mut ch, "new_message", |e| e["data"]["content"].clone()).await;
    assert_eq!(chatrooms.len(), 5, "{chatrooms:?}");
    assert_eq!(sorted(chatrooms), want);
    // Actions clients hear their own message twice (acknowledgement and broadcast, same id):
    // the others once.
    let actions = collect(&mut ac, "chat_message", |e| e["message"]["content"].clone()).await;
    assert_eq!(sorted(actions.clone()), want);
    assert_eq!(actions.iter().filter(|c| *c != "from actions").count(), 4, "{actions:?}");
    let mut over_wt = Vec::new();
    while let Some((_, e)) = wt.recv_within(QUIET).await {
        if e["type"] == "chat_message" {
            over_wt.push(e["message"]["content"].as_str().unwrap().to_owned());
        }
    }
    for (_, e) in wt.seen.drain(..) {
        if e["type"] == "chat_message" {
            over_wt.push(e["message"]["content"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(sorted(over_wt), want);
}

#[tokio::test]
async fn dialect_by_subprotocol_and_chatrooms_over_webtransport() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start(&[]);
    s.conversation("c1", &["ann", "ben"]);
    // A client that can only name its dialect in `Sec-WebSocket-Protocol`.
    let mut req = format!("ws://{}/ws?token={}", s.addr, s.token("ann")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "confab.actions".parse().unwrap());
    let (sock, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "confab.actions");
    let mut ann = Client::from_socket(sock, false);
    assert_eq!(ann.expect("connection.established").await["data"]["active_conversations"], json!(["c1"]));
    // Answered after the session's joins: from here Ann hears the conversation.
    ann.send_raw_value(json!({"action": "heartbeat"})).await;
    ann.expect("heartbeat").await;
    // Seed 003's chat socket over WebTransport, in JSON: `?dialect=chatrooms&conversation_id=`.
    let q = format!("token={}&dialect=chatrooms&conversation_id=c1&codec=json", s.token("ben"));
    let mut ben = support::wt::WtClient::connect(&s.h3_addr, &s.cert_sha256, &q).await;
    ben.send_value(&json!({"type": "typing_indicator", "data": {"is_typing": true}})).await;
    assert_eq!(ann.expect("typing_indicator").await["data"]["user_id"], "ben");
    ben.send_value(&json!({"type": "send_message", "data": {"content": "over QUIC"}})).await;
    assert_eq!(ben.expect("new_message").await["data"]["content"], "over QUIC");
    assert_eq!(ann.expect("chat_message").await["message"]["content"], "over QUIC");
}

async fn collect(c: &mut Client, kind: &str, f: impl Fn(&Value) -> Value) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while out.len() < 5 && tokio::time::Instant::now() < deadline {
        let e = c.expect(kind).await;
        out.push(f(&e).as_str().unwrap().to_owned());
    }
    out.extend(all_of(c, kind).await.iter().map(|e| f(e).as_str().unwrap().to_owned()));
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A GET returning the raw body and the header block.
fn get_bytes(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut st = std::net::TcpStream::connect(addr).unwrap();
    st.set_read_timeout(Some(support::WAIT)).unwrap();
    write!(st, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    st.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, resp[split + 4..].to_vec())
}
