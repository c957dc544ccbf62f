//! The native client (`clients/rust`, crate `confab-client`) against the real server, through
//! its terminal chat `confab-chat --json` (SPEC §8): both transports, the fallback to
//! WebSocket when UDP is dropped (remembered per network, and left again when UDP returns),
//! resuming after a restart and a `kill -9` with nothing lost or doubled, the outbox across a
//! restart of the client, a refused token, connection migration, a loss in one conversation
//! not delaying another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::Server;

/// A running `confab-chat --json`: lines in, events out.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    /// Events read while looking for another.
    seen: Vec<Value>,
}

impl Chat {
    fn start(s: &Server, user: &str, extra: &[&str]) -> Chat {
        Chat::start_at(&format!("https://{}", s.https_addr), &s.cert_sha256, &s.token(user), extra)
    }

    fn start_at(server: &str, cert_hash: &str, token: &str, extra: &[&str]) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab-chat-e2e"))
            .args(["--server", server, "--cert-hash", cert_hash, "--token", token, "--json", "--keepalive", "1"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON on stdout: {line}"));
                eprintln!("chat: {v}");
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Chat { stdin: child.stdin.take(), child, events, seen: Vec::new() }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{line}").unwrap();
    }

    /// The next event that `pred` accepts within `wait`, keeping the others.
    fn expect_within(&mut self, wait: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("no {what} within {wait:?}; seen: {:#?}", self.seen),
            }
        }
    }

    fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_within(Duration::from_secs(15), what, pred)
    }

    /// `join CONV`, and its `joined`.
    fn join(&mut self, conv: &str) {
        self.say(&format!("join {conv}"));
        let c = conv.to_owned();
        self.expect(&format!("joined {conv}"), move |e| e["event"] == "joined" && e["conversation_id"] == c.as_str());
    }

    fn connected(&mut self) -> String {
        self.expect("connected", |e| e["event"] == "connected")["transport"].as_str().unwrap().to_owned()
    }

    fn state(&mut self, local_id: &str, state: &str) -> Value {
        let l = local_id.to_owned();
        let s = state.to_owned();
        self.expect(&format!("{local_id} {state}"), move |e| {
            e["event"] == "state" && e["local_id"] == l && e["state"] == s
        })
    }

    /// Sends and returns the new `local_id` (from its `sending` state).
    fn send(&mut self, conv: &str, text: &str) -> String {
        self.say(&format!("send {conv} {text}"));
        let e = self.expect("sending", |e| e["event"] == "state" && e["state"] == "sending");
        e["local_id"].as_str().unwrap().to_owned()
    }

    /// Every `message` event's content so far and within `wait`.
    fn messages_within(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        while let Ok(v) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(v);
        }
        let contents = self.seen.iter().filter(|e| e["event"] == "message");
        contents.map(|e| e["message"]["content"].as_str().unwrap().to_owned()).collect()
    }

    /// `quit`, and the exit status.
    fn quit(mut self) -> i32 {
        self.say("quit");
        drop(self.stdin.take());
        wait_exit(&mut self.child)
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "confab-chat did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn bob_joined(s: &Server, conv: &str) -> support::Client {
    let mut bob = s.client("bob").await.ready().await;
    bob.join(conv).await;
    bob
}

