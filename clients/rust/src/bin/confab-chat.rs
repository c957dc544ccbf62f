//! `confab-chat`: a terminal chat on confab-client (SPEC §8), for poking at a server.
//!
//! It reads commands from standard input, one a line: `join CONV`, `leave CONV`,
//! `send CONV TEXT`, `read CONV MESSAGE_ID`, `typing CONV`, `history CONV`, `quit` (end of input
//! is `quit`). It prints events as text, or with `--json` as JSON objects, one a line (logs go
//! to standard error). An authentication refusal ends it with status 1.

use clap::Parser;
use confab_client::{Client, Config, Event, TokenSource, TransportChoice, parse_cert_hash};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
#[command(name = "confab-chat", version, about = "A terminal chat for confab: WebTransport first, WebSocket fallback.")]
struct Args {
    /// The server: `https://HOST:PORT`.
    #[arg(long)]
    server: String,
    /// The user's JWT.
    #[arg(long, required_unless_present = "dev")]
    token: Option<String>,
    /// Dev mode: fetch a token for `--user` from the server's `/dev/token`.
    #[arg(long, requires = "user")]
    dev: bool,
    /// With `--dev`: the user to get a token for.
    #[arg(long)]
    user: Option<String>,
    /// The certificate's SHA-256 as 64 hex digits: pins both transports (a dev certificate).
    /// With `--dev` and no hash, the hash the server reports is pinned.
    #[arg(long)]
    cert_hash: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    transport: Transport,
    /// The client file: keeps unsent messages across restarts of the client (and recent
    /// messages, and the transport that worked on each network).
    #[arg(long)]
    outbox: Option<PathBuf>,
    /// Standard output carries only JSON objects, one a line.
    #[arg(long)]
    json: bool,
    /// Seconds between keepalives; a connection silent for three is taken as dead.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    keepalive: u64,
    /// With `--transport auto` on WebSocket: seconds before WebTransport is tried again.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    retry_webtransport: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Transport {
    Auto,
    Webtransport,
    Websocket,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let code = match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("confab-chat: {e}");
            ExitCode::FAILURE
        }
    };
    // Not through the runtime's shutdown: it would wait for the blocking read of standard
    // input, which may never end (a refusal ends the chat while its input is still open).
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let mut pin = args.cert_hash.as_deref().map(parse_cert_hash).transpose().map_err(|e| e.to_string())?;
    let token = match (&args.token, args.dev, &args.user) {
        (Some(t), _, _) => t.clone(),
        (None, true, Some(user)) => {
            if pin.is_none() {
                let hash = confab_client::dev_get(&args.server, None, "/cert-hash").await.map_err(|e| e.to_string())?;
                let hex = hash["hex"].as_str().ok_or("the server gave no certificate hash")?;
                pin = Some(parse_cert_hash(hex).map_err(|e| e.to_string())?);
            }
            confab_client::dev_token(&args.server, pin, user).await.map_err(|e| e.to_string())?
        }
        _ => return Err("--token, or --dev --user ID".into()),
    };
    let mut config = Config::new(&args.server, TokenSource::Fixed(token));
    config.cert_sha256 = pin;
    config.outbox = args.outbox.clone();
    config.keepalive = std::time::Duration::from_secs(args.keepalive);
    config.retry_webtransport_after = std::time::Duration::from_secs(args.retry_webtransport);
    config.transport = match args.transport {
        Transport::Auto => TransportChoice::Auto,
        Transport::Webtransport => TransportChoice::WebTransport,
        Transport::Websocket => TransportChoice::WebSocket,
    };
    let (client, mut events) = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            let code = e.code().unwrap_or("UNAUTHORIZED").to_owned();
            show(args.json, &Event::Error { code, message: e.to_string(), local_id: None });
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => {
                let line = match line {
                    Ok(Some(l)) => l,
                    // End of input is `quit`.
                    _ => { input_open = false; "quit".into() }
                };
                match command(&client, &line).await {
                    Ok(true) => {}
                    Ok(false) => {
                        client.close().await;
                        // What the client said before it stopped.
                        while let Ok(Some(e)) = tokio::time::timeout(std::time::Duration::from_millis(100), events.next()).await {
                            show(args.json, &e);
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(why) => {
                        let e = Event::Error { code: "VALIDATION_ERROR".into(), message: why, local_id: None };
                        show(args.json, &e);
                    }
                }
            }
            e = events.next() => match e {
                Some(e) => show(args.json, &e),
                // Stopped: refused (the error was shown).
                None => return Ok(ExitCode::FAILURE),
            },
        }
    }
}

