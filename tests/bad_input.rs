//! Bad input over a real WebSocket: each gets its documented error or close, the connection
//! lives on where it should, and other users never notice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::Server;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_carries_on() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.client("bob").await.ready().await;
    bob.join("c1").await;
    let mut alice = s.client("alice").await.ready().await;
    let bad: Vec<(Message, &str)> = vec![
        (Message::Text("{not json".into()), "VALIDATION_ERROR"),
        (Message::Text("[1,2,3]".into()), "VALIDATION_ERROR"),
        (Message::Binary(vec![0xc1, 0xff, 0x00].into()), "VALIDATION_ERROR"),
        (Message::Text(r#"{"type":"message:explode","data":{}}"#.into()), "VALIDATION_ERROR"),
        (
            Message::Text(r#"{"type":"message:send","data":{"conversation_id":"c1","content":42}}"#.into()),
            "VALIDATION_ERROR",
        ),
        (
            Message::Text(
                r#"{"type":"message:send","data":{"conversation_id":"c1","content":"hi","type":"video"}}"#.into(),
            ),
            "INVALID_MESSAGE_TYPE",
        ),
        (
            Message::Text(
                json!({"type":"message:send","data":{"conversation_id":"c1","content":"x".repeat(2001)}})
                    .to_string()
                    .into(),
            ),
            "MESSAGE_TOO_LARGE",
        ),
        (
            Message::Text(format!(r#"{{"type":"heartbeat","data":{{"pad":"{}"}}}}"#, "x".repeat(40_000)).into()),
            "MESSAGE_TOO_LARGE",
        ),
        // NUL: no store keeps it the same way (PostgreSQL's text refuses it).
        (
            Message::Text(r#"{"type":"message:send","data":{"conversation_id":"c1","content":"a\u0000b"}}"#.into()),
            "VALIDATION_ERROR",
        ),
        (
            Message::Text(r#"{"type":"status:update","data":{"status":"away","message":"\u0000"}}"#.into()),
            "VALIDATION_ERROR",
        ),
    ];
    for (msg, code) in bad {
        alice.send_message(msg).await;
        let e = alice.expect("error").await;
        assert_eq!(e["data"]["code"], code, "{e}");
    }
    let e = {
        alice
            .send_message(Message::Text(
                r#"{"type":"message:send","data":{"conversation_id":"c1","content":5},"message_id":"r-7"}"#.into(),
            ))
            .await;
        alice.expect("error").await
    };
    assert_eq!(
        (e["data"]["details"]["field"].as_str(), e["data"]["request_id"].as_str()),
        (Some("content"), Some("r-7"))
    );
    assert_eq!(e["data"]["request_event"], "message:send");
    let (status, body) =
        s.api("POST", "/api/v1/conversations/c1/messages", Some(json!({"content": "nul \u{0} inside"})));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{body}");
    // Still connected and working.
    alice.say("c1", "still here").await;
    assert_eq!(bob.expect("message:new").await["data"]["message"]["content"], "still here");
    bob.expect_none("error", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_frame_over_the_hard_limit_closes_with_1009_and_others_carry_on() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.client("bob").await.ready().await;
    bob.join("c1").await;
    let mut alice = s.client("alice").await.ready().await;
    alice.send_message(Message::Binary(vec![0u8; 2 * 1024 * 1024].into())).await;
    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1009);
    let mut carol = s.client("alice").await.ready().await;
    carol.say("c1", "after the big one").await;
    assert_eq!(bob.expect("message:new").await["data"]["message"]["content"], "after the big one");
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_with_1008() {
    let s = Server::start(&["--conn-rate", "10", "--conn-burst", "20"]);
    let mut alice = s.client("alice").await.ready().await;
    for _ in 0..30 {
        alice.send("heartbeat", json!({})).await;
    }
    let e = alice.expect("error").await;
    assert_eq!(e["data"]["code"], "RATE_LIMITED");
    assert_eq!(e["data"]["details"]["limit"], 10);
    assert_eq!(e["data"]["details"]["interval"], 1);
    assert!(e["data"]["details"]["retry_after"].as_u64().is_some());
    // Keep flooding; the server closes the connection at some point in here.
    for _ in 0..200 {
        if !alice.try_send_value(json!({"type": "heartbeat", "data": {}})).await {
            break;
        }
    }
    assert_eq!(alice.expect_close().await.0, 1008);
    // Another user is unaffected.
    let mut bob = s.client("bob").await.ready().await;
    bob.send("heartbeat", json!({})).await;
    bob.expect("heartbeat").await;
}

#[tokio::test]
async fn handshakes_with_bad_parameters_are_refused() {
    let s = Server::start(&[]);
    let t = s.token("alice");
    let r = support::raw_tcp(
        &s.addr,
        format!("GET /ws?token={t}&codec=xml HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let huge = "a".repeat(64 * 1024);
    let r = support::raw_tcp(
        &s.addr,
        format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    // Either refused outright, or upgraded and then closed for want of a token (4003).
    assert!(r.starts_with("HTTP/1.1 4") || r.starts_with("HTTP/1.1 101") || r.is_empty(), "{r}");
    // The server still serves.
    let mut c = s.client("alice").await.ready().await;
    c.send("heartbeat", json!({})).await;
    c.expect("heartbeat").await;
}
