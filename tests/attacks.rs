//! Hostile clients (issue 7): many connections without a token, a slowloris that trickles its
//! headers, tokens for another audience or issuer, and random handshakes and datagrams. Each
//! is refused cleanly, and a legitimate conversation carries on meanwhile, every message in
//! order; afterwards the server holds no more file descriptors than before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Client, JWT_SECRET, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Alice talks to Bob every 20 ms until told to stop; returns what Bob received, in order.
fn conversation_in_the_background(
    mut alice: Client,
    mut bob: Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    tokio::spawn(async move {
        alice.join("c1").await;
        bob.join("c1").await;
        let mut sent = 0u32;
        let mut got = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            alice.say("c1", &format!("m{sent}")).await;
            sent += 1;
            let m = bob.expect("message:new").await;
            got.push(m["data"]["message"]["content"].as_str().unwrap().to_owned());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sent, got)
    })
}

async fn check_conversation(bg: tokio::task::JoinHandle<(u32, Vec<String>)>, stop: &std::sync::atomic::AtomicBool) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, got) = bg.await.unwrap();
    assert!(sent >= 5, "the conversation went on: {sent} messages");
    assert_eq!(got, (0..sent).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_without_a_token_are_refused_and_others_are_served() {
    let s = Server::start(&[]);
    let (alice, bob) = s.alice_and_bob("c1").await;
    let fds_before = s.metric("confab_open_fds");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = conversation_in_the_background(alice, bob, Arc::clone(&stop));
    // 10,000 upgrades without a token, 200 at a time (the test's own descriptors are bounded).
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for _ in 0..10_000 {
        let permit = Arc::clone(&gate).acquire_owned().await.unwrap();
        let addr = s.addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&addr, "").await;
            let code = c.expect_close().await.0;
            drop(permit);
            code
        }));
    }
    let mut refused = 0;
    for t in tasks {
        assert_eq!(t.await.unwrap(), 4003);
        refused += 1;
    }
    assert_eq!(refused, 10_000);
    check_conversation(bg, &stop).await;
    // Every refused connection is gone from the server.
    let mut fds = s.metric("confab_open_fds");
    for _ in 0..50 {
        if fds <= fds_before + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = s.metric("confab_open_fds");
    }
    assert!(fds <= fds_before + 10, "descriptors: {fds_before} before, {fds} after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_trickling_its_headers_is_cut_at_the_handshake_deadline() {
    let s = Server::start(&["--handshake-timeout-ms", "1000"]);
    let (alice, bob) = s.alice_and_bob("c1").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = conversation_in_the_background(alice, bob, Arc::clone(&stop));
    let request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(tokio::net::TcpStream::connect(&s.addr).await.unwrap());
    }
    let start = Instant::now();
    // One byte every 50 ms each: never idle long, never done.
    let mut cut = vec![None; slow.len()];
    'trickle: for byte in request.iter().cycle() {
        for (i, t) in slow.iter_mut().enumerate() {
            if cut[i].is_none() && t.write_all(&[*byte]).await.is_err() {
                cut[i] = Some(start.elapsed());
            }
        }
        if cut.iter().all(Option::is_some) || start.elapsed() > Duration::from_secs(5) {
            break 'trickle;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, t) in slow.iter_mut().enumerate() {
        if cut[i].is_none() {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout(Duration::from_secs(1), t.read(&mut buf)).await.map_or(1, |r| r.unwrap_or(0));
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "connection {i} still open: {text}");
        }
    }
    assert!(start.elapsed() < Duration::from_secs(3), "cut after {:?}, the deadline is 1 s", start.elapsed());
    check_conversation(bg, &stop).await;
}

fn jwt(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

#[tokio::test]
async fn tokens_for_another_audience_or_issuer_are_refused() {
    let s = Server::start(&["--jwt-audience", "chat", "--jwt-issuer", "https://auth.example"]);
    let exp = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600) as i64;
    let good = json!({"sub": "alice", "exp": exp, "aud": "chat", "iss": "https://auth.example"});
    Client::connect(&s.addr, &format!("token={}", jwt(&good))).await.ready().await;
    let cases = [
        ("another audience", json!({"sub": "alice", "exp": exp, "aud": "billing", "iss": "https://auth.example"})),
        ("no audience", json!({"sub": "alice", "exp": exp, "iss": "https://auth.example"})),
        ("another issuer", json!({"sub": "alice", "exp": exp, "aud": "chat", "iss": "https://evil.example"})),
        ("no issuer", json!({"sub": "alice", "exp": exp, "aud": "chat"})),
        ("no subject", json!({"exp": exp, "aud": "chat", "iss": "https://auth.example"})),
        (
            "a subject that breaks the id rule",
            json!({"sub": "al ice", "exp": exp, "aud": "chat", "iss": "https://auth.example"}),
        ),
    ];
    for (what, claims) in cases {
        let mut c = Client::connect(&s.addr, &format!("token={}", jwt(&claims))).await;
        assert_eq!(c.expect("error").await["data"]["code"], "TOKEN_INVALID", "{what}");
        assert_eq!(c.expect_close().await.0, 4003, "{what}");
    }
}

