//! `confab-bench`: load and latency benchmarks against a real confab (started in process on its
//! own threads unless `--addr` names a running one). Prints one JSON object per scenario on
//! stdout (SPEC §8's fields) and a table on stderr.
//!
//! `cargo run --release -p confab-bench -- --quick` runs every scenario for a few seconds.

mod child;
mod client;
mod cluster;
mod density;
mod floor;
mod hold;
mod lossy;
mod plots;
mod scenario;
mod setup;
mod versus;
mod wire;

use clap::Parser;
use client::Target;
use confab_codec::Format;
use scenario::Report;

#[derive(Debug, Parser)]
#[command(name = "confab-bench", about = "Benchmarks for confab.")]
struct Args {
    /// A running server's plain HTTP address (its rate limits must allow the load and it must
    /// use this benchmark's JWT secret and API key); by default one is started in process.
    #[arg(long)]
    addr: Option<String>,
    /// A few seconds per scenario instead of ten.
    #[arg(long)]
    quick: bool,
    /// About a second per scenario, small sizes, and a failure if any message is lost: what CI
    /// runs so that the benchmark never rots.
    #[arg(long)]
    smoke: bool,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Messages per second in all for the latency scenario.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Sender/receiver pairs in the latency scenario.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Worker threads of the in-process server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// A running server's WebTransport address and certificate SHA-256 (hex), for the
    /// WebTransport scenarios with `--addr`: `ADDR,HASH`.
    #[arg(long)]
    h3: Option<String>,
    /// Internal (the lossy scenario): serve on this address inside a network namespace, print
    /// `READY http=ADDR h3=ADDR hash=HEX`, and exit when stdin closes.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Write SVG plots of this run into this folder (`docs/images` for the documentation).
    #[arg(long)]
    plots: Option<std::path::PathBuf>,
    /// Only plot: read the JSON lines of an earlier run from this file (with `--plots`).
    #[arg(long)]
    plots_from: Option<std::path::PathBuf>,
    /// Idle WebSocket connections in the density scenario (full runs).
    #[arg(long, default_value_t = 100_000)]
    density_ws: usize,
    /// Idle WebTransport sessions in the density scenario (full runs).
    #[arg(long, default_value_t = 20_000)]
    density_wt: usize,
    /// Rates (messages per second in all) of the versus scenario (confab against Socket.IO).
    #[arg(long, value_delimiter = ',', default_values_t = [1000.0, 5000.0])]
    versus_rates: Vec<f64>,
    /// Group size of the versus scenario's fan-out (one sender, the rest reading).
    #[arg(long, default_value_t = 1000)]
    versus_fanout: usize,
    /// 1:1 conversations of the versus scenario's throughput search (the highest rate with
    /// p99 under 10 ms); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    versus_convs: usize,
    /// Rounds of the versus scenario (medians are printed over them); 3 by default, 1 with
    /// `--quick` or `--smoke`.
    #[arg(long)]
    rounds: Option<usize>,
    /// Only the versus scenario's servers whose name contains one of these (`confab/full`,
    /// `confab/normal`, `confab/wt`, `confab/wss`, `confab/memory`, `socket.io/mem`,
    /// `socket.io/sqlite`), e.g. `--versus-servers confab`. `confab/memory` (the in-memory
    /// store, nothing durable: what durability costs) runs only when named so.
    #[arg(long, value_delimiter = ',')]
    versus_servers: Vec<String>,
    /// Round trips (ms) the lossy scenario runs at (at most 20), each over a wire of TUN
    /// devices whose relay holds every packet half of it each way and drops the loss rate.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 50])]
    rtts: Vec<u32>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(ip) = &args.serve {
        // As the real server does (its main), before the child's runtime starts.
        confab_server::memory::one_malloc_arena();
        return lossy::serve(ip, args.server_threads);
    }
    if let (Some(from), Some(dir)) = (&args.plots_from, &args.plots) {
        let reports: Vec<Report> = std::fs::read_to_string(from)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        return match plots::write(dir, &reports) {
            Ok(files) => {
                eprintln!("wrote {}", files.join(", "));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("confab-bench: plots: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let server = match &args.addr {
        Some(_) => None,
        None => match setup::LocalServer::start(args.server_threads) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("confab-bench: starting the server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let addr = args.addr.clone().or_else(|| server.as_ref().map(|s| s.addr.to_string())).unwrap_or_default();
    let h3 = match &args.h3 {
        Some(v) => v.split_once(',').map(|(a, h)| (a.to_string(), h.to_string())),
        None => server.as_ref().and_then(|s| s.h3.as_ref()).map(|(a, h)| (a.to_string(), h.clone())),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("confab-bench: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(run_all(&args, &addr, h3));
    drop(rt);
    drop(server);
    if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

async fn run_all(args: &Args, addr: &str, h3: Option<(String, String)>) -> bool {
    let secs = if args.smoke {
        1.0
    } else if args.quick {
        3.0
    } else {
        10.0
    };
    let (pairs, rate) = if args.smoke { (4, 200.0) } else { (args.pairs, args.rate) };
    let collected = std::cell::RefCell::new(Vec::new());
    let report = |r: Result<Report, String>| match r {
        Ok(r) if args.smoke && r.lost > 0 && !r.transport.ends_with("floor") => {
            report(Err(format!("{} over {} lost {} of {}", r.scenario, r.transport, r.lost, r.sent)))
        }
        Ok(r) => {
            collected.borrow_mut().push(r.clone());
            report(Ok(r))
        }
        r => report(r),
    };
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    let mut ok = true;
    eprintln!(
        "{:<28} {:<16} {:<8} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9} {:>8} {:>10}",
        "scenario",
        "transport",
        "codec",
        "clients",
        "sent",
        "received",
        "lost",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "msgs/s",
        "B/msg",
        "x floor",
        "cpu_us/msg",
    );
    let ws = Target::Ws(addr.to_string());
    let wt = h3.map(|(a, h)| Target::Wt(a, h));
    if wt.is_none() {
        eprintln!("(no WebTransport address: the webtransport scenarios are skipped; give --h3 ADDR,HASH)");
    }
    let mut latency_runs = vec![(ws.clone(), Format::Json), (ws.clone(), Format::MsgPack)];
    if let Some(Target::Wt(a, h)) = &wt {
        // WSS on the TLS listener (same port number as QUIC): the like-for-like comparison.
        let wss = Target::Wss(a.clone(), h.clone());
        latency_runs.push((wss.clone(), Format::Json));
        latency_runs.push((wss, Format::MsgPack));
    }
    if let Some(wt) = &wt {
        latency_runs.push((wt.clone(), Format::MsgPack));
        latency_runs.push((wt.clone(), Format::Json));
    }
    if wanted("latency") {
        let floor = match floor::Floor::start(args.server_threads) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("(no floor relay: {e})");
                None
            }
        };
        for (target, format) in &latency_runs {
            // The floor first, same transport, codec, pairs and rate: confab's overhead is the ratio.
            let base = match &floor {
                Some(f) => {
                    let r = scenario::floor_latency(f, target, pairs, rate, secs, *format).await;
                    let floor = r.as_ref().ok().map(|r| (r.p50_us, r.p99_us));
                    ok &= report(r);
                    floor
                }
                None => None,
            };
            let mut r = scenario::latency(addr, target, pairs, rate, secs, *format).await;
            if let (Ok(r), Some((p50, p99))) = (&mut r, base) {
                r.floor_p50_us = Some(p50);
                r.floor_p99_us = Some(p99);
                r.p50_vs_floor = Some(r.p50_us as f64 / p50.max(1) as f64);
            }
            ok &= report(r);
        }
    }
    if wanted("versus") {
        // confab and Socket.IO side by side, each server in a child process on a core of its own.
        let rounds = args.rounds.unwrap_or(if args.smoke || args.quick { 1 } else { 3 });
        let rates: &[f64] = if args.smoke { &[200.0] } else { &args.versus_rates };
        let fanout = if args.smoke { 20 } else { args.versus_fanout };
        let slo = if args.smoke {
            versus::Slo { convs: 10, start_rate: 200.0, steps: 1, refine: 0, secs }
        } else {
            versus::Slo {
                convs: args.versus_convs,
                start_rate: 2000.0,
                steps: 10,
                refine: 2,
                secs: (secs / 2.0).max(2.0),
            }
        };
        ok &= versus::run_all(
            rates,
            pairs,
            fanout,
            slo,
            secs,
            rounds,
            args.server_threads,
            &args.versus_servers,
            &report,
        )
        .await;
    }
    if wanted("cluster") {
        // Two nodes on PostgreSQL and NATS: 1:1 on one node beside 1:1 across the two.
        let rounds = args.rounds.unwrap_or(if args.smoke || args.quick { 1 } else { 3 });
        let load = cluster::Load { pairs, rate, secs, rounds, threads: args.server_threads };
        ok &= cluster::run_all(load, &report).await;
    }
    if wanted("lossy") {
        let losses: &[u32] = if args.smoke { &[1] } else { &[0, 1, 3] };
        ok &= lossy::run_all(secs, args.server_threads, losses, &args.rtts, &report).await;
    }
    if wanted("density") {
        // Idle connections and the server's memory for each (the server in a child process).
        let (ws_n, wt_n) = if args.smoke {
            (200, 50)
        } else if args.quick {
            (5_000, 1_000)
        } else {
            (args.density_ws, args.density_wt)
        };
        ok &= report(density::run(ws_n, true, args.server_threads).await);
        ok &= report(density::run(wt_n, false, args.server_threads).await);
    }
    let mut transports = vec![ws];
    transports.extend(wt);
    // Throughput as issue 6 defines it: the highest rate with p99 under 10 ms and nothing lost
    // (a search over open-loop rates), one conversation and 1,000 (fewer in short runs).
    let (steps, refine, start) = if args.smoke { (1, 0, 1000.0) } else { (12, 2, 5000.0) };
    let slo_secs = if args.smoke { secs } else { (secs / 2.0).max(2.0) };
    let many = if args.smoke {
        10
    } else if args.quick {
        200
    } else {
        1000
    };
    for target in &transports {
        if wanted("throughput_1conv") {
            ok &= report(
                scenario::throughput_slo(addr, target, 1, start, steps, refine, 10_000, slo_secs, Format::MsgPack)
                    .await,
            );
        }
        if wanted("throughput_1000conv") {
            ok &= report(
                scenario::throughput_slo(addr, target, many, start, steps, refine, 10_000, slo_secs, Format::MsgPack)
                    .await,
            );
        }
        // Saturation: closed loop, every sender keeping a window of messages in flight (each
        // waiting for its durable ack), as fast as the server goes; latency is then mostly the
        // benchmark's own queue.
        if wanted("saturation_1conv") {
            ok &= report(scenario::throughput(addr, target, 1, 2, 1, 64, secs, Format::MsgPack, None).await);
        }
        if wanted("saturation_1000conv") {
            ok &= report(scenario::throughput(addr, target, many, 1, 1, 8, secs, Format::MsgPack, None).await);
        }
        // Fan-out: one sender (8 messages in flight) in a group of 100 and of 1,000.
        let groups: &[usize] = if args.smoke { &[20] } else { &[100, 1000] };
        for &members in groups {
            if wanted(&format!("fanout_{members}")) || (args.smoke && wanted("fanout")) {
                ok &=
                    report(scenario::throughput(addr, target, 1, 1, members - 1, 8, secs, Format::MsgPack, None).await);
            }
        }
    }
    if let Some(dir) = &args.plots {
        match plots::write(dir, &collected.borrow()) {
            Ok(files) => eprintln!("wrote {}", files.join(", ")),
            Err(e) => {
                eprintln!("plots: {e}");
                ok = false;
            }
        }
    }
    ok
}

fn report(r: Result<Report, String>) -> bool {
    match r {
        Ok(r) => {
            eprintln!(
                "{:<28} {:<16} {:<8} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>9} {:>10.0} {:>9} {:>8} {:>10}",
                r.scenario,
                r.server.as_deref().unwrap_or(&r.transport),
                r.codec,
                r.clients,
                r.sent,
                r.received,
                r.lost,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.max_us,
                r.msgs_per_s,
                r.frame_bytes_down.or(r.server_bytes_per_msg).map(|b| format!("{b:.0}")).unwrap_or_default(),
                r.p50_vs_floor.map(|x| format!("{x:.2}")).unwrap_or_default(),
                r.server_cpu_us_per_msg.map(|x| format!("{x:.1}")).unwrap_or_default(),
            );
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            true
        }
        Err(e) => {
            eprintln!("scenario failed: {e}");
            false
        }
    }
}
