//! A delay line for the lossy scenario: this kernel has no `netem`, so a mobile round trip is
//! made in user space. A TCP relay and a UDP relay on 127.0.0.1 forward to the server, holding
//! every chunk (TCP) or datagram (UDP) for `one_way` in each direction, in order. The loss is
//! still the namespace's (`nft`), on the relay's side of the link to the server.

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

/// Chunks or datagrams in flight per direction; a full line slows the reader (TCP) or drops
/// (UDP, as a full router queue does).
const IN_FLIGHT: usize = 4096;

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
                let (stop, inner) = (stop.clone(), tasks.clone());
                tasks.spawn(stop.run_until_cancelled_owned(tcp_flow(client, tcp_to, one_way, inner)));
            }
        }));
        let (stop, tasks) = (line.stop.clone(), line.tasks.clone());
        line.tasks.spawn(stop.clone().run_until_cancelled_owned(udp_relay(udp, udp_to, one_way, stop, tasks)));
        Ok(line)
    }
}

/// Holds what it is given for `one_way`, then hands it to `send`, in order.
fn delayed<F, Fut>(tasks: &TaskTracker, one_way: Duration, send: F) -> mpsc::Sender<(Instant, Bytes)>
where
    F: FnMut(Bytes) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let mut send = send;
    tasks.spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at + one_way).await;
            if !send(bytes).await {
                return;
            }
        }
    });
    tx
}

async fn tcp_flow(client: TcpStream, to: SocketAddr, one_way: Duration, tasks: TaskTracker) {
    let Ok(server) = TcpStream::connect(to).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
    let server_w = Arc::new(tokio::sync::Mutex::new(server_w));
    let up = delayed(&tasks, one_way, move |b: Bytes| {
        let w = Arc::clone(&server_w);
        async move { w.lock().await.write_all(&b).await.is_ok() }
    });
    let down = delayed(&tasks, one_way, move |b: Bytes| {
        let w = Arc::clone(&client_w);
        async move { w.lock().await.write_all(&b).await.is_ok() }
    });
    let pump = |mut r: tokio::net::tcp::OwnedReadHalf, line: mpsc::Sender<(Instant, Bytes)>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || line.send((Instant::now(), Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(pump(client_r, up), pump(server_r, down));
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
                let up_socket = Arc::clone(&upstream);
                let up = delayed(&tasks, one_way, move |b: Bytes| {
                    let s = Arc::clone(&up_socket);
                    async move {
                        let _ = s.send(&b).await;
                        true
                    }
                });
                let back = Arc::clone(&relay);
                let down = delayed(&tasks, one_way, move |b: Bytes| {
                    let s = Arc::clone(&back);
                    async move {
                        let _ = s.send_to(&b, from).await;
                        true
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
