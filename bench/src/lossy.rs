//! Scenario 5, the lossy mobile network: confab runs in a network namespace of the bench's own
//! (a child process started with `ip netns exec`). The clients reach it over a wire per round
//! trip (`wire.rs`: a TUN device on each side and a relay in this process), which holds every
//! packet half the round trip each way and drops a share of them at random, both ways, TCP
//! and UDP alike. The API calls that set a run up go over a veth pair, without loss.
//! One user in 10 active conversations, with one sender in each, all on the same transport:
//! over WebTransport each conversation has its own QUIC stream; over WebSocket they share one
//! TCP connection. Reported: latency over all messages, and each conversation's p90 and p99.
//!
//! Why the loss is the wire's and not a packet filter's in the namespace (as it was before
//! 2026-12-01): a packet dropped by the sending host's own filter is a local drop, which the
//! kernel reports to TCP at once, so TCP resends it without waiting for any timer, while the
//! same drop of a UDP datagram is a real loss to QUIC. A filter on the server's way out
//! therefore cost WebSocket almost nothing and WebTransport a full recovery
//! (docs/benchmarks.md, issue 19, fifth pass). On the wire a dropped packet is lost in
//! transit for both.
//!
//! Needs root and `ip` (iproute2); skips with a message otherwise. Nothing outside the bench's
//! namespace is touched but the host's end of the veth pair and the wires' TUN devices.

use crate::child::{ChildServer, sh};
use crate::client::{Rx, Target, Tx, connect};
use crate::scenario::Report;
use crate::setup::{create_conversation, token};
use crate::wire::Wire;
use confab_codec::event::{ClientEvent, Join, SendMessage, ServerEvent};
use confab_codec::{ClientEnvelope, ConversationId, Format, MessageKind};
use hdrhistogram::Histogram;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONVERSATIONS: usize = 10;
/// Messages per second per conversation.
const RATE: f64 = 20.0;

