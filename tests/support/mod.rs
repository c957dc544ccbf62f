//! Test support: a real `confab` process on port 0 with its own data directory, a small HTTP
//! client for the APIs, and a WebSocket client that speaks JSON or MessagePack envelopes.
//! Every wait is bounded, so a broken server fails a test instead of hanging it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod cluster;
pub mod proxy;
pub mod udp;
pub mod wt;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

pub const API_KEY: &str = "test-api-key";
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef";
/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// Limits generous enough that only tests about limits meet them.
pub const GENEROUS: &[&str] = &[
    "--conn-rate",
    "10000",
    "--conn-burst",
    "10000",
    "--messages-per-minute",
    "100000",
    "--messages-per-hour",
    "100000",
    "--messages-per-day",
    "100000",
    "--typing-per-minute",
    "10000",
    "--connects-per-minute",
    "10000",
];

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    /// The HTTPS + WSS listener.
    pub https_addr: String,
    /// The QUIC (WebTransport) listener.
    pub h3_addr: String,
    /// The certificate's SHA-256 as printed at start.
    pub cert_sha256: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Where the server's standard error goes (`start_logged`), else the test's own.
    pub log: Option<PathBuf>,
    /// The PostgreSQL database made for this server (`CONFAB_E2E_STORE=postgres`), dropped with it.
    pub database: Option<String>,
}

/// A new, empty PostgreSQL database for a test, or `None` (with a message) where no PostgreSQL
/// runs; under `CI=true` a missing PostgreSQL fails the test instead. Also `None` in the
/// suite's run on PostgreSQL (`CONFAB_E2E_STORE=postgres`): a test that makes its own database
/// (cluster mode, the store cut off from PostgreSQL) runs on PostgreSQL in the ordinary run
/// already, and the second would repeat it exactly (about a minute of CI's).
pub fn scratch_postgres() -> Option<String> {
    if suite_on_postgres() {
        eprintln!("skipped: on PostgreSQL in the ordinary run already (unset CONFAB_E2E_STORE to run it)");
        return None;
    }
    let made = on_own_runtime(|| async {
        let server = confab_server::postgres::test_server_url();
        confab_server::postgres::create_scratch_database(&server, "confab_e2e").await
    });
    match made {
        Ok(url) => Some(url),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL ({}) is needed under CI=true: {e}", confab_server::postgres::test_server_url())
        }
        Err(e) => {
            eprintln!("skipped: no PostgreSQL ({e}); set CONFAB_TEST_POSTGRES");
            None
        }
    }
}

/// Whether the suite runs on PostgreSQL: `CONFAB_E2E_STORE=postgres cargo test -p confab-tests`
/// (the server of `CONFAB_TEST_POSTGRES`, else the local one), a database per server. The
/// default, `sqlite`, is the server's own store.
fn suite_on_postgres() -> bool {
    match std::env::var("CONFAB_E2E_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("CONFAB_E2E_STORE={other:?}: postgres or sqlite"),
    }
}

/// Drops a database made by [`scratch_postgres`].
pub fn drop_postgres(url: &str) {
    let url = url.to_owned();
    let _ = on_own_runtime(move || async move {
        let server = confab_server::postgres::test_server_url();
        confab_server::postgres::drop_scratch_database(&server, &url).await
    });
}

/// Runs an async call to completion on a runtime of its own, on a thread of its own: callers
/// may be inside a test's runtime, where blocking on another is refused.
fn on_own_runtime<T: Send + 'static, F: std::future::Future<Output = T> + Send>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f())
    })
    .join()
    .unwrap()
}

/// Whether the suite runs in CI (`CI=true`), where a missing prerequisite fails a test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether a prerequisite is there; outside CI a missing one skips the test.
pub fn have(what: &str, ok: bool) -> bool {
    if !ok {
        assert!(!in_ci(), "{what} is required in CI but missing");
        eprintln!("SKIPPED: {what} is not installed (see .ci/run for how CI installs it)");
    }
    ok
}

/// The browser tests' prerequisites: Chromium and playwright-core. `None`: skip.
pub fn browser_clients() -> Option<std::path::PathBuf> {
    let clients = root().join("tests/clients");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ok = have("chromium (apt-get install chromium)", std::path::Path::new(&chromium).exists())
        && have(
            "node with playwright-core (npm ci in tests/clients)",
            clients.join("node_modules/playwright-core").exists(),
        );
    ok.then_some(clients)
}

