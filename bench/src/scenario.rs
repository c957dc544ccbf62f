//! The scenarios. Each returns a [`Report`]; latency is sender-to-receiver, taken from the
//! send time written into the message content, so it includes queueing at the sender.

use crate::client::{Rx, Target, Tx, connect};
use crate::setup::{create_conversation, token};
use confab_codec::event::{ClientEvent, SendMessage, ServerEvent};
use confab_codec::{ClientEnvelope, ConversationId, Format, MessageKind};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One scenario's result: SPEC §8's pinned fields, plus what this scenario adds.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) transport: &'static str,
    pub(crate) codec: &'static str,
    pub(crate) clients: usize,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) msgs_per_s: f64,
    pub(crate) target_rate: Option<f64>,
    pub(crate) duration_s: f64,
    /// Bytes per message as framed by the transport (payload plus WebSocket header or QUIC
    /// varint prefix; no TCP/TLS/QUIC packet overhead): sender to server, server to receiver.
    pub(crate) frame_bytes_up: Option<f64>,
    pub(crate) frame_bytes_down: Option<f64>,
}

/// An empty latency histogram: 1 µs to 60 s, 3 significant digits.
fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

fn send_env(conv: &ConversationId, content: String) -> ClientEnvelope {
    ClientEnvelope::new(ClientEvent::Send(SendMessage {
        conversation_id: conv.clone(),
        content,
        kind: MessageKind::Text,
        metadata: Default::default(),
        local_id: None,
        reply_to: None,
    }))
}

fn join_env(conv: &ConversationId) -> ClientEnvelope {
    ClientEnvelope::new(ClientEvent::Join(confab_codec::event::Join { conversation_id: conv.clone(), since_seq: None }))
}

fn conv_id(s: &str) -> Result<ConversationId, String> {
    ConversationId::parse(s)
}

/// Reads until `conversation:joined` (or an error), skipping other events.
async fn await_joined(rx: &mut Rx) -> Result<(), String> {
    while let Some(env) = rx.next().await {
        match env.event {
            ServerEvent::Joined(_) => return Ok(()),
            ServerEvent::Error(e) => return Err(e.message),
            _ => {}
        }
    }
    Err("connection closed before conversation:joined".into())
}

/// A receiver: counts `message:new` and records latency until `until`.
async fn receive(mut rx: Rx, base: Instant, until: Instant, mut h: Histogram<u64>) -> (u64, Histogram<u64>) {
    let mut n = 0;
    // What came before (established, joined) is not a message.
    let before = rx.bytes().received.load(Ordering::Relaxed);
    RECEIVED_BYTES.fetch_sub(before, Ordering::Relaxed);
    loop {
        let next = tokio::time::timeout_at(until.into(), rx.next()).await;
        let Ok(Some(env)) = next else { break };
        if let ServerEvent::MessageNew(m) = env.event {
            if let Some(sent_ns) = m
                .message
                .content
                .strip_prefix('t')
                .and_then(|t| t.split(' ').next())
                .and_then(|t| t.parse::<u64>().ok())
            {
                let now_ns = base.elapsed().as_nanos() as u64;
                let _ = h.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                n += 1;
            }
        }
    }
    RECEIVED_BYTES.fetch_add(rx.bytes().received.load(Ordering::Relaxed), Ordering::Relaxed);
    (n, h)
}

/// Frame bytes the receivers of the running scenario read for their messages.
static RECEIVED_BYTES: AtomicU64 = AtomicU64::new(0);

struct Pair {
    conv: ConversationId,
    tx: Tx,
    tx_rx: Rx,
    rx: Rx,
    rtx: Tx,
}

async fn pairs(http: &str, target: &Target, prefix: &str, n: usize, format: Format) -> Result<Vec<Pair>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, r) = (format!("{prefix}s{i}"), format!("{prefix}r{i}"));
        let conv = format!("{prefix}c{i}");
        create_conversation(http, &conv, &[s.clone(), r.clone()]).await?;
        let conv = conv_id(&conv)?;
        let (tx, tx_rx) = connect(target, &token(&s), format).await?;
        let (mut rtx, mut rx) = connect(target, &token(&r), format).await?;
        rtx.join(&join_env(&conv), &conv).await?;
        await_joined(&mut rx).await?;
        // The receiver's sending half is not needed after the join, but a WebTransport
        // connection lives as long as its handle: keep it.
        out.push(Pair { conv, tx, tx_rx, rx, rtx });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    scenario: String,
    transport: &'static str,
    format: Format,
    clients: usize,
    (sent, received): (u64, u64),
    h: &Histogram<u64>,
    secs: f64,
    target: Option<f64>,
) -> Report {
    Report {
        scenario,
        transport,
        codec: format.name(),
        clients,
        sent,
        received,
        lost: sent.saturating_sub(received),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        msgs_per_s: received as f64 / secs,
        target_rate: target,
        duration_s: secs,
        frame_bytes_up: None,
        frame_bytes_down: None,
    }
}

