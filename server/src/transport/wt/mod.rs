//! The WebTransport transport (SPEC §3): HTTP/3 extended CONNECT on `/wt` over QUIC, on the
//! TLS listener's port number (UDP).
//!
//! One session per QUIC connection, opened (registered, listening) before the CONNECT is
//! answered, so that a client never hears "ready" before its connection listens; events that
//! arrive before the control stream wait in the connection's queue. The first bidirectional
//! stream the client opens is the control stream; every further one is bound to the
//! conversation its first frame joins, and carries that conversation's events for this client,
//! in order. Frames are length-prefixed envelopes (`confab_codec::frame`), MessagePack unless
//! `?codec=json`. Typing indicators and heartbeat answers go as datagrams once the client has
//! sent a datagram.
//!
//! The connection's own task runs the session, reads the control stream and runs the
//! dispatcher that routes the session's queue to the streams, writing into a stream directly
//! while nothing waits before it. Other tasks, all owned by the connection's task through a
//! [`TaskTracker`] and ended by its `done` token: a reader per conversation stream, a flusher
//! for a stream only while QUIC's flow control holds it (so a stream the client stops reading
//! stalls only itself), the stream accept loop, the datagram reader and the watcher of the
//! session's close. No conversation rule lives here: the session decides, this module routes
//! by conversation id.

mod connect;
mod dispatch;
mod endpoint;
mod lifecycle;
mod streams;
mod table;

pub use endpoint::{Congestion, ack_frequency, bind, serve};

use crate::app::{App, Settings};
use crate::auth::AuthError;
use crate::error::CloseReason;
use crate::link::{Closer, ConnOutput, Inbound, Outgoing, Pacing, Route, SharedEvent, TransportKind, closing_event};
use crate::session::{self, Opening};
use crate::transport::Opened;
use bytes::Bytes;
use confab_codec::event::{ClientEvent, ServerEvent};
use confab_codec::frame::{FrameDecoder, encode_frame};
use confab_codec::wire::Endpoint;
use confab_codec::{Codec, CodecError, ConversationId, DecodeError, Format};
use h3::quic::{BidiStream as _, RecvStream as _, SendStream as _};
use h3_webtransport::server::{AcceptedBi, WebTransportSession};
use http::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(super) type Wt = WebTransportSession<h3_quinn::Connection, Bytes>;
pub(super) type H3 = h3::server::Connection<h3_quinn::Connection, Bytes>;
pub(super) type ConnectStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
pub(super) type WtBidi = h3_webtransport::stream::BidiStream<h3_quinn::BidiStream<Bytes>, Bytes>;
pub(super) type WtSend = h3_webtransport::stream::SendStream<h3_quinn::SendStream<Bytes>, Bytes>;
pub(super) type WtRecv = h3_webtransport::stream::RecvStream<h3_quinn::RecvStream, Bytes>;

/// The path of the extended CONNECT.
pub const PATH: &str = confab_codec::wire::path::WT;
/// Frames over the codec's limit but not over this are skipped with `MESSAGE_TOO_LARGE`;
/// larger ones close the stream (as the WebSocket transport closes with 1009).
pub(super) const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// Inbound frames buffered between the stream readers and the session.
pub(super) const INBOUND_QUEUE: usize = 64;
/// How long the final events and the close may take, and how long the client then has to
/// close the QUIC connection itself before the server does.
pub(super) const CLOSE_DEADLINE: Duration = Duration::from_secs(2);
/// Between the last frame on the control stream and the close capsule.
pub(super) const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// Room left in a QUIC datagram for the HTTP/3 datagram header (the quarter stream id).
pub(super) const DATAGRAM_HEADER: usize = 8;
/// Bidirectional streams a client may have open at once: the CONNECT request, the control
/// stream and 126 conversations make 128 (docs/protocol.md §10b). quinn keeps state for every
/// stream a peer may open, so this is most of an idle session's memory: 1,024 cost 148 KiB a
/// session, 128 cost 74 KiB (benchmarks.md).
pub(super) const STREAMS_AT_ONCE: u32 = 128;
/// The QUIC window behind it. quinn gives a closed stream's credit back only in batches, once
/// more than an eighth of the window is free (`queue_max_stream_id`), so with a window of 128 a
/// client at the limit that closed one stream waited until it had closed 17. With 148, at most
/// 18 freed places go unannounced, and a client that keeps to 128 always finds the place of a
/// stream it closed free again: 148 - 18 >= 128 + 1.
pub(super) const MAX_STREAMS: u32 = 148;
const _: () = assert!(MAX_STREAMS - MAX_STREAMS / 8 > STREAMS_AT_ONCE);
/// The longest a client that speaks QUIC's ACK frequency extension (draft-ietf-quic-ack-frequency;
/// quinn does) is asked to hold an acknowledgement back. Its default is 25 ms, and that delay is
/// part of the probe timeout that recovers a lost last packet, which in chat is most packets: a
/// message alone on its stream. At 5 ms a lost message on a quiet link is resent about 20 ms
/// sooner; the price is an acknowledgement sent sooner, so less often carried by a reply
/// (benchmarks.md, issue 19, fourth pass). Clients without the extension (browsers) are not
/// asked.
pub const ACK_DELAY: Duration = Duration::from_millis(5);

/// Stream error codes the server resets or stops streams with (the codec's wire contract).
pub use confab_codec::wire::stream_reset as stream_code;

use connect::*;
use dispatch::*;
use lifecycle::*;
use streams::*;
use table::{StreamId, Table, Target};
