//! Per-stream I/O: one writer and one reader per stream, the binding of a stream to the
//! conversation its first frame joins, and the session's other inputs (new streams, datagrams,
//! the close).

use super::*;

/// A stream's writer: what it is sent, and how to stop it.
#[derive(Debug, Clone)]
pub(super) struct StreamTx {
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<StreamCmd>,
    /// Resets the stream (and stops its reader) at once.
    pub(super) kill: Kill,
}

#[derive(Debug)]
pub(super) enum StreamCmd {
    Frame(Bytes),
    /// Finish the stream cleanly, then say so.
    Finish(Option<oneshot::Sender<()>>),
}

impl StreamId for StreamTx {
    fn stream_id(&self) -> u64 {
        self.id
    }
}

/// How a stream is stopped early, and with which code.
#[derive(Debug, Clone)]
pub(super) struct Kill {
    pub(super) token: CancellationToken,
    pub(super) code: Arc<AtomicU32>,
}

impl Kill {
    pub(super) fn now(&self, code: u32) {
        self.code.store(code, Ordering::Relaxed);
        self.token.cancel();
    }
}

/// Starts a stream's reader and writer; returns the writer's handle.
pub(super) fn open_stream(shared: &Arc<Shared>, stream: WtBidi, id: u64, control: bool) -> StreamTx {
    let (send, recv) = stream.split();
    let (tx, rx) = mpsc::channel(shared.queue_len);
    let kill = Kill { token: shared.done.child_token(), code: Arc::new(AtomicU32::new(stream_code::SESSION_GONE)) };
    let handle = StreamTx { id, tx, kill };
    shared.tasks.spawn(write_stream(send, rx, handle.kill.clone()));
    shared.tasks.spawn(read_stream(Arc::clone(shared), recv, handle.clone(), control));
    handle
}

