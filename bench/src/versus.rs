//! confab against Socket.IO, side by side in one run (issue 19): each server in a child process
//! pinned to the last core (`taskset`), the load generator on the others, 1:1
//! pairs over WebSocket with JSON in open loop at a few rates, and for every run the server's
//! CPU per delivered message (from `/proc/PID/stat`) and the frames and bytes it wrote per
//! delivered message, next to the latency.
//!
//! The Socket.IO relay is `bench/peers/socketio/server.js` (its own `package.json` and lock
//! file); it runs when `node` and the relay's `node_modules` are there (`npm ci` in that
//! folder) and is skipped with a message otherwise. Its SQLite mode needs the optional
//! `better-sqlite3`.

use crate::child::{ChildServer, CpuMeter};
use crate::client::{FrameBytes, Target, connect};
use crate::scenario::{NextText, Report, SendText, finish, histogram, open_loop, receive};
use crate::setup::{SECRET, create_conversation, token};
use confab_codec::{ConversationId, Format};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The servers compared, in the order they run within a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    ConfabFull,
    ConfabNormal,
    /// `--sync normal`, its clients on WebTransport (JSON, like the others): the transport's
    /// own cost beside WebSocket's, same server, same pinning.
    ConfabWt,
    /// `--sync normal`, its clients on WebSocket over TLS (`wss://`, JSON): WebTransport's
    /// like-for-like reference, since QUIC always encrypts and `confab/normal`'s `ws://` does not.
    ConfabWss,
    /// `--sync normal` on WebSocket with the in-memory store (nothing durable): what confab
    /// costs apart from its store. Not in the default run: only when `--versus-servers` names
    /// it (`confab` does).
    ConfabMemory,
    SocketIoMemory,
    SocketIoSqlite,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::ConfabFull => "confab/full",
            Self::ConfabNormal => "confab/normal",
            Self::ConfabWt => "confab/wt",
            Self::ConfabWss => "confab/wss",
            Self::ConfabMemory => "confab/memory",
            Self::SocketIoMemory => "socket.io/mem",
            Self::SocketIoSqlite => "socket.io/sqlite",
        }
    }

    /// The environment a confab server is started with: its `--sync` and its store.
    fn confab_env(self) -> [(&'static str, &'static str); 2] {
        let sync = if self == Self::ConfabFull { "full" } else { "normal" };
        let store = if self == Self::ConfabMemory { "memory" } else { "sqlite" };
        [("CONFAB_SYNC", sync), ("CONFAB_BENCH_STORE", store)]
    }

    /// Where a confab server's clients connect.
    fn target(self, c: &ChildServer) -> Target {
        match self {
            Self::ConfabWt => Target::Wt(c.h3.clone(), c.hash.clone()),
            // The TLS listener: the same port number as QUIC's.
            Self::ConfabWss => Target::Wss(c.h3.clone(), c.hash.clone()),
            _ => Target::Ws(c.http.clone()),
        }
    }
}

/// A running server of either kind.
enum Running {
    Confab(ChildServer),
    SocketIo(NodePeer),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Self::Confab(c) => c.pid(),
            Self::SocketIo(p) => p.child.id(),
        }
    }
}

/// Where the machine has two cores or more and `taskset`: the servers' core (the last) and
/// the load generator's (the others).
pub(crate) fn pinning() -> Option<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || Command::new("taskset").arg("-V").output().is_err() {
        return None;
    }
    let clients = if cores == 2 { "0".to_string() } else { format!("0-{}", cores - 2) };
    Some(((cores - 1).to_string(), clients))
}

/// Pins every thread of this process (the load generator) to `cpus`.
pub(crate) fn pin_self(cpus: &str) {
    let pid = std::process::id().to_string();
    match Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid]).output() {
        Ok(o) if o.status.success() => {}
        _ => eprintln!("(could not pin the load generator to cores {cpus})"),
    }
}

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers").join("socketio")
}

