//! Configuration from flags, `CONFAB_*` environment variables and a TOML file (`--config`,
//! SPEC §2, §8), checked once at start with errors that name the setting. Precedence: a flag,
//! then its environment variable, then the file, then the default.

use crate::auth::KeyConfig;
use crate::limits::Limits;
use clap::Parser;
use confab_codec::wire::timing;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The dev-mode JWT secret. Printed at start; never use it in production.
pub const DEV_JWT_SECRET: &str = "confab-dev-secret-not-for-production";
/// The dev-mode server API key.
pub const DEV_API_KEY: &str = "dev-api-key";

#[derive(Debug, Clone, Parser)]
#[command(name = "confab", version, about = "A realtime chat server: WebTransport first, WebSocket fallback.")]
pub struct Args {
    /// A TOML file of settings: the keys are the flags' names (`jwt_secret = "..."` or
    /// `jwt-secret = "..."`); flags and environment variables override it.
    #[arg(long, env = "CONFAB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Dev mode: generated defaults and `/dev/token`. Also on when no JWT key and no API key are
    /// given and every listener is on a loopback address; elsewhere it must be asked for.
    #[arg(long, env = "CONFAB_DEV")]
    pub dev: bool,
    /// Plain HTTP + WebSocket listener (port 0 picks a free port; `off` disables it).
    #[arg(long, env = "CONFAB_HTTP", default_value = "127.0.0.1:8080", value_parser = listen_addr)]
    pub http: Listen,
    /// HTTPS + WSS listener (TCP), and WebTransport (HTTP/3, UDP) on the same address; `off`
    /// disables both.
    #[arg(long, env = "CONFAB_HTTPS", default_value = "127.0.0.1:4433", value_parser = listen_addr)]
    pub https: Listen,
    /// PEM certificate chain for HTTPS (production). Without it, dev mode generates one.
    #[arg(long, env = "CONFAB_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, env = "CONFAB_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where dev mode keeps its generated certificate.
    #[arg(long, env = "CONFAB_DEV_CERT_DIR", default_value = "certs/dev")]
    pub dev_cert_dir: PathBuf,
    /// Where the embedded store keeps its files.
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The store: `postgres://USER[:PASSWORD]@HOST:PORT/DB` for PostgreSQL, which several nodes
    /// can share (cluster mode, docs/cluster.md); `sqlite:DIR`, or `sqlite:` for --data-dir, for
    /// the embedded store (the default).
    #[arg(long, env = "CONFAB_STORE")]
    pub store: Option<String>,
    /// The broker between nodes (cluster mode): `nats://HOST:PORT`, comma-separated for a NATS
    /// cluster. Needs a store the nodes share (`--store postgres://...`).
    #[arg(long, env = "CONFAB_BROKER")]
    pub broker: Option<String>,
    /// HS256 secret that verifies client JWTs.
    #[arg(long, env = "CONFAB_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// PEM public key that verifies client JWTs (with --jwt-algorithm).
    #[arg(long, env = "CONFAB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// RS256 or ES256, for --jwt-public-key.
    #[arg(long, env = "CONFAB_JWT_ALGORITHM", default_value = "RS256")]
    pub jwt_algorithm: String,
    /// Required `aud` claim, if set.
    #[arg(long, env = "CONFAB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "CONFAB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Key for the server API (`Authorization: ApiKey KEY`).
    #[arg(long, env = "CONFAB_API_KEY")]
    pub api_key: Option<String>,
    /// Largest client frame, bytes (SPEC §4: 32 KiB).
    #[arg(long, env = "CONFAB_MAX_FRAME_BYTES", default_value_t = 32 * 1024)]
    pub max_frame_bytes: usize,
    /// Frames per second per connection.
    #[arg(long, env = "CONFAB_CONN_RATE", default_value_t = 10.0)]
    pub conn_rate: f64,
    /// Burst of frames above the per-connection rate.
    #[arg(long, env = "CONFAB_CONN_BURST", default_value_t = 20)]
    pub conn_burst: u32,
    #[arg(long, env = "CONFAB_MESSAGES_PER_MINUTE", default_value_t = 30)]
    pub messages_per_minute: u32,
    #[arg(long, env = "CONFAB_MESSAGES_PER_HOUR", default_value_t = 500)]
    pub messages_per_hour: u32,
    #[arg(long, env = "CONFAB_MESSAGES_PER_DAY", default_value_t = 2000)]
    pub messages_per_day: u32,
    #[arg(long, env = "CONFAB_TYPING_PER_MINUTE", default_value_t = 20)]
    pub typing_per_minute: u32,
    #[arg(long, env = "CONFAB_CONNECTS_PER_MINUTE", default_value_t = 10)]
    pub connects_per_minute: u32,
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_USER", default_value_t = 5)]
    pub max_connections_per_user: usize,
    /// Events queued for one connection before it is dropped as a slow consumer.
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Server ping interval, milliseconds (SPEC §3: 30 s).
    #[arg(long, env = "CONFAB_PING_INTERVAL_MS", default_value_t = timing::PING_INTERVAL.as_millis() as u64)]
    pub ping_interval_ms: u64,
    /// Close a connection with no pong for this long, milliseconds (SPEC §3: 60 s).
    #[arg(long, env = "CONFAB_PONG_TIMEOUT_MS", default_value_t = timing::PONG_TIMEOUT.as_millis() as u64)]
    pub pong_timeout_ms: u64,
    /// Time a client has to finish TLS and send its request headers, milliseconds (SPEC §3: 30 s).
    #[arg(long, env = "CONFAB_HANDSHAKE_TIMEOUT_MS", default_value_t = 30_000)]
    pub handshake_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long connections get to be told and closed before the server
    /// exits anyway, milliseconds (the store's last batch is always committed).
    #[arg(long, env = "CONFAB_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// The server's public base URL (`https://chat.example.com`), for the absolute URLs it
    /// gives out (attachments). Unset: each connection's own scheme and `Host`, which a client
    /// controls, so set it in production, and behind a proxy.
    #[arg(long, env = "CONFAB_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Browser origins allowed to open WebSockets and WebTransport sessions, comma-separated
    /// (`https://app.example.com,http://localhost:3000`). Empty: any origin. Requests without an
    /// `Origin` header (native apps) are always allowed: the token is the credential.
    #[arg(long, env = "CONFAB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// The dialect of `/ws`, `/v1/ws` and `/wt` connections that name none (`?dialect=` or a
    /// `confab.<dialect>` subprotocol): winkr, systimz, chatrooms or actions (SPEC §7).
    #[arg(long, env = "CONFAB_DEFAULT_DIALECT", default_value = "winkr")]
    pub default_dialect: String,
    /// When a message counts as stored, and `message:sent` goes out: `full`, synced to disk
    /// (survives a power loss); `normal`, written to the OS and synced at checkpoints (survives
    /// a crash of confab, `kill -9`, but not of the machine; about half the latency).
    #[arg(long, env = "CONFAB_SYNC", default_value = "full")]
    pub sync: String,
    /// WebTransport's congestion controller, for what the server sends: `cubic` (QUIC's and
    /// TCP's usual), `new-reno`, or `bbr` (quinn's, marked experimental there), which does not
    /// take a random loss for congestion (docs/operations.md).
    #[arg(long, env = "CONFAB_QUIC_CONGESTION", default_value = "cubic")]
    pub quic_congestion: String,
    /// Log as JSON (the default outside dev mode).
    #[arg(long, env = "CONFAB_LOG_JSON")]
    pub log_json: bool,
}

