//! The native client through its generated foreign bindings: UniFFI's Python side, generated
//! here from the built `libconfab_ffi.so` by the generator at the same version, drives the
//! library (`tests/clients/ffi_chat.py`, alice) against the real server, chatting with bob, a
//! WebSocket user of the test's own. So the foreign interface itself is exercised: records,
//! enums, typed errors, a token provider and an event listener written in Python.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::Server;

/// The cdylib: built beside this test as one of its package's dependencies.
fn ffi_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!("{}confab_ffi{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    [deps.join(&name), deps.parent().unwrap().join(&name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not built beside {}", deps.display()))
}

/// Generates the Python bindings into `dir`, with the library beside them.
fn python_bindings(dir: &std::path::Path) {
    let lib = ffi_library();
    let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen-e2e"))
        .args(["generate", "--library"])
        .arg(&lib)
        .args(["--language", "python", "--no-format", "--out-dir"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "uniffi-bindgen");
    std::fs::copy(&lib, dir.join(lib.file_name().unwrap())).unwrap();
    assert!(dir.join("confab_ffi.py").exists());
}

#[tokio::test]
async fn the_python_bindings_chat_with_a_websocket_user() {
    let python = Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !support::have("python3", python) {
        return;
    }
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let mut bob = s.client("bob").await.ready().await;
    bob.join("c1").await;
    let dir = s.data_dir.join("python");
    std::fs::create_dir_all(&dir).unwrap();
    python_bindings(&dir);

    let client_file = s.data_dir.join("alice.db");
    let mut child = Command::new("python3")
        .arg(support::root().join("tests/clients/ffi_chat.py"))
        .arg(format!("https://{}", s.https_addr))
        .arg(&s.cert_sha256)
        .arg(&client_file)
        .env("PYTHONPATH", &dir)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("python: {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut passed = false;
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(60), lines.recv()).await {
        if line == "PASS" {
            passed = true;
            continue;
        }
        let Some(ask) = line.strip_prefix("ASK ") else { continue };
        let ask: Value = serde_json::from_str(ask).unwrap();
        let answer = match ask["ask"].as_str().unwrap() {
            "bob_expect" => loop {
                let m = bob.expect("message:new").await;
                if m["data"]["message"]["content"] == ask["content"] {
                    break json!({"ok": true, "id": m["data"]["message"]["id"]});
                }
            },
            "bob_read" => {
                bob.send("message:read", json!({"conversation_id": "c1", "message_id": ask["message_id"]})).await;
                json!({"ok": true})
            }
            "bob_say" => {
                bob.say("c1", ask["text"].as_str().unwrap()).await;
                json!({"ok": true})
            }
            "bob_expect_typing" => loop {
                let t = bob.expect("typing:indicator").await;
                if t["data"]["user_id"] == "alice" && t["data"]["is_typing"] == true {
                    break json!({"ok": true});
                }
            },
            other => panic!("unknown ask {other}"),
        };
        writeln!(stdin, "{answer}").unwrap();
    }
    let status = child.wait().unwrap();
    assert!(status.success() && passed, "the Python side failed: {status}");
}

/// The Kotlin and Swift sides are generated from the same library (compiling them needs the
/// Android and Apple toolchains, which CI has not: clients/rust/README.md). What the apps
/// call is there, by the names the README gives.
#[test]
fn the_kotlin_and_swift_bindings_are_generated() {
    let dir = std::env::temp_dir().join(format!("confab-bindings-{}", std::process::id()));
    let lib = ffi_library();
    for language in ["kotlin", "swift"] {
        let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen-e2e"))
            .args(["generate", "--library"])
            .arg(&lib)
            .args(["--language", language, "--no-format", "--out-dir"])
            .arg(dir.join(language))
            .status()
            .unwrap();
        assert!(status.success(), "uniffi-bindgen --language {language}");
    }
    let kotlin = std::fs::read_to_string(dir.join("kotlin/uniffi/confab_ffi/confab_ffi.kt")).unwrap();
    let swift = std::fs::read_to_string(dir.join("swift/confab_ffi.swift")).unwrap();
    assert!(dir.join("swift/confab_ffiFFI.h").exists() && dir.join("swift/confab_ffiFFI.modulemap").exists());
    for (source, names) in [
        (&kotlin, ["class ConfabClient", "interface TokenProvider", "fun `networkChanged`", "class ConfabException"]),
        (&swift, ["class ConfabClient", "protocol TokenProvider", "func networkChanged", "enum ConfabError"]),
    ] {
        for name in names {
            assert!(source.contains(name), "{name} missing from the generated bindings");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
