//! `confab-client-bench`: what the native client (`confab-client`, issue 14) costs the phone it
//! runs on. The server and bob, who sends, run in a child process (this binary's `--serve`);
//! this process holds alice's client alone, so its CPU time (every thread's, from
//! `/proc/self/task/*/schedstat`) and its allocations (`stats_alloc` as the global allocator)
//! are the client's, the app's reading of events included:
//! - **receive**: CPU time, allocations and bytes allocated per message received, per transport;
//! - **memory**: heap bytes per joined conversation (live bytes before and after joining K);
//! - **migration**: the time from `network_changed()` to the next delivered message, against a
//!   full reconnect (`pause()` + `resume()`: a new QUIC connection, the joins, the replay) and
//!   against a WebSocket's `network_changed()` (which reconnects).
//!
//! `cargo run --release -p confab-bench --bin confab-client-bench [-- --messages N ...]`; one
//! JSON object per result on stdout, a table on stderr.

#[allow(dead_code, unreachable_pub)]
#[path = "../setup.rs"]
mod setup;

#[allow(dead_code, unreachable_pub)]
#[path = "../delay.rs"]
mod delay;

#[path = "../hold.rs"]
mod hold;

#[allow(dead_code, unreachable_pub)]
#[path = "../child.rs"]
mod child;

use clap::Parser;
use confab_client::{Client, Config, Event, TokenSource, TransportChoice, parse_cert_hash};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::io::Write;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Parser)]
#[command(name = "confab-client-bench", about = "What the native client costs: CPU, allocations, memory, migration.")]
struct Args {
    /// Messages received per transport in the receive scenario.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Messages a second that bob sends in the receive scenario (0: as fast as they go). A
    /// client's cost per message depends on it: at a low rate each message wakes it alone.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Conversations joined in the memory scenario (126 or fewer: each on a stream of its own).
    #[arg(long, default_value_t = 100)]
    conversations: usize,
    /// Rounds of each migration case.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// A round trip added between the client and the server for the migration cases, in
    /// milliseconds (a user-space delay line: half each way), as on a mobile network.
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Pins the child (the server and the sender) to this CPU with `taskset`; run this
    /// benchmark itself under `taskset -c OTHER` so the client has a core of its own.
    #[arg(long)]
    server_cpu: Option<u32>,
    /// Internal: serve confab here and print `READY https=ADDR hash=HEX` (the child process).
    #[arg(long, hide = true)]
    serve: Option<String>,
}

/// This process's CPU time so far: every thread's.
fn process_cpu() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// Heap bytes in use.
fn live_bytes() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

/// The server and bob in a child process (this binary's `--serve`); bob is told what to send
/// on its standard input.
struct Child {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    https: String,
    hash: String,
}

impl Child {
    fn start(conversations: usize, cpu: Option<u32>) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let cpu = cpu.map(|c| c.to_string());
        let wrapper: Vec<&str> = cpu.as_deref().map(|c| vec!["taskset", "-c", c]).unwrap_or_default();
        let mut child = child::wrapped(&wrapper, exe.as_os_str())
            .args(["--serve", "127.0.0.1", "--conversations", &conversations.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let line = child::first_line(&mut child)?;
        let field = |k: &str| {
            line.split_whitespace().find_map(|p| p.strip_prefix(k)).map(str::to_owned).ok_or(format!("{line:?}"))
        };
        Ok(Child { https: field("https=")?, hash: field("hash=")?, child, stdin })
    }

    /// Bob sends `n` messages (`send N`) or one text (`say TEXT`) into `c0`.
    fn tell(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}").map_err(|e| e.to_string())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"quit\n");
        let _ = self.child.wait();
    }
}

fn config(https: &str, hash: &str, user: &str, transport: TransportChoice) -> Result<Config, String> {
    let mut c = Config::new(format!("https://{https}"), TokenSource::Fixed(setup::token(user)));
    c.cert_sha256 = Some(parse_cert_hash(hash).map_err(|e| e.to_string())?);
    c.transport = transport;
    Ok(c)
}

