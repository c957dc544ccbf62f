//! A WebTransport session's life: its control stream, its tasks, its refusal or its run, and its
//! close (capsule, grace, QUIC close).

use super::*;

/// What the connection's tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) streams: Mutex<Table<StreamTx>>,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) codec: Codec,
    /// The client has sent a datagram, so it reads them: typing goes that way.
    pub(super) datagrams: AtomicBool,
    pub(super) queue_len: usize,
    /// The connection's closer, once the session exists.
    pub(super) closer: OnceLock<Arc<Closer>>,
    pub(super) tasks: TaskTracker,
    pub(super) done: CancellationToken,
}

impl Shared {
    pub(super) fn streams(&self) -> MutexGuard<'_, Table<StreamTx>> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the session, waiting for room in a task of its own when the queue is full (the
    /// caller may be the dispatcher, which must never wait on the session).
    pub(super) fn tell(&self, item: Inbound) {
        if let Err(mpsc::error::TrySendError::Full(item)) = self.inbound.try_send(item) {
            let tx = self.inbound.clone();
            let done = self.done.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = tx.send(item) => {}
                    _ = done.cancelled() => {}
                }
            });
        }
    }

    pub(super) fn close(&self, reason: CloseReason) {
        if let Some(c) = self.closer.get() {
            c.close(reason);
        }
    }

    /// Unbinds `c` if it is still bound to stream `id`; true if it was.
    pub(super) fn unbind(&self, c: &ConversationId, id: u64) -> bool {
        self.streams().unbind(c, id)
    }
}

pub(super) async fn run(wt: Arc<Wt>, quic: quinn::Connection, codec: Codec, opened: Opened, app: App) {
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let shared = Arc::new(Shared {
        streams: Mutex::new(Table::default()),
        inbound: in_tx,
        codec,
        datagrams: AtomicBool::new(false),
        queue_len: app.node.hub.limits().outbound_queue.max(1),
        closer: OnceLock::new(),
        tasks: TaskTracker::new(),
        done: CancellationToken::new(),
    });

    // The control stream comes first; the session runs once it is there. Boxed: the wait is
    // larger (2.8 KiB) than the rest of the session's state, which would be kept that large.
    let control = tokio::select! {
        r = Box::pin(tokio::time::timeout(app.settings.handshake_timeout, wt.accept_bi())) => match r {
            Ok(Ok(Some(AcceptedBi::BidiStream(_, s)))) => Some(s),
            _ => None,
        },
        _ = app.node.shutdown.cancelled() => None,
    };
    let Some(control) = control else {
        let _ = wt.close(u32::from(CloseReason::Timeout.code()), "no control stream").await;
        return linger_then_close(&quic).await;
    };
    let control_id = control.send_id().into_inner();
    let (control_tx, control_in) = open_control(&shared, control, control_id);
    shared.streams().set_control(control_tx.clone());

    let (session, output) = match opened {
        Ok(o) => o,
        Err(e) => return refuse(&app, &wt, &quic, &shared, &control_tx, &e).await,
    };
    let closer = Arc::clone(&session.conn().closer);
    let _ = shared.closer.set(Arc::clone(&closer));
    spawn_accept_loop(&shared, &wt);
    spawn_datagram_reader(&shared, &wt);
    spawn_close_watcher(&shared, &wt, &quic);

    let mut in_rx = in_rx;
    let others = futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx));
    // Kept until the end: the control stream's receiving side is not stopped while the
    // goodbye is still being written on its sending side.
    let mut inbound = futures_util::stream::select(control_in, others);
    // The session and its dispatcher run in this one task, as a WebSocket's two halves do:
    // an event the session queues for its own client is routed without waking another task.
    // The dispatcher says goodbye on the control stream unless the client left first.
    let dispatching = dispatch(Arc::clone(&shared), output, Arc::clone(&wt), quic.clone());
    tokio::join!(session::run(session, &mut inbound), dispatching);
    let reason = closer.reason().unwrap_or(CloseReason::Normal);
    finish(&wt, &quic, &shared, reason).await;
}

/// Ends the session: the close capsule with the reason's code (unless the client closed it),
/// every task stopped, then the QUIC connection once the client has closed it or after a grace
/// period (closing it at once could destroy the capsule in flight).
pub(super) async fn finish(wt: &Wt, quic: &quinn::Connection, shared: &Shared, reason: CloseReason) {
    if reason != CloseReason::Normal {
        // A browser errors every stream when the capsule arrives, discarding what the page has
        // not read yet: give it a moment to read `connection:closed` first (or to close).
        tokio::select! {
            _ = tokio::time::sleep(CLOSE_GRACE) => {}
            _ = quic.closed() => {}
        }
        let _ = tokio::time::timeout(CLOSE_DEADLINE, wt.close(u32::from(reason.code()), reason.as_str())).await;
    }
    shared.done.cancel();
    // Streams not finished by now are reset (their readers reset the rest as they stop).
    let (control, bound) = shared.streams().take_all();
    for t in control.iter().chain(&bound) {
        t.reset(stream_code::SESSION_GONE);
    }
    shared.tasks.close();
    let _ = tokio::time::timeout(CLOSE_DEADLINE, shared.tasks.wait()).await;
    if reason == CloseReason::Normal {
        quic.close(0u32.into(), b"");
    } else {
        linger_then_close(quic).await;
    }
}

pub(super) async fn linger_then_close(quic: &quinn::Connection) {
    let _ = tokio::time::timeout(CLOSE_DEADLINE, quic.closed()).await;
    quic.close(0u32.into(), b"");
}

/// A bad or missing token: one `error` event and `connection:closed` on the control stream,
/// then the close capsule (4001/4003), as the WebSocket transport does with a close frame.
pub(super) async fn refuse(
    app: &App,
    wt: &Wt,
    quic: &quinn::Connection,
    shared: &Shared,
    control: &StreamTx,
    e: &AuthError,
) {
    let (event, reason) = session::refusal(&app.node, e);
    for ev in [event, closing_event(app.node.hub.ids(), reason, app.node.clock.now())] {
        if let Ok(Some(bytes)) = ev.encoded(&shared.codec) {
            control.send_paced(shared, &bytes, shared.queue_len.max(1)).await;
        }
    }
    let (ack, acked) = oneshot::channel();
    control.finish(Some(ack));
    let _ = tokio::time::timeout(CLOSE_DEADLINE, acked).await;
    finish(wt, quic, shared, reason).await;
}
