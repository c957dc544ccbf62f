//! The scenarios. Each returns a [`Report`]; latency is sender-to-receiver, taken from the
//! send time written into the message content, so it includes queueing at the sender.

use crate::client::{Rx, Target, Tx, connect};
use crate::setup::{create_conversation, token};
use confab_codec::event::{ClientEvent, SendMessage, ServerEvent};
use confab_codec::{ClientEnvelope, ConversationId, Format, MessageKind};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One scenario's result: SPEC §8's pinned fields, plus what this scenario adds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) transport: String,
    pub(crate) codec: String,
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
    #[serde(default)]
    pub(crate) frame_bytes_up: Option<f64>,
    #[serde(default)]
    pub(crate) frame_bytes_down: Option<f64>,
    /// The floor relay's p50/p99 on the same transport in the same run, and confab's p50 as a
    /// multiple of it.
    #[serde(default)]
    pub(crate) floor_p50_us: Option<u64>,
    #[serde(default)]
    pub(crate) floor_p99_us: Option<u64>,
    #[serde(default)]
    pub(crate) p50_vs_floor: Option<f64>,
    /// The lossy scenario: the loss rate, and each conversation's p99.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) loss_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) per_conversation_p99_us: Option<Vec<u64>>,
    /// The lossy scenario's per-conversation p90: where head-of-line blocking shows, since a
    /// conversation's p99 is one loss's recovery on any transport (benchmarks.md, issue 19,
    /// fifth pass).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) per_conversation_p90_us: Option<Vec<u64>>,
    /// The lossy scenario's round trip added by the delay line (0: none).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) rtt_ms: Option<u32>,
    /// The density scenario: the server's RSS before and after, and per connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) rss_before_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) rss_after_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) kib_per_connection: Option<f64>,
    /// The versus scenario: which server, and per delivered message its CPU time (user and
    /// system, from `/proc/PID/stat`) and the frames and bytes it wrote to all clients.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) server_cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) server_frames_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) server_bytes_per_msg: Option<f64>,
    /// The cluster scenario, per delivered message: NATS publications (all nodes), NATS copies
    /// delivered to nodes (all nodes), and the store's batches (each one PostgreSQL statement
    /// and round trip: `confab_store_batch_size_count`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) nats_published_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) nats_copies_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) store_batches_per_msg: Option<f64>,
    /// The cluster scenario, per delivered message: PostgreSQL's CPU (every `postgres`
    /// process), NATS's CPU, WAL bytes (`pg_current_wal_lsn`) and committed transactions in the
    /// database (`pg_stat_database`: the writer's batches, receipt claims, presence, reads).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) postgres_cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) nats_cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) wal_bytes_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) pg_xacts_per_msg: Option<f64>,
}

/// An empty latency histogram: 1 µs to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Result<Histogram<u64>, String> {
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
        attachments: Vec::new(),
    }))
}

pub(crate) fn join_env(conv: &ConversationId) -> ClientEnvelope {
    ClientEnvelope::new(ClientEvent::Join(confab_codec::event::Join { conversation_id: conv.clone(), since_seq: None }))
}

fn conv_id(s: &str) -> Result<ConversationId, String> {
    ConversationId::parse(s)
}

/// Reads until `conversation:joined` (or an error), skipping other events.
pub(crate) async fn await_joined(rx: &mut Rx) -> Result<(), String> {
    while let Some(env) = rx.next().await {
        match env.event {
            ServerEvent::Joined(_) => return Ok(()),
            ServerEvent::Error(e) => return Err(e.message),
            _ => {}
        }
    }
    Err("connection closed before conversation:joined".into())
}

/// What the latency loop needs of a sender: confab's client or a floor relay's.
pub(crate) trait SendText: Send + 'static {
    fn send_text(&mut self, conv: &ConversationId, text: String) -> impl Future<Output = bool> + Send;
}

/// What the latency loop needs of a receiver: the next message's text (`Some(None)` for
/// anything else), `None` at the end.
pub(crate) trait NextText: Send + 'static {
    fn next_text(&mut self) -> impl Future<Output = Option<Option<String>>> + Send;
    /// Frame bytes read so far.
    fn frame_bytes(&self) -> u64 {
        0
    }
}

impl SendText for Tx {
    async fn send_text(&mut self, conv: &ConversationId, text: String) -> bool {
        self.send(&send_env(conv, text)).await.is_ok()
    }
}

