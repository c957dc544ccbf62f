//! How the client trusts the server: a pinned SHA-256 of the certificate (a dev certificate,
//! as a browser's `serverCertificateHashes`), or WebPKI with the Mozilla roots.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// A rustls configuration for `alpn` (`h3` for WebTransport, `http/1.1` for WebSocket) that
/// trusts the certificate whose SHA-256 is `pin`, or with `None` the WebPKI roots.
pub(crate) fn client_config(pin: Option<[u8; 32]>, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    build(pin.map_or(Trust::WebPki, |h| Trust::Hash(Some(h))), alpn)
}

/// For fetching from a dev server: pinned, or (without a pin) any certificate.
pub(crate) fn dev_config(pin: Option<[u8; 32]>) -> Result<rustls::ClientConfig, String> {
    build(Trust::Hash(pin), b"http/1.1")
}

enum Trust {
    WebPki,
    /// The certificate with this SHA-256; any with `None` (see [`Pinned`]).
    Hash(Option<[u8; 32]>),
}

fn build(trust: Trust, alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = match trust {
        Trust::WebPki => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Hash(hash) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { hash, provider }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Accepts exactly the certificate whose SHA-256 is `hash` (any, without one: dev mode's
/// first contact, which fetches the hash that pins everything after), and checks that the
/// server holds its key (the handshake's signatures).
#[derive(Debug)]
struct Pinned {
    hash: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if self.hash.is_none_or(|h| digest.as_ref() == h) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server's certificate is not the pinned one".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
