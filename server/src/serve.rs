//! Accept loops for the TCP listeners (plain HTTP, and HTTPS with WSS), one tracked task per
//! connection. A client that has not finished its TLS handshake and sent its request headers
//! within the handshake timeout (30 s by default) is dropped (SPEC §3). On shutdown the loops stop accepting and idle HTTP
//! connections are closed; upgraded WebSockets are closed by their sessions.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `router` on `listener` (with TLS when `tls` is given) until `shutdown`. A client gets
/// `handshake` to finish TLS and send its request headers.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake: Duration,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            match acceptor {
                None => connection(TokioIo::new(tcp), router, handshake, shutdown).await,
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => connection(TokioIo::new(tls), router, handshake, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake"),
                    Err(_) => tracing::debug!("tls handshake timed out"),
                },
            }
        });
    }
}

async fn connection<I>(io: TokioIo<I>, router: axum::Router, handshake: Duration, shutdown: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(handshake);
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