/// Parses the command line, with the settings of the `--config` file (or `CONFAB_CONFIG`)
/// filled in where neither a flag nor an environment variable gives them.
pub fn parse_args<I, T>(argv: I) -> Result<Args, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    parse_with_file(argv, |a: &Args| a.config.clone())
}

/// [`parse_args`] for a command line that holds the server's flags among its own (`confab
/// token`): `config` says where the parsed command names its `--config` file.
pub fn parse_with_file<P, I, T>(argv: I, config: impl Fn(&P) -> Option<PathBuf>) -> Result<P, String>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let first = match P::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(path) = config(&first) else { return Ok(first) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let file_args = file_arguments(&text, &argv).map_err(|e| format!("config {}: {e}", path.display()))?;
    let mut merged = argv.iter().take(1).cloned().collect::<Vec<_>>();
    merged.extend(file_args.into_iter().flat_map(|(_, flags)| flags).map(std::ffi::OsString::from));
    merged.extend(argv.iter().skip(1).cloned());
    P::try_parse_from(merged).map_err(|e| format!("config {}: {e}", path.display()))
}

/// The file's settings as flags, by key, leaving out those a flag in `argv` or an environment
/// variable gives.
pub(crate) fn file_arguments(text: &str, argv: &[std::ffi::OsString]) -> Result<Vec<(String, Vec<String>)>, String> {
    use clap::CommandFactory;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let before = e.span().and_then(|s| text.get(..s.start)).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        format!("TOML syntax, line {line}: {}", e.message())
    })?;
    let command = Args::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && id != "config")
            .ok_or_else(|| format!("unknown key {key:?}"))?;
        let long = arg.get_long().ok_or_else(|| format!("unknown key {key:?}"))?;
        let on_command_line = argv
            .iter()
            .any(|a| a.to_str().is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}="))));
        let in_environment = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let mut flags = Vec::new();
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            other => Err(format!("{key}: expected a string or a number, got {}", other.type_str())),
        };
        match &value {
            toml::Value::Boolean(true) => flags.push(format!("--{long}")),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let items = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                flags.push(format!("--{long}={}", items.join(",")));
            }
            v => flags.push(format!("--{long}={}", scalar(v)?)),
        }
        out.push((key, flags));
    }
    Ok(out)
}

