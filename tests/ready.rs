//! A connection listens before it is told that it is ready: what another member sends the
//! instant the ready signal arrives reaches the new connection, on every dialect and both
//! transports. The ready signal is the dialect's greeting (`connection:established`, systimz
//! `connection`, actions `connection.established`) or, on seed 003's sockets, which have none,
//! the completed upgrade (or the accepted CONNECT, on WebTransport).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::wt::WtClient;
use support::{Client, Server};

/// Connections opened per case: the defect lost a message in up to a third of them.
const TRIES: usize = 25;
/// How long a message sent at the ready signal may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(3);

enum Link {
    Ws(Box<Client>),
    Wt(Box<WtClient>),
}

impl Link {
    async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        match self {
            Link::Ws(c) => c.recv_within(wait).await,
            Link::Wt(c) => c.recv_within(wait).await.map(|(_, v)| v),
        }
    }

    /// Waits for an event that `matches`; false if none came within `ARRIVAL`.
    async fn heard(&mut self, matches: impl Fn(&Value) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + ARRIVAL;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(e) if matches(&e) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }

    async fn close(self) {
        match self {
            Link::Ws(c) => (*c).close().await,
            Link::Wt(c) => (*c).close(),
        }
    }
}

/// One way to connect, and how its dialect shows the ready signal, a message and typing.
struct Case {
    name: &'static str,
    /// A WebSocket path (the token is appended), or a WebTransport query (`None` path).
    ws_path: Option<&'static str>,
    wt_query: Option<&'static str>,
    /// The greeting's `type`; `None`: the connection itself is the signal.
    greeting: Option<&'static str>,
    /// Whether the message must be a direct one (seed 003's personal socket hears only those).
    direct: bool,
    heard_message: fn(&Value, &str) -> bool,
    /// `None`: the dialect shows no typing on this connection.
    heard_typing: Option<fn(&Value) -> bool>,
}

fn content_at(e: &Value, pointer: &str, text: &str) -> bool {
    e.pointer(pointer).and_then(Value::as_str) == Some(text)
}

fn cases() -> Vec<Case> {
    let systimz = Case {
        name: "systimz",
        ws_path: Some("/ws?dialect=systimz&conversation_id=room"),
        wt_query: Some("dialect=systimz&conversation_id=room"),
        greeting: Some("connection"),
        direct: false,
        heard_message: |e, t| e["type"] == "message" && content_at(e, "/payload/content", t),
        heard_typing: Some(|e| e["type"] == "status" && e["payload"]["status"] == "typing"),
    };
    let chat = Case {
        name: "chatrooms chat socket",
        ws_path: Some("/api/v1/ws/chat/room"),
        wt_query: Some("dialect=chatrooms&conversation_id=room"),
        greeting: None,
        direct: false,
        heard_message: |e, t| e["type"] == "new_message" && content_at(e, "/data/content", t),
        heard_typing: Some(|e| e["type"] == "typing_indicator" && e["data"]["is_typing"] == true),
    };
    let personal = Case {
        name: "chatrooms personal socket",
        ws_path: Some("/api/v1/ws/bob"),
        wt_query: Some("dialect=chatrooms"),
        greeting: None,
        direct: true,
        heard_message: |e, t| e["type"] == "new_direct_message" && content_at(e, "/data/content", t),
        heard_typing: None,
    };
    let actions = Case {
        name: "actions",
        ws_path: Some("/ws?dialect=actions"),
        wt_query: Some("dialect=actions"),
        greeting: Some("connection.established"),
        direct: false,
        heard_message: |e, t| e["type"] == "chat_message" && content_at(e, "/message/content", t),
        heard_typing: Some(|e| e["type"] == "typing_indicator" && e["data"]["is_typing"] == true),
    };
    // Winkr joins conversations by request; what it hears from the start is the unread count of
    // a conversation it has not joined.
    let winkr = Case {
        name: "winkr",
        ws_path: Some("/ws?dialect=winkr"),
        wt_query: Some("dialect=winkr"),
        greeting: Some("connection:established"),
        direct: false,
        heard_message: |e, t| e["type"] == "conversation:unread" && content_at(e, "/data/last_message/content", t),
        heard_typing: None,
    };
    vec![systimz, chat, personal, actions, winkr]
}

async fn connect(s: &Server, case: &Case, webtransport: bool, token: &str) -> Link {
    if webtransport {
        let query = format!("{}&token={token}", case.wt_query.unwrap());
        Link::Wt(Box::new(WtClient::connect(&s.h3_addr, &s.cert_sha256, &query).await))
    } else {
        let path = case.ws_path.unwrap();
        let sep = if path.contains('?') { '&' } else { '?' };
        Link::Ws(Box::new(Client::connect_to(&s.addr, &format!("{path}{sep}token={token}")).await))
    }
}

/// Opens `TRIES` connections for bob; the instant each is ready, alice types and sends. Returns
/// the tries in which bob missed the message or the typing indicator.
async fn lost_at_ready(s: &Server, case: &Case, webtransport: bool) -> Vec<String> {
    let mut alice = s.client("alice").await.ready().await;
    alice.join("room").await;
    let token = s.token("bob");
    let mut lost = Vec::new();
    for i in 0..TRIES {
        let mut bob = connect(s, case, webtransport, &token).await;
        if let Some(greeting) = case.greeting {
            assert!(bob.heard(|e| e["type"] == greeting).await, "{}: no {greeting}", case.name);
        }
        // At 0 ms after the signal: nothing awaited between reading it and these writes.
        let text = format!("{} try {i}", case.name);
        if case.heard_typing.is_some() {
            alice.send("typing:start", json!({"conversation_id": "room"})).await;
        }
        let metadata = if case.direct { json!({"recipient_id": "bob"}) } else { json!({}) };
        alice
            .send(
                "message:send",
                json!({"conversation_id": "room", "content": text, "type": "text", "metadata": metadata}),
            )
            .await;
        if let Some(typing) = case.heard_typing {
            if !bob.heard(typing).await {
                lost.push(format!("try {i}: typing"));
            }
        }
        if !bob.heard(|e| (case.heard_message)(e, &text)).await {
            lost.push(format!("try {i}: message"));
        }
        if case.heard_typing.is_some() {
            alice.send("typing:stop", json!({"conversation_id": "room"})).await;
        }
        bob.close().await;
        // Alice's own echoes and acknowledgements: read so her queue never fills.
        while alice.recv_within(Duration::from_millis(5)).await.is_some() {}
        alice.seen.clear();
    }
    alice.close().await;
    lost
}

async fn every_dialect_listens_before_it_is_ready(webtransport: bool) {
    let s = Server::start(&["--max-connections-per-user", "1000"]);
    s.conversation("room", &["alice", "bob"]);
    let mut failures = Vec::new();
    for case in cases() {
        let lost = lost_at_ready(&s, &case, webtransport).await;
        if !lost.is_empty() {
            failures.push(format!("{}: lost {} of {TRIES}: {lost:?}", case.name, lost.len()));
        }
    }
    assert!(failures.is_empty(), "events sent at the ready signal were lost:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn a_websocket_connection_hears_what_is_sent_the_instant_it_is_ready() {
    every_dialect_listens_before_it_is_ready(false).await;
}

#[tokio::test]
async fn a_webtransport_session_hears_what_is_sent_the_instant_it_is_ready() {
    every_dialect_listens_before_it_is_ready(true).await;
}
