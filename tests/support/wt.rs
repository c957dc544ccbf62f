//! A WebTransport test client on the Rust `wtransport` crate (an independent QUIC + HTTP/3
//! stack): a control stream, one stream per joined conversation, length-prefixed MessagePack
//! (or JSON) frames, datagrams. Every event is recorded with the stream it came on.

use super::WAIT;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use wtransport::{ClientConfig, Endpoint, SendStream, VarInt};

/// Where an event arrived: `"control"`, a conversation id, or `"datagram"`.
pub type Origin = String;

pub struct WtClient {
    pub conn: wtransport::Connection,
    _endpoint: Endpoint<wtransport::endpoint::endpoint_side::Client>,
    json: bool,
    next_id: u64,
    control: SendStream,
    convs: HashMap<String, SendStream>,
    events: mpsc::UnboundedReceiver<(Origin, Value)>,
    tx: mpsc::UnboundedSender<(Origin, Value)>,
    /// Events read while looking for another, in arrival order.
    pub seen: Vec<(Origin, Value)>,
    /// The session close the server sent: code and reason.
    pub closed: Option<(u32, String)>,
    /// Streams the server finished or reset.
    pub ended: Vec<Origin>,
}

fn encode(json: bool, v: &Value) -> Vec<u8> {
    if json {
        serde_json::to_vec(v).unwrap()
    } else {
        let mut buf = Vec::new();
        serde::Serialize::serialize(v, &mut rmp_serde::Serializer::new(&mut buf).with_struct_map()).unwrap();
        buf
    }
}

fn decode(json: bool, b: &[u8]) -> Value {
    if json {
        serde_json::from_slice(b).expect("server sent invalid JSON")
    } else {
        rmp_serde::from_slice(b).expect("server sent invalid MessagePack")
    }
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    confab_codec::frame::encode_frame(payload, &mut out);
    out
}

/// Reads frames from a stream until it ends, sending each event tagged with `origin`, then an
/// end marker.
fn spawn_reader(
    mut recv: wtransport::RecvStream,
    origin: Origin,
    json: bool,
    tx: mpsc::UnboundedSender<(Origin, Value)>,
) {
    tokio::spawn(async move {
        let mut frames = confab_codec::frame::FrameDecoder::new(confab_codec::frame::MAX_SERVER_FRAME_BYTES);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => {
                    frames.push(&buf[..n]).expect("server frame over 4 MiB");
                    while let Some(f) = frames.next_frame().expect("bad server frame") {
                        if tx.send((origin.clone(), decode(json, &f))).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send((origin.clone(), json!({"type": "__reset__", "error": e.to_string()})));
                    return;
                }
            }
        }
        assert_eq!(frames.buffered(), 0, "stream {origin} ended inside a frame");
        let _ = tx.send((origin, json!({"type": "__end__"})));
    });
}

impl WtClient {
    /// Connects to `https://{h3_addr}/wt?{query}` trusting the server certificate by hash (as a
    /// browser's `serverCertificateHashes`), opens the control stream, and returns without
    /// reading anything.
    pub async fn connect(h3_addr: &str, cert_sha256: &str, query: &str) -> WtClient {
        Self::try_connect(h3_addr, cert_sha256, query).await.expect("webtransport connect")
    }

    pub async fn try_connect(h3_addr: &str, cert_sha256: &str, query: &str) -> Result<WtClient, String> {
        try_connect_url(&format!("https://{h3_addr}/wt?{query}"), cert_sha256, &[]).await
    }
}

/// Connects to `url` with extra request headers; opens the control stream.
pub async fn try_connect_url(url: &str, cert_sha256: &str, headers: &[(&str, &str)]) -> Result<WtClient, String> {
    {
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&cert_sha256[2 * i..2 * i + 2], 16).unwrap();
        }
        let config = ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
            .max_idle_timeout(Some(Duration::from_secs(30)))
            .unwrap()
            .build();
        let endpoint = Endpoint::client(config).unwrap();
        let mut options = wtransport::endpoint::ConnectOptions::builder(url);
        for (k, v) in headers {
            options = options.add_header(*k, *v);
        }
        let conn = endpoint.connect(options.build()).await.map_err(|e| e.to_string())?;
        let (control, recv) = conn.open_bi().await.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        let json = url.contains("codec=json");
        let (tx, events) = mpsc::unbounded_channel();
        spawn_reader(recv, "control".into(), json, tx.clone());
        // Datagrams, and the session's end: the driver reports the server's close capsule
        // as the error of every pending operation.
        let c = conn.clone();
        let dtx = tx.clone();
        tokio::spawn(async move {
            loop {
                match c.receive_datagram().await {
                    Ok(d) => {
                        if dtx.send(("datagram".into(), decode(json, &d.payload()))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let v = match e {
                            wtransport::error::ConnectionError::ApplicationClosed(a) => json!({
                                "type": "__closed__",
                                "code": a.code().into_inner(),
                                "reason": String::from_utf8_lossy(a.reason()),
                            }),
                            other => json!({"type": "__closed__", "error": other.to_string()}),
                        };
                        let _ = dtx.send(("session".into(), v));
                        return;
                    }
                }
            }
        });
        Ok(WtClient {
            conn,
            _endpoint: endpoint,
            json,
            next_id: 0,
            control,
            convs: HashMap::new(),
            events,
            tx,
            seen: Vec::new(),
            closed: None,
            ended: Vec::new(),
        })
    }
}

impl WtClient {
    /// Connects and reads `connection:established` (from the control stream).
    pub async fn ready(mut self) -> WtClient {
        let (origin, _) = self.expect_on("connection:established").await;
        assert_eq!(origin, "control");
        self
    }

