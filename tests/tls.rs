//! WSS with the dev certificate (SPEC §2): generated on first start, ECDSA P-256, under 14 days,
//! its hash printed and served at `/cert-hash`, kept across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use support::{Server, http};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn dev_cert(s: &Server) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(s.data_dir.join("certs/dev-cert.pem")).unwrap()
}

#[tokio::test]
async fn wss_works_with_the_dev_certificate() {
    let s = Server::start(&[]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(dev_cert(&s)).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&s.https_addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws?token={}", s.https_addr.rsplit(':').next().unwrap(), s.token("alice"));
    let (mut ws, _) = tokio_tungstenite::client_async(url.into_client_request().unwrap(), tls).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("connection:established"));
}

#[tokio::test]
async fn the_certificate_hash_is_served_and_survives_a_restart() {
    let mut s = Server::start(&[]);
    let (status, body) = http(&s.addr, "GET", "/cert-hash", None, None);
    assert_eq!(status, 200);
    assert_eq!(body["algorithm"], "sha-256");
    assert_eq!(body["hex"], s.cert_sha256.as_str());
    assert_eq!(body["value"].as_array().unwrap().len(), 32);
    let der = dev_cert(&s);
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, s.cert_sha256);
    // The greeting says it too, on both transports: a client pinning a hash for WebTransport
    // that had to fall back to WebSocket can tell a wrong hash from blocked UDP.
    let mut ws = s.client("alice").await;
    let est = ws.expect("connection:established").await;
    assert_eq!(est["data"]["certificate_sha256"], s.cert_sha256.as_str());
    let mut wt = support::wt::WtClient::connect(&s.h3_addr, &s.cert_sha256, &format!("token={}", s.token("bob"))).await;
    assert_eq!(wt.expect("connection:established").await["data"]["certificate_sha256"], s.cert_sha256.as_str());
    let before = s.cert_sha256.clone();
    s.kill9();
    s.restart();
    assert_eq!(s.cert_sha256, before, "a fresh dev certificate is reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_handshakes_only() {
    // Two certificates, made the way dev mode makes them (ECDSA P-256, under 14 days, so the
    // WebTransport client can pin them by hash).
    let base = std::env::temp_dir().join(format!("confab-reload-{}", std::process::id()));
    let (a, b) = (
        confab_server::tls::dev_cert(&base.join("a")).unwrap(),
        confab_server::tls::dev_cert(&base.join("b")).unwrap(),
    );
    assert_ne!(a.sha256_hex(), b.sha256_hex());
    let live = base.join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |from: &str| {
        std::fs::copy(base.join(from).join("dev-cert.pem"), live.join("cert.pem")).unwrap();
        std::fs::copy(base.join(from).join("dev-key.pem"), live.join("key.pem")).unwrap();
    };
    install("a");
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    let s = Server::start(&["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!(s.cert_sha256, a.sha256_hex());
    let q = format!("token={}", s.token("alice"));
    let mut old = support::wt::WtClient::connect(&s.h3_addr, &a.sha256_hex(), &q).await.ready().await;

    install("b");
    assert!(std::process::Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().unwrap().success());
    // New handshakes get B (retried while the signal is handled); A is refused.
    let mut reloaded = false;
    for _ in 0..50 {
        if support::wt::WtClient::try_connect(&s.h3_addr, &b.sha256_hex(), &q).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reloaded, "no handshake with the new certificate");
    assert!(support::wt::WtClient::try_connect(&s.h3_addr, &a.sha256_hex(), &q).await.is_err());
    // The session that started with A is still up.
    old.send("heartbeat", serde_json::json!({"timestamp": "2026-11-22T10:00:00Z"})).await;
    assert_eq!(old.expect("heartbeat").await["data"]["timestamp"], "2026-11-22T10:00:00Z");
    // A file that does not load keeps the current certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().unwrap().success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(support::wt::WtClient::try_connect(&s.h3_addr, &b.sha256_hex(), &q).await.is_ok());
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_dev_certificate_is_renewed_in_place() {
    let s = Server::start(&[]);
    let before = s.cert_sha256.clone();
    let q = format!("token={}", s.token("alice"));
    let mut old = support::wt::WtClient::connect(&s.h3_addr, &before, &q).await.ready().await;
    // Age the certificate past its renewal age, as 10 days of uptime would; the hourly check
    // and SIGHUP look the same way, and SIGHUP does not make a test wait an hour.
    let eleven_days = std::time::Duration::from_secs(11 * 86_400);
    let file = std::fs::File::options().write(true).open(s.data_dir.join("certs/dev-cert.pem")).unwrap();
    file.set_modified(std::time::SystemTime::now() - eleven_days).unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().unwrap().success());
    let mut now = before.clone();
    for _ in 0..50 {
        now = http(&s.addr, "GET", "/cert-hash", None, None).1["hex"].as_str().unwrap().to_owned();
        if now != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(now, before, "the dev certificate was not renewed");
    let der = dev_cert(&s);
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    assert_eq!(now, digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>(), "served = on disk");
    assert!(support::wt::WtClient::try_connect(&s.h3_addr, &now, &q).await.is_ok());
    old.send("heartbeat", serde_json::json!({"timestamp": "t1"})).await;
    assert_eq!(old.expect("heartbeat").await["data"]["timestamp"], "t1", "live sessions keep theirs");
    // A fresh certificate is left alone by the next check.
    assert!(std::process::Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().unwrap().success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(http(&s.addr, "GET", "/cert-hash", None, None).1["hex"], now.as_str());
}
