//! confab-server: the `confab` binary's library. A realtime chat server whose session layer
//! serves every transport (WebSocket today; WebTransport next) through one narrow link, with
//! a durable embedded store behind an interface.
//!
//! [`run`] starts everything on the configured listeners and returns when `shutdown` fires and
//! the connections have been told and drained; `main.rs` only parses the configuration, sets up
//! logging and calls it, so tests and benchmarks can start a server in process.
//!
//! # Layout
//! - `config`: flags and environment, checked at start.
//! - `auth`: JWT verification (HS256, RS256, ES256) and dev-mode minting.
//! - `link`: the boundary types between transports and sessions (`Conn`, `Inbound`, `Route`).
//! - `transport`: the WebSocket transport.
//! - `session`: the per-connection rules (SPEC §4) and their driver.
//! - `hub`: users, connections, conversations' members and joins; fan-out.
//! - `limits`: token-bucket rate limits.
//! - `store`: the `Store` interface and the SQLite implementation with group commit.
//! - `api`: client REST, the server API, health, metrics, dev tokens.
//! - `error`: session errors and close reasons, mapped to wire codes in one place each.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod hub;
pub mod limits;
pub mod link;
pub mod session;
pub mod store;
pub mod transport;

use crate::api::{App, Settings};
use crate::auth::Auth;
use crate::config::Config;
use crate::hub::Hub;
use crate::session::Ctx;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to be told and closed.
const DRAIN: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("jwt: {0}")]
    Auth(String),
    #[error("listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Runs the server until `shutdown` fires: stop accepting, tell every client (1001), wait for
/// them with a deadline, then let the store finish its last batch.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let (feed_tx, mut feed) = mpsc::channel(4096);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data_dir, feed_tx)?);
    let auth = Auth::new(&config.jwt, config.jwt_audience.as_deref(), config.jwt_issuer.as_deref())
        .map_err(StartError::Auth)?;
    let hub = Arc::new(Hub::new(config.limits.clone()));
    let tasks = TaskTracker::new();
    let ctx =
        Ctx { hub: Arc::clone(&hub), store, auth: Arc::new(auth), tasks: tasks.clone(), shutdown: shutdown.clone() };

    // The one reader of the commit feed: fan-out in commit order (see `hub`).
    let dispatch_hub = Arc::clone(&hub);
    let dispatch_stop = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                c = feed.recv() => match c {
                    Some(c) => dispatch_hub.dispatch_message(c.message, session::now()),
                    None => break,
                },
                _ = dispatch_stop.cancelled() => break,
            }
        }
    });
    session::rearm_all(&ctx).await;

    let settings = Settings {
        dev: config.dev,
        api_key: config.api_key.clone(),
        max_frame_bytes: config.max_frame_bytes,
        ping_interval: config.ping_interval,
        pong_timeout: config.pong_timeout,
    };
    let app = App { ctx, settings: Arc::new(settings) };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| StartError::Listen { addr: config.http, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.http, source })?;
    println!("listening http={addr}");
    if config.dev {
        println!(
            "DEV MODE: dev JWT secret and API key {:?}; tokens at http://{addr}/dev/token?user_id=alice",
            config.api_key
        );
    }
    tracing::info!(%addr, dev = config.dev, data_dir = %config.data_dir.display(), "confab started");

    let server = axum::serve(listener, api::router(app)).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    if let Err(e) = server.await {
        tracing::error!(error = %e, "http server");
    }
    hub.close_all(error::CloseReason::ServerShutdown);
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        tracing::warn!("shutdown: connections still open after the drain deadline");
    }
    tracing::info!("confab stopped");
    Ok(())
}