/// A public base URL: `http` or `https`, a host, perhaps a port and a path; no query.
fn public_url(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("public-url: {s:?} {why} (use https://HOST[:PORT][/PATH])");
    let uri: http::Uri = s.parse().map_err(|_| bad("is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("must start with http:// or https://"));
    }
    match uri.authority() {
        Some(a) if !a.as_str().contains('@') && !a.host().is_empty() => {}
        _ => return Err(bad("needs a host")),
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// A listener address, or `None` for `off`.
pub type Listen = Option<SocketAddr>;

fn listen_addr(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse::<SocketAddr>().map(Some).map_err(|e| format!("{s:?}: {e} (use HOST:PORT or off)"))
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    Dev(PathBuf),
}

/// Which store keeps the messages.
#[derive(Clone)]
pub enum StoreConfig {
    /// The embedded SQLite store in this directory.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(dir) => f.debug_tuple("Sqlite").field(dir).finish(),
            // The URL may hold a password.
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl StoreConfig {
    /// `--store`: a PostgreSQL URL, `sqlite:DIR`, or `sqlite:` for `data_dir`.
    fn parse(store: Option<&str>, data_dir: &std::path::Path) -> Result<Self, String> {
        let Some(s) = store.map(str::trim) else { return Ok(Self::Sqlite(data_dir.to_path_buf())) };
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            crate::postgres::connection_config(s).map_err(|e| format!("store: {e}"))?;
            return Ok(Self::Postgres(s.to_owned()));
        }
        match s.strip_prefix("sqlite:") {
            Some("") => Ok(Self::Sqlite(data_dir.to_path_buf())),
            Some(dir) => Ok(Self::Sqlite(PathBuf::from(dir))),
            None => Err(format!(
                "store: {:?} is not postgres://USER@HOST:PORT/DB or sqlite:DIR",
                s.split_once("://").map_or(s, |(scheme, _)| scheme)
            )),
        }
    }

    /// How the store is named in logs: never its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite:{}", dir.display()),
            Self::Postgres(url) => crate::postgres::connection_config(url)
                .map(|c| {
                    let host = match c.get_hosts().first() {
                        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                        #[cfg(unix)]
                        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                        None => String::new(),
                    };
                    let port = c.get_ports().first().copied().unwrap_or(5432);
                    format!("postgres://{}@{host}:{port}/{}", c.get_user().unwrap_or(""), c.get_dbname().unwrap_or(""))
                })
                .unwrap_or_else(|_| "postgres".into()),
        }
    }
}

/// Checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub dev: bool,
    /// Dev mode asked for on a listener others can reach: said loudly at start, and the API
    /// key is a random one (printed) rather than the well-known default.
    pub dev_exposed: bool,
    pub http: Listen,
    pub https: Listen,
    pub cert: CertSource,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// The NATS servers of cluster mode; none for a node alone.
    pub broker: Option<Vec<String>>,
    pub jwt: KeyConfig,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub api_key: String,
    pub max_frame_bytes: usize,
    pub limits: Limits,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    pub allowed_origins: Vec<String>,
    /// Without a trailing slash.
    pub public_url: Option<String>,
    pub default_dialect: confab_codec::Dialect,
    pub sync: crate::sqlite::SyncMode,
    pub quic_congestion: crate::transport::wt::Congestion,
    pub log_json: bool,
}