/// Over each transport: a message goes both ways once, and the sender sees its states in
/// order, sending → sent → delivered → read.
#[tokio::test]
async fn chats_over_both_transports_with_states_in_order() {
    for transport in ["webtransport", "websocket"] {
        let s = Server::start(&[]);
        s.conversation("c1", &["alice", "bob"]);
        let mut bob = bob_joined(&s, "c1").await;
        let mut alice = Chat::start(&s, "alice", &["--transport", transport]);
        assert_eq!(alice.connected(), transport);
        alice.join("c1");
        let local = alice.send("c1", "hello bob, from far away");
        let sent = alice.state(&local, "sent");
        let id = sent["message_id"].as_str().unwrap().to_owned();
        let new = bob.expect("message:new").await;
        assert_eq!(new["data"]["message"]["content"], "hello bob, from far away");
        assert_eq!(new["data"]["message"]["id"], id.as_str());
        alice.state(&local, "delivered");
        bob.send("message:read", json!({"conversation_id": "c1", "message_id": id})).await;
        alice.state(&local, "read");
        // States never go backwards: no second `sent` or `delivered` for it.
        let again = alice.messages_within(Duration::from_millis(300));
        let states: Vec<&Value> =
            alice.seen.iter().filter(|e| e["event"] == "state" && e["local_id"] == local.as_str()).collect();
        assert!(states.is_empty(), "{states:?}");
        // Bob's answer arrives once.
        bob.say("c1", "hi alice").await;
        let got = alice.expect("bob's message", |e| e["event"] == "message" && e["message"]["content"] == "hi alice");
        assert_eq!(got["message"]["sender_id"], "bob");
        let all = alice.messages_within(Duration::from_millis(500));
        assert_eq!(all.iter().filter(|m| *m == "hi alice").count(), 0, "once: {all:?} {again:?}");
        assert_eq!(alice.quit(), 0, "{transport}");
    }
}

/// `auto` with UDP to the server dropped (a TCP proxy, and a UDP socket on the same port that
/// swallows every datagram): WebSocket within a few seconds, and the chat works.
#[tokio::test]
async fn auto_falls_back_to_websocket_when_udp_is_dropped() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let proxy = support::proxy::Proxy::start(s.https_addr.clone());
    let _black_hole = std::net::UdpSocket::bind(proxy.addr).unwrap();
    let started = Instant::now();
    let mut alice = Chat::start_at(&format!("https://{}", proxy.addr), &s.cert_sha256, &s.token("alice"), &[]);
    assert_eq!(alice.connected(), "websocket");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "fell back after {took:?}");
    eprintln!("fell back to WebSocket after {took:?}");
    let mut bob = bob_joined(&s, "c1").await;
    alice.join("c1");
    let local = alice.send("c1", "over tcp");
    alice.state(&local, "sent");
    assert_eq!(bob.expect("message:new").await["data"]["message"]["content"], "over tcp");
    assert_eq!(alice.quit(), 0);
}

/// The server restarts, then dies by `kill -9`: each time the client reconnects and resumes,
/// what it sent while the server was away goes out once, and what others sent meanwhile
/// arrives once, in order.
#[tokio::test]
async fn resumes_after_a_restart_and_a_kill_with_nothing_lost_or_doubled() {
    for transport in ["webtransport", "websocket"] {
        let mut s = Server::start(&[]);
        s.conversation("c1", &["alice", "bob"]);
        let mut alice = Chat::start(&s, "alice", &["--transport", transport]);
        alice.connected();
        alice.join("c1");
        let mut bob = bob_joined(&s, "c1").await;
        bob.say("c1", "b1").await;
        alice.expect("b1", |e| e["event"] == "message" && e["message"]["content"] == "b1");

        for (round, kill) in [(1, false), (2, true)] {
            if kill {
                s.kill9();
            } else {
                s.terminate();
            }
            alice.expect("disconnected", |e| e["event"] == "disconnected");
            let local = alice.send("c1", &format!("a{round} while away"));
            s.restart();
            alice.expect("reconnected", |e| e["event"] == "connected");
            alice.state(&local, "sent");
            let mut bob2 = bob_joined(&s, "c1").await;
            bob2.say("c1", &format!("b{round} after")).await;
            let text = format!("b{round} after");
            alice.expect(&text.clone(), move |e| e["event"] == "message" && e["message"]["content"] == text.as_str());
            bob = bob2;
        }
        drop(bob);
        let messages = alice.messages_within(Duration::from_millis(800));
        let stored = s.stored("c1");
        assert_eq!(stored, ["b1", "a1 while away", "b1 after", "a2 while away", "b2 after"], "{transport}");
        // Each message once (b1 and the own messages came before this count's window or not at all).
        for m in &messages {
            assert_eq!(messages.iter().filter(|x| *x == m).count(), 1, "{m} twice: {messages:?}");
        }
        assert_eq!(alice.quit(), 0);
    }
}

