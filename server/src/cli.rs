//! The operator's helpers in the `confab` binary (SPEC §8), beside running the server:
//!
//! - `confab token --user ID [--ttl 1h] [--username NAME]` prints a JWT signed with the
//!   configured HS256 secret, read from the same flags, `CONFAB_*` variables and `--config`
//!   file as the server's;
//! - `confab config check FILE` says whether a server would start with that file, and which key
//!   is at fault when not;
//! - `confab config example` prints the commented example file;
//! - `confab version`;
//! - `confab openapi`: the OpenAPI document, as `/api/openapi.json` serves it in dev mode
//!   (`docs/openapi.json` is its output).
//!
//! Exit status: 0 done, 1 the configuration is at fault (or no token can be minted), 2 a
//! command line clap refuses.

use crate::auth::{Auth, KeyConfig};
use crate::config::{self, Args, Config};
use clap::Parser;
use confab_codec::UserId;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The example configuration, every key with its default or an example value.
pub const EXAMPLE: &str = include_str!("../../docs/confab.example.toml");

/// The longest `--ttl`: a token is a test aid, not a credential to keep.
const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

/// The helpers' names: a first argument that is one of them runs it instead of the server.
pub fn is_helper(first: &std::ffi::OsStr) -> bool {
    matches!(first.to_str(), Some("token" | "config" | "version" | "openapi"))
}

/// Runs the helper that `argv[1]` names; `argv[0]` is the program.
pub fn run(argv: Vec<OsString>) -> ExitCode {
    // The helper's name stands in for the program's in clap's messages ("Usage: token ...").
    let rest: Vec<OsString> = argv.into_iter().skip(1).collect();
    match rest.first().and_then(|a| a.to_str()) {
        Some("token") => token(rest),
        Some("config") => match ConfigCommand::try_parse_from(rest) {
            Ok(ConfigCommand { command: ConfigAction::Check { file } }) => check(&file),
            Ok(ConfigCommand { command: ConfigAction::Example }) => {
                print!("{EXAMPLE}");
                ExitCode::SUCCESS
            }
            Err(e) => exit_clap(e),
        },
        Some("version") => match Version::try_parse_from(rest) {
            Ok(_) => {
                println!("confab {}", env!("CARGO_PKG_VERSION"));
                println!("transports: websocket (/ws), webtransport (/wt)");
                println!("dialects: winkr, systimz, chatrooms, actions");
                println!("stores: sqlite (embedded), postgres (cluster mode, with nats)");
                ExitCode::SUCCESS
            }
            Err(e) => exit_clap(e),
        },
        Some("openapi") => match OpenApi::try_parse_from(rest) {
            Ok(_) => match crate::api::openapi(true).to_pretty_json() {
                Ok(doc) => {
                    println!("{doc}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("confab openapi: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => exit_clap(e),
        },
        _ => {
            eprintln!("confab: unknown helper (token, config, version, openapi)");
            ExitCode::from(2)
        }
    }
}

fn exit_clap(e: clap::Error) -> ExitCode {
    let code = if e.use_stderr() { 2 } else { 0 };
    let _ = e.print();
    ExitCode::from(code)
}

/// `confab token`: a token for testing, signed as the server configured by the same settings
/// would check it.
#[derive(Debug, Parser)]
#[command(
    name = "confab token",
    bin_name = "confab token",
    about = "Prints a JWT for a user, signed with the configured HS256 secret."
)]
struct Token {
    /// The user id (the token's `sub`).
    #[arg(long)]
    user: String,
    /// How long the token is valid: `90s`, `30m`, `1h`, `7d`, or combined (`1h30m`).
    #[arg(long, default_value = "1h", value_parser = ttl)]
    ttl: Duration,
    /// The display name claim (`username`).
    #[arg(long)]
    username: Option<String>,
    #[command(flatten)]
    server: Args,
}

fn token(argv: Vec<OsString>) -> ExitCode {
    let t: Token = match config::parse_with_file(argv, |t: &Token| t.server.config.clone()) {
        Ok(t) => t,
        // clap's own message already says what and how.
        Err(e) if e.starts_with("error:") => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("confab token: {e}");
            return ExitCode::from(2);
        }
    };
    let user = match UserId::parse(&t.user) {
        Ok(u) => u,
        Err(why) => {
            eprintln!("confab token: --user {:?}: {why}", t.user);
            return ExitCode::from(2);
        }
    };
    let a = &t.server;
    let key = match (&a.jwt_secret, &a.jwt_public_key) {
        (Some(secret), _) => KeyConfig::Secret(secret.clone()),
        (None, Some(_)) => {
            eprintln!(
                "confab token: this configuration verifies tokens with a public key (jwt-public-key); \
                 only the holder of the private key can mint them"
            );
            return ExitCode::FAILURE;
        }
        // Without a key the server only runs in dev mode, which uses this secret.
        (None, None) => {
            eprintln!(
                "confab token: no jwt-secret configured: signed with dev mode's secret (a dev server accepts it)"
            );
            KeyConfig::Secret(config::DEV_JWT_SECRET.into())
        }
    };
    let minted = Auth::new(&key, a.jwt_audience.as_deref(), a.jwt_issuer.as_deref()).ok().and_then(|auth| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
        auth.mint(&user, t.username.as_deref(), (now + t.ttl).as_secs() as i64)
    });
    match minted {
        Some(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("confab token: could not sign a token with this key");
            ExitCode::FAILURE
        }
    }
}