/// The child: confab, the conversations, and bob over WebSocket, until `quit` or the end of input.
fn serve(ip: &str, conversations: usize) -> Result<(), String> {
    let server = setup::LocalServer::start_on(ip, 2)?;
    let (h3, hash) = server.h3.clone().ok_or("no WebTransport listener")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let http = server.addr.to_string();
        let members = ["alice".to_string(), "bob".to_string()];
        setup::create_conversation(&http, "c0", &members).await?;
        for i in 0..conversations {
            setup::create_conversation(&http, &format!("m{i}"), &members[..1]).await?;
        }
        let (bob, mut events) = Client::connect(config(&h3.to_string(), &hash, "bob", TransportChoice::WebSocket)?)
            .await
            .map_err(|e| e.to_string())?;
        bob.join("c0").await.map_err(|e| e.to_string())?;
        joined(&mut events, 1).await?;
        // His own events are read, or his client would wait for him.
        tokio::spawn(async move { while events.next().await.is_some() {} });
        println!("READY https={h3} hash={hash}");
        let _ = std::io::stdout().flush();
        let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
        let text = "x".repeat(100);
        while let Some(line) = lines.recv().await {
            match line.split_once(' ') {
                Some(("send", n_rate)) => {
                    // `send N RATE`: N messages at RATE a second (0: as fast as they go).
                    let (n, rate) = n_rate.split_once(' ').unwrap_or((n_rate, "0"));
                    let rate: f64 = rate.parse().unwrap_or(0.0);
                    let started = tokio::time::Instant::now();
                    for i in 0..n.parse::<usize>().unwrap_or(0) {
                        if rate > 0.0 {
                            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
                        }
                        bob.send("c0", &format!("{i} {text}")).await.map_err(|e| e.to_string())?;
                    }
                }
                Some(("say", t)) => {
                    bob.send("c0", t).await.map_err(|e| e.to_string())?;
                }
                _ => break,
            }
        }
        bob.close().await;
        Ok::<(), String>(())
    })?;
    drop(server);
    Ok(())
}

async fn next_message(events: &mut confab_client::Events, wait: Duration) -> Result<serde_json::Value, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Event::Message { message })) => return Ok(message),
            Ok(Some(Event::Error { code, message, .. })) => return Err(format!("{code}: {message}")),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the client stopped".into()),
            Err(_) => return Err(format!("no message within {wait:?}")),
        }
    }
}

async fn joined(events: &mut confab_client::Events, n: usize) -> Result<(), String> {
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(Event::Joined { .. })) => seen += 1,
            Ok(Some(Event::Error { code, message, .. })) => return Err(format!("{code}: {message}")),
            Ok(Some(_)) => {}
            _ => return Err(format!("{seen} of {n} joined")),
        }
    }
    Ok(())
}

struct Receive {
    cpu_us: f64,
    allocs: f64,
    bytes: f64,
    msgs_per_s: f64,
}