/// 1:1 latency, open loop: `n` pairs, `rate` messages per second in all, each sender on its
/// own schedule whatever the replies do.
pub(crate) async fn latency(
    http: &str,
    target: &Target,
    n: usize,
    rate: f64,
    secs: f64,
    format: Format,
) -> Result<Report, String> {
    let prefix = format!("lat{}{}{}-", &target.name()[..2], format.name(), rand_tag());
    let pairs = pairs(http, target, &prefix, n, format).await?;
    RECEIVED_BYTES.store(0, Ordering::Relaxed);
    let sent_bytes: Vec<_> = pairs.iter().map(|p| std::sync::Arc::clone(&p.tx.bytes)).collect();
    let sent_before: u64 = sent_bytes.iter().map(|b| b.sent.load(Ordering::Relaxed)).sum();
    let base = Instant::now();
    let start = base + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let until = end + Duration::from_secs(2);
    let period = Duration::from_secs_f64(n as f64 / rate);
    let sent = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut receiver_conns = Vec::with_capacity(n);
    for (i, p) in pairs.into_iter().enumerate() {
        receivers.push(tokio::spawn(receive(p.rx, base, until, histogram()?)));
        receiver_conns.push(p.rtx);
        // The sender's own events (acks, receipts) are read and dropped.
        let mut tx_rx = p.tx_rx;
        tokio::spawn(async move {
            while tokio::time::timeout_at(until.into(), tx_rx.next()).await.ok().flatten().is_some() {}
        });
        let sent = Arc::clone(&sent);
        let mut tx = p.tx;
        let conv = p.conv;
        // Senders are spread over the period so the load is even.
        let offset = period.mul_f64(i as f64 / n as f64);
        senders.push(tokio::spawn(async move {
            let mut k = 0u32;
            loop {
                let at = start + offset + period * k;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                // Stamped when actually sent: tokio's timer wakes up to a millisecond late, and
                // that lateness is the benchmark's, not the server's.
                let sent_ns = base.elapsed().as_nanos() as u64;
                if tx.send(&send_env(&conv, format!("t{sent_ns} hello from the benchmark"))).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            tx
        }));
    }
    let mut keep = Vec::new();
    for s in senders {
        keep.push(s.await.map_err(|e| e.to_string())?);
    }
    let mut h = histogram()?;
    let mut received = 0;
    for r in receivers {
        let (n, rh) = r.await.map_err(|e| e.to_string())?;
        received += n;
        let _ = h.add(&rh);
    }
    drop((keep, receiver_conns));
    let sent = sent.load(Ordering::Relaxed);
    let up: u64 = sent_bytes.iter().map(|b| b.sent.load(Ordering::Relaxed)).sum::<u64>() - sent_before;
    let mut r =
        finish(format!("latency_1to1_{n}pairs"), target.name(), format, 2 * n, (sent, received), &h, secs, Some(rate));
    r.frame_bytes_up = Some(up as f64 / sent.max(1) as f64);
    r.frame_bytes_down = Some(RECEIVED_BYTES.load(Ordering::Relaxed) as f64 / received.max(1) as f64);
    Ok(r)
}

/// Throughput, closed loop with a window: `convs` conversations, `senders` senders in each, each
/// keeping `window` messages in flight (waiting for `message:sent`, a durable ack).
pub(crate) async fn throughput(
    addr: &str,
    target: &Target,
    convs: usize,
    senders: usize,
    window: usize,
    secs: f64,
    format: Format,
) -> Result<Report, String> {
    let tag = rand_tag();
    let mut receivers = Vec::new();
    let mut sender_conns = Vec::new();
    let base = Instant::now();
    for c in 0..convs {
        let conv = format!("tp{tag}-c{c}");
        let mut members: Vec<String> = (0..senders).map(|s| format!("tp{tag}-c{c}s{s}")).collect();
        let reader = format!("tp{tag}-c{c}r");
        members.push(reader.clone());
        create_conversation(addr, &conv, &members).await?;
        let conv = conv_id(&conv)?;
        let (mut rtx, mut rx) = connect(target, &token(&reader), format).await?;
        rtx.join(&join_env(&conv), &conv).await?;
        await_joined(&mut rx).await?;
        receivers.push((rx, rtx));
        for m in members.iter().take(senders) {
            let (tx, rx) = connect(target, &token(m), format).await?;
            sender_conns.push((conv.clone(), tx, rx));
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let until = end + Duration::from_secs(5);
    let mut receiver_tasks = Vec::with_capacity(receivers.len());
    let mut keep = Vec::with_capacity(receivers.len());
    for (rx, rtx) in receivers {
        receiver_tasks.push(tokio::spawn(receive(rx, base, until, histogram()?)));
        keep.push(rtx);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (conv, mut tx, mut rx) in sender_conns {
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let mut outstanding = 0usize;
            loop {
                let now = Instant::now();
                if now < end {
                    while outstanding < window {
                        let ns = base.elapsed().as_nanos() as u64;
                        if tx.feed(&send_env(&conv, format!("t{ns} throughput"))).await.is_err() {
                            return;
                        }
                        outstanding += 1;
                    }
                    if tx.flush().await.is_err() {
                        return;
                    }
                } else if outstanding == 0 {
                    return;
                }
                match tokio::time::timeout_at(until.into(), rx.next()).await {
                    Ok(Some(env)) => {
                        if matches!(env.event, ServerEvent::MessageSent(_)) {
                            outstanding -= 1;
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut h = histogram()?;
    let mut received = 0;
    for r in receiver_tasks {
        let (n, rh) = r.await.map_err(|e| e.to_string())?;
        received += n;
        let _ = h.add(&rh);
    }
    drop(keep);
    let clients = convs * (senders + 1);
    Ok(finish(
        format!("throughput_{convs}conv"),
        target.name(),
        format,
        clients,
        (sent.load(Ordering::Relaxed), received),
        &h,
        secs,
        None,
    ))
}

fn rand_tag() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() % 100_000)
}
