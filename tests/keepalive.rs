//! Keepalive and handshake deadlines (SPEC §3): a client that answers pings stays, one that
//! does not is closed with 1008; a client that never finishes its handshake is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAST_PINGS: &[&str] = &["--ping-interval-ms", "200", "--pong-timeout-ms", "600", "--handshake-timeout-ms", "500"];

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let s = Server::start(FAST_PINGS);
    let mut c = s.client("alice").await.ready().await;
    // Reading lets the client library answer the server's pings.
    c.expect_none("connection:closed", Duration::from_millis(1500)).await;
    assert!(c.closed.is_none());
    c.send("heartbeat", json!({})).await;
    c.expect("heartbeat").await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_dropped_within_the_pong_timeout() {
    let s = Server::start(FAST_PINGS);
    let c = s.client("alice").await.ready().await;
    let start = Instant::now();
    // Not reading, so the pings go unanswered: the server must notice on its own. (What the
    // client would read afterwards depends on TCP: a peer that never reads can lose the
    // goodbye to a reset, so the test watches the server's side.)
    while s.api("GET", "/api/v1/presence/alice", None).1["online"] == true {
        assert!(start.elapsed() < Duration::from_secs(3), "never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(550), "dropped too early: {took:?}");
    drop(c);
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_dropped_and_others_are_served() {
    let s = Server::start(FAST_PINGS);
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut t = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        t.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // and never the rest
        slow.push(t);
    }
    let start = Instant::now();
    let mut c = s.client("alice").await.ready().await;
    c.send("heartbeat", json!({})).await;
    c.expect("heartbeat").await;
    for mut t in slow {
        let mut buf = [0u8; 256];
        let n =
            tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf)).await.expect("dropped in time").unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}
