//! Per-stream I/O: each stream's outbox and its reading (in a reader task, or for the control
//! stream in the session's task), the binding of a stream to the conversation its first frame
//! joins, and the session's other inputs (new streams, datagrams, the close).

use super::*;

/// A stream's sending side, as the dispatcher and the readers hold it.
#[derive(Debug, Clone)]
pub(super) struct StreamTx {
    pub(super) id: u64,
    out: Arc<Outbox>,
    /// Stops the stream's reader (and its flusher, if one runs): cancelled by a reset, and
    /// with the session's `done`.
    stop: CancellationToken,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The client has not taken `limit` frames: a slow consumer.
    Full,
    /// The stream was finished or reset.
    Closed,
}

/// A stream's frames on their way into QUIC. The dispatcher writes a frame into the stream
/// itself when nothing waits before it: a write into quinn's send buffer takes no I/O, and
/// without a task of its own per stream the frame skips a hand-off (benchmarks.md, issue 19,
/// tenth pass). Only when QUIC's flow control holds the stream (the client reads slowly) do
/// frames queue here, and a flusher task, started then and ended when the queue is empty,
/// writes them as the client makes room, so a stalled stream stalls only itself.
#[derive(Debug)]
pub(super) struct Outbox {
    state: Mutex<OutState>,
    /// Wakes a paced sender waiting for room in the queue.
    room: tokio::sync::Notify,
    /// The most frames queued before the stream is a slow consumer.
    limit: usize,
}

#[derive(Debug)]
struct OutState {
    /// `None` once finished or reset.
    send: Option<WtSend>,
    /// Framed bytes QUIC has not taken yet, in order; the first may be partly written.
    queue: std::collections::VecDeque<Bytes>,
    /// Finish once the queue is written, and say so (the inner `None`: nobody waits).
    finish: Option<Option<oneshot::Sender<()>>>,
    /// A flusher task owns the queue; nothing is written directly meanwhile.
    flushing: bool,
}

/// What a push left for the caller to do.
enum Pushed {
    Done,
    /// Start a flusher: the queue is waiting for QUIC's flow control.
    Flush,
}

impl Outbox {
    fn state(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, payload: &[u8]) -> Result<Pushed, Refused> {
        let mut st = self.state();
        if st.send.is_none() || st.finish.is_some() {
            return Err(Refused::Closed);
        }
        if st.flushing {
            if st.queue.len() >= self.limit {
                return Err(Refused::Full);
            }
            st.queue.push_back(framed(payload));
            return Ok(Pushed::Done);
        }
        st.queue.push_back(framed(payload));
        // Written now, without waiting: a stream that would wait is left to the flusher.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if st.write_queue(&mut cx).is_ready() {
            return Ok(Pushed::Done);
        }
        st.flushing = true;
        Ok(Pushed::Flush)
    }

    /// Finishes the stream now, or after the queue if the flusher has one.
    fn finish(&self, ack: Option<oneshot::Sender<()>>) {
        let mut st = self.state();
        if st.send.is_none() || st.finish.is_some() {
            return;
        }
        st.finish = Some(ack);
        if !st.flushing {
            st.finish_now();
        }
    }

    fn reset(&self, code: u32) {
        let mut st = self.state();
        if let Some(mut send) = st.send.take() {
            send.reset(u64::from(code));
        }
        st.queue.clear();
        st.finish = None;
        drop(st);
        self.room.notify_waiters();
    }

    fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// The flusher's work: the queue written as QUIC takes it, then the finish if one waits.
    fn poll_flush(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let mut st = self.state();
        let before = st.queue.len();
        let written = st.write_queue(cx);
        if st.queue.len() < before {
            self.room.notify_waiters();
        }
        if written.is_pending() {
            return std::task::Poll::Pending;
        }
        st.flushing = false;
        if st.finish.is_some() {
            st.finish_now();
        }
        std::task::Poll::Ready(())
    }
}

