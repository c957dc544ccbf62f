//! Runs a session: the only `select!` of the session layer. Inputs are the transport's
//! [`Inbound`] stream, the session's timers and the connection's closer. Server shutdown
//! reaches a session through its closer (`Hub::close_all`, and `Node::register` for a
//! connection that registers after it): a wait for the shutdown token in every session was
//! 72 bytes of every idle connection's state (benchmarks.md, issue 19, sixth pass).

use super::MAX_PENDING_SENDS;
use super::Session;
use crate::error::CloseReason;
use crate::link::Inbound;
use futures_util::{Stream, StreamExt};
use tracing::Instrument;

/// Drives an opened `session` (`session::open`) until the connection ends; then unregisters
/// it. The transport's writer sees the closer and sends the close. Everything it logs is
/// inside the session's span.
///
/// Not an `async fn`: one would keep a second copy of its arguments beside the future it
/// awaits, for the whole life of every connection (benchmarks.md, issue 19, idle memory).
pub fn run(
    session: Box<Session>,
    inbound: impl Stream<Item = Inbound> + Unpin,
) -> impl std::future::Future<Output = ()> {
    let span = session.span.clone();
    drive(session, inbound).instrument(span)
}

async fn drive(mut session: Box<Session>, mut inbound: impl Stream<Item = Inbound> + Unpin) {
    // Refused at opening (or closed since): nothing to run.
    // The request handlers' futures are boxed: held inline, the largest of them would be part
    // of every idle connection's state, though a connection is almost always waiting.
    if !session.conn.closer.is_closed() {
        Box::pin(session.catch_up_resume()).await;
    }
    while !session.conn.closer.is_closed() {
        let deadline = session.next_deadline();
        // Every branch is cancel-safe: `closed` is a notification, a stream's
        // `next` (the inbound frames, the pending sends) loses nothing when dropped, and
        // `sleep_until` is re-created each turn.
        tokio::select! {
            biased;
            _ = std::future::poll_fn(|cx| session.conn.closer.poll_closed_for_session(cx)) => break,
            _ = tokio::time::sleep_until(deadline) => {
                let now = session.node.clock.instant();
                Box::pin(session.handle_timeout(now)).await;
            }
            Some(done) = session.pending.next(), if !session.pending.is_empty() => session.send_committed(done),
            // Backpressure: with too many sends waiting for the store, stop reading frames.
            item = inbound.next(), if session.pending.len() < MAX_PENDING_SENDS => match item {
                Some(Inbound::Event(route, input)) => Box::pin(session.handle(route, *input)).await,
                Some(Inbound::RouteClosed(route)) => session.route_closed(route),
                Some(Inbound::Closed) | None => {
                    session.conn.closer.close(CloseReason::Normal);
                    break;
                }
            },
        }
    }
    Box::pin(session.finish()).await;
}
