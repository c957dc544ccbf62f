//! Independent WebTransport clients against the real binary: Python's `aioquic`
//! (`tests/clients/aioquic_client.py`) and headless Chromium's `WebTransport` API
//! (`tests/clients/chromium_wt.mjs`, driven by `playwright-core`). The Rust `wtransport`
//! client is the third (`tests/webtransport.rs`).
//!
//! Each test skips with a message when its client is not installed on a developer's machine,
//! and fails when `CI=true` (the CI installs them: `.ci/run`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use support::{Server, browser_clients, drive, have, root};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the client");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed ({}):\n{stdout}\n{stderr}", out.status);
    eprint!("{stdout}");
    stdout
}

#[test]
fn aioquic_speaks_webtransport_with_confab() {
    let python = Command::new("python3").args(["-c", "import aioquic"]).output();
    if !have("python3 with aioquic (pip install aioquic)", python.is_ok_and(|o| o.status.success())) {
        return;
    }
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let out = run(Command::new("python3").arg(root().join("tests/clients/aioquic_client.py")).args([
        &s.h3_addr,
        &s.cert_sha256,
        &s.token("alice"),
        &s.token("bob"),
    ]));
    for step in ["established: ok", "message: ok", "datagrams: ok", "client close: ok", "server close: ok"] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn chromium_speaks_webtransport_with_confab() {
    let Some(clients) = browser_clients() else { return };
    let s = Server::start(&[]);
    s.conversation("c1", &["alice", "bob"]);
    let http_port = s.addr.rsplit(':').next().unwrap().to_string();
    let h3_port = s.h3_addr.rsplit(':').next().unwrap().to_string();
    let out = run(Command::new("node").arg(clients.join("chromium_wt.mjs")).args([
        &http_port,
        &h3_port,
        &s.cert_sha256,
        &s.token("alice"),
        &s.token("bob"),
    ]));
    for step in ["established: ok", "message: ok", "datagrams: ok", "client close: ok", "server close: ok (4003"] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn the_demo_page_chats_across_transports_and_survives_a_restart() {
    let Some(clients) = browser_clients() else { return };
    let mut s = Server::start(&[]);
    let http_port = s.addr.rsplit(':').next().unwrap().to_string();
    let shot = root().join("docs/images/demo.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let out = drive(&clients.join("demo_chat.mjs"), &[&http_port, shot.to_str().unwrap()], |line| {
        (line == "RESTART").then(|| {
            s.terminate();
            s.restart();
            "RESTARTED"
        })
    });
    for step in [
        "transports: ok",
        "presence: ok",
        "typing: ok",
        "messages and read ticks: ok",
        "reload: ok",
        "ephemeral photo: ok",
        "fallback: ok",
        "token refresh: ok",
        "reconnect: ok",
        "every message once, in order: ok",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    assert!(shot.metadata().unwrap().len() > 10_000, "the screenshot was saved");
}

/// The browser client where things go wrong (tests/clients/client_edges.mjs): refusals stop it
/// and reject `connect()`, `connect()` settles with no server, a wrong certificate hash is
/// reported, a frozen server is noticed by heartbeats, offline it waits and queues, and back
/// online it reconnects at once. FREEZE and THAW stop and continue the server process.
#[test]
fn the_browser_client_settles_notices_dead_paths_and_recovers() {
    let Some(clients) = browser_clients() else { return };
    let s = Server::start(&[]);
    s.conversation("edges", &["alice", "bob"]);
    s.conversation("secret", &["carol"]);
    let http_port = s.addr.rsplit(':').next().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").arg(sig).arg(s.pid().to_string()).status().is_ok_and(|st| st.success());
        assert!(ok, "kill {sig}");
    };
    let out = drive(&clients.join("client_edges.mjs"), &[&http_port], |line| {
        let sig = match line {
            "FREEZE" => "-STOP",
            "THAW" => "-CONT",
            _ => return None,
        };
        signal(sig);
        Some("DONE")
    });
    signal("-CONT");
    let steps = ["refused: ok", "settles: ok", "cert hash: ok", "liveness: ok", "offline: ok", "back online: ok"];
    for step in steps.into_iter().chain(["queued and refused: ok"]) {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}
