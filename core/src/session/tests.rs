//! The session without sockets: a node on the in-memory store, connections that are a channel
//! of [`Inbound`] items in and a [`ConnOutput`] out, and paused time driving every timer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{Opening, TYPING_TIMEOUT, open, run};
use crate::auth::{Auth, Identity, KeyConfig};
use crate::broker::LocalBus;
use crate::clock::Clock;
use crate::error::CloseReason;
use crate::limits::Limits;
use crate::link::{ConnOutput, Inbound, Route, TransportKind};
use crate::node::Node;
use confab_codec::event::ServerEvent;
use confab_codec::{Codec, ConversationId, Dialect, ErrorCode, Format, Timestamp, UserId};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const START: i64 = 1_800_000_000_000;

fn node(limits: Limits) -> Arc<Node> {
    node_on(&LocalBus::default(), limits)
}

fn node_on(bus: &LocalBus, limits: Limits) -> Arc<Node> {
    let auth = Auth::new(&KeyConfig::Secret("k".into()), None, None).unwrap();
    Node::in_memory_on(bus, limits, auth, Clock::starting_at(Timestamp::from_millis(START)))
}

/// One client: what it sends goes in as the transport would hand it, what it gets comes out
/// of its connection's queue.
struct Client {
    codec: Codec,
    input: mpsc::Sender<Inbound>,
    output: ConnOutput,
    session: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(node: &Arc<Node>, user: &str, token_lifetime: Duration) -> Self {
        let codec = Codec::new(Dialect::Winkr, Format::Json);
        let identity = Identity {
            user_id: UserId::parse(user).unwrap(),
            username: Some(user.to_uppercase()),
            avatar_url: None,
            expires_at: node.clock.now().plus_millis(token_lifetime.as_millis() as i64),
        };
        let opening = Opening {
            transport: TransportKind::WebSocket,
            codec: codec.clone(),
            resume: None,
            base_url: None,
            keepalive: None,
        };
        let (session, output) = open(node, identity, opening).await;
        let (input, mut rx) = mpsc::channel(64);
        let inbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let session = tokio::spawn(run(session, Box::pin(inbound)));
        let mut client = Self { codec, input, output, session };
        assert_eq!(client.next().await["type"], "connection:established");
        client
    }

    async fn send(&self, kind: &str, data: Value) {
        let frame = serde_json::to_vec(&json!({"type": kind, "data": data})).unwrap();
        let decoded = self.codec.decode_client(&frame);
        self.input.send(Inbound::Event(Route::Control, Box::new(decoded))).await.unwrap();
    }

    /// The next event, as the client would read it; waits at most a (paused) minute.
    async fn next(&mut self) -> Value {
        let out = tokio::time::timeout(Duration::from_secs(60), self.output.recv()).await;
        let out = out.expect("no event within a minute").expect("the session ended");
        let bytes = self.codec.encode_server(&out.0.envelope).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The next event of type `kind`, skipping others.
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let ev = self.next().await;
            if ev["type"] == kind {
                return ev;
            }
        }
    }

    /// Whatever is queued now, without waiting.
    fn queued(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.output.try_recv()).map(|o| o.0.envelope.event.name().to_owned()).collect()
    }

    async fn ended(self) -> Option<CloseReason> {
        let reason = self.output.closer.reason();
        tokio::time::timeout(Duration::from_secs(5), self.session).await.unwrap().unwrap();
        reason
    }
}

/// Every client joins `c`, and has been told so.
async fn join_all(clients: &mut [&mut Client], c: &str) {
    for client in clients.iter() {
        client.send("conversation:join", json!({"conversation_id": c})).await;
    }
    for client in clients.iter_mut() {
        client.next_of("conversation:joined").await;
    }
}

