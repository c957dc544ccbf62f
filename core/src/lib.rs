//! confab-core: the rules of a confab server without sockets, SQL or a broker's wire.
//!
//! Everything here runs on tokio but opens no socket and reads no clock of its own: the
//! transports (in `confab-server`) feed a session [`link::Inbound`] items and write what its
//! [`link::Conn`] queues; the engines plug in through [`store::Store`], [`broker::Broker`] and
//! [`presence::Presence`]; time comes from a [`clock::Clock`]. So a session can be driven in a
//! test by pushing items in, on an in-memory store, under paused time.
//!
//! # Layout
//! - `node`: one server's shared parts, composed once ([`node::Node`]); the typed commit path.
//! - `session`: the per-connection rules (SPEC §4) and their driver.
//! - `hub`: connections, conversations' members and joins on this node; fan-out.
//! - `link`: the boundary types between transports and sessions (`Conn`, `Inbound`, `Route`).
//! - `store`: the `Store` interface, its in-memory implementation and its conformance suite.
//! - `broker`: the `Broker` interface between nodes, and the in-process bus.
//! - `receipts`: with several nodes, which one sends a `message:delivered` (the one whose
//!   conditional update of the watermark won).
//! - `sequencer`: with several nodes, each conversation's messages in seq order, once, gaps
//!   filled from the store.
//! - `presence`: the `Presence` interface (online transitions, connection limits), and its
//!   local implementation.
//! - `clock`: monotonic and wall time, injectable.
//! - `limits`: token-bucket rate limits.
//! - `auth`: JWT verification (HS256, RS256, ES256) and dev-mode minting.
//! - `metrics`: Prometheus counters, gauges and histograms.
//! - `error`: session errors and close reasons, mapped to wire codes in one place each.

pub mod auth;
pub mod broker;
pub mod clock;
pub mod error;
pub mod hub;
pub mod incidents;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod receipts;
pub mod sequencer;
pub mod session;
pub mod store;
