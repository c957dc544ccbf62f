//! Who may connect and who may act (SPEC §3 close codes, §4 authorization): tokens from each
//! place, refusals with their codes, and a non-member trying every action.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::{Client, Server};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn no_token_is_unauthorized_4003() {
    let s = Server::start(&[]);
    let mut c = Client::connect(&s.addr, "").await;
    let e = c.expect("error").await;
    assert_eq!(e["data"]["code"], "UNAUTHORIZED");
    assert_eq!(c.expect_close().await.0, 4003);
}

#[tokio::test]
async fn a_forged_token_is_token_invalid_4003() {
    let s = Server::start(&[]);
    let good = s.token("alice");
    let forged = format!("{}x", &good[..good.len() - 1]);
    let mut c = Client::connect(&s.addr, &format!("token={forged}")).await;
    assert_eq!(c.expect("error").await["data"]["code"], "TOKEN_INVALID");
    assert_eq!(c.expect_close().await.0, 4003);
    // alg: none is refused the same way.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
    let mut c = Client::connect(&s.addr, &format!("token={none}")).await;
    assert_eq!(c.expect("error").await["data"]["code"], "TOKEN_INVALID");
    assert_eq!(c.expect_close().await.0, 4003);
}

#[tokio::test]
async fn an_expired_token_is_token_expired_4001() {
    let s = Server::start(&[]);
    let t = s.token_for("alice", 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut c = Client::connect(&s.addr, &format!("token={t}")).await;
    assert_eq!(c.expect("error").await["data"]["code"], "TOKEN_EXPIRED");
    assert_eq!(c.expect_close().await.0, 4001);
}

#[tokio::test]
async fn a_token_that_expires_mid_connection_closes_it_with_4001_unless_refreshed() {
    let s = Server::start(&[]);
    let mut c = Client::connect(&s.addr, &format!("token={}", s.token_for("alice", 2))).await.ready().await;
    // Refreshing extends the connection without reconnecting.
    // `exp` is in whole seconds: a 5 s token has 4 to 5 s left, the first one 1 to 2 s.
    let rid = c.send("auth:refresh", json!({"token": s.token_for("alice", 5)})).await;
    let a = c.expect("connection:authenticated").await;
    assert_eq!((a["request_id"].as_str(), a["data"]["user_id"].as_str()), (Some(rid.as_str()), Some("alice")));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let rid = c.send("heartbeat", json!({})).await;
    assert_eq!(c.expect("heartbeat").await["request_id"], rid, "still connected past the first token's expiry");
    assert_eq!(c.expect("error").await["data"]["code"], "TOKEN_EXPIRED");
    let closed = c.expect("connection:closed").await;
    assert_eq!(
        (closed["data"]["code"].clone(), closed["data"]["reason"].clone()),
        (json!(4001), json!("token_expired"))
    );
    assert_eq!(c.expect_close().await.0, 4001);
}

#[tokio::test]
async fn refreshing_with_another_users_token_is_refused() {
    let s = Server::start(&[]);
    let mut c = s.client("alice").await.ready().await;
    let rid = c.send("auth:refresh", json!({"token": s.token("mallory")})).await;
    assert_eq!(c.expect_error(&rid).await["code"], "TOKEN_INVALID");
    let rid = c.send("auth:refresh", json!({"token": "not.a.jwt"})).await;
    assert_eq!(c.expect_error(&rid).await["code"], "TOKEN_INVALID");
}

#[tokio::test]
async fn the_token_may_come_from_the_header_or_the_subprotocol() {
    let s = Server::start(&[]);
    let mut req = format!("ws://{}/v1/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {}", s.token("alice")).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let first = futures_util::StreamExt::next(&mut ws).await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("connection:established"));

    let mut req = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
    let protocols = format!("confab.json, bearer.{}", s.token("bob"));
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "confab.json", "the token is never echoed");
    let first = futures_util::StreamExt::next(&mut ws).await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!((v["type"].as_str(), v["data"]["user_id"].as_str()), (Some("connection:established"), Some("bob")));
    assert_eq!(v["data"]["transport"], "websocket");
    assert_eq!(v["data"]["codec"], "json");
}

#[tokio::test]
async fn a_non_member_is_forbidden_everything_and_members_notice_nothing() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut alice = s.client("alice").await.ready().await;
    alice.join("c1").await;
    let mut mallory = s.client("mallory").await.ready().await;
    let m = alice.say("c1", "private").await;
    alice.expect("message:new").await; // her own, as a joined member
    let c1 = json!("c1");
    let attempts = [
        ("conversation:join", json!({"conversation_id": c1})),
        ("conversation:leave", json!({"conversation_id": c1})),
        ("message:send", json!({"conversation_id": c1, "content": "let me in"})),
        ("message:read", json!({"conversation_id": c1, "message_id": m["id"]})),
        ("message:delete", json!({"conversation_id": c1, "message_id": m["id"]})),
        ("typing:start", json!({"conversation_id": c1})),
        ("typing:stop", json!({"conversation_id": c1})),
        ("ephemeral_photo:send", json!({"conversation_id": c1, "photo_url": "https://x/p.jpg", "expires_in": 5})),
        ("history:get", json!({"conversation_id": c1})),
    ];
    for (kind, data) in attempts {
        let rid = mallory.send(kind, data).await;
        let e = mallory.expect_error(&rid).await;
        assert_eq!(e["code"], "FORBIDDEN", "{kind}");
        assert_eq!(e["request_event"], kind);
    }
    let rid = mallory.send("conversation:join", json!({"conversation_id": "nope"})).await;
    assert_eq!(mallory.expect_error(&rid).await["code"], "CONVERSATION_NOT_FOUND");
    alice.expect_none("message:new", Duration::from_millis(300)).await;
    alice.expect_none("typing:indicator", Duration::from_millis(10)).await;
    // Nothing mallory did reached the store.
    alice.send("history:get", json!({"conversation_id": "c1"})).await;
    assert_eq!(alice.expect("history").await["data"]["messages"].as_array().unwrap().len(), 1);
}
