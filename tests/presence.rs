//! Presence, status and ephemeral photos (SPEC §4): per user, not per device; photos whose
//! clock starts at the first view and whose URL is never served after expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::Duration;
use support::Server;

#[tokio::test]
async fn contacts_hear_online_on_the_first_device_and_offline_after_the_last() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.client("bob").await.ready().await;
    let phone = s.client("alice").await.ready().await;
    let on = bob.expect("user:online").await;
    assert_eq!((on["data"]["user_id"].clone(), on["data"]["username"].clone()), (json!("alice"), json!("alice_name")));
    let laptop = s.client("alice").await.ready().await;
    bob.expect_none("user:online", Duration::from_millis(300)).await;
    phone.close().await;
    bob.expect_none("user:offline", Duration::from_millis(300)).await;
    laptop.close().await;
    let off = bob.expect("user:offline").await;
    assert_eq!(off["data"]["user_id"], "alice");
    assert!(off["data"]["last_seen"].is_string());
    // Strangers hear nothing.
    let mut stranger = s.client("zed").await.ready().await;
    let _a = s.client("alice").await.ready().await;
    stranger.expect_none("user:online", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn status_updates_answer_the_sender_and_reach_contacts() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.client("bob").await.ready().await;
    let mut alice = s.client("alice").await.ready().await;
    let rid = alice.send("user:status", json!({"status": "busy", "message": "in a meeting"})).await;
    let mine = alice.expect("user:status_updated").await;
    assert_eq!((mine["request_id"].as_str(), mine["data"]["status"].as_str()), (Some(rid.as_str()), Some("busy")));
    let theirs = bob.expect("status:update").await;
    assert_eq!(theirs["data"]["user_id"], "alice");
    assert_eq!(
        (theirs["data"]["status"].clone(), theirs["data"]["message"].clone()),
        (json!("busy"), json!("in a meeting"))
    );
    let (_, p) = s.api("GET", "/api/v1/presence/alice", None);
    assert_eq!(p["status"], "busy");
    let rid = alice.send("status:update", json!({"status": "asleep"})).await;
    assert_eq!(alice.expect_error(&rid).await["code"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn an_ephemeral_photo_expires_after_its_first_view() {
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    alice
        .send(
            "ephemeral_photo:send",
            json!({"conversation_id": "c1", "photo_url": "https://cdn.example/p.jpg", "expires_in": 1}),
        )
        .await;
    let new = bob.expect("ephemeral_photo:new").await;
    let id = new["data"]["photo_id"].as_str().unwrap().to_string();
    assert_eq!(new["data"]["id"], id.as_str(), "seed 000 reads data.id");
    assert_eq!(new["data"]["expires_in"], 1);
    alice.expect("ephemeral_photo:new").await;
    // The clock has not started: waiting changes nothing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let rid = bob.send("ephemeral_photo:view", json!({"photo_id": id})).await;
    let seen = bob.expect("ephemeral_photo:viewed").await;
    assert_eq!(
        (seen["request_id"].as_str(), seen["data"]["photo_url"].as_str()),
        (Some(rid.as_str()), Some("https://cdn.example/p.jpg"))
    );
    let told = alice.expect("ephemeral_photo:viewed").await;
    assert_eq!(told["data"]["viewer_id"], "bob");
    assert!(told["data"].get("photo_url").is_none(), "the sender is told, not re-served the URL");
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.expect("ephemeral_photo:expired").await["data"]["photo_id"], id.as_str());
    }
    let rid = bob.send("ephemeral_photo:view", json!({"photo_id": id})).await;
    let e = bob.expect_error(&rid).await;
    assert_eq!(e["code"], "NOT_FOUND");
    assert!(e["message"].as_str().unwrap().contains("expired"));
    let rid = bob.send("ephemeral_photo:view", json!({"photo_id": "photo_nope"})).await;
    assert_eq!(bob.expect_error(&rid).await["code"], "NOT_FOUND");
}

#[tokio::test]
async fn connection_established_lists_the_users_conversations_most_recent_first() {
    let s = Server::start(&[]);
    s.conversation("quiet", &["alice", "bob"]);
    s.conversation("busy", &["alice", "carol"]);
    s.conversation("not-mine", &["bob", "carol"]);
    let mut carol = s.client("carol").await.ready().await;
    carol.say("busy", "hi").await;
    let mut alice = s.client("alice").await;
    let e = alice.expect("connection:established").await;
    assert_eq!(e["data"]["active_conversations"], json!(["busy", "quiet"]));
    assert_eq!((e["data"]["user_id"].clone(), e["data"]["heartbeat_interval"].clone()), (json!("alice"), json!(30)));
}