/// Runs one line; `Ok(false)` to quit.
async fn command(client: &Client, line: &str) -> Result<bool, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let arg = |what: &str| {
        let a = rest.split_whitespace().next().filter(|a| !a.is_empty());
        a.map(str::to_owned).ok_or_else(|| format!("{verb}: {what} needed"))
    };
    let e = |x: confab_client::ClientError| x.to_string();
    match verb.trim() {
        "" => {}
        "join" => client.join(&arg("CONV")?).await.map_err(e)?,
        "leave" => client.leave(&arg("CONV")?).await.map_err(e)?,
        "send" => {
            let conv = arg("CONV")?;
            // TEXT is the rest of the line, verbatim.
            let text = rest.split_once(' ').map(|(_, t)| t).unwrap_or_default();
            if text.is_empty() {
                return Err("send: CONV TEXT needed".into());
            }
            client.send(&conv, text).await.map_err(e)?;
        }
        "read" => {
            let mut words = rest.split_whitespace();
            let (Some(conv), Some(id)) = (words.next(), words.next()) else {
                return Err("read: CONV MESSAGE_ID needed".into());
            };
            client.mark_read(conv, id).await.map_err(e)?;
        }
        "typing" => client.typing(&arg("CONV")?).await.map_err(e)?,
        "history" => client.history(&arg("CONV")?, None, None).await.map_err(e)?,
        // Not in SPEC §8's list: what a phone's network callback and its app's going to the
        // background and back do.
        "network-changed" => client.network_changed().await.map_err(e)?,
        "pause" => client.pause().await.map_err(e)?,
        "resume" => client.resume().await.map_err(e)?,
        "quit" => return Ok(false),
        other => {
            return Err(format!(
                "unknown command {other:?}: join, leave, send, read, typing, history, network-changed, pause, resume, quit"
            ));
        }
    }
    Ok(true)
}

fn show(json: bool, e: &Event) {
    if json {
        if let Ok(line) = serde_json::to_string(e) {
            println!("{line}");
        }
        return;
    }
    match e {
        Event::Connected { transport } => println!("* connected over {}", transport.name()),
        Event::Disconnected { reason } => println!("* disconnected: {reason}"),
        Event::NetworkChanged { local_address } => println!("* moved to {local_address}"),
        Event::Joined { conversation_id, .. } => println!("* joined {conversation_id}"),
        Event::Left { conversation_id } => println!("* left {conversation_id}"),
        Event::Message { message } => println!(
            "[{}] {} #{}: {}",
            message["conversation_id"].as_str().unwrap_or_default(),
            message["sender_id"].as_str().unwrap_or_default(),
            message["seq"],
            message["content"].as_str().unwrap_or_default()
        ),
        Event::State { local_id, state, .. } => println!("* {local_id}: {state:?}"),
        Event::Typing { conversation_id, user_id, is_typing: true } => {
            println!("* {user_id} is typing in {conversation_id}")
        }
        Event::Typing { .. } => {}
        Event::Presence { user_id, online } => {
            println!("* {user_id} is {}", if *online { "online" } else { "offline" })
        }
        Event::Unread { conversation_id, unread_count } => println!("* {conversation_id}: {unread_count} unread"),
        Event::History { conversation_id, messages, has_more } => {
            println!(
                "* history of {conversation_id} ({} messages{})",
                messages.len(),
                if *has_more { ", more" } else { "" }
            );
            for m in messages {
                println!(
                    "  #{} {}: {}",
                    m["seq"],
                    m["sender_id"].as_str().unwrap_or_default(),
                    m["content"].as_str().unwrap_or_default()
                );
            }
        }
        Event::Error { code, message, .. } => println!("! {code}: {message}"),
    }
}
