//! A full disk is told apart from a bug: sends get `SERVICE_UNAVAILABLE` (retryable, with
//! `retry_after`), `/readyz` answers 503 with the reason, `/metrics` counts the refusals, the
//! log says so once; nothing refused is stored, everything acknowledged survives `kill -9`,
//! and sends work again by themselves once there is room. The data directory is a small tmpfs
//! that the test fills with a file and empties again: a real `ENOSPC`. Mounting needs root:
//! elsewhere the test skips, saying so (in CI it must run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::{Server, http};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(size: &str, name: &str) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("confab-disk-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "CI must be able to mount a tmpfs (run the tests as root)");
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk(dir))
    }

    /// Fills what is left with a file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every message's content, oldest first, read page by page over REST.
fn history(s: &Server, conv: &str) -> Vec<String> {
    let auth = format!("Bearer {}", s.token("bob"));
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/v1/chat/conversations/{conv}/messages?limit=100{before}");
        let (status, page) = http(&s.addr, "GET", &path, Some(&auth), None);
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        let mut texts: Vec<String> = messages.iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect();
        texts.append(&mut out);
        out = texts;
        match messages.first() {
            Some(m) if page["has_more"] == true => before = format!("&before_seq={}", m["seq"]),
            _ => return out,
        }
    }
}

fn readyz(s: &Server) -> (u16, Value) {
    http(&s.addr, "GET", "/readyz", None, None)
}

#[tokio::test]
async fn a_full_disk_is_a_retryable_error_and_not_ready_until_there_is_room() {
    full_disk("full", &[]).await;
}

/// The same with `--sync normal`, where a message is journaled, answered, and then put into
/// SQLite: a journal that cannot be written refuses the send; rows that SQLite cannot take wait
/// (they are journaled and acknowledged) and go in once there is room.
#[tokio::test]
async fn a_full_disk_with_sync_normal_loses_nothing_acknowledged() {
    full_disk("normal", &["--sync", "normal"]).await;
}

async fn full_disk(name: &str, args: &[&str]) {
    let Some(disk) = SmallDisk::mount("8m", name) else { return };
    let log = std::env::temp_dir().join(format!("confab-disk-{name}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    // The embedded store's disk, whatever store the rest of the suite runs on.
    let mut s = Server::start_at(disk.0.join("data"), Some(log.clone()), &[&["--store", "sqlite:"], args].concat());
    let (mut alice, mut bob) = s.alice_and_bob("c1").await;
    bob.join("c1").await;
    alice.say("c1", "before").await;

    let filler = disk.fill();
    // Send until the store refuses (a write may still fit in room the WAL file already has).
    let (mut acknowledged, mut refused) = (vec!["before".to_owned()], Vec::new());
    let body = "x".repeat(1500);
    for i in 0..400 {
        let text = format!("during {i} {body}");
        let rid = alice
            .send("message:send", json!({"conversation_id": "c1", "content": text, "local_id": format!("l{i}")}))
            .await;
        loop {
            let e = alice.expect_any(&["message:sent", "error"]).await;
            if e["type"] == "error" && e["data"]["request_id"] == rid.as_str() {
                let d = &e["data"];
                assert_eq!(d["code"], "SERVICE_UNAVAILABLE", "a full disk is not an internal error: {e}");
                assert_eq!(d["details"]["retry_after"], 5, "{e}");
                refused.push((i, text));
                break;
            }
            if e["type"] == "message:sent" && e["request_id"] == rid.as_str() {
                acknowledged.push(text);
                break;
            }
        }
        if refused.len() >= 3 {
            break;
        }
    }
    assert!(refused.len() >= 3, "the store never refused a write on a full disk");
    eprintln!("disk full: {} acknowledged, {} refused", acknowledged.len(), refused.len());

    // Not ready, with the reason; counted; logged once for the whole episode.
    let (status, body) = readyz(&s);
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("store refusing writes") && reason.contains("full"), "{body}");
    assert_eq!(s.metric("confab_store_writable"), 0);
    assert!(s.metric("confab_store_write_refusals_total") >= refused.len() as i64);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.matches("store: writes fail").count(), 1, "once per episode:\n{logged}");
    // Nothing refused was stored (reads still work).
    let stored = history(&s, "c1");
    for (_, text) in &refused {
        assert!(!stored.contains(text), "a refused message was stored");
    }

    // Room again: ready again without a client's help, and the same sends go through.
    std::fs::remove_file(filler).unwrap();
    let (status, body) = readyz(&s);
    assert_eq!((status, &body["ready"]), (200, &json!(true)), "{body}");
    // The writer answers the probe, then records the success: the gauge follows a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.metric("confab_store_writable") != 1 {
        assert!(std::time::Instant::now() < deadline, "confab_store_writable still 0 after a write succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, text) in &refused {
        let rid = alice
            .send("message:send", json!({"conversation_id": "c1", "content": text, "local_id": format!("l{i}")}))
            .await;
        loop {
            let e = alice.expect("message:sent").await;
            if e["request_id"] == rid.as_str() {
                break;
            }
        }
        acknowledged.push(text.clone());
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("store: writes succeed again"));

    // Everything acknowledged survives kill -9, once each, in order.
    s.kill9();
    s.restart();
    let stored = history(&s, "c1");
    assert_eq!(stored.len(), acknowledged.len(), "every acknowledged message, once");
    let mut sorted_ack = acknowledged.clone();
    sorted_ack.sort();
    let mut sorted_stored = stored.clone();
    sorted_stored.sort();
    assert_eq!(sorted_stored, sorted_ack);
    let _ = std::fs::remove_file(&log);
}
