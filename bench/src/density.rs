//! Scenario 4, density: how many idle connections one confab holds, and what each costs. The
//! server runs in a child process (this binary's `--serve` mode) so that its RSS is its own;
//! the benchmark opens idle WebSocket connections (from 127.0.0.1, .2, .3, ... to get past one
//! source address's port range) or WebTransport sessions (control stream open, nothing sent),
//! each its own user, and reads the child's RSS before and after.

use crate::child::ChildServer;
use crate::client::{Rx, Target, Tx, connect};
use crate::scenario::Report;
use crate::setup::token;
use std::time::{Duration, Instant};

/// Connections per source address (the ephemeral port range is about 28,000).
const PER_SOURCE: usize = 20_000;
/// Connections opened at once.
const PARALLEL: usize = 64;

fn start(threads: usize) -> Result<ChildServer, String> {
    // `CONFAB_BENCH_WRAP="valgrind --tool=dhat"`: the server under a profiler, to see where
    // an idle connection's memory goes (benchmarks.md, issue 19).
    let wrap = std::env::var("CONFAB_BENCH_WRAP").unwrap_or_default();
    let wrapper: Vec<&str> = wrap.split_whitespace().collect();
    // Under a wrapper the child is told its arena count, so that it does not start itself again
    // (`confab_server::memory`) outside the profiler.
    let env: &[(&str, &str)] = if wrapper.is_empty() { &[] } else { &[("MALLOC_ARENA_MAX", "1")] };
    let mut server = ChildServer::start_with_env(&wrapper, "0.0.0.0", threads, env)?;
    if !wrapper.is_empty() {
        server.patience = Duration::from_secs(600);
    }
    // Bound to every address; reached over loopback.
    server.http = server.http.replace("0.0.0.0", "127.0.0.1");
    server.h3 = server.h3.replace("[::]", "127.0.0.1").replace("0.0.0.0", "127.0.0.1");
    Ok(server)
}

/// The child's resident set, KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

/// Opens `n` idle connections of `transport` and reports the server's memory per connection.
pub(crate) async fn run(n: usize, websocket: bool, threads: usize) -> Result<Report, String> {
    let server = tokio::task::spawn_blocking(move || start(threads)).await.map_err(|e| e.to_string())??;
    let pid = server.pid();
    // Warm-up: one connection, so that the first connection's one-time costs are not counted.
    let target =
        if websocket { Target::Ws(server.http.clone()) } else { Target::Wt(server.h3.clone(), server.hash.clone()) };
    let warm = connect(&target, &token("density-warmup"), confab_codec::Format::MsgPack).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut conns: Vec<(Tx, Rx)> = Vec::with_capacity(n);
    let mut failed = 0usize;
    let tag = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + PARALLEL).min(n))
            .map(|k| {
                let target = match &target {
                    // Past one address's ports, the next loopback address.
                    Target::Ws(_) => {
                        let port = server.http.rsplit(':').next().unwrap_or_default();
                        Target::Ws(format!("127.0.0.{}:{port}", 1 + k / PER_SOURCE))
                    }
                    t => t.clone(),
                };
                let user = format!("dz{tag}u{k}");
                tokio::spawn(async move { connect(&target, &token(&user), confab_codec::Format::MsgPack).await })
            })
            .collect();
        for b in batch {
            match b.await {
                Ok(Ok(c)) => conns.push(c),
                _ => failed += 1,
            }
        }
        i += PARALLEL;
    }
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    let open = conns.len();
    drop((conns, warm));
    drop(server);
    let per = (after.saturating_sub(before)) as f64 / open.max(1) as f64;
    let mut r = crate::scenario::finish(
        "density_idle".into(),
        target.name(),
        confab_codec::Format::MsgPack,
        open,
        (n as u64, open as u64),
        &hdrhistogram::Histogram::new(3).map_err(|e| e.to_string())?,
        took,
        None,
    );
    r.msgs_per_s = open as f64 / took.max(1e-9);
    r.rss_before_kib = Some(before);
    r.rss_after_kib = Some(after);
    r.kib_per_connection = Some((per * 10.0).round() / 10.0);
    if failed > 0 {
        eprintln!("density: {failed} of {n} connections failed");
    }
    Ok(r)
}
