//! A hold line: what goes in comes out a fixed time later, in order. The delay lines' common
//! part: `delay.rs`'s stream relays (the native client's benchmark) and `wire.rs`'s packet
//! relay (the lossy scenario).

use bytes::Bytes;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks or datagrams in flight per direction; a full line slows the reader (TCP) or drops
/// (UDP, as a full router queue does).
const IN_FLIGHT: usize = 4096;

/// A line: what goes in comes out of [`next_due`] `one_way` later, in order.
pub(crate) type Line = (mpsc::Sender<(Instant, Bytes)>, mpsc::Receiver<(Instant, Bytes)>);

pub(crate) fn line() -> Line {
    mpsc::channel(IN_FLIGHT)
}

/// The next chunk or datagram of `rx`, once it has been held for `one_way`.
pub(crate) async fn next_due(rx: &mut mpsc::Receiver<(Instant, Bytes)>, one_way: Duration) -> Option<Bytes> {
    let (at, bytes) = rx.recv().await?;
    // No timer at all for no delay: a timer fires on the next millisecond's tick.
    if !one_way.is_zero() {
        tokio::time::sleep_until(at + one_way).await;
    }
    Some(bytes)
}