impl NextText for Rx {
    async fn next_text(&mut self) -> Option<Option<String>> {
        let env = self.next().await?;
        Some(match env.event {
            ServerEvent::MessageNew(m) => Some(m.message.content),
            _ => None,
        })
    }
    fn frame_bytes(&self) -> u64 {
        self.bytes().received.load(Ordering::Relaxed)
    }
}

impl SendText for crate::floor::FloorTx {
    async fn send_text(&mut self, conv: &ConversationId, text: String) -> bool {
        self.send(&send_env(conv, text)).await.is_ok()
    }
}

impl NextText for crate::floor::FloorRx {
    async fn next_text(&mut self) -> Option<Option<String>> {
        let env = self.next().await?;
        Some(match env.event {
            ClientEvent::Send(s) => Some(s.content),
            _ => None,
        })
    }
}

/// A receiver: counts messages and records latency until `until`.
pub(crate) async fn receive<R: NextText>(
    mut rx: R,
    base: Instant,
    until: Instant,
    mut h: Histogram<u64>,
) -> (u64, Histogram<u64>, R) {
    let mut n = 0;
    // What came before (established, joined) is not a message.
    RECEIVED_BYTES.fetch_sub(rx.frame_bytes(), Ordering::Relaxed);
    loop {
        let next = tokio::time::timeout_at(until.into(), rx.next_text()).await;
        let Ok(Some(text)) = next else { break };
        if let Some(sent_ns) = text
            .as_deref()
            .and_then(|t| t.strip_prefix('t'))
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse::<u64>().ok())
        {
            let now_ns = base.elapsed().as_nanos() as u64;
            let _ = h.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
            n += 1;
        }
    }
    RECEIVED_BYTES.fetch_add(rx.frame_bytes(), Ordering::Relaxed);
    (n, h, rx)
}

/// The messages the [`receive`] tasks counted, and their latencies in one histogram; the
/// receivers are dropped (closed) here.
pub(crate) async fn received_by<R>(
    tasks: Vec<tokio::task::JoinHandle<(u64, Histogram<u64>, R)>>,
) -> Result<(u64, Histogram<u64>), String> {
    let mut h = histogram()?;
    let mut received = 0;
    for t in tasks {
        let (n, rh, _) = t.await.map_err(|e| e.to_string())?;
        received += n;
        let _ = h.add(&rh);
    }
    Ok((received, h))
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

async fn pairs(
    http: &str,
    target: &Target,
    rx_target: &Target,
    prefix: &str,
    n: usize,
    format: Format,
) -> Result<Vec<Pair>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, r) = (format!("{prefix}s{i}"), format!("{prefix}r{i}"));
        let conv = format!("{prefix}c{i}");
        create_conversation(http, &conv, &[s.clone(), r.clone()]).await?;
        let conv = conv_id(&conv)?;
        let (tx, tx_rx) = connect(target, &token(&s), format).await?;
        let (mut rtx, mut rx) = connect(rx_target, &token(&r), format).await?;
        rtx.join(&join_env(&conv), &conv).await?;
        await_joined(&mut rx).await?;
        // The receiver's sending half is not needed after the join, but a WebTransport
        // connection lives as long as its handle: keep it.
        out.push(Pair { conv, tx, tx_rx, rx, rtx });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
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
        transport: transport.to_string(),
        codec: format.name().to_string(),
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
        floor_p50_us: None,
        floor_p99_us: None,
        p50_vs_floor: None,
        loss_percent: None,
        per_conversation_p99_us: None,
        per_conversation_p90_us: None,
        rtt_ms: None,
        rss_before_kib: None,
        rss_after_kib: None,
        kib_per_connection: None,
        server: None,
        server_cpu_us_per_msg: None,
        server_frames_per_msg: None,
        server_bytes_per_msg: None,
        nats_published_per_msg: None,
        nats_copies_per_msg: None,
        store_batches_per_msg: None,
        postgres_cpu_us_per_msg: None,
        nats_cpu_us_per_msg: None,
        wal_bytes_per_msg: None,
        pg_xacts_per_msg: None,
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
    latency_between(http, target, target, n, rate, secs, format).await
}

