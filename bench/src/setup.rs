//! Starting a server for the benchmark (in process, on its own runtime and threads), minting
//! tokens, and creating conversations through the server API.

use confab_server::config::{Args, Config};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub(crate) const SECRET: &str = "confab-bench-secret-0123456789";
pub(crate) const API_KEY: &str = "confab-bench-api-key";

/// A server the benchmark started; shut down and its data removed on drop.
pub(crate) struct LocalServer {
    pub(crate) addr: SocketAddr,
    /// The WebTransport (QUIC) address and the certificate's SHA-256 (hex).
    pub(crate) h3: Option<(SocketAddr, String)>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl LocalServer {
    /// Starts confab with limits out of the way (the benchmark measures speed, not policy).
    pub(crate) fn start(worker_threads: usize) -> Result<Self, String> {
        Self::start_on("127.0.0.1", worker_threads)
    }

    /// The same, listening on `ip` (port 0: any free port).
    pub(crate) fn start_on(ip: &str, worker_threads: usize) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("confab-bench-{}", std::process::id()));
        let listen = format!("{ip}:0");
        let _ = std::fs::remove_dir_all(&dir);
        let big = "1000000000";
        // Dev mode for its generated certificate (WebTransport needs TLS); the secret and the
        // API key are still the benchmark's.
        let args = [
            "confab",
            "--dev",
            "--http",
            &listen,
            "--https",
            &listen,
            "--jwt-secret",
            SECRET,
            "--api-key",
            API_KEY,
            "--conn-rate",
            big,
            "--conn-burst",
            big,
            "--messages-per-minute",
            big,
            "--messages-per-hour",
            big,
            "--messages-per-day",
            big,
            "--typing-per-minute",
            big,
            "--connects-per-minute",
            big,
            "--max-connections-per-user",
            "100",
            "--outbound-queue",
            "65536",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--data-dir".into(), dir.display().to_string()]);
        args.extend(["--dev-cert-dir".into(), dir.join("certs").display().to_string()]);
        let config = Config::from_args(<Args as clap::Parser>::parse_from(args))?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .thread_name("confab-server")
                .worker_threads(worker_threads)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                // `CONFAB_BENCH_STORE=memory`: the in-memory store (nothing durable), the versus
                // scenario's baseline for what durability costs.
                let started = if std::env::var("CONFAB_BENCH_STORE").is_ok_and(|s| s == "memory") {
                    confab_server::start_with_store(config, stop, async |sink, _| {
                        Ok(std::sync::Arc::new(confab_server::store::memory::MemoryStore::new(sink))
                            as std::sync::Arc<dyn confab_server::store::Store>)
                    })
                    .await
                } else {
                    confab_server::start(config, stop).await
                };
                match started {
                    Ok(running) => {
                        let h3 = running.h3.first().copied().zip(running.cert_sha256.clone());
                        let _ = tx.send(running.http.map(|a| (a, h3)).ok_or_else(|| "no http listener".to_string()));
                        running.wait().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (addr, h3) = rx.recv().map_err(|e| e.to_string())??;
        Ok(Self { addr, h3, shutdown, thread: Some(thread), dir })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HS256 token for `user`, valid for a day.
pub(crate) fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 86_400;
    let claims = json!({"sub": user, "exp": exp, "username": user});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap_or_default()
}

/// `POST /api/v1/conversations`.
pub(crate) async fn create_conversation(addr: &str, id: &str, members: &[String]) -> Result<(), String> {
    let body = json!({"id": id, "members": members}).to_string();
    let req = format!(
        "POST /api/v1/conversations HTTP/1.1\r\nHost: {addr}\r\nAuthorization: ApiKey {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.map_err(|e| e.to_string())?;
    if resp.starts_with("HTTP/1.1 201") {
        Ok(())
    } else {
        Err(format!("create {id}: {}", resp.lines().next().unwrap_or("")))
    }
}
