//! confab-server: the `confab` binary's library. A realtime chat server whose session layer
//! (`confab-core`) serves every transport (WebTransport over QUIC, WebSocket) through one
//! narrow link, with a durable embedded store behind an interface. This crate holds what
//! touches the world: sockets, TLS, HTTP, the configuration, and the engine adapters.
//!
//! [`run`] starts everything on the configured listeners and returns when `shutdown` fires and
//! the connections have been told and drained; `main.rs` only parses the configuration, sets up
//! logging and calls it, so tests and benchmarks can start a server in process.
//!
//! # Layout
//! - `config`: flags and environment, checked at start.
//! - `cli`: the operator's helpers (`confab token`, `config check`, `config example`, `version`).
//! - `transport`: the WebSocket and WebTransport transports.
//! - `serve`: accept loops for the TCP listeners, with handshake timeouts.
//! - `tls`: PEM certificates, or a generated development certificate.
//! - `sqlite`: the embedded SQLite store with group commit.
//! - `postgres`: cluster mode's PostgreSQL store, shared by every node.
//! - `nats`: cluster mode's broker between nodes, on core NATS.
//! - `app`: what handlers and transports share: the node and the connection settings.
//! - `api`: client REST, the server API, health, metrics, dev tokens, the admin console.
//! - `trends`: the admin console's figures over the last minutes.
//!
//! The core's modules are re-exported under their names (`session`, `hub`, `store`, ...).

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod serve;
pub mod sqlite;
pub mod tls;
pub mod transport;
pub mod trends;

pub use confab_core::{auth, broker, clock, error, hub, limits, link, metrics, node, presence, session, store};

