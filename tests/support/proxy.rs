//! A TCP proxy that a test cuts and heals: the network partition of the failure tests. It
//! carries a server's connections to PostgreSQL or NATS and, cut, black-holes them (bytes
//! vanish, no reset), as a partition does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy that can be cut (black hole) and healed. It runs on a runtime of
/// its own, so that the test's blocking calls never stall it.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped by a heal: the connections of before end (their peers would have timed them out).
    generation: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: String) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (o, g) = (Arc::clone(&open), Arc::clone(&generation));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((down, _)) = listener.accept().await {
                    tokio::spawn(pipe(down, upstream.clone(), Arc::clone(&o), Arc::clone(&g)));
                }
            });
        });
        Proxy { addr, open, generation }
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }
}

async fn pipe(mut down: tokio::net::TcpStream, upstream: String, open: Arc<AtomicBool>, generation: Arc<AtomicU64>) {
    let born = generation.load(Ordering::SeqCst);
    let alive = || generation.load(Ordering::SeqCst) == born;
    // Cut: the connection is accepted and never answered.
    while !open.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !alive() {
            return;
        }
    }
    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else { return };
    let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
    loop {
        tokio::select! {
            n = down.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                // While cut, what crosses is lost.
                Ok(n) if open.load(Ordering::SeqCst) => if up.write_all(&a[..n]).await.is_err() { return },
                Ok(_) => {}
            },
            n = up.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) if open.load(Ordering::SeqCst) => if down.write_all(&b[..n]).await.is_err() { return },
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if !alive() {
            return;
        }
    }
}