async fn conversation(node: &Node, id: &str, members: &[&str]) -> ConversationId {
    let c = ConversationId::parse(id).unwrap();
    let members = members.iter().map(|m| UserId::parse(m).unwrap()).collect();
    let info = node.store.create_conversation(c.clone(), members, None).await.unwrap();
    node.cache_conversation(info, true);
    c
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_message_is_acknowledged_then_delivered_once_in_order() {
    let node = node(Limits::default());
    conversation(&node, "c1", &["alice", "bob"]).await;
    let mut alice = Client::connect(&node, "alice", HOUR).await;
    let mut bob = Client::connect(&node, "bob", HOUR).await;
    join_all(&mut [&mut alice, &mut bob], "c1").await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        alice
            .send("message:send", json!({"conversation_id": "c1", "content": text, "local_id": format!("l{i}")}))
            .await;
    }
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let sent = alice.next_of("message:sent").await;
        assert_eq!((sent["data"]["seq"].as_u64(), sent["data"]["content"].as_str()), (Some(i as u64 + 1), Some(*text)));
        let new = bob.next_of("message:new").await;
        assert_eq!(new["data"]["message"]["content"], *text);
        assert_eq!(new["data"]["sender"]["username"], "ALICE");
    }
    // The same local_id again is the same message, not a fourth one.
    alice.send("message:send", json!({"conversation_id": "c1", "content": "one", "local_id": "l0"})).await;
    assert_eq!(alice.next_of("message:sent").await["data"]["seq"], 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!bob.queued().contains(&"message:new".to_string()), "bob got the resend");
}

