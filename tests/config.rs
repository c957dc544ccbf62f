//! The configuration file (`--config`, TOML) and readiness, against the real binary: a file's
//! settings take effect, flags override them, an unknown key or a bad value stops the server
//! at start with a message naming it, and `/readyz` says the server is ready.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use std::process::Command;
use support::Server;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("confab-config-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn settings_come_from_the_file_and_flags_override_it() {
    let path = write_config(
        "ok",
        "# a comment\nmax-frame-bytes = 1024\napi_key = \"overridden-by-the-flag\"\nallowed_origins = [\"https://app.example.com\"]\n",
    );
    let s = Server::start(&["--config", path.to_str().unwrap()]);
    // The flag's API key (the test support passes one) wins over the file's: the conversation
    // is created with it.
    let (mut alice, _bob) = s.alice_and_bob("c1").await;
    // The file's frame limit applies: a 1,500-character message is over 1,024 bytes.
    // (Refused before it is parsed, so the error cannot name the request.)
    alice.send("message:send", json!({"conversation_id": "c1", "content": "x".repeat(1500)})).await;
    assert_eq!(alice.expect("error").await["data"]["code"], "MESSAGE_TOO_LARGE");
    let rid = alice.send("message:send", json!({"conversation_id": "c1", "content": "short"})).await;
    let sent = alice.expect("message:sent").await;
    assert_eq!(sent["request_id"], rid);
    // And the file's origin list.
    let token = s.token("alice");
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert!(support::raw_tcp(&s.addr, req.as_bytes()).await.starts_with("HTTP/1.1 403"));
}

#[test]
fn a_bad_file_stops_the_server_naming_the_key() {
    for (name, text, expected) in [
        ("unknown", "http = \"127.0.0.1:0\"\nhttps = \"off\"\nbogus_key = 1\n", "unknown key \"bogus_key\""),
        ("value", "http = \"127.0.0.1:0\"\nhttps = \"off\"\nmax_frame_bytes = \"lots\"\n", "--max-frame-bytes"),
        ("syntax", "http = \n", "config"),
        ("table", "[limits]\nx = 1\n", "unknown key \"limits\""),
        (
            "low",
            "http = \"127.0.0.1:0\"\nhttps = \"off\"\nmax_frame_bytes = 10\n",
            "max-frame-bytes: must be at least 1024",
        ),
        (
            "public_url",
            "http = \"127.0.0.1:0\"\nhttps = \"off\"\npublic_url = \"ftp://files.example.com\"\n",
            "public-url: \"ftp://files.example.com\" must start with http:// or https://",
        ),
        (
            "sync",
            "http = \"127.0.0.1:0\"\nhttps = \"off\"\nsync = \"sometimes\"\n",
            "sync: \"sometimes\" is not full or normal",
        ),
        (
            "quic_congestion",
            "http = \"127.0.0.1:0\"\nhttps = \"off\"\nquic_congestion = \"vegas\"\n",
            "quic-congestion: \"vegas\" is not cubic, new-reno or bbr",
        ),
        (
            "store",
            "http = \"127.0.0.1:0\"\nhttps = \"off\"\nstore = \"mysql://root@db/chat\"\n",
            "store: \"mysql\" is not postgres://USER@HOST:PORT/DB or sqlite:DIR",
        ),
        (
            "store_user",
            "http = \"127.0.0.1:0\"\nhttps = \"off\"\nstore = \"postgres://127.0.0.1:5432/chat\"\n",
            "store: a PostgreSQL URL needs a user",
        ),
    ] {
        let path = write_config(name, text);
        let out = Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
            .args(["--config", path.to_str().unwrap(), "--data-dir"])
            .arg(std::env::temp_dir().join(format!("confab-config-data-{}", std::process::id())))
            .env_remove("CONFAB_MAX_FRAME_BYTES")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

/// A PostgreSQL store that cannot be reached at start stops the server with a message that
/// names the store, and never the URL's password.
#[test]
fn an_unreachable_store_stops_the_server_without_showing_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
        .args(["--http", "127.0.0.1:0", "--https", "off", "--store"])
        .arg(format!("postgres://confab:hunter2secret@127.0.0.1:{port}/chat"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("confab: store: store unavailable: PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("hunter2secret") && !stdout.contains("hunter2secret"), "{stdout}{stderr}");
}

#[test]
fn readyz_says_ready_when_the_store_answers() {
    let s = Server::start(&[]);
    let (status, body) = support::http(&s.addr, "GET", "/readyz", None, None);
    assert_eq!(status, 200);
    assert_eq!(body, json!({"ready": true, "store": "ok"}));
    let (status, _) = support::http(&s.addr, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
}

/// Without keys, dev mode (which hands a token to anyone) is implied only when every listener
/// is on a loopback address: on another address the server refuses to start and names the
/// missing settings, unless `--dev` is given, and then it warns and uses a random API key.
#[test]
fn without_keys_a_server_on_a_public_address_refuses_to_start_unless_dev_is_asked_for() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("confab-public-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
        .args(["--http", "0.0.0.0:0", "--https", "off", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for named in ["jwt-secret", "api-key", "--http 0.0.0.0:0", "--dev"] {
        assert!(stderr.contains(named), "{named} in: {stderr}");
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
        .args(["--dev", "--http", "0.0.0.0:0", "--https", "off", "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut port, mut key) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening http=") {
            port = a.rsplit(':').next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("DEV MODE: dev JWT secret and API key \"") {
            key = rest.split('"').next().map(str::to_owned);
            break;
        }
    }
    let (port, key) = (port.expect("listening line"), key.expect("the API key is printed"));
    assert_ne!(key, "dev-api-key", "a well-known key on a public address");
    let addr = format!("127.0.0.1:{port}");
    let create = |k: &str| {
        let body = Some(json!({"members": ["alice"]}));
        support::http(&addr, "POST", "/api/v1/conversations", Some(&format!("ApiKey {k}")), body).0
    };
    assert_eq!(create("dev-api-key"), 401);
    assert_eq!(create(&key), 201);
    let _ = child.kill();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stderr.contains("WARNING: DEV MODE ON AN ADDRESS OTHERS CAN REACH"), "{stderr}");
}
