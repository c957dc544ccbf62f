//! Transports: they move frames between sockets and the session layer, through the `link`.
//!
//! - `ws`: WebSocket on `/ws` and `/v1/ws` (SPEC §3), JSON text or MessagePack binary frames.

pub mod ws;
