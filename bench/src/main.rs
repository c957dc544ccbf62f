//! `confab-bench`: load and latency benchmarks against a real confab (started in process on its
//! own threads unless `--addr` names a running one). Prints one JSON object per scenario on
//! stdout (SPEC §8's fields) and a table on stderr.
//!
//! `cargo run --release -p confab-bench -- --quick` runs every scenario for a few seconds.

mod client;
mod scenario;
mod setup;

use clap::Parser;
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
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
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
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("confab-bench: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(run_all(&args, &addr));
    drop(rt);
    drop(server);
    if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

async fn run_all(args: &Args, addr: &str) -> bool {
    let secs = if args.quick { 3.0 } else { 10.0 };
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    let mut ok = true;
    eprintln!(
        "{:<28} {:<8} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "scenario", "codec", "clients", "sent", "received", "lost", "p50_us", "p99_us", "p999_us", "max_us", "msgs/s"
    );
    for format in [Format::Json, Format::MsgPack] {
        if wanted("latency") {
            ok &= report(scenario::latency(addr, args.pairs, args.rate, secs, format).await);
        }
    }
    if wanted("throughput_1conv") {
        ok &= report(scenario::throughput(addr, 1, 2, 64, secs, Format::MsgPack).await);
    }
    if wanted("throughput_1000conv") {
        let convs = if args.quick { 200 } else { 1000 };
        ok &= report(scenario::throughput(addr, convs, 1, 8, secs, Format::MsgPack).await);
    }
    ok
}

fn report(r: Result<Report, String>) -> bool {
    match r {
        Ok(r) => {
            eprintln!(
                "{:<28} {:<8} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>9} {:>10.0}",
                r.scenario,
                r.codec,
                r.clients,
                r.sent,
                r.received,
                r.lost,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.max_us,
                r.msgs_per_s
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