/// `90s`, `30m`, `1h`, `7d`, a combination (`1h30m`), or bare seconds.
fn ttl(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 30m, 1h or 7d");
    if let Ok(secs) = s.parse::<u64>() {
        return check_ttl(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(bad());
    }
    check_ttl(Duration::from_secs(total))
}

fn check_ttl(d: Duration) -> Result<Duration, String> {
    if d.is_zero() || d > MAX_TTL {
        return Err(format!("must be between 1s and {}d", MAX_TTL.as_secs() / 86_400));
    }
    Ok(d)
}

#[derive(Debug, Parser)]
#[command(name = "confab config", bin_name = "confab config", about = "Configuration files.")]
struct ConfigCommand {
    #[command(subcommand)]
    command: ConfigAction,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigAction {
    /// Says whether the server would start with FILE (and the same environment); when not,
    /// names the key at fault and exits 1.
    Check { file: PathBuf },
    /// Prints the commented example file, every key with its default or an example.
    Example,
}

#[derive(Debug, Parser)]
#[command(
    name = "confab version",
    bin_name = "confab version",
    about = "Prints the version and what this build speaks."
)]
struct Version {}

#[derive(Debug, Parser)]
#[command(
    name = "confab openapi",
    bin_name = "confab openapi",
    about = "Prints the OpenAPI 3.1 document of every HTTP route (dev-mode routes included)."
)]
struct OpenApi {}

/// `confab config check FILE`: each key alone first, so that a bad value is blamed on its key,
/// then the whole as the server would take it, then the files it names.
fn check(file: &std::path::Path) -> ExitCode {
    let name = file.display();
    match checked(file) {
        Ok(summary) => {
            println!("{name}: ok ({summary})");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{name}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn checked(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    for (key, flags) in config::file_arguments(&text, &[])? {
        let argv = std::iter::once("confab".to_owned()).chain(flags);
        match Args::try_parse_from(argv) {
            // A key that needs another (`cert` and `key`): the whole file's parse says so.
            Err(e) if e.kind() != clap::error::ErrorKind::MissingRequiredArgument => {
                return Err(format!("key {key:?}: {}", clap_reason(&e)));
            }
            _ => {}
        }
    }
    let args = config::parse_args([OsString::from("confab"), "--config".into(), file.as_os_str().to_owned()])
        .map_err(|e| missing_keys(&e).unwrap_or(e))?;
    let (cert, key) = (args.cert.clone(), args.key.clone());
    let config = Config::from_args(args)?;
    if config.https.is_some() {
        if let (Some(cert), Some(key)) = (cert, key) {
            crate::tls::load_pem(&cert, &key).map_err(|e| format!("key \"cert\"/\"key\": {e}"))?;
        }
    }
    let listeners = [("http", config.http), ("https", config.https)]
        .iter()
        .filter_map(|(n, a)| a.map(|a| format!("{n}={a}")))
        .collect::<Vec<_>>()
        .join(" ");
    let mode = if config.dev { "DEV MODE" } else { "production" };
    Ok(format!("{mode}; {listeners}; store {}", config.store.describe()))
}

/// clap's "required arguments were not provided" as the keys the file lacks.
fn missing_keys(message: &str) -> Option<String> {
    if !message.contains("required arguments were not provided") {
        return None;
    }
    let keys: Vec<String> = message
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|k| format!("{:?}", k.replace('-', "_")))
        .collect();
    Some(format!("key {}: missing (the file's other keys need it)", keys.join(", ")))
}

/// The first line of clap's message, without its `error: ` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(ttl("120"), Ok(Duration::from_secs(120)));
        for bad in ["", "h", "1x", "1h3", "0s", "400d", "99999999999999999999d", "-1h"] {
            assert!(ttl(bad).is_err(), "{bad:?}");
        }
    }
}
