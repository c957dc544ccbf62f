//! TLS material: PEM files for production, or a development certificate generated on first
//! start (SPEC §2): ECDSA P-256, valid 12 days and 1 hour in all, because Chromium accepts a
//! certificate by hash (`serverCertificateHashes`) only when it is ECDSA and valid for under 14
//! days. A dev certificate older than 10 days is replaced, at start and while the server runs
//! (checked hourly and on SIGHUP), so one in use never expires.

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Dev certificates are replaced once they are this old.
pub const DEV_CERT_MAX_AGE: Duration = Duration::from_secs(10 * 86_400);

/// A certificate chain and key, ready for TLS (TCP now, QUIC later).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Arc<Vec<u8>>,
    key_kind: KeyKind,
    /// SHA-256 of the leaf certificate (DER), for `serverCertificateHashes`.
    pub sha256: [u8; 32],
    /// When the leaf certificate stops being valid, Unix seconds.
    pub not_after: i64,
    /// Where the files are.
    pub cert_path: PathBuf,
}

#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Pkcs8,
    Sec1,
    Pkcs1,
}

impl TlsMaterial {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        let der = self.key_der.as_ref().clone();
        match self.key_kind {
            KeyKind::Pkcs8 => PrivateKeyDer::Pkcs8(der.into()),
            KeyKind::Sec1 => PrivateKeyDer::Sec1(der.into()),
            KeyKind::Pkcs1 => PrivateKeyDer::Pkcs1(der.into()),
        }
    }

    /// The certificate hash as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The certificate that new TLS handshakes get, over TCP and QUIC alike, replaceable while the
/// server runs (SIGHUP reloads the PEM files): live connections keep the one they started with.
#[derive(Debug)]
pub struct CertStore {
    current: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, String, i64)>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// Sessions put the hash of the certificate being served in their greeting.
impl confab_core::node::Certificate for CertStore {
    fn sha256_hex(&self) -> String {
        CertStore::sha256_hex(self)
    }

    fn not_after_s(&self) -> i64 {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).2
    }
}

impl CertStore {
    pub fn new(material: &TlsMaterial) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified(&provider, material)?;
        let current = (key, material.sha256_hex(), material.not_after);
        Ok(Arc::new(Self { current: std::sync::RwLock::new(current), provider }))
    }

    /// Serves `material` to every handshake from now on.
    pub fn replace(&self, material: &TlsMaterial) -> Result<(), String> {
        let key = certified(&self.provider, material)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (key, material.sha256_hex(), material.not_after);
        Ok(())
    }

    /// The SHA-256 (hex) of the certificate new handshakes get, for `/cert-hash`.
    pub fn sha256_hex(&self) -> String {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// A rustls server configuration for HTTPS/WSS (HTTP/1.1 over TLS).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn rustls::server::ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The same certificate for QUIC: TLS 1.3 only, ALPN `h3` (WebTransport over HTTP/3).
    pub fn quic_server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn rustls::server::ResolvesServerCert>);
        config.alpn_protocols = vec![b"h3".to_vec()];
        Ok(config)
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0))
    }
}

fn certified(
    provider: &rustls::crypto::CryptoProvider,
    material: &TlsMaterial,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = provider.key_provider.load_private_key(material.key()).map_err(|e| format!("private key: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(material.chain.clone(), key);
    certified.keys_match().map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Arc::new(certified))
}

fn material(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: PathBuf,
) -> Result<TlsMaterial, String> {
    let leaf = chain.first().ok_or("no certificate in the PEM file")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| format!("the certificate: {e}"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest.as_ref());
    let (key_kind, der) = match key {
        PrivateKeyDer::Pkcs8(k) => (KeyKind::Pkcs8, k.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Sec1(k) => (KeyKind::Sec1, k.secret_sec1_der().to_vec()),
        PrivateKeyDer::Pkcs1(k) => (KeyKind::Pkcs1, k.secret_pkcs1_der().to_vec()),
        _ => return Err("unsupported private key format".into()),
    };
    Ok(TlsMaterial { chain, key_der: Arc::new(der), key_kind, sha256, not_after, cert_path })
}

/// Loads a PEM certificate chain and private key (production).
pub fn load_pem(cert: &Path, key: &Path) -> Result<TlsMaterial, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cert {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    material(chain, key, cert.to_path_buf())
}

/// Loads the dev certificate from `dir`, generating it when missing or old.
pub fn dev_cert(dir: &Path) -> Result<TlsMaterial, String> {
    let cert = dir.join("dev-cert.pem");
    let key = dir.join("dev-key.pem");
    let fresh = std::fs::metadata(&cert)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < DEV_CERT_MAX_AGE);
    if !fresh || !key.exists() {
        generate(dir, &cert, &key)?;
    }
    load_pem(&cert, &key)
}

fn generate(dir: &Path, cert: &Path, key: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(12);
    let key_pair = KeyPair::generate().map_err(|e| e.to_string())?; // ECDSA P-256
    let certificate = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    std::fs::write(cert, certificate.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    write_private(key, &key_pair.serialize_pem())?;
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, pem.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_certificate_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("confab-tls-{}", rand::random::<u64>()));
        let a = dev_cert(&dir).unwrap();
        let b = dev_cert(&dir).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert!(CertStore::new(&a).and_then(|c| c.server_config()).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