/// A request head built from parts a fuzzer picks: a method, a path, headers with odd names,
/// values and lengths, and a line ending that may be wrong.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "CONNECT", "get", "GET\0", "", "G\u{e9}T"]);
    let path = prop_oneof![
        Just("/ws".to_owned()),
        Just("/api/v1/ws/chat/c1".to_owned()),
        Just("/api/v1/ws/..%2f..".to_owned()),
        "/ws\\?[a-z=&%0-9]{0,40}".prop_map(|s| s),
        "[ -~]{0,60}".prop_map(|s| s),
    ];
    let header = (
        prop::sample::select(vec![
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Protocol",
            "Host",
            "Origin",
            "Content-Length",
            "Transfer-Encoding",
            "Authorization",
            "X\0Y",
            "",
        ]),
        prop_oneof![
            Just("websocket".to_owned()),
            Just("Upgrade".to_owned()),
            Just("13".to_owned()),
            Just("dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
            "[ -~]{0,80}".prop_map(|s| s),
            (1usize..20_000).prop_map(|n| "b".repeat(n)),
        ],
    );
    let ending = prop::sample::select(vec!["\r\n", "\n", "\r", ""]);
    (method, path, prop::collection::vec(header, 0..8), ending).prop_map(|(m, p, hs, end)| {
        let mut out = format!("{m} {p} HTTP/1.1{end}").into_bytes();
        for (k, v) in hs {
            out.extend_from_slice(format!("{k}: {v}{end}").as_bytes());
        }
        out.extend_from_slice(end.as_bytes());
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_handshakes_and_datagrams_get_answers_and_break_nothing() {
    let s = Server::start(&["--handshake-timeout-ms", "2000"]);
    let (alice, bob) = s.alice_and_bob("c1").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = conversation_in_the_background(alice, bob, Arc::clone(&stop));
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
    let heads: Vec<Vec<u8>> = (0..cases).map(|_| request_head().new_tree(&mut runner).unwrap().current()).collect();
    for chunk in heads.chunks(50) {
        let mut tasks = Vec::new();
        for head in chunk {
            let (addr, head) = (s.addr.clone(), head.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let _ = t.write_all(&head).await;
                // An answer (a status line, or a WebSocket close after an upgrade) or the
                // connection closed, within the handshake deadline and a margin.
                let mut buf = vec![0u8; 512];
                let read = tokio::time::timeout(Duration::from_secs(4), t.read(&mut buf)).await;
                let n =
                    read.unwrap_or_else(|_| panic!("no answer to {:?}", String::from_utf8_lossy(&head))).unwrap_or(0);
                assert!(
                    n == 0 || buf.starts_with(b"HTTP/1."),
                    "{:?} -> {:?}",
                    String::from_utf8_lossy(&head),
                    String::from_utf8_lossy(&buf[..n])
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    // Random UDP datagrams at the QUIC port, of every size up to a full packet.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..2000usize {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let len = (rng_state as usize) % 1400 + 1;
        let mut d: Vec<u8> = (0..len).map(|j| (rng_state >> ((j % 8) * 8)) as u8 ^ j as u8).collect();
        // Some look like QUIC long-header Initial packets, to get past the first check.
        if i % 2 == 0 {
            d[0] = 0xc0 | (d[0] & 0x0f);
            if d.len() > 5 {
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        udp.send_to(&d, &s.h3_addr).await.unwrap();
    }
    // WebTransport still works after all that.
    let mut wt = s.wt("carol").await;
    wt.send("heartbeat", json!({"timestamp": "after"})).await;
    assert_eq!(wt.expect("heartbeat").await["data"]["timestamp"], "after");
    check_conversation(bg, &stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_webtransport_requests_and_stream_bytes_break_nothing() {
    let s = Server::start(&[]);
    let token = s.token("mallory");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    // CONNECT requests with random paths, queries and headers: refused or served, never a hang.
    let request = (
        prop::sample::select(vec!["/wt", "/ws", "/", "/wt/", "/WT", "/wt%00", "/api/v1/ws/chat/c1"]),
        "[a-z_=&%0-9.~-]{0,60}",
        prop::collection::vec(
            (
                prop::sample::select(vec!["origin", "x-a", "sec-webtransport-http3-draft", "authorization"]),
                "[ -~]{0,100}",
            ),
            0..4,
        ),
    );
    for _ in 0..40 {
        let (path, query, headers) = request.new_tree(&mut runner).unwrap().current();
        let url = format!("https://{}{path}?{query}&token={token}", s.h3_addr);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let attempt = support::wt::try_connect_url(&url, &s.cert_sha256, &headers);
        let result = tokio::time::timeout(Duration::from_secs(5), attempt).await;
        assert!(result.is_ok(), "no answer to {url} {headers:?}");
    }
    // Random bytes on a live session's control stream (framed and not): errors or a close for
    // that session only.
    let frames = prop::collection::vec(any::<u8>(), 0..300);
    for round in 0..20 {
        // A user each: closed sessions may still count against a user's 5 connections.
        let mut wt = s.wt(&format!("mallory{round}")).await;
        for _ in 0..10 {
            let garbage = frames.new_tree(&mut runner).unwrap().current();
            let bytes = if round % 2 == 0 { support::wt::frame(&garbage) } else { garbage };
            if !wt.write_control(&bytes).await {
                break;
            }
        }
        wt.close();
    }
    let mut ok = s.wt("carol").await;
    ok.send("heartbeat", json!({"timestamp": "still here"})).await;
    assert_eq!(ok.expect("heartbeat").await["data"]["timestamp"], "still here");
}
