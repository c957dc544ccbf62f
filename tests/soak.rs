//! A soak (issue 7): 500 clients in 50 conversations, sending, reading and reconnecting with
//! `since_seq` for `CONFAB_SOAK_SECS` seconds (30 in CI; 600 for the manual run in
//! `docs/operations.md`). Twice, at the end of the warm-up and at the end, the clients hold
//! still (connected, quiet) and the server's `/metrics` is read: resident memory at the end is
//! within 10% of the warm-up's, and tasks and file descriptors are where they were. Every
//! client saw every message of its conversation once, in order, across all its reconnects;
//! once everyone has left, the connection tasks are gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use support::{Client, Server};

const CONVS: usize = 50;
const PER_CONV: usize = 10;
/// What the clients do: run (send, read, reconnect), hold (connected, quiet), or leave.
const RUN: u8 = 0;
const HOLD: u8 = 1;
const LEAVE: u8 = 2;

#[derive(Debug, Default)]
struct Outcome {
    conv: usize,
    /// The last seq seen (every one before it seen once, in order).
    last: u64,
    acked: u64,
    reconnects: u32,
}

/// A small per-client random source, so runs differ between clients but not between runs.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn client_life(
    addr: String,
    token: String,
    conv: usize,
    idx: usize,
    phase: Arc<AtomicU8>,
    held: Arc<tokio::sync::Semaphore>,
) -> Outcome {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (idx as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let conv_id = format!("s{conv}");
    let codec = if idx % 2 == 0 { "" } else { "&codec=msgpack" };
    let mut out = Outcome { conv, ..Outcome::default() };
    let mut sent = 0u64;
    loop {
        let mut c = Client::connect(&addr, &format!("token={token}{codec}")).await.ready().await;
        c.send("conversation:join", json!({"conversation_id": conv_id, "since_seq": out.last})).await;
        c.expect("conversation:joined").await;
        let session_ends = tokio::time::Instant::now() + Duration::from_millis(4000 + rng.below(8000));
        let mut next_send = tokio::time::Instant::now() + Duration::from_millis(rng.below(2000));
        let mut pending = 0u32;
        let mut was_holding = false;
        loop {
            let p = phase.load(Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            if p == RUN && now >= next_send {
                sent += 1;
                let data = json!({"conversation_id": conv_id, "content": format!("{idx}:{sent}"), "local_id": format!("l{sent}")});
                c.send("message:send", data).await;
                pending += 1;
                next_send = now + Duration::from_millis(1500 + rng.below(1000));
            }
            if let Some(e) = c.recv_within(Duration::from_millis(20)).await {
                match e["type"].as_str() {
                    Some("message:new") => {
                        let seq = e["data"]["message"]["seq"].as_u64().unwrap();
                        assert_eq!(seq, out.last + 1, "client {idx} in {conv_id}: a gap or a repeat");
                        out.last = seq;
                    }
                    Some("message:sent") => {
                        out.acked += 1;
                        pending -= 1;
                    }
                    Some("error") => panic!("client {idx}: {e}"),
                    _ => {}
                }
                continue;
            }
            assert!(c.closed.is_none(), "client {idx} was closed: {:?}", c.closed);
            // Quiet and nothing in flight: report holding (once), or leave, or reconnect.
            if pending == 0 {
                if p != RUN && !was_holding {
                    was_holding = true;
                    held.add_permits(1);
                }
                if p == RUN {
                    was_holding = false;
                }
                if p == LEAVE {
                    c.close().await;
                    return out;
                }
                if p == RUN && now >= session_ends {
                    break;
                }
            }
        }
        c.close().await;
        out.reconnects += 1;
    }
}

/// Asks every client to hold still, and waits until all do (then nothing is in flight).
async fn hold(phase: &AtomicU8, held: &tokio::sync::Semaphore, n: usize) {
    phase.store(HOLD, Ordering::Relaxed);
    // Bounded: a client that failed (its panic is above) never holds.
    let all = tokio::time::timeout(Duration::from_secs(60), held.acquire_many(n as u32)).await;
    all.expect("every client holds still within 60 s").unwrap().forget();
    // The last deliveries reach the slowest readers.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_with_reconnects_leak_nothing() {
    let secs: u64 = std::env::var("CONFAB_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let s = Server::start(&[]);
    let tasks_before = s.metric("confab_tasks");
    let mut tokens = Vec::new();
    for c in 0..CONVS {
        let members: Vec<String> = (0..PER_CONV).map(|k| format!("s{c}_{k}")).collect();
        s.conversation(&format!("s{c}"), &members.iter().map(String::as_str).collect::<Vec<_>>());
        for m in members {
            tokens.push((c, s.token_for(&m, 2 * secs as i64 + 600)));
        }
    }
    let phase = Arc::new(AtomicU8::new(RUN));
    let held = Arc::new(tokio::sync::Semaphore::new(0));
    let mut clients = Vec::new();
    for (i, (c, token)) in tokens.into_iter().enumerate() {
        let (addr, phase, held) = (s.addr.clone(), Arc::clone(&phase), Arc::clone(&held));
        clients.push(tokio::spawn(client_life(addr, token, c, i, phase, held)));
    }
    let n = clients.len();

    tokio::time::sleep(Duration::from_secs(secs / 3)).await;
    hold(&phase, &held, n).await;
    let warm = (s.metric("confab_resident_memory_bytes"), s.metric("confab_open_fds"), s.metric("confab_tasks"));
    assert_eq!(s.metric("confab_users_online"), n as i64);
    phase.store(RUN, Ordering::Relaxed);

    tokio::time::sleep(Duration::from_secs(secs - secs / 3)).await;
    hold(&phase, &held, n).await;
    let end = (s.metric("confab_resident_memory_bytes"), s.metric("confab_open_fds"), s.metric("confab_tasks"));
    let stored = s.metric("confab_messages_stored_total");
    println!(
        "soak {secs} s: rss {} -> {} KiB, fds {} -> {}, tasks {} -> {}, {stored} messages",
        warm.0 / 1024,
        end.0 / 1024,
        warm.1,
        end.1,
        warm.2,
        end.2
    );
    assert!(end.0 <= warm.0 + warm.0 / 10, "resident memory grew more than 10%: {warm:?} -> {end:?}");
    assert!(end.1 <= warm.1 + 5, "file descriptors leak: {warm:?} -> {end:?}");
    assert!(end.2 <= warm.2 + 5, "tasks leak: {warm:?} -> {end:?}");

    phase.store(LEAVE, Ordering::Relaxed);
    let mut per_conv = vec![(0u64, Vec::new()); CONVS];
    let mut reconnects = 0;
    for c in clients {
        let o = c.await.unwrap();
        per_conv[o.conv].0 += o.acked;
        per_conv[o.conv].1.push(o.last);
        reconnects += o.reconnects;
    }
    assert!(reconnects as usize >= n, "clients reconnected: {reconnects}");
    let total: u64 = per_conv.iter().map(|c| c.0).sum();
    assert_eq!(total, stored as u64, "every stored message was acknowledged once");
    for (c, (acked, lasts)) in per_conv.iter().enumerate() {
        // Every member saw every message of its conversation, the last one included.
        assert!(lasts.iter().all(|l| l == acked), "s{c}: {acked} sent, members saw up to {lasts:?}");
    }
    let mut tasks = s.metric("confab_tasks");
    for _ in 0..50 {
        if tasks <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        tasks = s.metric("confab_tasks");
    }
    assert!(tasks <= tasks_before, "tasks after everyone left: {tasks}, before anyone came: {tasks_before}");
}