use crate::app::{App, Scheme, Settings};
use crate::auth::Auth;
use crate::config::Config;
use crate::node::{Node, Parts, Services};
use crate::postgres::{PgPresence, PgStore};
use crate::sqlite::SqliteStore;
use crate::store::{CommitSink, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a dev certificate's age is checked while the server runs.
const DEV_CERT_CHECK: Duration = Duration::from_secs(3600);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Broker(String),
    #[error("jwt: {0}")]
    Auth(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// A started server: where it listens, and the task that runs until shutdown completes.
#[derive(Debug)]
pub struct Running {
    pub http: Option<std::net::SocketAddr>,
    pub https: Option<std::net::SocketAddr>,
    /// The QUIC (WebTransport) addresses, on the HTTPS port: the main one first.
    pub h3: Vec<std::net::SocketAddr>,
    /// SHA-256 of the TLS certificate (hex), when there is an HTTPS listener.
    pub cert_sha256: Option<String>,
    pub cert_path: Option<std::path::PathBuf>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the server has shut down (after `shutdown` fired).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs the server until `shutdown` fires, printing where it listens (SPEC §8's
/// `listening http=ADDR` lines) and, in dev mode, how to get a token.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let (dev, dev_exposed) = (config.dev, config.dev_exposed);
    let api_key = config.api_key.clone();
    let running = start(config, shutdown).await?;
    if let Some(a) = running.http {
        println!("listening http={a}");
    }
    if let Some(a) = running.https {
        println!("listening https={a}");
    }
    if let Some(a) = running.h3.first() {
        println!("listening h3={a}");
    }
    if let (Some(hash), Some(path)) = (&running.cert_sha256, &running.cert_path) {
        println!("certificate sha256={hash} ({})", path.display());
    }
    if dev {
        let base = match (running.http, running.https) {
            (Some(a), _) => format!("http://{a}"),
            (None, Some(a)) => format!("https://{a}"),
            (None, None) => String::new(),
        };
        println!(
            "DEV MODE: dev JWT secret and API key {api_key:?}; get a token: curl '{base}/dev/token?user_id=alice'"
        );
        if dev_exposed {
            let warning = "DEV MODE ON AN ADDRESS OTHERS CAN REACH: anyone who reaches it can get a token for any user \
                           (/dev/token); the API key above is random. Never run a public server like this.";
            eprintln!("WARNING: {warning}");
            tracing::warn!("{warning}");
        }
    }
    running.wait().await;
    Ok(())
}

/// Starts the server and returns once it listens. When `shutdown` fires it stops accepting,
/// tells every client (1001), waits for them with a deadline, and the store finishes its
/// last batch; [`Running::wait`] returns then.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let (store, sync, cluster) = (config.store.clone(), config.sync, config.broker.is_some());
    let l = &config.limits;
    let message_limits = [l.messages_per_minute, l.messages_per_hour, l.messages_per_day];
    start_on(config, shutdown, async move |sink, metrics| match store {
        config::StoreConfig::Sqlite(dir) => Ok(Engines::store(Arc::new(SqliteStore::open(&dir, sync, sink, metrics)?))),
        config::StoreConfig::Postgres(url) => {
            // With other nodes, the message limits count in PostgreSQL too (every node's
            // messages in one count, charged in the append's transaction).
            let limits = cluster.then_some(postgres::MessageLimits { per: message_limits });
            let store = PgStore::open_with(&url, sink, metrics, limits).await?;
            // With other nodes, presence counts in PostgreSQL too; a node alone counts its own.
            let presence = if cluster { Some(Arc::new(PgPresence::start(&store).await?)) } else { None };
            Ok(Engines { store: Arc::new(store), presence })
        }
    })
    .await
}

/// The engines a node runs on: its store and, in cluster mode, presence in that store.
struct Engines {
    store: Arc<dyn Store>,
    presence: Option<Arc<PgPresence>>,
}

impl Engines {
    fn store(store: Arc<dyn Store>) -> Self {
        Self { store, presence: None }
    }
}

/// [`start`] on a store that `open` makes, given the commit sink the fan-out listens on: the
/// seam for a store other than the embedded one (the benchmark's in-memory baseline, which
/// tells what durability costs; docs/benchmarks.md).
pub async fn start_with_store(
    config: Config,
    shutdown: CancellationToken,
    open: impl AsyncFnOnce(Arc<dyn CommitSink>, Arc<metrics::Metrics>) -> Result<Arc<dyn Store>, StoreError>,
) -> Result<Running, StartError> {
    start_on(config, shutdown, async move |sink, metrics| Ok(Engines::store(open(sink, metrics).await?))).await
}

async fn start_on(
    config: Config,
    shutdown: CancellationToken,
    open: impl AsyncFnOnce(Arc<dyn CommitSink>, Arc<metrics::Metrics>) -> Result<Engines, StoreError>,
) -> Result<Running, StartError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let (limits, clock) = (config.limits.clone(), clock::Clock::system());
    let parts = match &config.broker {
        None => Parts::local(limits, clock, metrics, &broker::LocalBus::default()),
        Some(urls) => {
            let sweep = Arc::new(tokio::sync::Notify::new());
            let client =
                nats::connect(urls, Arc::clone(&metrics), Arc::clone(&sweep)).await.map_err(StartError::Broker)?;
            let m = Arc::clone(&metrics);
            Parts::networked(limits, clock, metrics, sweep, move |subscriber| {
                Arc::new(nats::NatsBroker::new(client, subscriber, m))
            })
        }
    };
    // Fan-out runs on the store's writer, in commit order (see `hub`): one hop less than a
    // channel to a task, on the path of every message.
    let sink = Arc::clone(&parts.fanout) as Arc<dyn CommitSink>;
    let Engines { store, presence } = open(sink, Arc::clone(&parts.metrics)).await?;
    let mut parts = parts;
    if let Some(p) = &presence {
        parts.presence = Arc::clone(p) as Arc<dyn presence::Presence>;
    }
    let auth = Auth::new(&config.jwt, config.jwt_audience.as_deref(), config.jwt_issuer.as_deref())
        .map_err(StartError::Auth)?;
    let tls = match &config.cert {
        _ if config.https.is_none() => None,
        config::CertSource::Files { cert, key } => Some(tls::load_pem(cert, key).map_err(StartError::Tls)?),
        config::CertSource::Dev(dir) => Some(tls::dev_cert(dir).map_err(StartError::Tls)?),
    };
    let certs = tls.as_ref().map(tls::CertStore::new).transpose().map_err(StartError::Tls)?;
    let tasks = TaskTracker::new();
    let services = Services {
        store,
        auth: Arc::new(auth),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        certificate: certs.clone().map(|c| c as Arc<dyn node::Certificate>),
    };
    let node = Node::new(parts, services);
    session::rearm_all(&node).await;
    if node.sequencer.is_some() {
        // All end on shutdown.
        tasks.spawn(node::repair_loop(Arc::clone(&node)));
        tasks.spawn(confab_core::receipts::claim_loop(Arc::clone(&node)));
        tasks.spawn(shed_while_cut_off(Arc::clone(&node)));
    }
    if let Some(p) = &presence {
        // Ends on shutdown.
        tasks.spawn(Arc::clone(p).keep_lease(Arc::clone(&node)));
    }

    let settings = Settings {
        dev: config.dev,
        api_key: config.api_key.clone(),
        max_frame_bytes: config.max_frame_bytes,
        ping_interval: config.ping_interval,
        pong_timeout: config.pong_timeout,
        handshake_timeout: config.handshake_timeout,
        quic_congestion: config.quic_congestion,
        allowed_origins: config.allowed_origins.clone(),
        public_url: config.public_url.clone(),
        default_dialect: config.default_dialect,
        https_port: std::sync::OnceLock::new(),
    };
    let trends = Arc::new(trends::Trends::new(node.clock.now().as_millis()));
    // Ends on shutdown.
    tasks.spawn(Arc::clone(&trends).sample(Arc::clone(&node)));
    let app = App { node: Arc::clone(&node), settings: Arc::new(settings), trends };
    let router = api::router(app.clone());
    let mut servers = Vec::new();
    let mut bound = (None, None);
    for (https, addr, tls_config) in [
        (false, config.http, None),
        (true, config.https, certs.as_ref().map(tls::CertStore::server_config).transpose().map_err(StartError::Tls)?),
    ] {
        let Some(addr) = addr else { continue };
        let listener = if https && addr.port() == 0 && certs.is_some() {
            bind_with_free_udp_twin(addr).await
        } else {
            tokio::net::TcpListener::bind(addr).await
        };
        let listener = listener.map_err(|source| StartError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
        if https {
            let _ = app.settings.https_port.set(local.port());
            bound.1 = Some(local);
        } else {
            bound.0 = Some(local);
        }
        // Handlers learn which listener a request came on (the scheme of the URLs they give).
        let scheme = Scheme(if https { "https" } else { "http" });
        servers.push(tokio::spawn(serve::serve(
            listener,
            router.clone().layer(axum::Extension(scheme)),
            tls_config,
            config.handshake_timeout,
            shutdown.clone(),
            tasks.clone(),
        )));
    }
    // WebTransport: UDP on the HTTPS listener's port (SPEC §8: TLS TCP and QUIC UDP on the
    // same address).
    let mut h3 = Vec::new();
    if let (Some(addr), Some(certs)) = (bound.1, certs.as_ref()) {
        for endpoint in transport::wt::bind(addr, certs, &app.settings).map_err(StartError::Tls)? {
            h3.extend(endpoint.local_addr().ok());
            servers.push(tokio::spawn(transport::wt::serve(endpoint, app.clone())));
        }
    }
    if let Some(certs) = certs.clone() {
        servers.push(tokio::spawn(reload_on_sighup(certs, config.cert.clone(), shutdown.clone())));
    }
    tracing::info!(dev = config.dev, store = %config.store.describe(), "confab started");
    let drain = config.drain_timeout;
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        for s in servers {
            let _ = s.await;
        }
        node.hub.close_all(error::CloseReason::ServerShutdown);
        tasks.close();
        if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
            tracing::warn!("shutdown: connections still open after the drain deadline");
        }
        // The other nodes stop counting this one's connections at once, not when its lease ends.
        if let Some(p) = presence {
            if let Err(e) = p.leave().await {
                tracing::warn!(error = %e, "presence: leaving the cluster");
            }
        }
        // The store finishes the writes it accepted (the last batch) before the node stops.
        if let Err(e) = node.store.close().await {
            tracing::warn!(error = %e, "closing the store");
        }
        node.broker.close();
        tracing::info!("confab stopped");
    });
    Ok(Running {
        http: bound.0,
        https: bound.1,
        h3,
        cert_sha256: tls.as_ref().map(tls::TlsMaterial::sha256_hex),
        cert_path: tls.map(|t| t.cert_path),
        done,
    })
}

