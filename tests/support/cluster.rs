//! Cluster mode for the end-to-end tests: a private `nats-server` on a free port (so that a
//! test may kill it) and nodes on one scratch PostgreSQL database.

use super::Server;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private NATS server; killed when dropped.
pub struct Nats {
    child: Option<Child>,
    port: u16,
}

impl Nats {
    /// `None` (with a message) where `nats-server` is not installed; under `CI=true` a missing
    /// one fails the test instead.
    pub fn start() -> Option<Nats> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut n = Nats { child: None, port };
        if n.spawn() {
            return Some(n);
        }
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "nats-server is needed under CI=true");
        eprintln!("skipped: no nats-server on PATH");
        None
    }

    pub fn spawn(&mut self) -> bool {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Where it listens, `HOST:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes on one database and one NATS.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub nats: Nats,
    database: String,
}

impl Cluster {
    pub fn start(n: usize) -> Option<Cluster> {
        Cluster::start_with(n, &[])
    }

    /// Another node on the cluster's database, reaching NATS at `broker` (a proxy, say).
    pub fn start_node(&self, broker: &str) -> Server {
        Server::start(&["--store", &self.database, "--broker", broker])
    }

    /// Another node reaching the cluster's PostgreSQL through `proxy` (which it may cut).
    pub fn start_node_through(&self, proxy: &super::proxy::Proxy) -> Server {
        // postgres://USER@HOST:PORT/DB: the proxy takes HOST:PORT's place.
        let (head, name) = self.database.rsplit_once('/').unwrap();
        let (user, _) = head.rsplit_once('@').unwrap();
        Server::start(&["--store", &format!("{user}@{}/{name}", proxy.addr), "--broker", &self.nats.url()])
    }

    /// Where the cluster's PostgreSQL listens, `HOST:PORT` (for a proxy).
    pub fn postgres_addr(&self) -> String {
        let (head, _) = self.database.rsplit_once('/').unwrap();
        head.rsplit_once('@').unwrap().1.to_owned()
    }

    /// `n` nodes, each started with `extra` flags too.
    pub fn start_with(n: usize, extra: &[&str]) -> Option<Cluster> {
        // The database first: in the suite's run on PostgreSQL it is refused, and no NATS
        // server is started only to be killed.
        let database = super::scratch_postgres()?;
        let Some(nats) = Nats::start() else {
            super::drop_postgres(&database);
            return None;
        };
        let broker = nats.url();
        let mut args = vec!["--store", &database, "--broker", &broker];
        args.extend_from_slice(extra);
        let nodes = (0..n).map(|_| Server::start(&args)).collect();
        Some(Cluster { nodes, nats, database })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        super::drop_postgres(&self.database);
    }
}