/// The project's top directory.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a browser script that asks the test for things by printing a line (`RESTART`,
/// `FREEZE`, ...): `answer` does it and returns the line to write back. Returns everything the
/// script printed, once it exited with success.
pub fn drive(script: &std::path::Path, args: &[&str], mut answer: impl FnMut(&str) -> Option<&'static str>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut node = Command::new("node")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().unwrap();
    let mut out = String::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        eprintln!("{line}");
        if let Some(reply) = answer(&line) {
            writeln!(stdin, "{reply}").unwrap();
        }
        out.push_str(&line);
        out.push('\n');
    }
    let status = node.wait().unwrap();
    assert!(status.success(), "the browser test failed:\n{out}");
    out
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl Server {
    /// Starts a server in dev mode with generous limits and `extra` flags.
    pub fn start(extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "confab-e2e-{}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        ));
        Server::start_at(dir, None, extra)
    }

    /// Starts a server on the data directory `dir`, its standard error written to `log` (at
    /// level info) when given.
    pub fn start_at(dir: PathBuf, log: Option<PathBuf>, extra: &[&str]) -> Server {
        let mut args: Vec<String> =
            vec!["--dev", "--jwt-secret", JWT_SECRET, "--api-key", API_KEY].into_iter().map(String::from).collect();
        // Generous limits, except those the test sets itself.
        for pair in GENEROUS.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend(pair.iter().map(|s| s.to_string()));
            }
        }
        // The whole suite against another configuration (another store, when there is one):
        // `CONFAB_E2E_ARGS="--sync normal" cargo test -p confab-tests`. A flag the test sets
        // itself wins.
        let suite = std::env::var("CONFAB_E2E_ARGS").unwrap_or_default();
        let mut suite = suite.split_whitespace().peekable();
        while let Some(flag) = suite.next() {
            let value = suite.next_if(|v| !v.starts_with("--"));
            if !extra.contains(&flag) {
                args.push(flag.to_string());
                args.extend(value.map(str::to_string));
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--dev-cert-dir".to_string(), dir.join("certs").display().to_string()]);
        let database = if suite_on_postgres() && !extra.contains(&"--store") {
            let url = on_own_runtime(|| async {
                let server = confab_server::postgres::test_server_url();
                confab_server::postgres::create_scratch_database(&server, "confab_e2e").await
            })
            .expect("CONFAB_E2E_STORE=postgres needs a PostgreSQL server (CONFAB_TEST_POSTGRES)");
            args.extend(["--store".to_string(), url.clone()]);
            Some(url)
        } else {
            None
        };
        let mut s = Server {
            child: None,
            addr: String::new(),
            https_addr: String::new(),
            h3_addr: String::new(),
            cert_sha256: String::new(),
            data_dir: dir,
            args,
            log,
            database,
        };
        s.spawn("127.0.0.1:0", "127.0.0.1:0");
        s
    }

    fn spawn(&mut self, http: &str, https: &str) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
            .args(&self.args)
            .arg("--http")
            .arg(http)
            .arg("--https")
            .arg(https)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", if self.log.is_some() { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(match &self.log {
                Some(path) => {
                    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
                    Stdio::from(file)
                }
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start confab");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // The log lines come on standard output too (after the addresses, as the server runs).
        let mut copy =
            self.log.as_ref().map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap());
        std::thread::spawn(move || {
            let mut found = (String::new(), String::new(), String::new());
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = std::io::Write::write_all(f, format!("{line}\n").as_bytes());
                }
                if let Some(a) = line.strip_prefix("listening http=") {
                    found.0 = a.to_string();
                } else if let Some(a) = line.strip_prefix("listening https=") {
                    found.1 = a.to_string();
                } else if let Some(a) = line.strip_prefix("listening h3=") {
                    found.2 = a.to_string();
                } else if let Some(h) = line.strip_prefix("certificate sha256=") {
                    let hash = h.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = tx.send((found.clone(), hash));
                }
            }
        });
        let ((http, https, h3), hash) =
            rx.recv_timeout(Duration::from_secs(20)).expect("server did not print its addresses");
        (self.addr, self.https_addr, self.h3_addr, self.cert_sha256) = (http, https, h3, hash);
        self.child = Some(child);
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the process to exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let start = std::time::Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            for _ in 0..300 {
                if let Ok(Some(_)) = c.try_wait() {
                    return start.elapsed();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        start.elapsed()
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        let (http, https) = (self.addr.clone(), self.https_addr.clone());
        self.spawn(&http, &https);
    }

    pub fn token(&self, user: &str) -> String {
        self.token_for(user, 3600)
    }

    pub fn token_for(&self, user: &str, ttl_s: i64) -> String {
        let (status, body) =
            http(&self.addr, "GET", &format!("/dev/token?user_id={user}&username={user}_name&ttl={ttl_s}"), None, None);
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// A token signed here with the test secret: no request to the server, for tests that
    /// connect thousands of users.
    pub fn mint(&self, user: &str) -> String {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
        let claims = json!({"sub": user, "exp": exp, "username": user});
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    /// Creates a conversation through the server API.
    pub fn conversation(&self, id: &str, members: &[&str]) {
        let (status, body) = self.api("POST", "/api/v1/conversations", Some(json!({"id": id, "members": members})));
        assert_eq!(status, 201, "{body}");
    }

    /// One unlabelled value of `/metrics` (`confab_open_fds`, `confab_tasks`, ...).
    pub fn metric(&self, name: &str) -> i64 {
        let (_, body) = http(&self.addr, "GET", "/metrics", None, None);
        let text = body.as_str().unwrap_or_default().to_owned();
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(&self.addr, method, path, Some(&format!("ApiKey {API_KEY}")), body)
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&self.addr, &format!("token={}", self.token(user))).await
    }

    /// The contents of the messages of `conv` as stored, oldest first (alice reads them).
    pub fn stored(&self, conv: &str) -> Vec<String> {
        let auth = format!("Bearer {}", self.token("alice"));
        let path = format!("/v1/chat/conversations/{conv}/messages?limit=100");
        let (status, body) = http(&self.addr, "GET", &path, Some(&auth), None);
        assert_eq!(status, 200, "{body}");
        let messages = body["messages"].as_array().cloned().or_else(|| body.as_array().cloned()).unwrap();
        messages.iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
    }

    /// Conversation `conv` with members alice and bob, both connected and ready.
    pub async fn alice_and_bob(&self, conv: &str) -> (Client, Client) {
        self.conversation(conv, &["alice", "bob"]);
        let alice = self.client("alice").await.ready().await;
        let bob = self.client("bob").await.ready().await;
        (alice, bob)
    }

    /// A WebTransport client (MessagePack) that has read `connection:established`.
    pub async fn wt(&self, user: &str) -> wt::WtClient {
        wt::WtClient::connect(&self.h3_addr, &self.cert_sha256, &format!("token={}", self.token(user)))
            .await
            .ready()
            .await
    }

    /// Alice and Bob on WebTransport (MessagePack), members of `conv`, both joined on its stream.
    pub async fn wt_alice_and_bob(&self, conv: &str) -> (wt::WtClient, wt::WtClient) {
        self.conversation(conv, &["alice", "bob"]);
        let mut alice = self.wt("alice").await;
        let mut bob = self.wt("bob").await;
        alice.join(conv).await;
        bob.join(conv).await;
        (alice, bob)
    }

    /// A WebTransport client speaking JSON.
    pub async fn wt_json(&self, user: &str) -> wt::WtClient {
        let q = format!("token={}&codec=json", self.token(user));
        wt::WtClient::connect(&self.h3_addr, &self.cert_sha256, &q).await.ready().await
    }

    pub async fn client_msgpack(&self, user: &str) -> Client {
        Client::connect(&self.addr, &format!("token={}&codec=msgpack", self.token(user))).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(url) = self.database.take() {
            drop_postgres(&url);
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos().into()
}

/// A blocking HTTP/1.1 request (tests call it outside the runtime's hot path).
pub fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let body =
        if resp.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking envelopes.
pub struct Client {
    ws: Ws,
    msgpack: bool,
    next_id: u64,
    /// Events read while looking for another, in arrival order.
    pub seen: Vec<Value>,
    pub closed: Option<(u16, String)>,
}

impl Client {
    pub async fn connect(addr: &str, query: &str) -> Client {
        Client::connect_to(addr, &format!("/ws?{query}")).await
    }

    /// Connects to any WebSocket endpoint (`/api/v1/ws/chat/c1?token=...`).
    pub async fn connect_to(addr: &str, path_and_query: &str) -> Client {
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
        Client { ws, msgpack: path_and_query.contains("codec=msgpack"), next_id: 0, seen: Vec::new(), closed: None }
    }

    /// Connects with small buffers, for tests that hold thousands of connections (the
    /// library's default read buffer is 128 KiB a connection).
    pub async fn connect_lean(addr: &str, path_and_query: &str) -> Client {
        let url = format!("ws://{addr}{path_and_query}");
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), false).await.expect("websocket connect");
        Client { ws, msgpack: false, next_id: 0, seen: Vec::new(), closed: None }
    }

    /// Wraps a socket opened by the test itself (custom headers).
    pub fn from_socket(ws: Ws, msgpack: bool) -> Client {
        Client { ws, msgpack, next_id: 0, seen: Vec::new(), closed: None }
    }

    /// Connects and reads `connection:established`.
    pub async fn ready(mut self) -> Client {
        self.expect("connection:established").await;
        self
    }

    /// Sends `{type, data, message_id}`; returns the message id.
    pub async fn send(&mut self, kind: &str, data: Value) -> String {
        self.next_id += 1;
        let id = format!("req_{}", self.next_id);
        self.send_raw_value(json!({"type": kind, "data": data, "message_id": id})).await;
        id
    }

    pub async fn send_raw_value(&mut self, v: Value) {
        assert!(self.try_send_value(v).await, "send failed: the server closed the connection");
    }

    /// Sends, and says whether the socket took it (false once the server has closed it).
    pub async fn try_send_value(&mut self, v: Value) -> bool {
        let msg = if self.msgpack {
            let mut buf = Vec::new();
            serde::Serialize::serialize(&v, &mut rmp_serde::Serializer::new(&mut buf).with_struct_map()).unwrap();
            Message::Binary(buf.into())
        } else {
            Message::Text(v.to_string().into())
        };
        self.ws.send(msg).await.is_ok()
    }

    pub async fn send_message(&mut self, m: Message) {
        let _ = self.ws.send(m).await;
    }

    /// The next event, or `None` at close or after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => {
                    // Gone without a close frame: said as a browser says it (1006), so that a
                    // caller polling in a loop fails on `closed` instead of spinning on a dead
                    // socket (the soak test once spun for minutes after its server died).
                    if self.closed.is_none() {
                        self.closed = Some((1006, "connection lost".into()));
                    }
                    return None;
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("server sent invalid JSON")),
                Message::Binary(b) => return Some(rmp_serde::from_slice(&b).expect("server sent invalid MessagePack")),
                Message::Close(f) => {
                    self.closed = Some(
                        f.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    return None;
                }
                _ => continue,
            }
        }
    }

    /// The next event of type `kind`, keeping the others in `seen`. Panics after `WAIT`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        if let Some(i) = self.seen.iter().position(|e| e["type"] == kind) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(e) if e["type"] == kind => return e,
                Some(e) => self.seen.push(e),
                None => panic!("no {kind} within {WAIT:?}; closed: {:?}; seen: {:#?}", self.closed, self.seen),
            }
        }
    }

    /// The next event of any of `kinds`, keeping the others in `seen`. Panics after `WAIT`.
    pub async fn expect_any(&mut self, kinds: &[&str]) -> Value {
        if let Some(i) = self.seen.iter().position(|e| kinds.iter().any(|k| e["type"] == *k)) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(e) if kinds.iter().any(|k| e["type"] == *k) => return e,
                Some(e) => self.seen.push(e),
                None => panic!("none of {kinds:?} within {WAIT:?}; closed: {:?}; seen: {:#?}", self.closed, self.seen),
            }
        }
    }

    /// The `error` answering request `rid`; returns its data.
    pub async fn expect_error(&mut self, rid: &str) -> Value {
        loop {
            let e = self.expect("error").await;
            if e["data"]["request_id"] == rid {
                return e["data"].clone();
            }
        }
    }

    /// Asserts no event of type `kind` arrives within `wait`.
    pub async fn expect_none(&mut self, kind: &str, wait: Duration) {
        assert!(!self.seen.iter().any(|e| e["type"] == kind), "unexpected {kind}: {:#?}", self.seen);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.recv_within(left).await {
                Some(e) if e["type"] == kind => panic!("unexpected {kind}: {e}"),
                Some(e) => self.seen.push(e),
                None => return,
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        self.expect_close_within(WAIT).await
    }

    /// As [`Client::expect_close`], waiting up to `wait`.
    pub async fn expect_close_within(&mut self, wait: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + wait;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(e) => self.seen.push(e),
                None => break,
            }
        }
        self.closed.clone().expect("server did not close the connection")
    }

    /// Joins and waits for `conversation:joined`.
    pub async fn join(&mut self, conv: &str) -> Value {
        let rid = self.send("conversation:join", json!({"conversation_id": conv})).await;
        let j = self.expect("conversation:joined").await;
        assert_eq!(j["request_id"], rid);
        j
    }

    /// Sends a text and waits for its `message:sent`; returns the stored message.
    pub async fn say(&mut self, conv: &str, text: &str) -> Value {
        let rid = self.send("message:send", json!({"conversation_id": conv, "content": text, "type": "text"})).await;
        loop {
            let e = self.expect("message:sent").await;
            if e["request_id"] == rid {
                return e["data"].clone();
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A raw TCP connection, for handshakes a WebSocket library would not send.
pub async fn raw_tcp(addr: &str, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.map(|r| r.unwrap_or(0)).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}