/// Why the Socket.IO relay cannot run here, if it cannot.
fn socketio_missing() -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !peer_dir().join("node_modules").join("socket.io").exists() {
        return Some(format!("run `npm ci` in {}", peer_dir().display()));
    }
    None
}

/// The Socket.IO relay in a child process; stopped on drop by closing its stdin.
struct NodePeer {
    child: Child,
    port: u16,
    dir: Option<PathBuf>,
}

impl NodePeer {
    fn start(wrapper: &[&str], sqlite: bool) -> Result<Self, String> {
        let dir = sqlite.then(|| std::env::temp_dir().join(format!("confab-bench-sio-{}", std::process::id())));
        let store = match &dir {
            Some(d) => {
                let _ = std::fs::remove_dir_all(d);
                std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
                format!("sqlite:{}", d.join("chat.db").display())
            }
            None => "memory".into(),
        };
        let mut child = crate::child::wrapped(wrapper, "node".as_ref())
            .arg(peer_dir().join("server.js"))
            .args(["--secret", SECRET, "--store", &store])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("node: {e}"))?;
        let read = crate::child::first_line(&mut child);
        let mut peer = Self { child, port: 0, dir };
        let line = read?;
        peer.port = line.trim().strip_prefix("READY port=").and_then(|p| p.parse().ok()).unwrap_or(0);
        if peer.port == 0 {
            return Err(format!("the Socket.IO relay said {line:?}"));
        }
        Ok(peer)
    }
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        crate::child::stop(&mut self.child, Duration::from_secs(10));
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

use crate::client::Ws;

/// A Socket.IO client (Engine.IO 4 over a WebSocket, no polling), enough for the relay: the
/// handshake with a token, `join` and `send` with acknowledgements, `message` events.
pub(crate) struct SioTx {
    sink: SplitSink<Ws, Message>,
    next_ack: u64,
}

pub(crate) struct SioRx {
    stream: SplitStream<Ws>,
    bytes: Arc<FrameBytes>,
}

async fn sio_connect(port: u16, token: &str) -> Result<(SioTx, SioRx), String> {
    let addr = format!("127.0.0.1:{port}");
    let ws = crate::client::plain_ws(&addr, format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).await?;
    let (mut sink, mut stream) = ws.split();
    // Engine.IO open packet, then the Socket.IO CONNECT with the auth payload.
    let open = sio_read(&mut stream).await?;
    if !open.starts_with('0') {
        return Err(format!("Engine.IO said {open:?} instead of its open packet"));
    }
    let auth = serde_json::json!({ "token": token });
    sink.send(Message::Text(format!("40{auth}").into())).await.map_err(|e| e.to_string())?;
    let connected = sio_read(&mut stream).await?;
    if !connected.starts_with("40") {
        return Err(format!("Socket.IO refused the connection: {connected:?}"));
    }
    Ok((SioTx { sink, next_ack: 1 }, SioRx { stream, bytes: Arc::new(FrameBytes::default()) }))
}

async fn sio_read(stream: &mut SplitStream<Ws>) -> Result<String, String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => return Err("the Socket.IO connection closed".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

impl SioTx {
    async fn emit(&mut self, event: &str, body: serde_json::Value) -> Result<(), String> {
        let id = self.next_ack;
        self.next_ack += 1;
        let packet = serde_json::json!([event, body]);
        self.sink.send(Message::Text(format!("42{id}{packet}").into())).await.map_err(|e| e.to_string())
    }
}

impl SioRx {
    /// Reads until the acknowledgement of a `join` (`43N[...]`).
    async fn await_ack(&mut self) -> Result<(), String> {
        loop {
            let t = sio_read(&mut self.stream).await?;
            if t.starts_with("43") {
                return if t.contains("\"error\"") { Err(t) } else { Ok(()) };
            }
        }
    }
}

impl SendText for SioTx {
    async fn send_text(&mut self, conv: &ConversationId, text: String) -> bool {
        self.emit("send", serde_json::json!({ "conversationId": conv.as_str(), "content": text })).await.is_ok()
    }
}

impl NextText for SioRx {
    async fn next_text(&mut self) -> Option<Option<String>> {
        loop {
            let msg = self.stream.next().await?.ok()?;
            let text = match &msg {
                Message::Text(t) => t.as_str(),
                Message::Close(_) => return None,
                _ => continue,
            };
            self.bytes.ws_frame_received(text.len());
            let Some(body) = text.strip_prefix("42") else { return Some(None) };
            let content = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get(1)?.get("content")?.as_str().map(str::to_string));
            return Some(content);
        }
    }
    fn frame_bytes(&self) -> u64 {
        self.bytes.received.load(Ordering::Relaxed)
    }
}