impl Config {
    /// Checks the arguments; the error names the setting.
    pub fn from_args(a: Args) -> Result<Self, String> {
        let no_keys = a.jwt_secret.is_none() && a.jwt_public_key.is_none() && a.api_key.is_none();
        // Dev mode hands a token to anyone who asks: without keys it is only implied where no one
        // else can reach the server (SPEC §2).
        let exposed: Vec<String> = [("http", a.http), ("https", a.https)]
            .into_iter()
            .filter_map(|(name, l)| l.filter(|addr| !addr.ip().is_loopback()).map(|addr| format!("--{name} {addr}")))
            .collect();
        if no_keys && !a.dev && !exposed.is_empty() {
            return Err(format!(
                "jwt-secret (or jwt-public-key) and api-key: required on a non-loopback address ({}); \
                 or give --dev to run in dev mode there (anyone who can reach it gets tokens)",
                exposed.join(", ")
            ));
        }
        let dev = a.dev || no_keys;
        let dev_exposed = dev && !exposed.is_empty();
        let jwt = match (&a.jwt_secret, &a.jwt_public_key) {
            (Some(_), Some(_)) => return Err("jwt-secret and jwt-public-key: give one, not both".into()),
            (Some(s), None) if s.len() < 16 && !dev => return Err("jwt-secret: use at least 16 bytes".into()),
            (Some(s), None) => KeyConfig::Secret(s.clone()),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| format!("jwt-public-key: {}: {e}", path.display()))?;
                let algorithm = match a.jwt_algorithm.as_str() {
                    "RS256" => jsonwebtoken::Algorithm::RS256,
                    "ES256" => jsonwebtoken::Algorithm::ES256,
                    other => return Err(format!("jwt-algorithm: {other:?} is not RS256 or ES256")),
                };
                KeyConfig::PublicKey { algorithm, pem }
            }
            (None, None) if dev => KeyConfig::Secret(DEV_JWT_SECRET.into()),
            (None, None) => return Err("jwt-secret or jwt-public-key: required outside dev mode".into()),
        };
        let api_key = match a.api_key {
            Some(k) if k.is_empty() => return Err("api-key: must not be empty".into()),
            Some(k) => k,
            None if dev_exposed => format!("dev-{:032x}", rand::random::<u128>()),
            None if dev => DEV_API_KEY.into(),
            None => return Err("api-key: required outside dev mode".into()),
        };
        if a.max_frame_bytes < 1024 {
            return Err("max-frame-bytes: must be at least 1024".into());
        }
        if !(a.conn_rate > 0.0 && a.conn_rate.is_finite()) {
            return Err("conn-rate: must be a positive number".into());
        }
        if a.outbound_queue == 0 || a.max_connections_per_user == 0 {
            return Err("outbound-queue and max-connections-per-user: must be at least 1".into());
        }
        if a.ping_interval_ms == 0 || a.pong_timeout_ms < a.ping_interval_ms {
            return Err("pong-timeout-ms: must be at least ping-interval-ms, which must be positive".into());
        }
        let cert = match (a.cert, a.key) {
            (Some(cert), Some(key)) => CertSource::Files { cert, key },
            _ if dev || a.https.is_none() => CertSource::Dev(a.dev_cert_dir),
            _ => return Err("cert and key: required for https outside dev mode (or --https off)".into()),
        };
        let default_dialect = confab_codec::Dialect::from_name(&a.default_dialect).ok_or_else(|| {
            format!("default-dialect: {:?} is not winkr, systimz, chatrooms or actions", a.default_dialect)
        })?;
        let sync = crate::sqlite::SyncMode::from_name(&a.sync)
            .ok_or_else(|| format!("sync: {:?} is not full or normal", a.sync))?;
        let quic_congestion = crate::transport::wt::Congestion::from_name(&a.quic_congestion)
            .ok_or_else(|| format!("quic-congestion: {:?} is not cubic, new-reno or bbr", a.quic_congestion))?;
        if a.http.is_none() && a.https.is_none() {
            return Err("http and https: at least one listener is needed".into());
        }
        let public_url = a.public_url.as_deref().map(public_url).transpose()?;
        let store = StoreConfig::parse(a.store.as_deref(), &a.data_dir)?;
        let broker = a.broker.as_deref().map(crate::nats::parse_urls).transpose()?;
        if broker.is_some() && !matches!(store, StoreConfig::Postgres(_)) {
            return Err(
                "broker: nodes that share a broker must share their store too: give --store postgres://USER@HOST:PORT/DB"
                    .into(),
            );
        }
        let limits = Limits {
            conn_rate: a.conn_rate,
            conn_burst: a.conn_burst.max(1),
            messages_per_minute: a.messages_per_minute.max(1),
            messages_per_hour: a.messages_per_hour.max(1),
            messages_per_day: a.messages_per_day.max(1),
            typing_per_minute: a.typing_per_minute.max(1),
            connects_per_minute: a.connects_per_minute.max(1),
            max_connections_per_user: a.max_connections_per_user,
            outbound_queue: a.outbound_queue,
        };
        Ok(Self {
            dev,
            dev_exposed,
            http: a.http,
            https: a.https,
            cert,
            data_dir: a.data_dir,
            store,
            broker,
            jwt,
            jwt_audience: a.jwt_audience,
            jwt_issuer: a.jwt_issuer,
            api_key,
            max_frame_bytes: a.max_frame_bytes,
            limits,
            ping_interval: Duration::from_millis(a.ping_interval_ms),
            pong_timeout: Duration::from_millis(a.pong_timeout_ms),
            handshake_timeout: Duration::from_millis(a.handshake_timeout_ms.max(1)),
            drain_timeout: Duration::from_millis(a.drain_timeout_ms),
            allowed_origins: a
                .allowed_origins
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            public_url,
            default_dialect,
            sync,
            quic_congestion,
            log_json: a.log_json || !dev,
        })
    }
}