/// `--https HOST:0`: a TCP port whose UDP twin is free too, since QUIC takes the same port
/// number. Another process may hold that UDP port (a client's socket: seen when many test
/// servers and clients share a machine), so a taken one is passed over for another.
async fn bind_with_free_udp_twin(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let mut taken = None;
    for _ in 0..32 {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        match std::net::UdpSocket::bind(listener.local_addr()?) {
            Ok(_probe) => return Ok(listener),
            Err(e) => taken = Some(e),
        }
    }
    Err(taken.unwrap_or_else(|| std::io::Error::other("no port free on both TCP and UDP")))
}

/// How long a node may be cut off from the other nodes (its broker) before it sheds its clients.
const SHED_AFTER: Duration = Duration::from_secs(5);

/// Cluster mode: while the broker has been unreachable for [`SHED_AFTER`], the node closes its
/// clients' connections (1001: reconnect, re-join with `since_seq`), so that they move to a node
/// that hears the others; `/readyz` keeps new ones away meanwhile. Ends on shutdown.
async fn shed_while_cut_off(node: Arc<node::Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match node.broker.healthy() {
            Ok(()) => since = None,
            Err(why) => {
                let began = *since.get_or_insert_with(tokio::time::Instant::now);
                if began.elapsed() >= SHED_AFTER {
                    tracing::warn!(reason = %why, "cut off from the other nodes: closing this node's connections");
                    node.hub.close_all(error::CloseReason::ServerShutdown);
                }
            }
        }
    }
}