    fn envelope(&mut self, kind: &str, data: Value) -> (String, Value) {
        self.next_id += 1;
        let id = format!("wreq_{}", self.next_id);
        let v = json!({"type": kind, "data": data, "message_id": id});
        (id, v)
    }

    /// Sends on the control stream; returns the request id.
    pub async fn send(&mut self, kind: &str, data: Value) -> String {
        let (id, v) = self.envelope(kind, data);
        let bytes = frame(&encode(self.json, &v));
        self.control.write_all(&bytes).await.expect("control stream write");
        id
    }

    /// Sends on a conversation's stream (which must be open).
    pub async fn send_on(&mut self, conv: &str, kind: &str, data: Value) -> String {
        let (id, v) = self.envelope(kind, data);
        let bytes = frame(&encode(self.json, &v));
        self.convs.get_mut(conv).expect("no stream for that conversation").write_all(&bytes).await.expect("write");
        id
    }

    /// Sends a document as it is (another dialect's request) on the control stream.
    pub async fn send_value(&mut self, v: &Value) {
        let bytes = frame(&encode(self.json, v));
        self.control.write_all(&bytes).await.expect("control stream write");
    }

    /// Writes raw bytes on the control stream.
    pub async fn write_control(&mut self, bytes: &[u8]) -> bool {
        self.control.write_all(bytes).await.is_ok()
    }

    /// Sends one envelope as a datagram.
    pub fn send_datagram(&mut self, kind: &str, data: Value) {
        let (_, v) = self.envelope(kind, data);
        self.conn.send_datagram(encode(self.json, &v)).expect("datagram");
    }

    /// Opens a stream for `conv` and sends `conversation:join` (with `since_seq`) as its first
    /// frame; waits for `conversation:joined` on that stream.
    pub async fn join_since(&mut self, conv: &str, since_seq: Option<u64>) -> Value {
        let (send, recv) = self.conn.open_bi().await.unwrap().await.unwrap();
        spawn_reader(recv, conv.to_string(), self.json, self.tx.clone());
        self.convs.insert(conv.to_string(), send);
        let mut data = json!({"conversation_id": conv});
        if let Some(s) = since_seq {
            data["since_seq"] = json!(s);
        }
        let rid = self.send_on(conv, "conversation:join", data).await;
        let (origin, j) = self.expect_on("conversation:joined").await;
        assert_eq!(origin, conv, "conversation:joined must come on the conversation's own stream");
        assert_eq!(j["request_id"], rid);
        j
    }

    pub async fn join(&mut self, conv: &str) -> Value {
        self.join_since(conv, None).await
    }

    /// Finishes our side of a conversation's stream (leaving it, SPEC §3).
    pub async fn close_stream(&mut self, conv: &str) {
        let mut s = self.convs.remove(conv).expect("no stream for that conversation");
        s.finish().await.unwrap();
    }

    /// Sends a text on the conversation's stream and waits for its `message:sent`.
    pub async fn say(&mut self, conv: &str, text: &str) -> Value {
        let rid =
            self.send_on(conv, "message:send", json!({"conversation_id": conv, "content": text, "type": "text"})).await;
        loop {
            let (_, e) = self.expect_on("message:sent").await;
            if e["request_id"] == rid {
                return e["data"].clone();
            }
        }
    }

    /// The next event, or `None` after `wait` or once the session is closed.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<(Origin, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // After the close, what the streams still deliver comes within a moment.
            let deadline = if self.closed.is_some() {
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(300))
            } else {
                deadline
            };
            let (origin, v) = tokio::time::timeout_at(deadline, self.events.recv()).await.ok()??;
            match v["type"].as_str() {
                Some("__closed__") => {
                    let code = v["code"].as_u64().map_or(u32::MAX, |c| c as u32);
                    self.closed = Some((code, v["reason"].as_str().unwrap_or_default().to_string()));
                }
                Some("__end__") | Some("__reset__") => self.ended.push(origin),
                _ => return Some((origin, v)),
            }
        }
    }

    /// The next event of type `kind` and where it came from, keeping the others in `seen`.
    pub async fn expect_on(&mut self, kind: &str) -> (Origin, Value) {
        if let Some(i) = self.seen.iter().position(|(_, e)| e["type"] == kind) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some((o, e)) if e["type"] == kind => return (o, e),
                Some(x) => self.seen.push(x),
                None => panic!("no {kind} within {WAIT:?}; closed: {:?}; seen: {:#?}", self.closed, self.seen),
            }
        }
    }

    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_on(kind).await.1
    }

    /// The `error` answering request `rid`, and where it came.
    pub async fn expect_error(&mut self, rid: &str) -> (Origin, Value) {
        loop {
            let (o, e) = self.expect_on("error").await;
            if e["data"]["request_id"] == rid {
                return (o, e["data"].clone());
            }
        }
    }

    /// Asserts no event of type `kind` arrives within `wait`.
    pub async fn expect_none(&mut self, kind: &str, wait: Duration) {
        assert!(!self.seen.iter().any(|(_, e)| e["type"] == kind), "unexpected {kind}: {:#?}", self.seen);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.recv_within(left).await {
                Some((_, e)) if e["type"] == kind => panic!("unexpected {kind}: {e}"),
                Some(x) => self.seen.push(x),
                None => return,
            }
        }
    }

    /// Reads until the server closes the session; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u32, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(x) => self.seen.push(x),
                None => break,
            }
        }
        self.closed.clone().expect("server did not close the session")
    }

    /// Closes the QUIC connection (what `wtransport` offers; a browser sends a close capsule).
    pub fn close(self) {
        self.conn.close(VarInt::from_u32(0), b"bye");
    }
}