/// A message sent while the server is away stays in the outbox file; the client quits; a new
/// client on the same file sends it, once.
#[tokio::test]
async fn the_outbox_survives_a_restart_of_the_client() {
    let mut s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let outbox = s.data_dir.join("alice-outbox.db");
    let file = outbox.to_str().unwrap().to_owned();
    let mut alice = Chat::start(&s, "alice", &["--outbox", &file]);
    alice.connected();
    alice.join("c1");
    s.terminate();
    alice.expect("disconnected", |e| e["event"] == "disconnected");
    let local = alice.send("c1", "kept across restarts");
    assert_eq!(alice.quit(), 0);
    s.restart();
    assert!(s.stored("c1").is_empty());

    let mut again = Chat::start(&s, "alice", &["--outbox", &file]);
    again.connected();
    let sent = again.state(&local, "sent");
    assert!(sent["message_id"].is_string());
    // A third start finds the outbox empty: nothing goes twice.
    assert_eq!(again.quit(), 0);
    let mut third = Chat::start(&s, "alice", &["--outbox", &file]);
    third.connected();
    let extra = third.messages_within(Duration::from_millis(800));
    assert!(third.seen.iter().all(|e| e["event"] != "state"), "{extra:?} {:?}", third.seen);
    assert_eq!(third.quit(), 0);
    assert_eq!(s.stored("c1"), ["kept across restarts"]);
}

/// A token the server refuses: an `error` event and a non-zero exit, promptly.
#[tokio::test]
async fn a_refused_token_ends_it_with_an_error() {
    let s = Server::start(&[]);
    for transport in ["webtransport", "websocket"] {
        let started = Instant::now();
        let mut chat = Chat::start_at(
            &format!("https://{}", s.https_addr),
            &s.cert_sha256,
            "not-a-token",
            &["--transport", transport],
        );
        let e = chat.expect("error", |e| e["event"] == "error");
        assert!(["TOKEN_INVALID", "UNAUTHORIZED"].contains(&e["code"].as_str().unwrap()), "{e}");
        // It stops by itself: no reconnecting with a refused token.
        assert_ne!(wait_exit(&mut chat.child), 0, "{transport}");
        let errors = chat.messages_within(Duration::from_millis(100));
        assert!(chat.seen.iter().all(|e| e["event"] != "error"), "one error: {errors:?} {:?}", chat.seen);
        assert!(started.elapsed() < Duration::from_secs(10), "{transport}: {:?}", started.elapsed());
    }
}

/// `--dev --user ID` fetches a token (and pins the certificate the server reports).
#[tokio::test]
async fn dev_mode_fetches_a_token() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut chat = Command::new(env!("CARGO_BIN_EXE_confab-chat-e2e"))
        .args(["--server", &format!("https://{}", s.https_addr), "--dev", "--user", "alice", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(chat.stdin.as_mut().unwrap(), "join c1\nhistory c1").unwrap();
    let mut lines = BufReader::new(chat.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for line in lines.by_ref() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let done = v["event"] == "history";
        events.push(v);
        if done {
            break;
        }
    }
    assert_eq!(events[0]["event"], "connected", "{events:?}");
    assert_eq!(events.last().unwrap()["messages"], json!([]));
    drop(chat.stdin.take());
    assert_eq!(wait_exit(&mut chat), 0);
}

/// `network_changed()` on WebTransport: the session moves to a new UDP socket (a new local
/// port, as after a change of network) and goes on, the conversation's stream included,
/// without a reconnect; messages flow both ways after the move.
#[tokio::test]
async fn a_network_change_moves_the_webtransport_session_without_reconnecting() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = bob_joined(&s, "c1").await;
    let mut alice = Chat::start(&s, "alice", &["--transport", "webtransport"]);
    assert_eq!(alice.connected(), "webtransport");
    alice.join("c1");
    bob.say("c1", "before the move").await;
    alice.expect("before", |e| e["event"] == "message" && e["message"]["content"] == "before the move");

    let moved_at = Instant::now();
    alice.say("network-changed");
    let moved = alice.expect("network_changed", |e| e["event"] == "network_changed");
    assert!(moved["local_address"].as_str().unwrap().parse::<std::net::SocketAddr>().is_ok(), "{moved}");
    bob.say("c1", "after the move").await;
    alice.expect("after", |e| e["event"] == "message" && e["message"]["content"] == "after the move");
    eprintln!("first message after network_changed: {:?}", moved_at.elapsed());
    let local = alice.send("c1", "from the new address");
    alice.state(&local, "sent");
    // (Bob hears his own messages too.)
    while bob.expect("message:new").await["data"]["message"]["content"] != "from the new address" {}
    // Twice more, for good measure: still the same session.
    for i in 0..2 {
        alice.say("network-changed");
        alice.expect("network_changed", |e| e["event"] == "network_changed");
        bob.say("c1", &format!("move {i}")).await;
        let text = format!("move {i}");
        alice.expect(&text.clone(), move |e| e["event"] == "message" && e["message"]["content"] == text.as_str());
    }
    let rest = alice.messages_within(Duration::from_millis(300));
    let reconnects: Vec<&Value> =
        alice.seen.iter().filter(|e| e["event"] == "disconnected" || e["event"] == "connected").collect();
    assert!(reconnects.is_empty(), "the session moved, it did not reconnect: {reconnects:?} {rest:?}");
    assert_eq!(alice.quit(), 0);
}

