//! The cluster scenario (issue 15): three confab nodes, each a child process, on one
//! PostgreSQL database and a private `nats-server`, on loopback. In the same run it measures
//! 1:1 latency with both users on one node (the single-node figure on the same store) and with
//! the sender on one node and the receiver on another; the third node serves nobody, so NATS
//! must carry it nothing. Beside each figure it reports per message: the nodes' CPU,
//! PostgreSQL's and NATS's CPU, the store batches (one PostgreSQL statement, one round trip
//! each), the transactions PostgreSQL committed, the WAL bytes, and the NATS messages.
//!
//! It needs `nats-server` on the PATH and a PostgreSQL it may create a database in
//! (`CONFAB_TEST_POSTGRES`, else the local one). Where either is missing it says so and skips.

use crate::child::{ChildServer, CpuMeter, NamedCpuMeter};
use crate::client::Target;
use crate::scenario::{Report, latency_between};
use confab_codec::Format;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Nats(Child);

impl Nats {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn start() -> Result<(Nats, String), String> {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("nats-server: {e}"))?;
        let nats = Nats(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((nats, format!("nats://127.0.0.1:{port}")))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A counter of a node's `/metrics`.
async fn metric(http: &str, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else { return 0.0 };
    let req = "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0.0;
    }
    let mut body = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The counters a case reads before and after, over every node: NATS publications, NATS
/// copies received, and the store's batches.
async fn counters(nodes: &[&ChildServer]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for n in nodes {
        out[0] += metric(&n.http, "confab_broker_published_total").await;
        out[1] += metric(&n.http, "confab_broker_received_total").await;
        out[2] += metric(&n.http, "confab_store_batch_size_count").await;
    }
    out
}

/// What the scenario runs: pairs, their rate in all, seconds per case, rounds of both cases,
/// and the nodes' runtime threads (when they are not pinned).
pub(crate) struct Load {
    pub(crate) pairs: usize,
    pub(crate) rate: f64,
    pub(crate) secs: f64,
    pub(crate) rounds: usize,
    pub(crate) threads: usize,
}

pub(crate) async fn run_all(load: Load, report: &dyn Fn(Result<Report, String>) -> bool) -> bool {
    let (nats, broker) = match Nats::start() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("(cluster: skipped, no nats-server: {e})");
            return true;
        }
    };
    let server = confab_server::postgres::test_server_url();
    let database = match confab_server::postgres::create_scratch_database(&server, "confab_bench").await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("(cluster: skipped, no PostgreSQL at {server}: {e})");
            return true;
        }
    };
    let ok = run_on(&database, (&broker, nats.pid()), &load, report).await;
    if let Err(e) = confab_server::postgres::drop_scratch_database(&server, &database).await {
        eprintln!("(cluster: dropping the scratch database: {e})");
    }
    ok
}

/// PostgreSQL's counters for a case: the WAL position and committed transactions (after a
/// pause, so that the backends' statistics are flushed).
async fn pg_counters(database: &str) -> Option<(i64, i64)> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    confab_server::postgres::wal_and_commits(database).await.map_err(|e| eprintln!("(cluster: {e})")).ok()
}

async fn run_on(
    database: &str,
    (broker, nats_pid): (&str, u32),
    load: &Load,
    report: &dyn Fn(Result<Report, String>) -> bool,
) -> bool {
    let Load { pairs, rate, secs, rounds, threads } = *load;
    let env = [("CONFAB_STORE", database), ("CONFAB_BROKER", broker)];
    // The nodes on the servers' core, the load generator on the others (as in `versus`);
    // PostgreSQL and NATS float.
    let pinned = crate::versus::pinning();
    let wrapper: Vec<&str> = match &pinned {
        Some((server, clients)) => {
            crate::versus::pin_self(clients);
            eprintln!("(cluster: the nodes pinned to core {server}, the load generator to {clients})");
            vec!["taskset", "-c", server]
        }
        None => Vec::new(),
    };
    let threads = if pinned.is_some() { 1 } else { threads };
    let start = || ChildServer::start_with_env(&wrapper, "127.0.0.1", threads, &env);
    let nodes = match (0..3).map(|_| start()).collect::<Result<Vec<_>, _>>() {
        Ok(nodes) => nodes,
        Err(e) => return report(Err(format!("cluster: starting a node: {e}"))),
    };
    let all: Vec<&ChildServer> = nodes.iter().collect();
    let (a, b) = (&nodes[0], &nodes[1]);
    let target = |n: &ChildServer| Target::Ws(n.http.clone());
    let mut ok = true;
    for _ in 0..rounds {
        for (name, rx) in [("cluster_1to1_one_node", a), ("cluster_1to1_two_nodes", b)] {
            let before = counters(&all).await;
            let pg_before = pg_counters(database).await;
            let cpu: Vec<CpuMeter> = all.iter().map(|n| CpuMeter::start(n.pid())).collect();
            let (pg_cpu, nats_cpu) = (NamedCpuMeter::start("postgres"), CpuMeter::start(nats_pid));
            let r = latency_between(&a.http, &target(a), &target(rx), pairs, rate, secs, Format::Json).await;
            let after = counters(&all).await;
            let r = r.map(|mut r| {
                let n = r.received.max(1);
                r.scenario = name.to_string();
                r.server = Some("confab/postgres+nats".into());
                r.server_cpu_us_per_msg = Some(cpu.iter().map(|c| c.per(n).unwrap_or(0.0)).sum());
                r.postgres_cpu_us_per_msg = Some(pg_cpu.per(n));
                r.nats_cpu_us_per_msg = nats_cpu.per(n);
                let per = |i: usize| Some((after[i] - before[i]) / n as f64);
                (r.nats_published_per_msg, r.nats_copies_per_msg, r.store_batches_per_msg) = (per(0), per(1), per(2));
                r
            });
            let pg_after = pg_counters(database).await;
            let r = r.map(|mut r| {
                if let (Some((wal0, tx0)), Some((wal1, tx1))) = (pg_before, pg_after) {
                    let n = r.received.max(1) as f64;
                    r.wal_bytes_per_msg = Some((wal1 - wal0) as f64 / n);
                    r.pg_xacts_per_msg = Some((tx1 - tx0) as f64 / n);
                }
                r
            });
            ok &= report(r);
        }
    }
    ok
}