/// SIGHUP reloads the PEM certificate and key: new TLS handshakes (TCP and QUIC) get the new
/// certificate, live connections keep theirs. A file that does not load keeps the old one.
/// A dev certificate is renewed instead once it is old (checked hourly and on SIGHUP), so a
/// dev server that runs for weeks never serves an expired one.
#[cfg(unix)]
async fn reload_on_sighup(certs: Arc<tls::CertStore>, source: config::CertSource, shutdown: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: certificates will not be reloaded");
        return;
    };
    let mut hourly = tokio::time::interval_at(tokio::time::Instant::now() + DEV_CERT_CHECK, DEV_CERT_CHECK);
    loop {
        let timer = tokio::select! {
            _ = hup.recv() => false,
            _ = hourly.tick() => true,
            _ = shutdown.cancelled() => return,
        };
        let loaded = match &source {
            config::CertSource::Files { .. } if timer => continue,
            config::CertSource::Files { cert, key } => tls::load_pem(cert, key),
            config::CertSource::Dev(dir) => tls::dev_cert(dir),
        };
        match loaded {
            Ok(m) if m.sha256_hex() == certs.sha256_hex() => {}
            Ok(m) => match certs.replace(&m) {
                Ok(()) => {
                    println!("certificate reloaded sha256={}", m.sha256_hex());
                    tracing::info!(sha256 = %m.sha256_hex(), "certificate reloaded");
                }
                Err(e) => tracing::warn!(error = %e, "certificate reload failed; the current one stays"),
            },
            Err(e) => tracing::warn!(error = %e, "certificate reload failed; the current one stays"),
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_certs: Arc<tls::CertStore>, _source: config::CertSource, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
