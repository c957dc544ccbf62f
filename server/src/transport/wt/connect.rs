//! The CONNECT: serving HTTP/3 requests until one is a good WebTransport CONNECT, checking it,
//! and opening its session before answering.

use super::*;
use futures_util::FutureExt;
use futures_util::future::Either;

/// What the CONNECT request asked for.
#[derive(Debug)]
pub(super) struct Wanted {
    token: Option<String>,
    codec: Codec,
    resume: Option<confab_codec::Seq>,
}

/// Checks the CONNECT request: method and protocol, path, origin, query. `Err` is the status
/// to answer with.
pub(super) fn check_request(req: &Request<()>, app: &App) -> Result<Wanted, (StatusCode, String)> {
    let protocol = req.extensions().get::<h3::ext::Protocol>();
    if req.method() != Method::CONNECT || protocol != Some(&h3::ext::Protocol::WEB_TRANSPORT) {
        return Err((StatusCode::NOT_FOUND, "only WebTransport sessions (extended CONNECT) are served here".into()));
    }
    if req.uri().path() != PATH {
        return Err((StatusCode::NOT_FOUND, format!("WebTransport is served on {PATH}")));
    }
    if !app.settings.origin_allowed(req.headers()) {
        return Err((StatusCode::FORBIDDEN, "origin not allowed".into()));
    }
    let query: HashMap<String, String> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("query: {e}")))?;
    // MessagePack unless `?codec=json` (SPEC §3); the dialect from `?dialect=` (SPEC §7).
    let offered = std::iter::empty();
    let codec = app
        .settings
        .codec(&query, offered, Format::MsgPack, &Endpoint::default())
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let resume = Settings::resume(&query).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    Ok(Wanted { token: query.get("token").filter(|t| !t.is_empty()).cloned(), codec, resume })
}

/// One QUIC connection: the handshake and the CONNECT, then the session.
///
/// Not an `async fn`: a future is as large as its largest state, and the handshake's (h3's
/// setup, the CONNECT, the session's acceptance: 12 KiB) would be kept for the session's whole
/// life. The handshake runs boxed and is freed before the session runs (benchmarks.md,
/// issue 19, third pass).
pub(super) fn connection(incoming: quinn::Incoming, app: App) -> impl std::future::Future<Output = ()> + Send {
    Box::pin(handshake(incoming, app)).then(|accepted| match accepted {
        Some(Accepted { wt, quic, codec, opened, app }) => Either::Left(run(wt, quic, codec, opened, app)),
        None => Either::Right(std::future::ready(())),
    })
}

/// What the handshake hands the session.
struct Accepted {
    wt: Arc<Wt>,
    quic: quinn::Connection,
    codec: Codec,
    opened: Opened,
    app: App,
}

/// The QUIC handshake, the CONNECT request, the session opened; `None` (the connection
/// closed) when one of them fails.
async fn handshake(incoming: quinn::Incoming, app: App) -> Option<Accepted> {
    let handshake = app.settings.handshake_timeout;
    let conn = match tokio::time::timeout(handshake, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "quic handshake");
            return None;
        }
        Err(_) => {
            tracing::debug!("quic handshake timed out");
            return None;
        }
    };
    let quic = conn.clone();
    let connect = tokio::select! {
        r = tokio::time::timeout(handshake, next_connect(conn, &app)) => r.ok().flatten(),
        _ = app.node.shutdown.cancelled() => None,
    };
    let Some((req, stream, h3, wanted)) = connect else {
        quic.close(0u32.into(), b"");
        return None;
    };
    let base_url = app.settings.base_url("https", req.uri().authority().map(|a| a.as_str()));
    let opening = Opening {
        transport: TransportKind::WebTransport,
        codec: wanted.codec.clone(),
        resume: wanted.resume,
        base_url,
        // QUIC keeps the connection alive itself (`keep_alive_interval`).
        keepalive: None,
    };
    let opened = crate::transport::open_session(&app, wanted.token.as_deref(), None, opening).await;
    // The session's codec has its scope; a refused one is answered in the codec asked for.
    let codec = opened.as_ref().map_or(wanted.codec, |(s, _)| s.conn().codec.clone());
    match tokio::time::timeout(handshake, WebTransportSession::accept(req, stream, h3)).await {
        Ok(Ok(wt)) => Some(Accepted { wt: Arc::new(wt), quic, codec, opened, app }),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "webtransport accept");
            quic.close(0u32.into(), b"");
            None
        }
        Err(_) => {
            quic.close(0u32.into(), b"");
            None
        }
    }
}

/// Serves HTTP/3 requests until one is a good WebTransport CONNECT, which it returns
/// unanswered; the others are answered with their error status.
pub(super) async fn next_connect(
    conn: quinn::Connection,
    app: &App,
) -> Option<(Request<()>, ConnectStream, H3, Wanted)> {
    let mut h3 = h3::server::builder()
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .send_grease(true)
        .build(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| tracing::debug!(error = %e, "h3 setup"))
        .ok()?;
    loop {
        let resolver = h3.accept().await.map_err(|e| tracing::debug!(error = %e, "h3 accept")).ok()??;
        let Ok((req, mut stream)) = resolver.resolve_request().await else { continue };
        match check_request(&req, app) {
            Ok(wanted) => return Some((req, stream, h3, wanted)),
            Err((status, why)) => {
                tracing::debug!(%status, why, path = req.uri().path(), "h3 request refused");
                let resp = Response::builder().status(status).body(());
                if let Ok(resp) = resp {
                    let _ = stream.send_response(resp).await;
                    let _ = stream.send_data(Bytes::from(why)).await;
                    let _ = stream.finish().await;
                }
            }
        }
    }
}