/// On WebSocket a network change means a new connection: the client reconnects at once and
/// resumes.
#[tokio::test]
async fn a_network_change_on_websocket_reconnects_and_resumes() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = bob_joined(&s, "c1").await;
    let mut alice = Chat::start(&s, "alice", &["--transport", "websocket"]);
    alice.connected();
    alice.join("c1");
    alice.say("network-changed");
    alice.expect("disconnected", |e| e["event"] == "disconnected");
    alice.expect("connected again", |e| e["event"] == "connected");
    bob.say("c1", "after").await;
    alice.expect("after", |e| e["event"] == "message" && e["message"]["content"] == "after");
    assert_eq!(alice.quit(), 0);
}

/// `pause()` closes the connection until `resume()`; what came meanwhile arrives after it,
/// once.
#[tokio::test]
async fn pause_and_resume() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = bob_joined(&s, "c1").await;
    let mut alice = Chat::start(&s, "alice", &[]);
    alice.connected();
    alice.join("c1");
    alice.say("pause");
    alice.expect("paused", |e| e["event"] == "disconnected" && e["reason"] == "paused");
    bob.say("c1", "while you were away").await;
    // Paused means quiet: no reconnect by itself.
    let quiet = alice.messages_within(Duration::from_secs(2));
    assert!(alice.seen.iter().all(|e| e["event"] != "connected"), "{quiet:?} {:?}", alice.seen);
    alice.say("resume");
    alice.connected();
    alice.expect("the missed message", |e| e["event"] == "message" && e["message"]["content"] == "while you were away");
    let after = alice.messages_within(Duration::from_millis(500));
    assert!(!after.iter().any(|m| m == "while you were away"), "once: {after:?}");
    assert_eq!(alice.quit(), 0);
}