/// One measured run: `n` fresh pairs on `server`, `rate` msg/s in all, `secs` long.
async fn run_once(server: Server, running: &Running, n: usize, rate: f64, secs: f64) -> Result<Report, String> {
    let tag = format!("vs{}{}", server as u8, crate::scenario::rand_tag());
    let mut counters: Vec<Arc<FrameBytes>> = Vec::new();
    let report = match running {
        Running::Confab(c) => {
            let target = server.target(c);
            let mut pairs = Vec::with_capacity(n);
            let mut keep = Vec::with_capacity(n);
            for i in 0..n {
                let (s, r) = (format!("{tag}s{i}"), format!("{tag}r{i}"));
                let conv = format!("{tag}c{i}");
                create_conversation(&c.http, &conv, &[s.clone(), r.clone()]).await?;
                let conv = ConversationId::parse(&conv)?;
                let (tx, tx_rx) = connect(&target, &token(&s), Format::Json).await?;
                let (mut rtx, mut rx) = connect(&target, &token(&r), Format::Json).await?;
                rtx.join(&crate::scenario::join_env(&conv), &conv).await?;
                crate::scenario::await_joined(&mut rx).await?;
                counters.push(Arc::clone(&tx.bytes));
                counters.push(Arc::clone(rx.bytes()));
                keep.push((rtx, tx_rx));
                pairs.push((conv, tx, rx));
            }
            let mut r = measure(pairs, keep, &counters, running.pid(), rate, secs).await?;
            r.transport = target.name().to_string();
            r
        }
        Running::SocketIo(p) => {
            let mut pairs = Vec::with_capacity(n);
            let mut keep = Vec::with_capacity(n);
            for i in 0..n {
                let (s, r) = (format!("{tag}s{i}"), format!("{tag}r{i}"));
                let conv = ConversationId::parse(&format!("{tag}c{i}"))?;
                let (mut tx, mut tx_rx) = sio_connect(p.port, &token(&s)).await?;
                let (mut rtx, mut rx) = sio_connect(p.port, &token(&r)).await?;
                tx.emit("join", serde_json::json!(conv.as_str())).await?;
                tx_rx.await_ack().await?;
                rtx.emit("join", serde_json::json!(conv.as_str())).await?;
                rx.await_ack().await?;
                counters.push(Arc::clone(&tx_rx.bytes));
                counters.push(Arc::clone(&rx.bytes));
                keep.push((rtx, tx_rx));
                pairs.push((conv, tx, rx));
            }
            measure(pairs, keep, &counters, running.pid(), rate, secs).await?
        }
    };
    let mut report = report;
    report.scenario = format!("versus_1to1_{}", rate as u64);
    report.server = Some(server.name().to_string());
    Ok(report)
}

/// Messages in flight from the fan-out's one sender.
const FANOUT_WINDOW: usize = 8;

