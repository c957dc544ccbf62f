//! A delay line for the native client's benchmark (`confab-client-bench --rtt-ms`): this kernel
//! has no `netem`, so a round trip is made in user space. A TCP relay and a UDP relay on
//! 127.0.0.1 forward to the server, holding every chunk (TCP) or datagram (UDP) for `one_way`
//! in each direction, in order. The TCP relay ends the client's connection and opens its own
//! to the server, so TCP's handshake and its recovery of a lost segment do not cross the delay;
//! the lossy scenario, which needs them to, uses the packet-level `wire.rs` instead.

use crate::hold::{line, next_due};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The relays; stopped (every task ended) on drop.
pub(crate) struct DelayLine {
    pub(crate) tcp: SocketAddr,
    pub(crate) udp: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
    }
}

impl DelayLine {
    /// Relays to `tcp_to` (WebSocket) and `udp_to` (QUIC), `one_way` each way.
    pub(crate) async fn start(tcp_to: SocketAddr, udp_to: SocketAddr, one_way: Duration) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?);
        let line = Self {
            tcp: listener.local_addr().map_err(|e| e.to_string())?,
            udp: udp.local_addr().map_err(|e| e.to_string())?,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let (stop, tasks) = (line.stop.clone(), line.tasks.clone());
        line.tasks.spawn(stop.clone().run_until_cancelled_owned(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flow = tcp_flow(client, tcp_to, one_way, stop.clone(), tasks.clone());
                tasks.spawn(stop.clone().run_until_cancelled_owned(flow));
            }
        }));
        let (stop, tasks) = (line.stop.clone(), line.tasks.clone());
        line.tasks.spawn(stop.clone().run_until_cancelled_owned(udp_relay(udp, udp_to, one_way, stop, tasks)));
        Ok(line)
    }
}

async fn tcp_flow(client: TcpStream, to: SocketAddr, one_way: Duration, stop: CancellationToken, tasks: TaskTracker) {
    let Ok(server) = TcpStream::connect(to).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    // Each direction: one task reads and stamps (until the line stops), one writes what is due;
    // the writer ends when the reader does (its sender dropped) or the far side is gone.
    for (mut r, mut w) in [(client_r, server_w), (server_r, client_w)] {
        let (tx, mut rx) = line();
        tasks.spawn(async move {
            while let Some(b) = next_due(&mut rx, one_way).await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
        tasks.spawn(stop.clone().run_until_cancelled_owned(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || tx.send((Instant::now(), Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return;
                }
            }
        }));
    }
}

/// One upstream socket per client address, as a NAT does, so the server sees one QUIC path per
/// client.
async fn udp_relay(
    relay: Arc<UdpSocket>,
    to: SocketAddr,
    one_way: Duration,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let mut flows: HashMap<SocketAddr, mpsc::Sender<(Instant, Bytes)>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = relay.recv_from(&mut buf).await {
        let at = Instant::now();
        let up = match flows.entry(from) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let Ok(upstream) = UdpSocket::bind("0.0.0.0:0").await else { continue };
                if upstream.connect(to).await.is_err() {
                    continue;
                }
                let upstream = Arc::new(upstream);
                let ((up, mut up_rx), (down, mut down_rx)) = (line(), line());
                let sender = Arc::clone(&upstream);
                tasks.spawn(async move {
                    while let Some(b) = next_due(&mut up_rx, one_way).await {
                        let _ = sender.send(&b).await;
                    }
                });
                let back = Arc::clone(&relay);
                tasks.spawn(async move {
                    while let Some(b) = next_due(&mut down_rx, one_way).await {
                        let _ = back.send_to(&b, from).await;
                    }
                });
                tasks.spawn(stop.clone().run_until_cancelled_owned(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = upstream.recv(&mut buf).await {
                        let _ = down.try_send((Instant::now(), Bytes::copy_from_slice(&buf[..n])));
                    }
                }));
                slot.insert(up)
            }
        };
        let _ = up.try_send((at, Bytes::copy_from_slice(&buf[..n])));
    }
}