/// With a token callback, the client sends `auth:refresh` before the token expires, so a
/// 4-second token keeps a connection for longer with no reconnect.
#[tokio::test]
async fn a_token_callback_keeps_the_connection_past_the_first_token() {
    use confab_client::{Client, Config, Event, TokenSource, TransportChoice};
    for transport in [TransportChoice::WebTransport, TransportChoice::WebSocket] {
        let s = Server::start(&[]);
        s.conversation("c1", &["alice", "bob"]);
        let addr = s.addr.clone();
        let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&fetched);
        let source = TokenSource::Callback(std::sync::Arc::new(move || {
            let (addr, count) = (addr.clone(), std::sync::Arc::clone(&count));
            Box::pin(async move {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (status, body) = tokio::task::spawn_blocking(move || {
                    support::http(&addr, "GET", "/dev/token?user_id=alice&ttl=4", None, None)
                })
                .await
                .map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("{status}"));
                }
                Ok(body["token"].as_str().unwrap_or_default().to_owned())
            })
        }));
        let mut config = Config::new(format!("https://{}", s.https_addr), source);
        config.cert_sha256 = Some(confab_client::parse_cert_hash(&s.cert_sha256).unwrap());
        config.transport = transport;
        let (client, mut events) = Client::connect(config).await.unwrap();
        client.join("c1").await.unwrap();
        let mut bob = bob_joined(&s, "c1").await;
        // Past the first token's expiry, and the second's.
        tokio::time::sleep(Duration::from_secs(7)).await;
        bob.say("c1", "still with us?").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = tokio::time::timeout(left, events.next()).await.expect("the message").expect("events");
            let done = matches!(&e, Event::Message { message } if message["content"] == "still with us?");
            seen.push(e);
            if done {
                break;
            }
        }
        let connects = seen.iter().filter(|e| matches!(e, Event::Connected { .. })).count();
        assert_eq!(connects, 1, "{transport:?}: no reconnect: {seen:?}");
        assert!(!seen.iter().any(|e| matches!(e, Event::Disconnected { .. })), "{transport:?}: {seen:?}");
        assert!(fetched.load(std::sync::atomic::Ordering::Relaxed) >= 3, "the token was refreshed");
        client.close().await;
        // The callback (and so what it holds) is released by the time `close` returns: an app
        // may exit at once, and Python aborts when a thread of ours frees one of its objects
        // while the interpreter shuts down.
        assert_eq!(std::sync::Arc::strong_count(&fetched), 1, "{transport:?}: the callback is still held");
    }
}

/// A packet lost in one conversation does not hold up another: each conversation has its own
/// QUIC stream. For three seconds the relay drops every long datagram from the server: the one
/// that carries a long message of c1's and each of its retransmissions. A short message of
/// c2's, sent meanwhile, reaches the app while c1's is still missing (on one ordered byte
/// stream, as on TCP, it would wait behind it), and c1's arrives after, once.
#[tokio::test]
async fn a_loss_in_one_conversation_does_not_delay_another() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    s.conversation("c2", &["alice", "bob"]);
    let relay = support::udp::UdpRelay::start("127.0.0.1:0".parse().unwrap(), s.h3_addr.parse().unwrap());
    let server = format!("https://{}", relay.addr);
    let mut alice = Chat::start_at(&server, &s.cert_sha256, &s.token("alice"), &["--transport", "webtransport"]);
    assert_eq!(alice.connected(), "webtransport");
    for c in ["c1", "c2"] {
        alice.join(c);
    }
    let mut bob = s.client("bob").await.ready().await;
    bob.join("c1").await;
    bob.join("c2").await;

    let long = "A".repeat(1000);
    let window = Duration::from_secs(3);
    let lossy_until = Instant::now() + window;
    relay.drop_longer_than(900, window);
    bob.say("c1", &long).await;
    while relay.dropped() == 0 {
        assert!(Instant::now() < lossy_until, "no datagram of c1's message was dropped");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bob.say("c2", "B, after the loss").await;
    alice.expect("c2's message", |e| e["event"] == "message" && e["message"]["content"] == "B, after the loss");
    assert!(Instant::now() < lossy_until, "c2's message came only after the loss ended");
    let before: Vec<&Value> = alice.seen.iter().filter(|e| e["event"] == "message").collect();
    assert!(before.is_empty(), "c1's message came first: {before:?}");
    let l = long.clone();
    alice.expect("c1's message, retransmitted", move |e| {
        e["event"] == "message" && e["message"]["content"] == l.as_str()
    });
    let rest = alice.messages_within(Duration::from_millis(300));
    assert!(rest.is_empty(), "once each: {rest:?}");
    assert!(alice.seen.iter().all(|e| e["event"] != "disconnected"), "{:?}", alice.seen);
    assert_eq!(alice.quit(), 0);
}

