//! The dispatcher: the session's queue routed to the streams (by the stream [`Table`]), to
//! datagrams, or dropped; slow streams reset; the goodbye.

use super::*;

/// Routes the session's queue to the streams: a conversation's events to its stream when it
/// has one, everything else to the control stream; typing and heartbeat answers as datagrams
/// when the client uses them. A conversation stream whose queue is full is reset (the client
/// re-joins with `since_seq`); a full control stream makes the connection a slow consumer.
pub(super) async fn dispatch(shared: Arc<Shared>, mut out: ConnOutput, wt: Arc<Wt>, quic: quinn::Connection) {
    let mut datagrams = wt.datagram_sender();
    let closer = Arc::clone(&out.closer);
    loop {
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            ev = out.recv() => match ev {
                Some(Outgoing(ev, Pacing::Paced)) => route_paced(&shared, &out, ev).await,
                Some(Outgoing(ev, pacing)) => route(&shared, &out, &mut datagrams, &quic, ev, pacing),
                None => break,
            },
        }
    }
    let reason = out.closer.reason().unwrap_or(CloseReason::Normal);
    if reason != CloseReason::Normal {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, goodbye(&shared, &mut out, &mut datagrams, &quic, reason)).await;
    }
}

pub(super) type Datagrams =
    h3_datagram::datagram_handler::DatagramSender<h3_quinn::datagram::SendDatagramHandler, Bytes>;

/// The event in this connection's dialect and format; `None` when there is nothing to send
/// (no form in the dialect, or it cannot be encoded: logged).
pub(super) fn encode(shared: &Shared, ev: &SharedEvent) -> Option<Bytes> {
    ev.encoded(&shared.codec).map_err(|e| tracing::error!(error = %e, "encoding an event")).ok().flatten()
}

pub(super) fn route(
    shared: &Shared,
    out: &ConnOutput,
    datagrams: &mut Datagrams,
    quic: &quinn::Connection,
    ev: Arc<SharedEvent>,
    pacing: Pacing,
) {
    let Some(bytes) = encode(shared, &ev) else { return };
    // The hub marks latest-wins traffic (typing); heartbeat answers are as disposable.
    let lossy = pacing == Pacing::Lossy;
    if (lossy || matches!(ev.envelope.event, ServerEvent::Heartbeat(_))) && shared.datagrams.load(Ordering::Relaxed) {
        let fits = quic.max_datagram_size().is_some_and(|m| bytes.len() + DATAGRAM_HEADER <= m);
        if fits && datagrams.send_datagram(bytes.clone()).is_ok() {
            return;
        }
    }
    let Some((target, bound)) = target_for(shared, &ev) else { return };
    match target.send(shared, &bytes) {
        Ok(()) => out.written(&ev, pacing),
        Err(Refused::Full) if lossy => {}
        Err(Refused::Full) => match ev.conversation.as_ref().filter(|_| bound) {
            Some(c) => {
                // Marked dropped before the reset: the stream's reader, woken by it, may unbind
                // (and tell the session) first.
                shared.streams().reset_slow(c);
                target.reset(stream_code::SLOW_CONSUMER);
                if shared.unbind(c, target.id) {
                    shared.tell(Inbound::RouteClosed(Route::Conversation(c.clone())));
                }
            }
            None => out.closer.close(CloseReason::SlowConsumer),
        },
        // The stream is gone; its reader has told the session.
        Err(Refused::Closed) => {}
    }
    // `conversation:left` is the last event of a conversation's stream.
    if let ServerEvent::Left(l) = &ev.envelope.event {
        if bound && shared.unbind(&l.conversation_id, target.id) {
            target.finish(None);
        }
    }
}

/// Where `ev` goes: its conversation's stream (`true`) or the control stream; `None` to drop it.
pub(super) fn target_for(shared: &Shared, ev: &SharedEvent) -> Option<(StreamTx, bool)> {
    let is_join = matches!(ev.envelope.event, ServerEvent::Joined(_));
    match shared.streams().target(ev.conversation.as_ref(), is_join) {
        Target::Bound(t) => Some((t, true)),
        Target::Control(t) => Some((t, false)),
        Target::Drop => None,
    }
}

/// A replayed event: waits for room on its stream, as the WebSocket writer waits on its socket
/// (the session is paced by the reader either way; other streams wait meanwhile).
pub(super) async fn route_paced(shared: &Shared, out: &ConnOutput, ev: Arc<SharedEvent>) {
    let Some(bytes) = encode(shared, &ev) else { return };
    let Some((target, _)) = target_for(shared, &ev) else { return };
    // Only into the queue's first half: live events that follow the replay (messages sent
    // meanwhile) must still find room, or the stream would be taken for a slow consumer.
    let room = (shared.queue_len / 2).max(1);
    tokio::select! {
        _ = target.send_paced(shared, &bytes, room) => {}
        _ = out.closer.closed() => {}
    }
}

/// Flushes what was queued (unless the queue is the problem), then `connection:closed` on the
/// control stream, and finishes every stream.
pub(super) async fn goodbye(
    shared: &Shared,
    out: &mut ConnOutput,
    datagrams: &mut Datagrams,
    quic: &quinn::Connection,
    reason: CloseReason,
) {
    if reason != CloseReason::SlowConsumer {
        while let Some(Outgoing(ev, pacing)) = out.try_recv() {
            route(shared, out, datagrams, quic, ev, pacing);
        }
    }
    let (control, bound) = shared.streams().take_all();
    for t in bound {
        t.finish(None);
    }
    let Some(control) = control else { return };
    if let Ok(Some(bytes)) = out.closing_event(reason).encoded(&shared.codec) {
        control.send_paced(shared, &bytes, shared.queue_len.max(1)).await;
    }
    let (ack, acked) = oneshot::channel();
    control.finish(Some(ack));
    let _ = acked.await;
}
