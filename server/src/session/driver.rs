//! Runs a session: the only `select!` of the session layer. Inputs are the transport's
//! [`Inbound`] stream, the session's timers, the connection's closer and server shutdown.

use super::MAX_PENDING_SENDS;
use super::Session;
use crate::error::CloseReason;
use crate::link::Inbound;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Drives `session` until the connection ends; then unregisters it. The transport's writer
/// sees the closer and sends the close. Everything it logs is inside one span per connection
/// with its ids (never a token or a message's content).
pub async fn run(session: Session, inbound: impl Stream<Item = Inbound> + Unpin, shutdown: CancellationToken) {
    let c = &session.conn;
    let span = tracing::info_span!(
        "conn",
        conn = %c.id,
        user = %c.user_id,
        transport = c.transport.name(),
        dialect = c.codec.dialect.name(),
        codec = c.codec.format.name(),
    );
    drive(session, inbound, shutdown).instrument(span).await;
}

async fn drive(mut session: Session, mut inbound: impl Stream<Item = Inbound> + Unpin, shutdown: CancellationToken) {
    if let Err(reason) = session.start().await {
        session.conn.closer.close(reason);
        return;
    }
    if let Err(reason) = session.listen_from_start().await {
        session.conn.closer.close(reason);
        session.finish().await;
        return;
    }
    loop {
        let deadline = tokio::time::Instant::from_std(session.next_deadline());
        // Every branch is cancel-safe: `closed`/`cancelled` are notifications, a stream's
        // `next` (the inbound frames, the pending sends) loses nothing when dropped, and
        // `sleep_until` is re-created each turn.
        tokio::select! {
            biased;
            _ = session.conn.closer.closed() => break,
            _ = shutdown.cancelled() => {
                session.conn.closer.close(CloseReason::ServerShutdown);
                break;
            }
            _ = tokio::time::sleep_until(deadline) => session.handle_timeout(std::time::Instant::now()).await,
            Some(done) = session.pending.next(), if !session.pending.is_empty() => session.send_committed(done),
            // Backpressure: with too many sends waiting for the store, stop reading frames.
            item = inbound.next(), if session.pending.len() < MAX_PENDING_SENDS => match item {
                Some(Inbound::Event(route, input)) => session.handle(route, *input).await,
                Some(Inbound::RouteClosed(route)) => session.route_closed(route),
                Some(Inbound::Closed) | None => {
                    session.conn.closer.close(CloseReason::Normal);
                    break;
                }
            },
        }
    }
    session.finish().await;
}