/// `auto` on a network that drops UDP: it falls back to WebSocket and the client file
/// remembers it, so the next start goes straight to WebSocket (not one datagram sent); once
/// UDP passes again, the client opens WebTransport beside the WebSocket and moves over, with
/// nothing lost or doubled.
#[tokio::test]
async fn auto_remembers_a_network_without_udp_and_moves_to_webtransport_when_it_returns() {
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let proxy = support::proxy::Proxy::start(s.https_addr.clone());
    let relay = support::udp::UdpRelay::start(proxy.addr, s.h3_addr.parse().unwrap());
    relay.block(true);
    let file = s.data_dir.join("alice.db");
    let file = file.to_str().unwrap().to_owned();
    let server = format!("https://{}", proxy.addr);
    let args = ["--outbox", &file, "--retry-webtransport", "5"];
    let mut alice = Chat::start_at(&server, &s.cert_sha256, &s.token("alice"), &args);
    assert_eq!(alice.connected(), "websocket");
    assert!(relay.datagrams_from_client() > 0, "WebTransport was tried first");
    assert_eq!(alice.quit(), 0);

    let tried = relay.datagrams_from_client();
    let mut alice = Chat::start_at(&server, &s.cert_sha256, &s.token("alice"), &args);
    assert_eq!(alice.connected(), "websocket");
    assert_eq!(relay.datagrams_from_client(), tried, "the second start tried WebTransport again");
    alice.join("c1");
    let mut bob = bob_joined(&s, "c1").await;
    bob.say("c1", "over tcp").await;
    alice.expect("over tcp", |e| e["event"] == "message" && e["message"]["content"] == "over tcp");

    relay.block(false);
    let moved = alice.expect_within(Duration::from_secs(20), "webtransport", |e| e["event"] == "connected");
    assert_eq!(moved["transport"], "webtransport");
    bob.say("c1", "over quic").await;
    alice.expect("over quic", |e| e["event"] == "message" && e["message"]["content"] == "over quic");
    let local = alice.send("c1", "from quic");
    alice.state(&local, "sent");
    let rest = alice.messages_within(Duration::from_millis(500));
    let all: Vec<&Value> = alice.seen.iter().filter(|e| e["event"] == "message").collect();
    assert_eq!(all.len(), 1, "only alice's own message is left, once: {all:?} {rest:?}");
    assert_eq!(s.stored("c1"), ["over tcp", "over quic", "from quic"]);
    assert_eq!(alice.quit(), 0);
}

/// More conversations than a WebTransport session has streams for (126 besides the CONNECT
/// request and the control stream): the rest are joined on the control stream, and every one
/// of them works. (A 127th stream would wait for QUIC credit forever, and the client with it.)
#[tokio::test]
async fn more_conversations_than_streams() {
    let s = Server::start(&[]);
    let n = 130;
    for i in 0..n {
        s.conversation(&format!("k{i}"), &["alice", "bob"]);
    }
    let mut alice = Chat::start(&s, "alice", &["--transport", "webtransport"]);
    assert_eq!(alice.connected(), "webtransport");
    for i in 0..n {
        alice.say(&format!("join k{i}"));
    }
    for i in 0..n {
        let c = format!("k{i}");
        alice.expect(&format!("joined {c}"), move |e| e["event"] == "joined" && e["conversation_id"] == c.as_str());
    }
    let mut bob = s.client("bob").await.ready().await;
    for i in [0, 125, 126, 129] {
        let c = format!("k{i}");
        bob.join(&c).await;
        bob.say(&c, &format!("hello {c}")).await;
        let text = format!("hello {c}");
        alice.expect(&text.clone(), move |e| e["event"] == "message" && e["message"]["content"] == text.as_str());
        let local = alice.send(&c, &format!("back in {c}"));
        alice.state(&local, "sent");
    }
    // Leaving frees a stream: a conversation joined after it gets one and works.
    alice.say("leave k0");
    alice.expect("left", |e| e["event"] == "left" && e["conversation_id"] == "k0");
    alice.join("k0");
    bob.say("k0", "k0 again").await;
    alice.expect("k0 again", |e| e["event"] == "message" && e["message"]["content"] == "k0 again");
    assert_eq!(alice.quit(), 0);
}
