//! Transports: they move frames between sockets and the session layer, through the `link`.
//!
//! - `ws`: WebSocket on `/ws` and `/v1/ws` (SPEC §3), JSON text or MessagePack binary frames.
//! - `wt`: WebTransport over HTTP/3 on `/wt`: a control stream, one stream per conversation,
//!   length-prefixed frames, datagrams for typing.

pub mod ws;
pub mod wt;
