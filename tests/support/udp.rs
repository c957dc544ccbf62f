//! A UDP relay between one QUIC client and the server, which a test can block (every datagram
//! vanishes, as on a network that drops UDP) and which can drop the server's long datagrams
//! for a while: the blocked and lossy paths of the native client's tests. It follows the client
//! to a new address (connection migration).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    blocked: AtomicBool,
    stop: AtomicBool,
    from_client: AtomicU64,
    /// Drop the datagrams from the server longer than this (0: none), until `drop_until`.
    drop_over: AtomicUsize,
    drop_until: Mutex<Option<std::time::Instant>>,
    dropped: AtomicU64,
    client: Mutex<Option<SocketAddr>>,
}

pub struct UdpRelay {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl UdpRelay {
    /// Relays datagrams that reach `bind` to `upstream` (the server's QUIC address) and back.
    pub fn start(bind: SocketAddr, upstream: SocketAddr) -> UdpRelay {
        let down = UdpSocket::bind(bind).unwrap();
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        up.connect(upstream).unwrap();
        let tick = Some(Duration::from_millis(50));
        down.set_read_timeout(tick).unwrap();
        up.set_read_timeout(tick).unwrap();
        let addr = down.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (s, d, u) = (state.clone(), down.try_clone().unwrap(), up.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = d.recv_from(&mut buf) else { continue };
                s.from_client.fetch_add(1, Ordering::SeqCst);
                *s.client.lock().unwrap() = Some(from);
                if !s.blocked.load(Ordering::SeqCst) {
                    let _ = u.send(&buf[..n]);
                }
            }
        });
        let s = state.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.stop.load(Ordering::SeqCst) {
                let Ok(n) = up.recv(&mut buf) else { continue };
                if s.blocked.load(Ordering::SeqCst) {
                    continue;
                }
                let over = s.drop_over.load(Ordering::SeqCst);
                let dropping = s.drop_until.lock().unwrap().is_some_and(|t| std::time::Instant::now() < t);
                if over > 0 && n > over && dropping {
                    s.dropped.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let to = *s.client.lock().unwrap();
                if let Some(to) = to {
                    let _ = down.send_to(&buf[..n], to);
                }
            }
        });
        UdpRelay { addr, state }
    }

    /// Blocked, every datagram either way vanishes.
    pub fn block(&self, on: bool) {
        self.state.blocked.store(on, Ordering::SeqCst);
    }

    /// Datagrams the client sent to the relay so far, blocked or not.
    pub fn datagrams_from_client(&self) -> u64 {
        self.state.from_client.load(Ordering::SeqCst)
    }

    /// For `window`, every datagram from the server longer than `len` bytes is dropped (a
    /// lost packet, and each of its retransmissions).
    pub fn drop_longer_than(&self, len: usize, window: Duration) {
        *self.state.drop_until.lock().unwrap() = Some(std::time::Instant::now() + window);
        self.state.drop_over.store(len, Ordering::SeqCst);
    }

    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}
