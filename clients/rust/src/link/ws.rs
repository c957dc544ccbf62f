//! The WebSocket transport: `wss://HOST:PORT/ws`, JSON text frames.

use super::Incoming;
use crate::config::Config;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) struct Ws {
    sink: SplitSink<Socket, Message>,
}

impl Ws {
    pub(super) async fn open(
        config: &Config,
        host: &str,
        port: u16,
        auth: &str,
        tx: mpsc::Sender<Incoming>,
    ) -> Result<Ws, String> {
        let tls = crate::tls::client_config(config.cert_sha256, b"http/1.1")?;
        let url = format!("wss://{host}:{port}/ws?{auth}&codec=json");
        let request = url.into_client_request().map_err(|e| format!("websocket request: {e}"))?;
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            Some(Connector::Rustls(Arc::new(tls))),
        )
        .await
        .map_err(|e| format!("websocket: {e}"))?;
        let (sink, mut stream) = socket.split();
        tokio::spawn(async move {
            let closed = loop {
                let event = match stream.next().await {
                    Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).ok(),
                    Some(Ok(Message::Binary(b))) => crate::wire::from_msgpack(&b),
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) => Incoming::Closed { code: Some(f.code.into()), reason: f.reason.to_string() },
                            None => Incoming::Closed { code: None, reason: "closed".into() },
                        };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Incoming::Closed { code: None, reason: e.to_string() },
                    None => break Incoming::Closed { code: None, reason: "connection ended".into() },
                };
                if let Some(event) = event {
                    if tx.send(Incoming::Event(event)).await.is_err() {
                        return;
                    }
                }
            };
            let _ = tx.send(closed).await;
        });
        Ok(Ws { sink })
    }

    pub(super) async fn send(&mut self, env: &Value) -> Result<(), String> {
        self.sink.send(Message::Text(env.to_string().into())).await.map_err(|e| e.to_string())
    }

    pub(super) async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = self.sink.close().await;
    }
}