async fn receive(child: &mut Child, transport: TransportChoice, n: usize, rate: f64) -> Result<Receive, String> {
    let (alice, mut events) =
        Client::connect(config(&child.https, &child.hash, "alice", transport)?).await.map_err(|e| e.to_string())?;
    alice.join("c0").await.map_err(|e| e.to_string())?;
    joined(&mut events, 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let cpu0 = process_cpu();
    let region = Region::new(GLOBAL);
    child.tell(&format!("send {n} {rate}"))?;
    for _ in 0..n {
        next_message(&mut events, Duration::from_secs(30)).await?;
    }
    let allocated = region.change();
    let cpu = process_cpu() - cpu0;
    let wall = started.elapsed();
    alice.close().await;
    let per = |x: f64| x / n as f64;
    Ok(Receive {
        cpu_us: per(cpu.as_secs_f64() * 1e6),
        allocs: per((allocated.allocations + allocated.reallocations) as f64),
        bytes: per(allocated.bytes_allocated as f64 + allocated.bytes_reallocated.max(0) as f64),
        msgs_per_s: n as f64 / wall.as_secs_f64(),
    })
}

async fn memory(child: &Child, transport: TransportChoice, k: usize) -> Result<f64, String> {
    let (alice, mut events) =
        Client::connect(config(&child.https, &child.hash, "alice", transport)?).await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = live_bytes();
    for i in 0..k {
        alice.join(&format!("m{i}")).await.map_err(|e| e.to_string())?;
    }
    joined(&mut events, k).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = live_bytes();
    alice.close().await;
    Ok((after - before) as f64 / k as f64)
}

/// Milliseconds from the act to alice's receiving the message bob sends right after it;
/// alice reaches the server at `via`.
async fn migration(
    child: &mut Child,
    via: &str,
    transport: TransportChoice,
    reconnect: bool,
    rounds: usize,
) -> Result<Vec<f64>, String> {
    let mut c = config(via, &child.hash, "alice", transport)?;
    c.keepalive = Duration::from_secs(30);
    let (alice, mut events) = Client::connect(c).await.map_err(|e| e.to_string())?;
    alice.join("c0").await.map_err(|e| e.to_string())?;
    joined(&mut events, 1).await?;
    let mut took = Vec::new();
    for i in 0..rounds {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = format!("round-{i}");
        let t0 = Instant::now();
        if reconnect {
            alice.pause().await.map_err(|e| e.to_string())?;
            alice.resume().await.map_err(|e| e.to_string())?;
        } else {
            alice.network_changed().await.map_err(|e| e.to_string())?;
        }
        child.tell(&format!("say {text}"))?;
        while next_message(&mut events, Duration::from_secs(30)).await?["content"] != text.as_str() {}
        took.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    alice.close().await;
    Ok(took)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let outcome = match &args.serve {
        Some(ip) => serve(ip, args.conversations),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run(&args))),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confab-client-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let mut child = Child::start(args.conversations, args.server_cpu)?;
    let kinds = [("webtransport", TransportChoice::WebTransport), ("websocket", TransportChoice::WebSocket)];
    eprintln!(
        "{:<14} {:>12} {:>12} {:>12} {:>10} {:>16}",
        "transport", "CPU µs/msg", "allocs/msg", "bytes/msg", "msgs/s", "heap B/conv"
    );
    for (name, t) in kinds {
        let r = receive(&mut child, t, args.messages, args.rate).await?;
        let per_conv = memory(&child, t, args.conversations).await?;
        eprintln!(
            "{name:<14} {:>12.1} {:>12.1} {:>12.0} {:>10.0} {:>16.0}",
            r.cpu_us, r.allocs, r.bytes, r.msgs_per_s, per_conv
        );
        println!(
            "{}",
            json!({"scenario": "client-receive", "transport": name, "messages": args.messages, "rate": args.rate,
                   "cpu_us_per_msg": r.cpu_us, "allocs_per_msg": r.allocs, "alloc_bytes_per_msg": r.bytes,
                   "msgs_per_s": r.msgs_per_s, "conversations": args.conversations,
                   "heap_bytes_per_conversation": per_conv})
        );
    }
    let cases = [
        ("webtransport network_changed (migration)", TransportChoice::WebTransport, false),
        ("webtransport pause+resume (reconnect)", TransportChoice::WebTransport, true),
        ("websocket network_changed (reconnect)", TransportChoice::WebSocket, false),
    ];
    eprintln!("{:<42} {:>9} {:>9} {:>9}", "to the next message", "p50 ms", "p90 ms", "max ms");
    let server: std::net::SocketAddr = child.https.parse().map_err(|e| format!("{e}"))?;
    let line = match args.rtt_ms {
        0 => None,
        rtt => Some(delay::DelayLine::start(server, server, Duration::from_millis(rtt) / 2).await?),
    };
    for (name, t, reconnect) in cases {
        let via = match (&line, t) {
            (None, _) => child.https.clone(),
            (Some(l), TransportChoice::WebSocket) => l.tcp.to_string(),
            (Some(l), _) => l.udp.to_string(),
        };
        let took = migration(&mut child, &via, t, reconnect, args.rounds).await?;
        let (p50, p90, max) = (quantile(&took, 0.5), quantile(&took, 0.9), quantile(&took, 1.0));
        eprintln!("{name:<42} {p50:>9.2} {p90:>9.2} {max:>9.2}");
        println!(
            "{}",
            json!({"scenario": "client-migration", "case": name, "rounds": args.rounds, "rtt_ms": args.rtt_ms,
                   "p50_ms": p50, "p90_ms": p90, "max_ms": max})
        );
    }
    Ok(())
}