/// [`latency`] with each pair's receiver on `rx_target` (another node of a cluster).
pub(crate) async fn latency_between(
    http: &str,
    target: &Target,
    rx_target: &Target,
    n: usize,
    rate: f64,
    secs: f64,
    format: Format,
) -> Result<Report, String> {
    let prefix = format!("lat{}{}{}-", &target.name()[..2], format.name(), rand_tag());
    let pairs = pairs(http, target, rx_target, &prefix, n, format).await?;
    let sent_bytes: Vec<_> = pairs.iter().map(|p| std::sync::Arc::clone(&p.tx.bytes)).collect();
    let sent_before: u64 = sent_bytes.iter().map(|b| b.sent.load(Ordering::Relaxed)).sum();
    let until = Instant::now() + Duration::from_secs_f64(secs + 3.0);
    let mut loop_pairs = Vec::with_capacity(n);
    let mut receiver_conns = Vec::with_capacity(n);
    for p in pairs {
        // The sender's own events (acks, receipts) are read and dropped.
        let mut tx_rx = p.tx_rx;
        tokio::spawn(async move {
            while tokio::time::timeout_at(until.into(), tx_rx.next()).await.ok().flatten().is_some() {}
        });
        receiver_conns.push(p.rtx);
        loop_pairs.push((p.conv, p.tx, p.rx));
    }
    let (sent, received, h) = open_loop(loop_pairs, rate, secs).await?;
    drop(receiver_conns);
    let up: u64 = sent_bytes.iter().map(|b| b.sent.load(Ordering::Relaxed)).sum::<u64>() - sent_before;
    let mut r =
        finish(format!("latency_1to1_{n}pairs"), target.name(), format, 2 * n, (sent, received), &h, secs, Some(rate));
    r.frame_bytes_up = Some(up as f64 / sent.max(1) as f64);
    r.frame_bytes_down = Some(RECEIVED_BYTES.load(Ordering::Relaxed) as f64 / received.max(1) as f64);
    Ok(r)
}

/// Throughput as issue 6 defines it: the highest rate at which every message arrives and the
/// p99 stays under `p99_limit_us`, `convs` conversations of one sender and one receiver, open
/// loop (the senders keep their schedule whatever the server does, so an overloaded server
/// shows as latency, not as a slower sender). The rate grows by half while a step passes, then
/// `refine` steps bisect between the last pass and the first failure (a failing first rate is
/// halved until one passes); each step is a fresh set of connections and conversations, so one
/// step's backlog cannot spill into the next. Returns the best passing step, named
/// `throughput_{convs}conv` (or the first failure if none passed).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn throughput_slo(
    http: &str,
    target: &Target,
    convs: usize,
    start_rate: f64,
    max_steps: usize,
    refine: usize,
    p99_limit_us: u64,
    secs: f64,
    format: Format,
) -> Result<Report, String> {
    let label = format!("{} over {convs} conversations", target.name());
    let mut r = slo_search(&label, start_rate, max_steps, refine, p99_limit_us, |rate| {
        latency(http, target, convs, rate, secs, format)
    })
    .await?;
    r.scenario = format!("throughput_{convs}conv");
    Ok(r)
}

/// The highest open-loop rate whose run loses nothing and keeps p99 under `p99_limit_us`: up
/// by half from `start_rate` until a run fails (down by half while none passes), then `refine`
/// bisections. Returns the best passing run, or the first failing one if none passed.
pub(crate) async fn slo_search<F, Fut>(
    label: &str,
    start_rate: f64,
    max_steps: usize,
    refine: usize,
    p99_limit_us: u64,
    mut step: F,
) -> Result<Report, String>
where
    F: FnMut(f64) -> Fut,
    Fut: std::future::Future<Output = Result<Report, String>>,
{
    let passes = |r: &Report| r.lost == 0 && r.p99_us < p99_limit_us;
    let mut best: Option<Report> = None;
    let mut first_failure: Option<Report> = None;
    let mut failed_at = f64::MAX;
    let mut rate = start_rate;
    let mut refined = 0;
    for _ in 0..max_steps {
        let r = step(rate).await?;
        let ok = passes(&r);
        eprintln!(
            "  ({label} at {rate:.0} msg/s: p99 {} µs, lost {}: {})",
            r.p99_us,
            r.lost,
            if ok { "pass" } else { "fail" }
        );
        if ok {
            best = Some(r);
        } else {
            failed_at = failed_at.min(rate);
            first_failure.get_or_insert(r);
        }
        let passed_at = best.as_ref().and_then(|b| b.target_rate);
        rate = match passed_at {
            _ if failed_at == f64::MAX => rate * 1.5,
            // Not even the first rate passed: look below it.
            None => rate / 2.0,
            Some(_) if refined == refine => break,
            Some(low) => {
                refined += 1;
                (low + failed_at) / 2.0
            }
        };
    }
    best.or(first_failure).ok_or_else(|| "no step ran".to_string())
}