/// `--serve IP`: confab on IP (inside the namespace, every address of it: `0.0.0.0`), until
/// stdin closes.
pub(crate) fn serve(ip: &str, threads: usize) -> std::process::ExitCode {
    let server = match crate::setup::LocalServer::start_on(ip, threads) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("confab-bench --serve: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (h3, hash) = server.h3.clone().map(|(a, h)| (a.to_string(), h)).unwrap_or_default();
    println!("READY http={} h3={h3} hash={hash}", server.addr);
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    drop(server);
    std::process::ExitCode::SUCCESS
}

/// The namespace, its veth pair and the server inside; all removed on drop.
struct Lab {
    ns: String,
    host_if: String,
    /// The third byte of the lab's subnets (the veth's `10.233.NET.0/24`, the wires').
    net: u32,
    /// The server's address on the veth pair.
    ns_ip: String,
    server: Option<ChildServer>,
}

impl Lab {
    fn start(threads: usize) -> Result<Self, String> {
        let id = std::process::id();
        let ns = format!("confab-bench-{id}");
        let (host_if, ns_if) = (format!("cbh{}", id % 100_000), format!("cbn{}", id % 100_000));
        let net = 16 + (id % 200);
        let (host_ip, ns_ip) = (format!("10.233.{net}.1"), format!("10.233.{net}.2"));
        sh(&["ip", "netns", "add", &ns])?;
        let mut lab = Self { ns: ns.clone(), host_if: host_if.clone(), net, ns_ip: ns_ip.clone(), server: None };
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        sh(&["ip", "link", "set", &ns_if, "netns", &ns])?;
        sh(&["ip", "addr", "add", &format!("{host_ip}/24"), "dev", &host_if])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"])?;
        sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        // Every address of the namespace: the veth's and each wire's.
        lab.server = Some(ChildServer::start(&["ip", "netns", "exec", &ns], "0.0.0.0", threads)?);
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The server first: the namespace goes with its interfaces.
        drop(self.server.take());
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// Every loss rate on both transports. A machine where the namespace cannot be made skips.
pub(crate) async fn run_all(
    secs: f64,
    threads: usize,
    losses: &[u32],
    rtts: &[u32],
    report: &impl Fn(Result<Report, String>) -> bool,
) -> bool {
    let lab = match tokio::task::spawn_blocking(move || Lab::start(threads)).await {
        Ok(Ok(lab)) => lab,
        Ok(Err(e)) => {
            eprintln!("lossy: SKIPPED, cannot build the network namespace ({e}); needs root and ip");
            return true;
        }
        Err(e) => {
            eprintln!("lossy: SKIPPED ({e})");
            return true;
        }
    };
    let Some(server) = &lab.server else { return false };
    let http = at(&server.http, &lab.ns_ip);
    // Per round trip, the wire the clients connect over, holding every packet for half the
    // round trip each way. Made once, kept for every loss rate.
    let mut routes = Vec::with_capacity(rtts.len());
    for (k, &rtt) in rtts.iter().enumerate() {
        match Wire::start(&lab.ns, k, lab.net, Duration::from_millis(u64::from(rtt)) / 2) {
            Ok(wire) => {
                let ip = wire.server_ip.as_str();
                let targets = [Target::Wt(at(&server.h3, ip), server.hash.clone()), Target::Ws(at(&server.http, ip))];
                routes.push((rtt, targets, wire));
            }
            Err(e) => {
                // No TUN devices here (a container without /dev/net/tun): skipped, as without ip.
                eprintln!("lossy: SKIPPED, cannot make the wire for {rtt} ms ({e})");
                routes.clear();
                break;
            }
        }
    }
    let mut ok = true;
    for &loss in losses {
        for (rtt, targets, wire) in &routes {
            wire.set_loss(loss);
            for target in targets {
                let mut r = one(&http, target, loss, secs).await;
                if let Ok(r) = &mut r {
                    r.rtt_ms = Some(*rtt);
                    if *rtt > 0 {
                        r.scenario = format!("{}_{rtt}ms", r.scenario);
                    }
                }
                ok &= report(r);
            }
        }
    }
    drop(routes);
    tokio::task::spawn_blocking(move || drop(lab)).await.is_ok() && ok
}

/// `addr`'s port on `ip` (the server listens on every address of its namespace).
fn at(addr: &str, ip: &str) -> String {
    let port = addr.rsplit(':').next().unwrap_or_default();
    format!("{ip}:{port}")
}

fn env(event: ClientEvent) -> ClientEnvelope {
    ClientEnvelope::new(event)
}

async fn one(http: &str, target: &Target, loss: u32, secs: f64) -> Result<Report, String> {
    let tag = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let reader = format!("lz{tag}r");
    let mut convs = Vec::new();
    for c in 0..CONVERSATIONS {
        let conv = format!("lz{tag}c{c}");
        let sender = format!("lz{tag}s{c}");
        create_conversation(http, &conv, &[sender.clone(), reader.clone()]).await?;
        convs.push((ConversationId::parse(&conv)?, sender));
    }
    let (mut rtx, mut rx): (Tx, Rx) = connect(target, &token(&reader), Format::MsgPack).await?;
    for (conv, _) in &convs {
        rtx.join(&env(ClientEvent::Join(Join { conversation_id: conv.clone(), since_seq: None })), conv).await?;
    }
    let mut joined = 0;
    while joined < CONVERSATIONS {
        match tokio::time::timeout(Duration::from_secs(20), rx.next()).await {
            Ok(Some(e)) if matches!(e.event, ServerEvent::Joined(_)) => joined += 1,
            Ok(Some(_)) => {}
            _ => return Err("lossy: joins did not complete".into()),
        }
    }
    // Every sender connects first: under loss a handshake can take a second, and nobody would
    // be reading the receiver meanwhile.
    let mut conns = Vec::with_capacity(CONVERSATIONS);
    for (_, sender) in &convs {
        conns.push(connect(target, &token(sender), Format::MsgPack).await?);
    }
    let base = Instant::now();
    let start = base + Duration::from_millis(300);
    let end = start + Duration::from_secs_f64(secs);
    let until = end + Duration::from_secs(10);
    let period = Duration::from_secs_f64(1.0 / RATE);
    let mut senders = Vec::new();
    let sent_count = Arc::new(AtomicU64::new(0));
    let senders_done = Arc::new(AtomicBool::new(false));
    for (i, ((conv, _), (mut tx, mut tx_rx))) in convs.iter().zip(conns).enumerate() {
        let sent_count = Arc::clone(&sent_count);
        tokio::spawn(async move {
            while tokio::time::timeout_at(until.into(), tx_rx.next()).await.ok().flatten().is_some() {}
        });
        let conv = conv.clone();
        let offset = period.mul_f64(i as f64 / CONVERSATIONS as f64);
        senders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let at = start + offset + period * sent as u32;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let ns = base.elapsed().as_nanos() as u64;
                let m = SendMessage {
                    conversation_id: conv.clone(),
                    content: format!("t{ns} c{i}"),
                    kind: MessageKind::Text,
                    metadata: Default::default(),
                    local_id: None,
                    reply_to: None,
                    attachments: Vec::new(),
                };
                if tx.send(&env(ClientEvent::Send(m))).await.is_err() {
                    break;
                }
                sent += 1;
                sent_count.fetch_add(1, Ordering::Relaxed);
            }
            (sent, tx)
        }));
    }
    let mut per_conv: Vec<Histogram<u64>> = Vec::new();
    for _ in 0..CONVERSATIONS {
        per_conv.push(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?);
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut received = 0u64;
    let mut total_sent = 0u64;
    let receiving = async {
        // Until everything sent has arrived (or `until`, for what never does).
        while !(senders_done.load(Ordering::Relaxed) && received >= sent_count.load(Ordering::Relaxed)) {
            let tick = tokio::time::Instant::now() + Duration::from_millis(200);
            let next = tokio::time::timeout_at(tick.min(until.into()), rx.next()).await;
            if Instant::now() >= until {
                break;
            }
            let e = match next {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(_) => continue,
            };
            let ServerEvent::MessageNew(m) = e.event else { continue };
            let mut parts = m.message.content.split(' ');
            let sent_ns = parts.next().and_then(|t| t.strip_prefix('t')).and_then(|t| t.parse::<u64>().ok());
            let conv = parts.next().and_then(|c| c.strip_prefix('c')).and_then(|c| c.parse::<usize>().ok());
            if let (Some(sent_ns), Some(c)) = (sent_ns, conv.filter(|c| *c < CONVERSATIONS)) {
                let us = ((base.elapsed().as_nanos() as u64).saturating_sub(sent_ns) / 1000).max(1);
                let _ = per_conv[c].record(us);
                let _ = all.record(us);
                received += 1;
            }
        }
    };
    let sending = async {
        let mut keep = Vec::new();
        for s in senders {
            if let Ok((n, tx)) = s.await {
                total_sent += n;
                keep.push(tx);
            }
        }
        senders_done.store(true, Ordering::Relaxed);
        keep
    };
    let (keep, ()) = tokio::join!(sending, receiving);
    drop((keep, rtx));
    let mut r = crate::scenario::finish(
        format!("lossy_{CONVERSATIONS}conv_{loss}pct"),
        target.name(),
        Format::MsgPack,
        CONVERSATIONS + 1,
        (total_sent, received),
        &all,
        secs,
        Some(RATE * CONVERSATIONS as f64),
    );
    let per = |q: f64| per_conv.iter().map(|h| h.value_at_quantile(q)).collect::<Vec<_>>();
    let (p90, p99) = (per(0.90), per(0.99));
    eprintln!(
        "  {} at {loss}%: per conversation, median of {CONVERSATIONS}: p90 {:.1} ms, p99 {:.1} ms",
        target.name(),
        median(&p90) as f64 / 1000.0,
        median(&p99) as f64 / 1000.0
    );
    r.per_conversation_p90_us = Some(p90);
    r.per_conversation_p99_us = Some(p99);
    r.loss_percent = Some(loss);
    Ok(r)
}

/// The median (of an even count, the mean of the middle two).
fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}
