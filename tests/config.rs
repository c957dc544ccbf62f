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
    ] {
        let path = write_config(name, text);
        let out = Command::new(env!("CARGO_BIN_EXE_confab"))
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

#[test]
fn readyz_says_ready_when_the_store_answers() {
    let s = Server::start(&[]);
    let (status, body) = support::http(&s.addr, "GET", "/readyz", None, None);
    assert_eq!(status, 200);
    assert_eq!(body, json!({"ready": true, "store": "ok"}));
    let (status, _) = support::http(&s.addr, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
}
