//! The typed event model: what the session layer reads and writes, whatever the dialect.
//!
//! `client` holds the requests (checked values), `server` the events the server sends,
//! `message` the hand-written wire layout of the hottest of them.

pub mod client;
mod message;

pub(crate) use message::WithFlatFields;
pub mod server;

pub use client::*;
pub use server::*;
