//! The QUIC endpoints and their accept loop: sockets, buffers, TLS and transport settings.

use super::*;

/// The QUIC endpoints: the TLS listener's address and, for loopback or any-address, the IPv6
/// counterpart on the same port (Chromium dials `localhost` as `::1` only, with no fallback).
pub fn bind(
    addr: SocketAddr,
    tls: &Arc<crate::tls::CertStore>,
    settings: &crate::app::Settings,
) -> Result<Vec<quinn::Endpoint>, String> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.quic_server_config()?)
        .map_err(|e| format!("quic tls: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Aligned with the heartbeat rules: the server's QUIC PINGs every ping interval keep a
    // live client's connection open; one silent for the pong timeout is gone.
    transport
        .max_idle_timeout(Some(quinn::IdleTimeout::try_from(settings.pong_timeout).map_err(|e| e.to_string())?))
        .keep_alive_interval(Some(settings.ping_interval))
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(16u32.into())
        .datagram_receive_buffer_size(Some(64 * 1024))
        .ack_frequency_config(Some(ack_frequency()))
        .congestion_controller_factory(settings.quic_congestion.factory());
    server.transport_config(Arc::new(transport));
    // A phone moving from Wi-Fi to LTE keeps its session (SPEC §3).
    server.migration(true);

    let mut addrs = vec![];
    match addr.ip() {
        // A dual-stack socket on [::] also takes IPv4; fall back to IPv4 alone without IPv6.
        IpAddr::V4(v4) if v4.is_unspecified() => {
            addrs.push((SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port()), Some(addr)))
        }
        IpAddr::V4(v4) if v4.is_loopback() => {
            addrs.push((addr, None));
            addrs.push((SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()), None));
        }
        _ => addrs.push((addr, None)),
    }
    let mut endpoints = vec![];
    for (i, (a, fallback)) in addrs.into_iter().enumerate() {
        let bound = endpoint(server.clone(), a).or_else(|e| match fallback {
            Some(f) => endpoint(server.clone(), f),
            None => Err(e),
        });
        match bound {
            Ok(ep) => endpoints.push(ep),
            // The IPv6 twin is a convenience for browsers; the main address must work.
            Err(e) if i > 0 => tracing::warn!(addr = %a, error = %e, "webtransport: no IPv6 listener"),
            Err(e) => return Err(format!("udp {a}: {e}")),
        }
    }
    Ok(endpoints)
}

/// What the QUIC socket asks of the kernel for its receive and send buffers. Every session
/// shares this one socket, and the kernel's default (about 208 KiB) overflowed under load: the
/// benchmark's 2,000 sessions lost 130,000 datagrams in a 10 s run, and each loss costs the
/// stream a QUIC retransmission timeout (seconds once it backs off), which was the p99 of
/// seconds in the WebTransport saturation runs. Linux caps it at `net.core.rmem_max` /
/// `wmem_max` (docs/operations.md).
pub(super) const UDP_BUFFER_BYTES: usize = 8 << 20;

/// A QUIC endpoint on `addr` whose socket has [`UDP_BUFFER_BYTES`] of buffers (as much as the
/// kernel allows; a refusal is not an error, the defaults still work).
pub(super) fn endpoint(server: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(error = %e, "webtransport: UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(error = %e, "webtransport: UDP send buffer");
    }
    socket.bind(&addr.into())?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket.into(), runtime)
}

/// Accepts QUIC connections until shutdown, one tracked task each.
pub async fn serve(endpoint: quinn::Endpoint, app: App) {
    let shutdown = app.node.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let app = app.clone();
        app.node.tasks.clone().spawn(connection(incoming, app));
    }
    // Sessions close themselves (with 1001) on shutdown; the endpoint lives until their
    // connections have closed, under the shutdown's drain deadline.
    app.node.tasks.spawn(async move { endpoint.wait_idle().await });
}

/// WebTransport's congestion controller, for what the server sends (`--quic-congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    Cubic,
    NewReno,
    /// Paced by the measured bandwidth and round trip: a random loss (a phone's radio) does not
    /// shrink the window, as it does under the two others.
    Bbr,
}

impl Congestion {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "cubic" => Some(Self::Cubic),
            "new-reno" => Some(Self::NewReno),
            "bbr" => Some(Self::Bbr),
            _ => None,
        }
    }

    fn factory(self) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        match self {
            Self::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            Self::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
            Self::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        }
    }
}

/// Asks the peer for acknowledgements within [`ACK_DELAY`] (and tells it this side supports the
/// extension, so that a client may ask the same of the server).
pub fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut config = quinn::AckFrequencyConfig::default();
    config.max_ack_delay(Some(ACK_DELAY));
    config
}