pub(super) async fn write_stream(mut send: WtSend, mut rx: mpsc::Receiver<StreamCmd>, kill: Kill) {
    let mut framed = Vec::with_capacity(1024);
    // A command taken while batching frames, handled next.
    let mut pending: Option<StreamCmd> = None;
    loop {
        let cmd = match pending.take() {
            Some(c) => Some(c),
            None => tokio::select! {
                biased;
                _ = kill.token.cancelled() => break,
                c = rx.recv() => c,
            },
        };
        match cmd {
            Some(StreamCmd::Frame(payload)) => {
                // One write per frame, and more frames if they are already waiting: the QUIC
                // connection's driver may run between two writes and send a packet for each.
                framed.clear();
                encode_frame(&payload, &mut framed);
                while framed.len() < 16 * 1024 {
                    match rx.try_recv() {
                        Ok(StreamCmd::Frame(next)) => encode_frame(&next, &mut framed),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // A client that stops reading blocks this write, and only this stream's.
                let write = send.write_all(&framed);
                tokio::select! {
                    biased;
                    _ = kill.token.cancelled() => break,
                    r = write => if r.is_err() { return },
                }
            }
            Some(StreamCmd::Finish(ack)) => {
                let _ = send.shutdown().await;
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            None => {
                let _ = send.shutdown().await;
                return;
            }
        }
    }
    send.reset(u64::from(kill.code.load(Ordering::Relaxed)));
}

pub(super) async fn read_stream(shared: Arc<Shared>, mut recv: WtRecv, me: StreamTx, control: bool) {
    let codec = shared.codec.clone();
    let mut frames = FrameDecoder::with_skip_limit(codec.max_frame, HARD_FRAME_LIMIT);
    let mut route = control.then_some(Route::Control);
    'read: loop {
        // The chunks quinn received, as they are: no read buffer per stream (4 KiB each, for
        // every idle session's control stream, when they were read into one; benchmarks.md,
        // issue 19, third pass) and no copy.
        let chunk = tokio::select! {
            biased;
            _ = me.kill.token.cancelled() => break,
            r = std::future::poll_fn(|cx| recv.poll_data(cx)) => match r {
                Ok(Some(chunk)) => chunk,
                Ok(None) | Err(_) => break,
            },
        };
        let mut too_large = frames.push(&chunk).err();
        loop {
            if let Some(e) = too_large.take() {
                let size = usize::try_from(e.size).unwrap_or(usize::MAX);
                let err = DecodeError::from(CodecError::FrameTooLarge { size, limit: e.limit });
                if !deliver(&shared, &mut route, &me, Err(err)).await {
                    break 'read;
                }
                if frames.is_broken() {
                    recv.stop_sending(u64::from(stream_code::FRAME_TOO_LARGE));
                    if control {
                        shared.close(CloseReason::TooBig);
                    }
                    me.kill.now(stream_code::FRAME_TOO_LARGE);
                    break 'read;
                }
            }
            match frames.next_frame() {
                Ok(Some(payload)) => {
                    if !deliver(&shared, &mut route, &me, codec.decode_client(&payload)).await {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => too_large = Some(e),
            }
        }
    }
    if shared.done.is_cancelled() {
        return;
    }
    if control {
        // Closing the control stream ends the session.
        shared.tell(Inbound::Closed);
    } else if let Some(Route::Conversation(c)) = route {
        // Closing a conversation's stream leaves the conversation (SPEC §3).
        if shared.unbind(&c, me.id) {
            let _ = me.tx.try_send(StreamCmd::Finish(None));
            shared.tell(Inbound::RouteClosed(Route::Conversation(c)));
        }
    }
}

/// Hands one decoded frame to the session. The first frame of a stream other than the control
/// stream binds it: a `conversation:join` makes it that conversation's stream; anything else
/// is answered on the control stream, as is everything after it on that stream. False once
/// the session is gone.
pub(super) async fn deliver(
    shared: &Shared,
    route: &mut Option<Route>,
    me: &StreamTx,
    decoded: Result<confab_codec::ClientEnvelope, DecodeError>,
) -> bool {
    let r = match route {
        Some(r) => r.clone(),
        None => {
            let r = match &decoded {
                Ok(env) => match &env.event {
                    ClientEvent::Join(j) => {
                        let c = j.conversation_id.clone();
                        // A second stream for the same conversation replaces the first.
                        let replaced = shared.streams().bind(c.clone(), me.clone());
                        if let Some(old) = replaced {
                            let _ = old.tx.try_send(StreamCmd::Finish(None));
                        }
                        Route::Conversation(c)
                    }
                    _ => Route::Control,
                },
                Err(_) => Route::Control,
            };
            *route = Some(r.clone());
            r
        }
    };
    tokio::select! {
        r = shared.inbound.send(Inbound::Event(r, Box::new(decoded))) => r.is_ok(),
        _ = shared.done.cancelled() => false,
    }
}

pub(super) fn spawn_accept_loop(shared: &Arc<Shared>, wt: &Arc<Wt>) {
    let (s, w) = (Arc::clone(shared), Arc::clone(wt));
    shared.tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = w.accept_bi() => a,
                _ = s.done.cancelled() => return,
            };
            match accepted {
                Ok(Some(AcceptedBi::BidiStream(_, stream))) => {
                    let id = stream.send_id().into_inner();
                    open_stream(&s, stream, id, false);
                }
                // One session per connection: other requests are refused.
                Ok(Some(AcceptedBi::Request(_, mut req))) => req.stop_stream(h3::error::Code::H3_REQUEST_REJECTED),
                Ok(None) | Err(_) => {
                    s.tell(Inbound::Closed);
                    return;
                }
            }
        }
    });
    // The protocol has no use for client unidirectional streams: refuse them so they do not
    // pile up.
    let (s, w) = (Arc::clone(shared), Arc::clone(wt));
    shared.tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = w.accept_uni() => a,
                _ = s.done.cancelled() => return,
            };
            match accepted {
                Ok(Some((_, mut stream))) => stream.stop_sending(0),
                Ok(None) | Err(_) => return,
            }
        }
    });
}

/// Datagrams carry one envelope each (no length prefix). Unreliable by nature: dropped when
/// the session is busy.
pub(super) fn spawn_datagram_reader(shared: &Arc<Shared>, wt: &Arc<Wt>) {
    let mut reader = wt.datagram_reader();
    let s = Arc::clone(shared);
    shared.tasks.spawn(async move {
        loop {
            let datagram = tokio::select! {
                d = reader.read_datagram() => d,
                _ = s.done.cancelled() => return,
            };
            let Ok(datagram) = datagram else { return };
            s.datagrams.store(true, Ordering::Relaxed);
            let decoded = s.codec.decode_client(datagram.payload());
            let _ = s.inbound.try_send(Inbound::Event(Route::Control, Box::new(decoded)));
        }
    });
}

/// The client's session close (capsule or FIN), or the connection's end: the session ends
/// within a moment, with the reason the connection gives.
pub(super) fn spawn_close_watcher(shared: &Arc<Shared>, wt: &Arc<Wt>, quic: &quinn::Connection) {
    let (s, w, q) = (Arc::clone(shared), Arc::clone(wt), quic.clone());
    shared.tasks.spawn(async move {
        let lost = tokio::select! {
            r = w.closed() => {
                if let Ok(close) = &r {
                    tracing::debug!(code = close.code, reason = %close.reason, "webtransport session closed by the client");
                }
                None
            }
            e = q.closed() => Some(e),
            _ = s.done.cancelled() => return,
        };
        if let Some(quinn::ConnectionError::TimedOut) = lost.or_else(|| q.close_reason()) {
            s.close(CloseReason::Timeout);
        }
        s.tell(Inbound::Closed);
    });
}