/// One fan-out run on `server`: a fresh group of `members` (a sender and the rest joined
/// readers), the sender keeping [`FANOUT_WINDOW`] messages in flight for `secs`; the report's
/// rate is deliveries per second, its CPU per delivery.
async fn fanout_once(server: Server, running: &Running, members: usize, secs: f64) -> Result<Report, String> {
    let readers = members.saturating_sub(1).max(1);
    let mut report = match running {
        Running::Confab(c) => {
            let target = server.target(c);
            let pid = Some(running.pid());
            crate::scenario::throughput(&c.http, &target, 1, 1, readers, FANOUT_WINDOW, secs, Format::Json, pid).await?
        }
        Running::SocketIo(p) => sio_fanout(p, running.pid(), readers, secs).await?,
    };
    report.scenario = format!("versus_fanout_{members}");
    report.server = Some(server.name().to_string());
    Ok(report)
}

/// The fan-out against the Socket.IO relay: the same group in one room, the sender's window
/// paced by the relay's acknowledgements.
async fn sio_fanout(p: &NodePeer, pid: u32, readers: usize, secs: f64) -> Result<Report, String> {
    let tag = format!("vf{}", crate::scenario::rand_tag());
    let conv = ConversationId::parse(&format!("{tag}c"))?;
    let join = serde_json::json!(conv.as_str());
    let mut members = Vec::with_capacity(readers);
    for i in 0..readers {
        let (mut rtx, mut rx) = sio_connect(p.port, &token(&format!("{tag}r{i}"))).await?;
        rtx.emit("join", join.clone()).await?;
        rx.await_ack().await?;
        members.push((rtx, rx));
    }
    let (mut tx, mut acks) = sio_connect(p.port, &token(&format!("{tag}s"))).await?;
    tx.emit("join", join).await?;
    acks.await_ack().await?;

    let base = Instant::now();
    let end = base + Duration::from_secs_f64(secs);
    let until = end + Duration::from_secs(5);
    let cpu = CpuMeter::start(pid);
    let mut keep = Vec::with_capacity(readers);
    let mut tasks = Vec::with_capacity(readers);
    for (rtx, rx) in members {
        tasks.push(tokio::spawn(receive(rx, base, until, histogram()?)));
        keep.push(rtx);
    }
    let (mut outstanding, mut acked) = (0usize, 0u64);
    loop {
        if Instant::now() < end {
            while outstanding < FANOUT_WINDOW {
                let ns = base.elapsed().as_nanos() as u64;
                tx.send_text(&conv, format!("t{ns} fan-out"))
                    .await
                    .then_some(())
                    .ok_or("the sender's socket closed")?;
                outstanding += 1;
            }
        } else if outstanding == 0 {
            break;
        }
        match tokio::time::timeout_at(until.into(), sio_read(&mut acks.stream)).await {
            Ok(Ok(t)) if t.starts_with("43") => {
                outstanding -= 1;
                acked += 1;
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let (received, h) = crate::scenario::received_by(tasks).await?;
    let cpu_per_delivery = cpu.per(received);
    drop(keep);
    let owed = acked * readers as u64;
    let mut r = finish(String::new(), "websocket", Format::Json, readers + 1, (owed, received), &h, secs, None);
    r.server_cpu_us_per_msg = cpu_per_delivery;
    Ok(r)
}

/// Runs the open loop over `pairs` and reads the server's costs around it. `senders` are the
/// senders' reading halves (their acks, receipts and echoes are read, counted and dropped)
/// with whatever must live as long (the receivers' sending halves).
async fn measure<S: SendText, R: NextText, D: NextText, K: Send + 'static>(
    pairs: Vec<(ConversationId, S, R)>,
    senders: Vec<(K, D)>,
    counters: &[Arc<FrameBytes>],
    pid: u32,
    rate: f64,
    secs: f64,
) -> Result<Report, String> {
    let until = Instant::now() + Duration::from_secs_f64(secs + 5.0);
    let drains: Vec<_> = senders
        .into_iter()
        .map(|(keep, mut rx)| {
            tokio::spawn(async move {
                while tokio::time::timeout_at(until.into(), rx.next_text()).await.ok().flatten().is_some() {}
                keep
            })
        })
        .collect();
    let r = costs_around(pairs, counters, pid, rate, secs).await;
    drains.iter().for_each(|d| d.abort());
    r
}

async fn costs_around<S: SendText, R: NextText>(
    pairs: Vec<(ConversationId, S, R)>,
    counters: &[Arc<FrameBytes>],
    pid: u32,
    rate: f64,
    secs: f64,
) -> Result<Report, String> {
    let n = pairs.len();
    let frames = |c: &[Arc<FrameBytes>]| -> (u64, u64) {
        c.iter()
            .fold((0, 0), |(f, b), x| (f + x.frames.load(Ordering::Relaxed), b + x.received.load(Ordering::Relaxed)))
    };
    let (frames_before, bytes_before) = frames(counters);
    let cpu = CpuMeter::start(pid);
    let (sent, received, h) = open_loop(pairs, rate, secs).await?;
    let cpu_per_msg = cpu.per(received);
    let (frames_after, bytes_after) = frames(counters);
    let mut r = finish(String::new(), "websocket", Format::Json, 2 * n, (sent, received), &h, secs, Some(rate));
    let per = |x: u64| x as f64 / received.max(1) as f64;
    r.server_cpu_us_per_msg = cpu_per_msg;
    r.server_frames_per_msg = Some(per(frames_after - frames_before));
    r.server_bytes_per_msg = Some(per(bytes_after - bytes_before));
    Ok(r)
}

/// The throughput search of the versus scenario: the highest rate over `convs` 1:1
/// conversations with p99 under 10 ms and nothing lost (issue 6's definition), each step
/// `secs` long on fresh pairs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slo {
    pub(crate) convs: usize,
    pub(crate) start_rate: f64,
    pub(crate) steps: usize,
    pub(crate) refine: usize,
    pub(crate) secs: f64,
}

/// Every server × rate × round of the 1:1 runs, then the fan-out's rounds, then one throughput
/// search per server; each run passed to `report`; false if a run failed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_all(
    rates: &[f64],
    pairs: usize,
    fanout_members: usize,
    slo: Slo,
    secs: f64,
    rounds: usize,
    threads: usize,
    only: &[String],
    report: &dyn Fn(Result<Report, String>) -> bool,
) -> bool {
    let pinned = pinning();
    let wrapper: Vec<&str> = match &pinned {
        Some((server, clients)) => {
            pin_self(clients);
            eprintln!("(servers pinned to core {server}, the load generator to {clients})");
            vec!["taskset", "-c", server]
        }
        None => {
            eprintln!("(one core, or no taskset: server and load generator share the CPU)");
            Vec::new()
        }
    };
    // A server on one core gets one runtime thread, as confab gives itself by default under
    // `taskset` (its runtime sizes itself to the cores it may use) and as Node has one.
    let threads = if pinned.is_some() { 1 } else { threads };
    let mut servers: Vec<(Server, Running)> = Vec::new();
    let mut ok = true;
    let wanted = |s: Server| {
        let named = only.iter().any(|o| s.name().contains(o.as_str()));
        named || (only.is_empty() && s != Server::ConfabMemory)
    };
    for server in [Server::ConfabFull, Server::ConfabNormal, Server::ConfabWt, Server::ConfabWss, Server::ConfabMemory]
    {
        if !wanted(server) {
            continue;
        }
        match ChildServer::start_with_env(&wrapper, "127.0.0.1", threads, &server.confab_env()) {
            Ok(c) => servers.push((server, Running::Confab(c))),
            Err(e) => ok &= report(Err(format!("{}: {e}", server.name()))),
        }
    }
    match socketio_missing() {
        Some(why) => eprintln!("(Socket.IO skipped: {why})"),
        None => {
            for (server, sqlite) in [(Server::SocketIoMemory, false), (Server::SocketIoSqlite, true)] {
                if !wanted(server) {
                    continue;
                }
                if sqlite && !peer_dir().join("node_modules").join("better-sqlite3").exists() {
                    eprintln!(
                        "({} skipped: its optional better-sqlite3 is not installed; `npm ci` without --omit=optional)",
                        server.name()
                    );
                    continue;
                }
                match NodePeer::start(&wrapper, sqlite) {
                    Ok(p) => servers.push((server, Running::SocketIo(p))),
                    Err(e) => eprintln!("({} skipped: {e})", server.name()),
                }
            }
        }
    }
    let mut all: Vec<Report> = Vec::new();
    for &rate in rates {
        for _ in 0..rounds {
            // Alternating within a round, so that a noisy minute hits every server alike.
            for (server, running) in &servers {
                match run_once(*server, running, pairs, rate, secs).await {
                    Ok(r) => {
                        all.push(r.clone());
                        ok &= report(Ok(r));
                    }
                    Err(e) => ok &= report(Err(format!("{} at {rate} msg/s: {e}", server.name()))),
                }
            }
        }
    }
    // Fan-out: one sender keeping FANOUT_WINDOW messages in flight, each waiting for its ack,
    // in a group of `fanout_members`; deliveries per second, closed loop.
    for _ in 0..rounds {
        for (server, running) in &servers {
            match fanout_once(*server, running, fanout_members, secs).await {
                Ok(r) => {
                    all.push(r.clone());
                    ok &= report(Ok(r));
                }
                Err(e) => ok &= report(Err(format!("{} fan-out: {e}", server.name()))),
            }
        }
    }
    // Throughput: one search per server (each takes minutes; its steps print as they go).
    for (server, running) in servers.iter().filter(|_| slo.convs > 0) {
        let label = format!("{} over {} conversations", server.name(), slo.convs);
        let search = crate::scenario::slo_search(&label, slo.start_rate, slo.steps, slo.refine, 10_000, |rate| {
            run_once(*server, running, slo.convs, rate, slo.secs)
        })
        .await;
        match search {
            Ok(mut r) => {
                r.scenario = format!("versus_throughput_{}conv", slo.convs);
                all.push(r.clone());
                ok &= report(Ok(r));
            }
            Err(e) => ok &= report(Err(format!("{} throughput: {e}", server.name()))),
        }
    }
    summarize(&all);
    drop(servers);
    if pinned.is_some() {
        // The scenarios after this one share the machine again.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        pin_self(&format!("0-{}", cores - 1));
    }
    ok
}