#[tokio::test(start_paused = true)]
async fn typing_is_cleared_by_the_server_after_six_seconds_without_a_stop() {
    let node = node(Limits::default());
    conversation(&node, "c1", &["alice", "bob"]).await;
    let mut alice = Client::connect(&node, "alice", HOUR).await;
    let mut bob = Client::connect(&node, "bob", HOUR).await;
    join_all(&mut [&mut alice, &mut bob], "c1").await;
    alice.send("typing:start", json!({"conversation_id": "c1"})).await;
    let on = bob.next_of("typing:indicator").await;
    assert_eq!((on["data"]["user_id"].as_str(), on["data"]["is_typing"].as_bool()), (Some("alice"), Some(true)));
    let started = tokio::time::Instant::now();
    tokio::time::sleep(TYPING_TIMEOUT - Duration::from_millis(100)).await;
    assert!(bob.queued().is_empty(), "cleared early");
    let off = bob.next_of("typing:indicator").await;
    assert_eq!(off["data"]["is_typing"], false);
    let after = started.elapsed();
    assert!(after >= TYPING_TIMEOUT && after < TYPING_TIMEOUT + Duration::from_millis(50), "cleared after {after:?}");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_ends_the_session_with_token_expired_unless_refreshed() {
    let node = node(Limits::default());
    let mut short = Client::connect(&node, "alice", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(short.queued().is_empty());
    let err = short.next_of("error").await;
    assert_eq!(err["data"]["code"], ErrorCode::TokenExpired.as_str());
    assert_eq!(short.ended().await, Some(CloseReason::TokenExpired));

    // A refreshed token moves the deadline.
    let mut refreshed = Client::connect(&node, "bob", Duration::from_secs(60)).await;
    let later = (START / 1000) + 3600;
    let token = node.auth.mint(&UserId::parse("bob").unwrap(), None, later).unwrap();
    refreshed.send("auth:refresh", json!({"token": token})).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let kinds = refreshed.queued();
    assert!(!kinds.contains(&"error".to_string()), "expired despite the refresh: {kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn the_frame_rate_limit_refuses_the_burst_s_excess_and_refills_with_time() {
    let node = node(Limits::default());
    let mut alice = Client::connect(&node, "alice", HOUR).await;
    for _ in 0..25 {
        alice.send("heartbeat", json!({})).await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut acks = 0;
    let mut limited = 0;
    while let Some(out) = alice.output.try_recv() {
        match &out.0.envelope.event {
            ServerEvent::Heartbeat(_) => acks += 1,
            ServerEvent::Error(e) if e.code == ErrorCode::RateLimited => limited += 1,
            other => panic!("unexpected {}", other.name()),
        }
    }
    assert_eq!((acks, limited), (20, 5), "a burst of 20, then refused");
    // Half a second refills 5 frames at 10 per second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..6 {
        alice.send("heartbeat", json!({})).await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let kinds = alice.queued();
    assert_eq!(kinds.iter().filter(|k| *k == "heartbeat").count(), 5, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "error").count(), 1, "{kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn rejoining_with_since_seq_replays_what_was_missed_once_and_then_live() {
    let node = node(Limits::default());
    conversation(&node, "c1", &["alice", "bob"]).await;
    let alice = Client::connect(&node, "alice", HOUR).await;
    alice.send("conversation:join", json!({"conversation_id": "c1"})).await;
    for i in 1..=5 {
        alice.send("message:send", json!({"conversation_id": "c1", "content": format!("m{i}")})).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut bob = Client::connect(&node, "bob", HOUR).await;
    bob.send("conversation:join", json!({"conversation_id": "c1", "since_seq": 2})).await;
    alice.send("message:send", json!({"conversation_id": "c1", "content": "m6"})).await;
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        seqs.push(bob.next_of("message:new").await["data"]["message"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, [3, 4, 5, 6]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!bob.queued().contains(&"message:new".to_string()), "a message came twice");
}

#[tokio::test(start_paused = true)]
async fn a_user_s_first_and_last_connection_tell_their_contacts() {
    let node = node(Limits::default());
    conversation(&node, "c1", &["alice", "bob"]).await;
    let mut bob = Client::connect(&node, "bob", HOUR).await;
    let first = Client::connect(&node, "alice", HOUR).await;
    assert_eq!(bob.next_of("user:online").await["data"]["user_id"], "alice");
    let second = Client::connect(&node, "alice", HOUR).await;
    assert!(node.presence.get(&UserId::parse("alice").unwrap()).await.online);
    drop(first.input);
    first.session.await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!bob.queued().contains(&"user:offline".to_string()), "offline with a device left");
    drop(second.input);
    second.session.await.unwrap();
    assert_eq!(bob.next_of("user:offline").await["data"]["user_id"], "alice");
    assert!(!node.presence.get(&UserId::parse("alice").unwrap()).await.online);
}

/// Two nodes on one bus, each with its own store (as a cluster's nodes have their own view):
/// a message committed on one reaches a connection on the other, once; a membership change
/// made on one reaches the other's cache.
#[tokio::test(start_paused = true)]
async fn two_nodes_on_one_bus_hear_each_other_s_messages_and_membership_changes() {
    let bus = LocalBus::default();
    let (a, b) = (node_on(&bus, Limits::default()), node_on(&bus, Limits::default()));
    for n in [&a, &b] {
        conversation(n, "c1", &["alice", "bob"]).await;
    }
    let mut alice = Client::connect(&a, "alice", HOUR).await;
    let mut bob = Client::connect(&b, "bob", HOUR).await;
    join_all(&mut [&mut alice, &mut bob], "c1").await;
    alice.send("message:send", json!({"conversation_id": "c1", "content": "across"})).await;
    assert_eq!(alice.next_of("message:sent").await["data"]["seq"], 1);
    let new = bob.next_of("message:new").await;
    let m = &new["data"]["message"];
    assert_eq!((m["content"].as_str(), m["seq"].as_u64()), (Some("across"), Some(1)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!bob.queued().contains(&"message:new".to_string()), "once");
    // Alice hears her own message once (seed 001: the sender gets `message:new` too), from her
    // node; an echo from the bus would make it twice.
    assert_eq!(alice.queued().iter().filter(|k| *k == "message:new").count(), 1, "once, no echo");

    let c1 = ConversationId::parse("c1").unwrap();
    let carol = UserId::parse("carol").unwrap();
    let changed = a.store.set_members(&c1, vec![UserId::parse("alice").unwrap(), carol.clone()]).await.unwrap();
    a.cache_conversation(changed, true);
    let mut on_b = b.hub.members(&c1).unwrap();
    on_b.sort();
    assert_eq!(on_b, [UserId::parse("alice").unwrap(), carol], "b's cache follows a's change");
}
