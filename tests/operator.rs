//! The operator's side, against the real binary: the command-line helpers (`confab token`,
//! `confab config check|example`, `confab version`), the OpenAPI document, checked by
//! schemathesis (PyPI) against a live server, and the admin console in headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::process::{Command, Output};
use support::{API_KEY, Client, JWT_SECRET, Server};

fn confab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
        .args(args)
        .env_remove("CONFAB_JWT_SECRET")
        .env_remove("CONFAB_CONFIG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("confab-operator-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether the server takes `token`: the connection is established, or refused with 4003.
async fn accepted(s: &Server, token: &str) -> bool {
    let mut c = Client::connect(&s.addr, &format!("token={token}")).await;
    match c.expect_any(&["connection:established", "error"]).await["type"].as_str() {
        Some("connection:established") => true,
        _ => {
            assert_eq!(c.expect_close().await.0, 4003);
            false
        }
    }
}

#[tokio::test]
async fn confab_token_mints_what_the_server_configured_the_same_way_accepts() {
    let s = Server::start(&[]);
    // From the flag.
    let out = confab(&["token", "--user", "alice", "--ttl", "10m", "--jwt-secret", JWT_SECRET]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(accepted(&s, &stdout(&out)).await);
    // From the configuration file, and from the environment: the server's own sources.
    let file = temp_file("token.toml", &format!("jwt_secret = \"{JWT_SECRET}\"\n"));
    let out = confab(&["token", "--user", "bob", "--config", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(accepted(&s, &stdout(&out)).await);
    let out = Command::new(env!("CARGO_BIN_EXE_confab-e2e"))
        .args(["token", "--user", "carol"])
        .env("CONFAB_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(accepted(&s, &stdout(&out)).await);
    // Another secret's token is refused: the helper really signs with the configured one.
    let out = confab(&["token", "--user", "alice", "--jwt-secret", "some-other-secret-0123456789"]);
    assert!(!accepted(&s, &stdout(&out)).await);
    // A second's token has expired by the time it is used.
    let out = confab(&["token", "--user", "alice", "--ttl", "1s", "--jwt-secret", JWT_SECRET]);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut c = Client::connect(&s.addr, &format!("token={}", stdout(&out))).await;
    assert_eq!(c.expect("error").await["data"]["code"], "TOKEN_EXPIRED");
}

#[test]
fn confab_token_refuses_what_it_cannot_sign() {
    for (args, status, says) in [
        (&["token"][..], 2, "--user"),
        (&["token", "--user", "a b"], 2, "--user \"a b\""),
        (&["token", "--user", "a", "--ttl", "soon"], 2, "is not a duration"),
        (&["token", "--user", "a", "--ttl", "400d"], 2, "between 1s and 366d"),
        (&["token", "--user", "a", "--jwt-public-key", "/nonexistent.pem"], 1, "public key"),
    ] {
        let out = confab(args);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn config_example_is_a_file_the_server_starts_with() {
    // The example names production certificate paths: point them at a real pair.
    let s = Server::start(&[]);
    let certs = s.data_dir.join("certs");
    let example = stdout(&confab(&["config", "example"]));
    assert!(example.contains("jwt_secret") && example.contains("api_key"), "{example}");
    let text = example
        .replace("/etc/confab/fullchain.pem", certs.join("dev-cert.pem").to_str().unwrap())
        .replace("/etc/confab/privkey.pem", certs.join("dev-key.pem").to_str().unwrap())
        .replace("/var/lib/confab", s.data_dir.join("example-data").to_str().unwrap());
    let file = temp_file("example.toml", &text);
    let out = confab(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(": ok (production; http=127.0.0.1:8080 https=0.0.0.0:4433"), "{}", stdout(&out));

    // Every setting the server takes is in the example, at least as a comment.
    let help = stdout(&confab(&["--help"]));
    for flag in help.split_whitespace().filter_map(|w| w.strip_prefix("--")) {
        let key = flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).replace('-', "_");
        if ["config", "help", "version"].contains(&key.as_str()) {
            continue;
        }
        assert!(example.contains(&format!("{key} =")), "the example lacks {key}");
    }
}

#[test]
fn config_check_names_the_key_at_fault() {
    let listen = "http = \"127.0.0.1:0\"\nhttps = \"off\"\n";
    for (name, text, says) in [
        ("unknown", format!("{listen}bogus_key = 1\n"), "unknown key \"bogus_key\""),
        ("value", format!("{listen}max_frame_bytes = \"lots\"\n"), "key \"max_frame_bytes\": invalid value 'lots'"),
        ("low", format!("{listen}max_frame_bytes = 10\n"), "max-frame-bytes: must be at least 1024"),
        ("pair", format!("{listen}cert = \"/x.pem\"\n"), "key \"key\": missing"),
        ("files", "cert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n".into(), "/nonexistent/c.pem"),
        ("syntax", "https = \"off\"\nhttp = \n".into(), "TOML syntax, line 2"),
        ("public", "http = \"0.0.0.0:8080\"\n".into(), "jwt-secret (or jwt-public-key) and api-key"),
    ] {
        let file = temp_file(&format!("{name}.toml"), &text);
        let out = confab(&["config", "check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{name}: {}", stderr(&out));
    }
    let out = confab(&["config", "check", "/nonexistent/confab.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    let out = confab(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn confab_version_says_the_version() {
    let out = confab(&["version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with(&format!("confab {}\n", env!("CARGO_PKG_VERSION"))), "{}", stdout(&out));
}

/// The endpoints SPEC §5 and §8 name, which the document must hold.
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("get", "/ws"),
    ("get", "/v1/ws"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/dev/token"),
    ("get", "/api/openapi.json"),
    ("get", "/v1/chat/conversations"),
    ("get", "/v1/chat/conversations/{id}/messages"),
    ("post", "/api/v1/conversations"),
    ("put", "/api/v1/conversations/{id}/members"),
    ("delete", "/api/v1/conversations/{id}"),
    ("post", "/api/v1/publish"),
    ("post", "/api/v1/conversations/{id}/messages"),
    ("get", "/api/v1/presence/{user_id}"),
    ("get", "/api/v1/ws/chat/{chat_id}"),
    ("get", "/api/v1/ws/{user_id}"),
];

fn served_document(s: &Server) -> Value {
    let (status, doc) = support::http(&s.addr, "GET", "/api/openapi.json", None, None);
    assert_eq!(status, 200);
    doc
}

#[test]
fn the_openapi_document_names_every_route_and_each_is_served() {
    let s = Server::start(&[]);
    let doc = served_document(&s);
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in SPEC_ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    // The committed copy is the served one (a dev server's).
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(support::root().join("docs/openapi.json")).unwrap()).unwrap();
    assert_eq!(committed, doc, "docs/openapi.json differs from what the server serves");
    // Each documented operation reaches its handler: a route that matched answers with a
    // documented status, never the router's bare 404 or 405.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>();
            let auth = match op["security"][0].as_object().and_then(|o| o.keys().next().cloned()).as_deref() {
                Some("api_key") => Some(format!("ApiKey {API_KEY}")),
                Some("bearer") => Some(format!("Bearer {}", s.token("alice"))),
                _ => None,
            };
            let (status, body) =
                support::http(&s.addr, &method.to_uppercase(), &concrete.join("/"), auth.as_deref(), None);
            let documented = op["responses"].as_object().unwrap();
            assert!(documented.contains_key(&status.to_string()), "{method} {path}: {status} is not documented");
            if status == 404 {
                assert!(body["error"]["code"].is_string(), "{method} {path}: the router's 404, not the handler's");
            }
            operations += 1;
        }
    }
    assert!(operations >= SPEC_ROUTES.len());
}

/// schemathesis generates requests from the document, valid and not, and checks the answers:
/// never a 5xx, each response as its schema says, the credential required where the document
/// says so. One run per credential: the server API's key, a user's JWT, and none.
#[test]
fn schemathesis_finds_nothing() {
    let found = Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success());
    if !support::have("schemathesis (pip install schemathesis)", found) {
        return;
    }
    let s = Server::start(&[]);
    let url = format!("http://{}/api/openapi.json", s.addr);
    let key = format!("Authorization: ApiKey {API_KEY}");
    let bearer = format!("Authorization: Bearer {}", s.token("alice"));
    let runs: [(&str, &[&str]); 4] = [
        ("server API, admin", &["--checks", "all", "-H", &key, "--include-tag", "server", "--include-tag", "admin"]),
        ("client REST", &["--checks", "all", "-H", &bearer, "--include-tag", "client"]),
        (
            "ops, demo, dev",
            &["--checks", "all", "--include-tag", "ops", "--include-tag", "demo", "--include-tag", "dev"],
        ),
        // A WebSocket handshake is not something schemathesis makes: only that no input,
        // however malformed, gets a 5xx.
        ("websocket", &["--checks", "not_a_server_error", "--include-tag", "websocket"]),
    ];
    for (name, args) in runs {
        let out = Command::new("schemathesis")
            .args(["run", &url, "--generation-deterministic", "--max-examples", "40", "--no-color"])
            // Its cache (`.schemathesis/`) goes there, not into the working tree.
            .current_dir(std::env::temp_dir())
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "schemathesis, {name}:\n{stdout}\n{}", stderr(&out));
        assert!(stdout.contains("passed"), "schemathesis, {name}, ran nothing:\n{stdout}");
    }
}

/// The admin console after real traffic: a wrong key is refused, the right one shows the
/// figures the traffic made, and a device's Disconnect button closes that client with 4004.
#[tokio::test]
async fn the_admin_console_shows_real_figures_and_disconnects_a_device() {
    let Some(clients) = support::browser_clients() else { return };
    let s = Server::start(&[]);
    let (mut alice, mut bob) = s.alice_and_bob("c-admin").await;
    alice.join("c-admin").await;
    bob.join("c-admin").await;
    let bob_connection = {
        // `alice_and_bob` has read the greeting; the devices list names the connection.
        let (status, user) = s.api("GET", "/api/v1/admin/users/bob", None);
        assert_eq!(status, 200);
        user["devices"][0]["connection_id"].as_str().unwrap().to_owned()
    };
    for i in 0..20 {
        alice.say("c-admin", &format!("hello {i}")).await;
        bob.expect("message:new").await;
    }
    // An error a client provokes: joining a conversation that does not exist.
    let rid = alice.send("conversation:join", json!({"conversation_id": "no-such-conversation"})).await;
    let code = alice.expect_error(&rid).await["code"].as_str().unwrap().to_owned();
    // The trends take a point every 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let shot = support::root().join("docs/images/admin.png");
    let args = [
        port,
        API_KEY.to_owned(),
        "2".into(),
        "c-admin".into(),
        code.clone(),
        "bob".into(),
        shot.display().to_string(),
    ];
    let script = clients.join("admin_console.mjs");
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::drive(&script, &args, |_| None)
    })
    .await
    .unwrap();
    assert!(out.contains("wrong key: refused"), "{out}");
    let figures: Value =
        serde_json::from_str(out.lines().find_map(|l| l.strip_prefix("figures: ")).expect("the console's figures"))
            .unwrap();
    assert_eq!(figures["connections"], 2, "{figures}");
    assert_eq!(figures["users_online"], 2, "{figures}");
    assert!(figures["max_rate"].as_f64().unwrap() > 0.0, "{figures}");
    assert_eq!(figures["kinds"], json!([["websocket", "winkr", "json", "2"]]), "{figures}");
    let row = figures["conversations"].as_array().unwrap().iter().find(|r| r[0] == "c-admin").cloned();
    let row = row.unwrap_or_else(|| panic!("c-admin is not listed: {figures}"));
    assert_eq!(
        (row[1].as_str(), row[2].as_str(), row[3].as_str()),
        (Some("alice, bob"), Some("2"), Some("20")),
        "{figures}"
    );
    assert!(figures["incidents"].as_array().unwrap().iter().any(|c| c == code.as_str()), "{figures}");
    assert!(figures["certificate"].as_str().unwrap().ends_with("days"), "{figures}");

    // The button closed bob's device, and only it, with the documented code.
    assert!(out.contains(&format!("disconnected: {bob_connection}")), "{out}");
    assert_eq!(bob.expect_close().await.0, 4004);
    alice.say("c-admin", "still here").await;
}

/// The metric names in `text`: `confab_` and what follows.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("confab_")
        .map(|(i, _)| {
            let rest = &text[i + "confab_".len()..];
            let end =
                rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
            format!("confab_{}", &rest[..end])
        })
        .filter(|n| n.len() > "confab_".len())
        .collect()
}

/// Every expression of the Grafana dashboard and the alerting rules names metrics the server
/// really exports: read from `/metrics` after traffic that gives every labelled family a
/// series (connections, closes, events, errors, a rate limit).
#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let s = Server::start(&["--typing-per-minute", "1"]);
    let (mut alice, bob) = s.alice_and_bob("c-metrics").await;
    alice.join("c-metrics").await;
    alice.say("c-metrics", "hi").await;
    for _ in 0..3 {
        alice.send("typing:start", json!({"conversation_id": "c-metrics"})).await;
    }
    let rid = alice.send("conversation:join", json!({"conversation_id": "nowhere"})).await;
    alice.expect_error(&rid).await;
    bob.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = support::http(&s.addr, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let exported: std::collections::BTreeSet<String> = body
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect();
    for needed in ["confab_rate_limited_total", "confab_errors_total", "confab_sessions_closed_total"] {
        assert!(exported.contains(needed), "the traffic did not make {needed}: {exported:?}");
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("docs/grafana/confab-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            expressions.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let alerts = std::fs::read_to_string(support::root().join("docs/prometheus/confab-alerts.yml")).unwrap();
    assert!(alerts.matches("- alert: ").count() >= 10, "{alerts}");
    expressions.push(alerts);
    let mut named = std::collections::BTreeSet::new();
    for e in &expressions {
        let names = metric_names(e);
        for n in &names {
            assert!(exported.contains(n), "{n} (in {e:?}) is not exported; exported: {exported:?}");
        }
        named.extend(names);
    }
    // The dashboard covers what an operator needs: messages, latency, the store, errors, the
    // certificate.
    for metric in [
        "confab_messages_stored_total",
        "confab_message_latency_seconds_bucket",
        "confab_store_commit_seconds_bucket",
        "confab_errors_total",
        "confab_sessions_closed_total",
        "confab_certificate_expiry_seconds",
    ] {
        assert!(named.contains(metric), "nothing shows {metric}");
    }
}

/// The running server (the process the harness started, same PID) has one malloc arena:
/// `MALLOC_ARENA_MAX=1` in its environment unless the environment it was started with set the
/// arena count (docs/operations.md, Memory per connection). glibc on Linux only.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn the_server_runs_with_one_malloc_arena_unless_told_otherwise() {
    let s = Server::start(&[]);
    assert!(accepted(&s, &s.token("arena_user")).await, "the server serves after starting itself again");
    let environ = std::fs::read(format!("/proc/{}/environ", s.pid())).expect("the server's environment");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    match std::env::var("MALLOC_ARENA_MAX") {
        Ok(own) => assert!(vars.contains(&format!("MALLOC_ARENA_MAX={own}").as_bytes()), "the operator's setting kept"),
        // glibc's tunable says it: the server is left as it was started.
        Err(_) if tunables.contains("glibc.malloc.arena_max") => {
            assert!(!vars.iter().any(|v| v.starts_with(b"MALLOC_ARENA_MAX=")), "started again over the tunable")
        }
        Err(_) => assert!(
            vars.contains(&b"MALLOC_ARENA_MAX=1".as_slice()),
            "MALLOC_ARENA_MAX=1 not in the server's environment"
        ),
    }
}