/// The medians over rounds, one line per server and rate, on stderr.
fn summarize(all: &[Report]) {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        if v.is_empty() { 0.0 } else { v[v.len() / 2] }
    }
    eprintln!(
        "\nmedians: {:<24} {:>14} {:>9} {:>8} {:>8} {:>12} {:>10} {:>10}",
        "server", "run", "deliv/s", "p50_us", "p99_us", "cpu_us/msg", "frames/msg", "bytes/msg"
    );
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in all {
        let k = (r.scenario.clone(), r.server.clone().unwrap_or_default());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (scenario, server) in keys {
        let runs: Vec<&Report> =
            all.iter().filter(|r| r.scenario == scenario && r.server.as_deref() == Some(server.as_str())).collect();
        let m = |f: &dyn Fn(&Report) -> f64| median(runs.iter().map(|r| f(r)).collect());
        eprintln!(
            "medians: {:<24} {:>14} {:>9.0} {:>8.0} {:>8.0} {:>12.1} {:>10.2} {:>10.0}",
            server,
            scenario.trim_start_matches("versus_"),
            m(&|r| r.msgs_per_s),
            m(&|r| r.p50_us as f64),
            m(&|r| r.p99_us as f64),
            m(&|r| r.server_cpu_us_per_msg.unwrap_or(0.0)),
            m(&|r| r.server_frames_per_msg.unwrap_or(0.0)),
            m(&|r| r.server_bytes_per_msg.unwrap_or(0.0)),
        );
    }
}