impl OutState {
    /// Writes the queue into the stream until it is empty (ready) or QUIC's flow control
    /// holds it (pending, `cx` woken when it may go on). A failed write closes the stream:
    /// the client reset it, and its reader tells the session.
    fn write_queue(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use bytes::Buf;
        use tokio::io::AsyncWrite;
        let Some(send) = self.send.as_mut() else {
            self.queue.clear();
            return std::task::Poll::Ready(());
        };
        while let Some(front) = self.queue.front_mut() {
            match std::pin::Pin::new(&mut *send).poll_write(cx, front) {
                std::task::Poll::Ready(Ok(n)) => {
                    front.advance(n);
                    if front.is_empty() {
                        self.queue.pop_front();
                    }
                }
                std::task::Poll::Ready(Err(_)) => {
                    self.send = None;
                    self.queue.clear();
                    self.finish = None;
                    return std::task::Poll::Ready(());
                }
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
        std::task::Poll::Ready(())
    }

    /// Finishes the stream (quinn's finish takes no I/O: it marks the stream's end for the
    /// connection to send) and says so.
    fn finish_now(&mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.poll_finish(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        }
        if let Some(Some(ack)) = self.finish.take() {
            let _ = ack.send(());
        }
    }
}

fn framed(payload: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(payload.len() + 8);
    encode_frame(payload, &mut framed);
    Bytes::from(framed)
}

impl StreamTx {
    /// Queues a frame, written at once when nothing waits before it.
    pub(super) fn send(&self, shared: &Shared, payload: &[u8]) -> Result<(), Refused> {
        if let Pushed::Flush = self.out.push(payload)? {
            self.start_flusher(shared);
        }
        Ok(())
    }

    /// Waits for room in the queue's first `room` places, then queues the frame; gives up
    /// when the stream is reset or its session ends (a finished stream refuses the frame).
    pub(super) async fn send_paced(&self, shared: &Shared, payload: &[u8], room: usize) {
        loop {
            let notified = self.out.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.out.queued() < room {
                let _ = self.send(shared, payload);
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Finishes the stream once what is queued is written; `ack` is told then (and dropped
    /// if the stream is reset first).
    pub(super) fn finish(&self, ack: Option<oneshot::Sender<()>>) {
        self.out.finish(ack);
    }

    fn start_flusher(&self, shared: &Shared) {
        let (out, stop) = (Arc::clone(&self.out), self.stop.clone());
        shared.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = std::future::poll_fn(|cx| out.poll_flush(cx)) => {}
            }
        });
    }

    /// Resets the stream with `code` at once (a no-op once it is finished or reset), and
    /// stops its reader.
    pub(super) fn reset(&self, code: u32) {
        self.stop.cancel();
        self.out.reset(code);
    }
}

impl StreamId for StreamTx {
    fn stream_id(&self) -> u64 {
        self.id
    }
}

fn outbox(shared: &Shared, send: WtSend, id: u64) -> StreamTx {
    let state = OutState { send: Some(send), queue: Default::default(), finish: None, flushing: false };
    let out = Arc::new(Outbox { state: Mutex::new(state), room: tokio::sync::Notify::new(), limit: shared.queue_len });
    StreamTx { id, out, stop: shared.done.child_token() }
}

/// A conversation stream (or one not yet bound): starts its reader; returns its sending side.
pub(super) fn open_stream(shared: &Arc<Shared>, stream: WtBidi, id: u64) -> StreamTx {
    let (send, recv) = stream.split();
    let handle = outbox(shared, send, id);
    let incoming = Incoming::new(recv, shared.codec.clone());
    shared.tasks.spawn(read_stream(Arc::clone(shared), incoming, handle.clone()));
    handle
}

/// The control stream: its sending side, and its frames, which the session's own task reads
/// (as a WebSocket's are), one hand-off fewer for every request than a reader task of its
/// own (benchmarks.md, issue 19, tenth pass).
pub(super) fn open_control(shared: &Arc<Shared>, stream: WtBidi, id: u64) -> (StreamTx, ControlInbound) {
    let (send, recv) = stream.split();
    let handle = outbox(shared, send, id);
    let inbound = ControlInbound {
        incoming: Incoming::new(recv, shared.codec.clone()),
        me: handle.clone(),
        shared: Arc::clone(shared),
    };
    (handle, inbound)
}

/// A stream's frames, decoded one at a time.
pub(super) struct Incoming {
    recv: WtRecv,
    frames: FrameDecoder,
    codec: Codec,
    /// The stream's end, or a frame too large to read on, was read: nothing more comes.
    ended: bool,
}

/// What reading a stream gave.
enum Read {
    Frame(Result<confab_codec::ClientEnvelope, DecodeError>),
    /// A frame over the hard limit: the stream cannot be read on.
    Broken(DecodeError),
    End,
}

impl Incoming {
    fn new(recv: WtRecv, codec: Codec) -> Self {
        Self { recv, frames: FrameDecoder::with_skip_limit(codec.max_frame, HARD_FRAME_LIMIT), codec, ended: false }
    }

    fn poll_read(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Read> {
        use std::task::Poll;
        loop {
            match self.frames.next_frame() {
                Ok(Some(payload)) => return Poll::Ready(Read::Frame(self.codec.decode_client(&payload))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(self.too_large(e)),
            }
            if self.ended {
                return Poll::Ready(Read::End);
            }
            // The chunks quinn received, as they are: no read buffer per stream (4 KiB each, for
            // every idle session's control stream, when they were read into one; benchmarks.md,
            // issue 19, third pass) and no copy.
            match std::task::ready!(self.recv.poll_data(cx)) {
                Ok(Some(chunk)) => {
                    if let Err(e) = self.frames.push(&chunk) {
                        return Poll::Ready(self.too_large(e));
                    }
                }
                Ok(None) | Err(_) => {
                    self.ended = true;
                    return Poll::Ready(Read::End);
                }
            }
        }
    }

    fn too_large(&mut self, e: confab_codec::frame::FrameTooLarge) -> Read {
        let size = usize::try_from(e.size).unwrap_or(usize::MAX);
        let err = DecodeError::from(CodecError::FrameTooLarge { size, limit: e.limit });
        if self.frames.is_broken() {
            // Stop the client's side too: what follows cannot be framed.
            self.recv.stop_sending(u64::from(stream_code::FRAME_TOO_LARGE));
            self.ended = true;
            Read::Broken(err)
        } else {
            Read::Frame(Err(err))
        }
    }
}

/// The control stream's frames as the session's inbound items; its end (or a frame too large
/// to read on) ends the session.
pub(super) struct ControlInbound {
    incoming: Incoming,
    me: StreamTx,
    shared: Arc<Shared>,
}

impl futures_util::Stream for ControlInbound {
    type Item = Inbound;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Inbound>> {
        use std::task::Poll;
        // Its end (or a broken frame) was handed over once; the session stops on it.
        if self.incoming.ended {
            return Poll::Pending;
        }
        let item = match std::task::ready!(self.incoming.poll_read(cx)) {
            Read::Frame(decoded) => Inbound::Event(Route::Control, Box::new(decoded)),
            Read::Broken(err) => {
                self.shared.close(CloseReason::TooBig);
                self.me.reset(stream_code::FRAME_TOO_LARGE);
                Inbound::Event(Route::Control, Box::new(Err(err)))
            }
            Read::End => Inbound::Closed,
        };
        Poll::Ready(Some(item))
    }
}

pub(super) async fn read_stream(shared: Arc<Shared>, mut incoming: Incoming, me: StreamTx) {
    let mut route = None;
    loop {
        let read = tokio::select! {
            biased;
            _ = me.stop.cancelled() => break,
            r = std::future::poll_fn(|cx| incoming.poll_read(cx)) => r,
        };
        match read {
            Read::Frame(decoded) => {
                if !deliver(&shared, &mut route, &me, decoded).await {
                    break;
                }
            }
            Read::Broken(err) => {
                deliver(&shared, &mut route, &me, Err(err)).await;
                me.reset(stream_code::FRAME_TOO_LARGE);
                break;
            }
            Read::End => break,
        }
    }
    if shared.done.is_cancelled() {
        // The session is over: a stream not finished by then is reset.
        me.reset(stream_code::SESSION_GONE);
        return;
    }
    // Closing a conversation's stream leaves the conversation (SPEC §3).
    if let Some(Route::Conversation(c)) = route {
        if shared.unbind(&c, me.id) {
            me.finish(None);
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
                            old.finish(None);
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
                    open_stream(&s, stream, id);
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
