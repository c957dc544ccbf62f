//! The PostgreSQL store seen from a client, when the link to PostgreSQL fails: a TCP proxy in
//! the test carries the server's connections and black-holes them on demand (bytes vanish, no
//! reset, as in a network partition). The node acknowledges nothing it could not store, tells
//! the client the documented retryable error, reports not ready within SPEC §8's 8 s, and is
//! ready again by itself within 30 s of the link healing; the refused messages, sent again with
//! their `local_id`s, are stored once, and nothing acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::Server;
use support::proxy::Proxy;

fn readyz(s: &Server) -> (u16, Value) {
    support::http(&s.addr, "GET", "/readyz", None, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_acknowledges_nothing_and_recovers_by_itself() {
    let Some(database) = support::scratch_postgres() else { return };
    // postgres://USER@HOST:PORT/DB: the proxy takes HOST:PORT's place.
    let (head, name) = database.rsplit_once('/').unwrap();
    let (user, upstream) = head.rsplit_once('@').unwrap();
    let proxy = Proxy::start(upstream.to_owned());
    let url = format!("{user}@{}/{name}", proxy.addr);
    let s = Server::start(&["--store", &url]);
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    alice.say("c1", "before").await;
    assert_eq!(bob.expect("message:new").await["data"]["message"]["content"], "before");

    proxy.cut();
    let cut_at = Instant::now();
    let mut rids = Vec::new();
    for i in 0..3 {
        let data = json!({"conversation_id": "c1", "content": format!("during {i}"), "local_id": format!("l{i}")});
        rids.push(alice.send("message:send", data).await);
    }
    // Not ready within SPEC §8's bound, while the sends wait.
    loop {
        let (status, body) = readyz(&s);
        if status == 503 {
            assert!(body["reason"].as_str().unwrap_or_default().contains("store"), "{body}");
            break;
        }
        assert!(cut_at.elapsed() < Duration::from_secs(8), "still ready 8 s after the cut: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let not_ready_after = cut_at.elapsed();
    let mut refused = 0;
    while refused < rids.len() {
        let e = alice.recv_within(Duration::from_secs(15)).await.expect("an answer to every send while cut");
        assert_ne!(e["type"], "message:sent", "acknowledged while the store was cut off: {e}");
        if e["type"] == "error" {
            assert!(rids.iter().any(|r| e["data"]["request_id"] == r.as_str()), "{e}");
            assert_eq!(e["data"]["code"], "SERVICE_UNAVAILABLE", "{e}");
            refused += 1;
        }
    }
    let (status, body) = readyz(&s);
    assert_eq!(status, 503, "not ready while cut off: {body}");
    bob.expect_none("message:new", Duration::from_millis(200)).await;

    proxy.heal();
    let healed_at = Instant::now();
    loop {
        let (status, body) = readyz(&s);
        if status == 200 {
            break;
        }
        assert!(healed_at.elapsed() < Duration::from_secs(30), "still not ready 30 s after the link healed: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("not ready {not_ready_after:?} after the cut; ready {:?} after the heal", healed_at.elapsed());
    // The client's retries, with the same local_ids: stored now, once each, delivered in order.
    for i in 0..3 {
        let data = json!({"conversation_id": "c1", "content": format!("during {i}"), "local_id": format!("l{i}")});
        let rid = alice.send("message:send", data).await;
        loop {
            let e = alice.expect_any(&["message:sent", "error"]).await;
            assert_ne!(e["type"], "error", "{e}");
            if e["request_id"] == rid.as_str() {
                break;
            }
        }
        let got = bob.expect("message:new").await;
        assert_eq!(got["data"]["message"]["content"], format!("during {i}"));
        assert_eq!(got["data"]["message"]["seq"], 2 + i, "gap-free after the outage");
    }
    assert_eq!(s.stored("c1"), ["before", "during 0", "during 1", "during 2"]);
    drop(s);
    support::drop_postgres(&database);
}