/// The same 1:1 latency through the floor relay for `target`'s transport.
pub(crate) async fn floor_latency(
    floor: &crate::floor::Floor,
    target: &Target,
    n: usize,
    rate: f64,
    secs: f64,
    format: Format,
) -> Result<Report, String> {
    let relay = floor.target_for(target);
    let tag = rand_tag();
    let mut loop_pairs = Vec::with_capacity(n);
    let mut keep = Vec::with_capacity(n);
    for i in 0..n {
        let (s, r) = (format!("f{tag}s{i}"), format!("f{tag}r{i}"));
        let (tx, _tx_rx) = crate::floor::connect(&relay, &s, &r, format).await?;
        let (rtx, rx) = crate::floor::connect(&relay, &r, &s, format).await?;
        keep.push((rtx, _tx_rx));
        loop_pairs.push((conv_id(&format!("f{tag}c{i}"))?, tx, rx));
    }
    // Let the relay register the receivers before the first message.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (sent, received, h) = open_loop(loop_pairs, rate, secs).await?;
    drop(keep);
    let transport = match relay {
        Target::Wt(..) => "quic-floor",
        _ => "websocket-floor",
    };
    Ok(finish(format!("floor_latency_1to1_{n}pairs"), transport, format, 2 * n, (sent, received), &h, secs, Some(rate)))
}

/// Runs the open loop: each sender on its own schedule (spread over the period so the load is
/// even), each receiver recording latency. Returns (sent, received, histogram).
pub(crate) async fn open_loop<S: SendText, R: NextText>(
    pairs: Vec<(ConversationId, S, R)>,
    rate: f64,
    secs: f64,
) -> Result<(u64, u64, Histogram<u64>), String> {
    let n = pairs.len().max(1);
    RECEIVED_BYTES.store(0, Ordering::Relaxed);
    let base = Instant::now();
    let start = base + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let until = end + Duration::from_secs(2);
    let period = Duration::from_secs_f64(n as f64 / rate);
    let sent = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, (conv, mut tx, rx)) in pairs.into_iter().enumerate() {
        receivers.push(tokio::spawn(receive(rx, base, until, histogram()?)));
        let sent = Arc::clone(&sent);
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
                if !tx.send_text(&conv, format!("t{sent_ns} hello from the benchmark")).await {
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
    let (received, h) = received_by(receivers).await?;
    drop(keep);
    Ok((sent.load(Ordering::Relaxed), received, h))
}

/// Throughput, closed loop with a window: `convs` conversations, `senders` senders in each, each
/// keeping `window` messages in flight (waiting for `message:sent`, a durable ack). With the
/// server's `pid` (a child process), its CPU per delivery over the measured part is reported.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn throughput(
    addr: &str,
    target: &Target,
    convs: usize,
    senders: usize,
    readers: usize,
    window: usize,
    secs: f64,
    format: Format,
    pid: Option<u32>,
) -> Result<Report, String> {
    let tag = rand_tag();
    let readers = readers.max(1);
    let mut receivers = Vec::new();
    let mut sender_conns = Vec::new();
    let base = Instant::now();
    for c in 0..convs {
        let conv = format!("tp{tag}-c{c}");
        let mut members: Vec<String> = (0..senders).map(|s| format!("tp{tag}-c{c}s{s}")).collect();
        let reader_ids: Vec<String> = (0..readers).map(|r| format!("tp{tag}-c{c}r{r}")).collect();
        members.extend(reader_ids.iter().cloned());
        create_conversation(addr, &conv, &members).await?;
        let conv = conv_id(&conv)?;
        for reader in &reader_ids {
            let (mut rtx, mut rx) = connect(target, &token(reader), format).await?;
            rtx.join(&join_env(&conv), &conv).await?;
            await_joined(&mut rx).await?;
            receivers.push((rx, rtx));
        }
        for m in members.iter().take(senders) {
            let (tx, rx) = connect(target, &token(m), format).await?;
            sender_conns.push((conv.clone(), tx, rx));
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let until = end + Duration::from_secs(5);
    let cpu = pid.map(crate::child::CpuMeter::start);
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
    let (received, h) = received_by(receiver_tasks).await?;
    let cpu_per_delivery = cpu.and_then(|c| c.per(received));
    drop(keep);
    let clients = convs * (senders + readers);
    // `sent` counts deliveries owed: each acknowledged message to each reader of its conversation.
    let owed = sent.load(Ordering::Relaxed) * readers as u64;
    let name =
        if readers > 1 { format!("fanout_{}members", senders + readers) } else { format!("saturation_{convs}conv") };
    let mut r = finish(name, target.name(), format, clients, (owed, received), &h, secs, None);
    r.server_cpu_us_per_msg = cpu_per_delivery;
    Ok(r)
}

pub(crate) fn rand_tag() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() % 100_000)
}
