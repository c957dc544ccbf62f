//! A wire with a delay and a loss rate, for the lossy scenario: a point-to-point link between
//! this process's namespace and the server's, made of two TUN devices (one on each side) and a
//! relay in this process that moves every IP packet from one to the other after `one_way`, in
//! order, or drops it. This kernel has no `netem`; the stream relays of `delay.rs` end the
//! WebSocket's TCP connection at the relay (a lost segment would be recovered over the relay's
//! hop, without the round trip), and a packet filter that drops on the sender's host is a
//! local drop that TCP sees at once (`lossy.rs`). Here a dropped packet is lost in transit, and
//! TCP and QUIC both recover it end to end, over the whole delay.
//!
//! Needs root and `ip`; both devices go when the wire is dropped (they are not persistent, so
//! closing their files removes them, the one in the server's namespace too).

use crate::child::sh;
use crate::hold::{Line, line, next_due};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tun::AsyncDevice;

/// A TUN device's MTU: a plain Ethernet path's, as a phone's.
const MTU: u16 = 1500;

/// The two devices and the relay's tasks; all gone on drop.
pub(crate) struct Wire {
    /// The server's side of the wire, to connect to.
    pub(crate) server_ip: String,
    /// Percent of the packets dropped, each way.
    loss: Arc<AtomicU32>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
    }
}

impl Wire {
    /// The `k`th wire (k < 20) from here into the namespace `ns`, on the subnet
    /// `10.(234+k).NET.0/24` (here `.1`, the namespace `.2`), holding every packet `one_way`
    /// each way.
    pub(crate) fn start(ns: &str, k: usize, net: u32, one_way: Duration) -> Result<Self, String> {
        if k >= 20 {
            return Err("at most 20 wires".into());
        }
        let id = std::process::id() % 100_000;
        let (near_if, far_if) = (format!("cbw{id}h{k}"), format!("cbw{id}n{k}"));
        let subnet = format!("10.{}.{net}", 234 + k);
        let (near_ip, far_ip) = (format!("{subnet}.1"), format!("{subnet}.2"));
        let near = device(&near_if)?;
        let far = device(&far_if)?;
        // Both are made here; the far one then moves into the server's namespace (its file
        // stays attached), and is set up there.
        sh(&["ip", "addr", "add", &format!("{near_ip}/24"), "dev", &near_if])?;
        sh(&["ip", "link", "set", &near_if, "mtu", &MTU.to_string(), "up"])?;
        sh(&["ip", "link", "set", &far_if, "netns", ns])?;
        sh(&["ip", "netns", "exec", ns, "ip", "addr", "add", &format!("{far_ip}/24"), "dev", &far_if])?;
        sh(&["ip", "netns", "exec", ns, "ip", "link", "set", &far_if, "mtu", &MTU.to_string(), "up"])?;
        let wire = Self {
            server_ip: far_ip,
            loss: Arc::new(AtomicU32::new(0)),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let (near, far) = (Arc::new(near), Arc::new(far));
        for (from, to) in [(Arc::clone(&near), Arc::clone(&far)), (far, near)] {
            let (tx, mut rx): Line = line();
            let loss = Arc::clone(&wire.loss);
            wire.tasks.spawn(wire.stop.clone().run_until_cancelled_owned(async move {
                while let Some(packet) = next_due(&mut rx, one_way).await {
                    // A packet the far side refuses is a packet lost, as on a real link.
                    let _ = to.send(&packet).await;
                }
            }));
            wire.tasks.spawn(wire.stop.clone().run_until_cancelled_owned(async move {
                let mut buf = vec![0u8; usize::from(MTU) + 64];
                while let Ok(n) = from.recv(&mut buf).await {
                    if rand::random_range(0..100) < loss.load(Ordering::Relaxed) {
                        continue;
                    }
                    // A full line drops, as a full router queue does.
                    let _ = tx.try_send((Instant::now(), Bytes::copy_from_slice(&buf[..n])));
                }
            }));
        }
        Ok(wire)
    }

    /// From now on, drops `percent`% of the packets each way, at random.
    pub(crate) fn set_loss(&self, percent: u32) {
        self.loss.store(percent, Ordering::Relaxed);
    }
}

/// A TUN device named `name`, without packet information, left for `ip` to set up.
fn device(name: &str) -> Result<AsyncDevice, String> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).mtu(MTU);
    config.platform_config(|p| {
        p.ensure_root_privileges(false);
    });
    tun::create_as_async(&config).map_err(|e| format!("TUN device {name}: {e}"))
}
