//! A benchmark client: a WebSocket speaking envelopes through the codec, split so that a task
//! can send while another reads.

use bytes::Bytes;
use confab_codec::{ClientEnvelope, Codec, Dialect, Format, ServerEnvelope};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The sending half.
pub(crate) struct Tx {
    sink: SplitSink<Ws, Message>,
    codec: Codec,
}

/// The reading half.
pub(crate) struct Rx {
    stream: SplitStream<Ws>,
    codec: Codec,
}

pub(crate) async fn connect(addr: &str, token: &str, format: Format) -> Result<(Tx, Rx), String> {
    let url = format!("ws://{addr}/ws?token={token}&codec={}", format.name());
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // Small frames both ways: Nagle's algorithm would hold them back.
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.map_err(|e| e.to_string())?;
    let (sink, stream) = ws.split();
    // Server frames can exceed the client limit (history); nothing here sends them.
    let codec = Codec::new(Dialect::Winkr, format).with_max_frame(confab_codec::frame::MAX_SERVER_FRAME_BYTES);
    Ok((Tx { sink, codec }, Rx { stream, codec }))
}

impl Tx {
    /// Queues an envelope without flushing; call [`Tx::flush`] after a batch.
    pub(crate) async fn feed(&mut self, env: &ClientEnvelope) -> Result<(), String> {
        let bytes = self.codec.encode_client(env).map_err(|e| e.to_string())?;
        let msg = if self.codec.format.is_text() {
            Message::Text(String::from_utf8(bytes).map_err(|e| e.to_string())?.into())
        } else {
            Message::Binary(Bytes::from(bytes))
        };
        self.sink.feed(msg).await.map_err(|e| e.to_string())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), String> {
        self.sink.flush().await.map_err(|e| e.to_string())
    }

    pub(crate) async fn send(&mut self, env: &ClientEnvelope) -> Result<(), String> {
        self.feed(env).await?;
        self.flush().await
    }
}

impl Rx {
    /// The next server event; `None` when the connection ends.
    pub(crate) async fn next(&mut self) -> Option<ServerEnvelope> {
        loop {
            let msg = self.stream.next().await?.ok()?;
            let bytes: &[u8] = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(_) => return None,
                _ => continue,
            };
            let format = if matches!(msg, Message::Text(_)) { Format::Json } else { Format::MsgPack };
            if let Ok(env) = (Codec { format, ..self.codec }).decode_server(bytes) {
                return Some(env);
            }
        }
    }
}
