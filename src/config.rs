//! Herald's settings: every one a flag, a `HERALD_*` environment variable or
//! a key of the optional TOML file, in that order of precedence, then the
//! default. Names and defaults live here and nowhere else.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use herald_actors::topic::{Permissions, RuleSpec};
use herald_amqp::InboundMapping;
use ipnet::IpNet;
use serde::Deserialize;

use crate::tls::TlsFiles;
use crate::upstream::settings::{RequestSettings, ServicesSetting};

/// Whether a WebSocket needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anonymous sessions are welcome; a token, if given, must be valid.
    #[default]
    Optional,
    /// No valid token, no WebSocket.
    Required,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A duration as people write it: seconds as a bare number, or a number
/// with `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration such as 10, 500ms, 10s or 5m"))?;
        let millis = match unit.trim() {
            "ms" => number,
            "" | "s" => number.saturating_mul(1000),
            "m" => number.saturating_mul(60_000),
            "h" => number.saturating_mul(3_600_000),
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}`: use ms, s, m or h"
                ))
            }
        };
        Ok(Span(Duration::from_millis(millis)))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Seconds(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Seconds(seconds) => Ok(Span(Duration::from_secs(seconds))),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A comma-separated list, as flags and environment variables write it;
/// in the TOML file either such a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

impl std::str::FromStr for List {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(List(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Joined(String),
            Items(Vec<String>),
        }
        match Written::deserialize(d)? {
            Written::Joined(text) => text.parse().map_err(serde::de::Error::custom),
            Written::Items(items) => Ok(List(items)),
        }
    }
}

/// The settings as given, each possibly missing. The same struct reads the
/// command line (with its environment fallbacks) and the TOML file, so a
/// setting is declared once for both.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "herald",
    version,
    about = "A realtime gateway: browsers hold one WebSocket, microservices reach them through HTTP or RabbitMQ"
)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of the settings below (keys in snake_case) [default: none].
    #[arg(long, env = "HERALD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to serve on; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// This node's id in welcomes, message ids and stats [default: random].
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,

    /// HMAC secret for HS256/384/512 client tokens [default: tokens not checked].
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Comma-separated PEM files with public keys (RSA, EC or Ed25519) for client tokens; several for rotation [default: none].
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<List>,

    /// JWKS URL of an identity provider whose keys verify client tokens [default: none].
    #[arg(long, env = "HERALD_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often the JWKS is fetched again, e.g. 5m [default: 5m].
    #[arg(long, env = "HERALD_JWT_JWKS_REFRESH")]
    pub jwt_jwks_refresh: Option<Span>,

    /// Comma-separated accepted token issuers (`iss`) [default: not checked].
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<List>,

    /// Comma-separated accepted token audiences (`aud`) [default: not checked].
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<List>,

    /// Clock skew allowed on `exp` and `nbf`, e.g. 5s [default: 5s].
    #[arg(long, env = "HERALD_JWT_LEEWAY")]
    pub jwt_leeway: Option<Span>,

    /// Claim naming the user [default: sub].
    #[arg(long, env = "HERALD_JWT_USER_CLAIM")]
    pub jwt_user_claim: Option<String>,

    /// Accept tokens without `exp` (they never expire) [default: false].
    #[arg(long, env = "HERALD_JWT_ALLOW_NO_EXP", num_args = 0..=1, default_missing_value = "true")]
    pub jwt_allow_no_exp: Option<bool>,

    /// Serve POST /api/dev/token, which mints tokens signed with the JWT secret for any user; for local trials only, never in production [default: false].
    #[arg(long, env = "HERALD_DEV_TOKENS", num_args = 0..=1, default_missing_value = "true")]
    pub dev_tokens: Option<bool>,

    /// `optional` or `required` [default: optional].
    #[arg(long, env = "HERALD_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// Log lines as `text` or one `json` object per line; `RUST_LOG` filters them [default: text].
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Key the HTTP API demands [default: API open to loopback callers only].
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Secret that signs node-to-node control messages (kicks) [default: none: kicks stay on this node, other nodes' control messages are refused].
    #[arg(long, env = "HERALD_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// The application's endpoint that decides subscribes and publishes on topics whose permission rule says `ask` [default: none].
    #[arg(long, env = "HERALD_AUTHORIZE_URL")]
    pub authorize_url: Option<String>,

    /// Key sent to the authorization endpoint as `Authorization: Bearer KEY` [default: none].
    #[arg(long, env = "HERALD_AUTHORIZE_KEY", hide_env_values = true)]
    pub authorize_key: Option<String>,

    /// How long the authorization endpoint may take before the answer is `forbidden`, e.g. 2s [default: 2s].
    #[arg(long, env = "HERALD_AUTHORIZE_TIMEOUT")]
    pub authorize_timeout: Option<Span>,

    /// How long a session keeps an answer of the authorization endpoint, e.g. 30s; 0 = ask every time [default: 30s].
    #[arg(long, env = "HERALD_AUTHORIZE_CACHE")]
    pub authorize_cache: Option<Span>,

    /// How long a revoked token's entry is kept when nothing says how long the token lives (a `jti` without `exp`; a user's tokens past `before`): the longest token lifetime accepted [default: 24h].
    #[arg(long, env = "HERALD_REVOCATION_RETENTION")]
    pub revocation_retention: Option<Span>,

    /// Revocation entries held at most; past it (once expired ones are pruned) a revoke is refused with 503 [default: 100000].
    #[arg(long, env = "HERALD_REVOCATION_MAX_ENTRIES")]
    pub revocation_max_entries: Option<usize>,

    /// PEM certificate chain to serve https:// and wss:// with (with --tls-key) [default: plain HTTP]; reread on SIGHUP.
    #[arg(long, env = "HERALD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the TLS certificate [default: none; both set = wss].
    #[arg(long, env = "HERALD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Key for operators' endpoints (kick, stats, topics) [default: the API key serves both].
    #[arg(long, env = "HERALD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Comma-separated origins allowed to open a WebSocket [default: any].
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Inbound messages per second per session; bursts of twice that [default: 100].
    #[arg(long, env = "HERALD_RATE_LIMIT")]
    pub rate_limit: Option<NonZeroU32>,

    /// Largest WebSocket message or HTTP body, in bytes [default: 65536].
    #[arg(long, env = "HERALD_MAX_FRAME")]
    pub max_frame: Option<usize>,

    /// Most WebSocket connections at once [default: open-file limit less 256].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most WebSocket connections one user may hold on this node [default: 100].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,

    /// Most WebSocket connections one client IP may hold on this node [default: 1000].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// WebSocket handshakes per second one client IP may make [default: 100].
    #[arg(long, env = "HERALD_HANDSHAKE_RATE_PER_IP")]
    pub handshake_rate_per_ip: Option<NonZeroU32>,

    /// Comma-separated CIDRs of proxies whose Forwarded / X-Forwarded-For name the client IP [default: none].
    #[arg(long, env = "HERALD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,

    /// Most subscriptions one session may hold [default: 512].
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,

    /// Frames that may wait for one session before it is closed with 1013 [default: 1024].
    #[arg(long, env = "HERALD_OUTBOUND_QUEUE_FRAMES")]
    pub outbound_queue_frames: Option<usize>,

    /// Bytes that may wait for one session before it is closed with 1013 [default: 1048576].
    #[arg(long, env = "HERALD_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,

    /// Seconds between server pings [default: 10].
    #[arg(long, env = "HERALD_PING_INTERVAL")]
    pub ping_interval: Option<u64>,

    /// Seconds of client silence before the session is closed [default: 30].
    #[arg(long, env = "HERALD_CLIENT_TIMEOUT")]
    pub client_timeout: Option<u64>,

    /// Heart-beat interval STOMP sessions offer both ways, e.g. 10s or 500ms; 0 turns STOMP heart-beats off [default: 10s].
    #[arg(long, env = "HERALD_STOMP_HEARTBEAT")]
    pub stomp_heartbeat: Option<Span>,

    /// Seconds a drain waits, after its window, for the last sessions to
    /// close and for RabbitMQ to be closed [default: 5].
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,

    /// How long a drain (SIGTERM, SIGINT or POST /api/drain) spreads its
    /// sessions' closes over; 0 closes them all at once [default: 10s].
    #[arg(long, env = "HERALD_DRAIN_WINDOW")]
    pub drain_window: Option<Span>,

    /// Messages that may wait for the Broker; sessions are refused at three quarters of it [default: 4096].
    #[arg(long, env = "HERALD_BROKER_QUEUE")]
    pub broker_queue: Option<usize>,

    /// Messages that may wait for the RabbitMQ bridge before senders are refused [default: 4096].
    #[arg(long, env = "HERALD_BRIDGE_QUEUE")]
    pub bridge_queue: Option<usize>,

    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f, or several brokers of one cluster, comma-separated, tried in turn [default: AMQP off]; in the file: `[amqp] url`.
    #[arg(long, env = "HERALD_AMQP_URL", hide_env_values = true)]
    #[serde(skip)]
    pub amqp_url: Option<String>,

    /// Deliveries RabbitMQ may hand this node unacknowledged [default: 256]; in the file: `[amqp] prefetch`.
    #[arg(long, env = "HERALD_AMQP_PREFETCH")]
    #[serde(skip)]
    pub amqp_prefetch: Option<u16>,

    /// The file's `[amqp]` table.
    #[arg(skip)]
    pub amqp: Option<AmqpSection>,

    /// Services `request` may call, as name=url,...; in the file also `[services.NAME]` tables with url, timeout, max_bytes, forward_token, allow_trace, headers, max_in_flight [default: none].
    #[arg(long, env = "HERALD_SERVICES")]
    pub services: Option<ServicesSetting>,

    /// How long a service may take to answer a request, e.g. 10s [default: 10s].
    #[arg(long, env = "HERALD_REQUEST_TIMEOUT")]
    pub request_timeout: Option<Span>,

    /// Largest response a service may send, in bytes of the encoded frame [default: 1048576].
    #[arg(long, env = "HERALD_REQUEST_MAX_BYTES")]
    pub request_max_bytes: Option<usize>,

    /// Requests one session may have in flight at once [default: 16].
    #[arg(long, env = "HERALD_REQUEST_MAX_IN_FLIGHT")]
    pub request_max_in_flight: Option<usize>,
    /// The file's `[[permissions]]` rules, in order (first match wins);
    /// a config-file setting only.
    #[arg(skip)]
    pub permissions: Option<Vec<RuleSpec>>,
}

/// `[amqp]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSection {
    pub url: Option<String>,
    pub prefetch: Option<u16>,
    /// `[[amqp.inbound]]`: existing exchanges to consume onto topics.
    #[serde(default)]
    pub inbound: Vec<InboundMapping>,
}

/// RabbitMQ settings, when AMQP is on.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: String,
    pub prefetch: u16,
    pub inbound: Vec<InboundMapping>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "HERALD_CONFIG: cannot read config file {path}: {source} (set it to a readable TOML file)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One line, unlike the TOML error's own multi-line rendering, so it
    /// reads in a journal: the file, the line and what is wrong there.
    #[error("HERALD_CONFIG: config file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid settings: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Flag(String),
}

/// How client tokens are checked, when they are.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub secret: Option<String>,
    pub public_keys: Vec<PathBuf>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
    /// Accepted `iss` values; empty = not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty = not checked.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub user_claim: String,
    pub allow_no_exp: bool,
}

/// How the application's authorization endpoint is asked.
#[derive(Debug, Clone)]
pub struct AuthorizeSettings {
    pub url: String,
    pub key: Option<String>,
    pub timeout: Duration,
    /// How long a session keeps an answer.
    pub cache: Duration,
}

/// The settings Herald runs with, every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub node_id: String,
    pub jwt: Option<JwtSettings>,
    /// Whether `/api/dev/token` mints tokens (only ever with a JWT secret).
    pub dev_tokens: bool,
    pub auth: AuthMode,
    pub log_format: LogFormat,
    pub api_key: Option<String>,
    pub admin_key: Option<String>,
    pub cluster_secret: Option<String>,
    /// The application's authorization endpoint, if any.
    pub authorize: Option<AuthorizeSettings>,
    /// Revocation entries' lifetime when nothing else bounds it.
    pub revocation_retention: Duration,
    pub revocation_max_entries: usize,
    /// Serve TLS with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    pub allowed_origins: Option<Vec<String>>,
    pub rate_limit: NonZeroU32,
    pub max_frame: usize,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_connections_per_ip: usize,
    pub handshake_rate_per_ip: NonZeroU32,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub max_subscriptions: usize,
    pub outbound_queue_frames: usize,
    pub outbound_queue_bytes: usize,
    pub ping_interval: Duration,
    pub client_timeout: Duration,
    pub stomp_heartbeat: Duration,
    pub shutdown_grace: Duration,
    pub drain_window: Duration,
    pub broker_queue: usize,
    pub bridge_queue: usize,
    pub amqp: Option<AmqpSettings>,
    /// The services `request` may call, and the pipeline's bounds.
    pub requests: RequestSettings,
    /// Who may subscribe and publish where; empty: every public topic is
    /// open to every session.
    pub permissions: Arc<Permissions>,
}

const OPEN_FILE_RESERVE: u64 = 256;

impl Settings {
    /// Fills what `self` lacks from `file`.
    fn or(self, file: Settings) -> Settings {
        Settings {
            config: self.config,
            listen: self.listen.or(file.listen),
            node_id: self.node_id.or(file.node_id),
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            jwt_public_key: self.jwt_public_key.or(file.jwt_public_key),
            jwt_jwks_url: self.jwt_jwks_url.or(file.jwt_jwks_url),
            jwt_jwks_refresh: self.jwt_jwks_refresh.or(file.jwt_jwks_refresh),
            jwt_issuer: self.jwt_issuer.or(file.jwt_issuer),
            jwt_audience: self.jwt_audience.or(file.jwt_audience),
            jwt_leeway: self.jwt_leeway.or(file.jwt_leeway),
            jwt_user_claim: self.jwt_user_claim.or(file.jwt_user_claim),
            jwt_allow_no_exp: self.jwt_allow_no_exp.or(file.jwt_allow_no_exp),
            dev_tokens: self.dev_tokens.or(file.dev_tokens),
            auth: self.auth.or(file.auth),
            log_format: self.log_format.or(file.log_format),
            api_key: self.api_key.or(file.api_key),
            admin_key: self.admin_key.or(file.admin_key),
            cluster_secret: self.cluster_secret.or(file.cluster_secret),
            authorize_url: self.authorize_url.or(file.authorize_url),
            authorize_key: self.authorize_key.or(file.authorize_key),
            authorize_timeout: self.authorize_timeout.or(file.authorize_timeout),
            authorize_cache: self.authorize_cache.or(file.authorize_cache),
            revocation_retention: self.revocation_retention.or(file.revocation_retention),
            revocation_max_entries: self.revocation_max_entries.or(file.revocation_max_entries),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            allowed_origins: self.allowed_origins.or(file.allowed_origins),
            rate_limit: self.rate_limit.or(file.rate_limit),
            max_frame: self.max_frame.or(file.max_frame),
            max_connections: self.max_connections.or(file.max_connections),
            max_connections_per_user: self
                .max_connections_per_user
                .or(file.max_connections_per_user),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip),
            handshake_rate_per_ip: self.handshake_rate_per_ip.or(file.handshake_rate_per_ip),
            trusted_proxies: self.trusted_proxies.or(file.trusted_proxies),
            max_subscriptions: self.max_subscriptions.or(file.max_subscriptions),
            outbound_queue_frames: self.outbound_queue_frames.or(file.outbound_queue_frames),
            outbound_queue_bytes: self.outbound_queue_bytes.or(file.outbound_queue_bytes),
            ping_interval: self.ping_interval.or(file.ping_interval),
            client_timeout: self.client_timeout.or(file.client_timeout),
            stomp_heartbeat: self.stomp_heartbeat.or(file.stomp_heartbeat),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            drain_window: self.drain_window.or(file.drain_window),
            broker_queue: self.broker_queue.or(file.broker_queue),
            bridge_queue: self.bridge_queue.or(file.bridge_queue),
            amqp_url: self
                .amqp_url
                .or(file.amqp.as_ref().and_then(|amqp| amqp.url.clone())),
            amqp_prefetch: self
                .amqp_prefetch
                .or(file.amqp.as_ref().and_then(|amqp| amqp.prefetch)),
            amqp: file.amqp,
            services: self.services.or(file.services),
            request_timeout: self.request_timeout.or(file.request_timeout),
            request_max_bytes: self.request_max_bytes.or(file.request_max_bytes),
            request_max_in_flight: self.request_max_in_flight.or(file.request_max_in_flight),
            permissions: file.permissions,
        }
    }
}

impl Config {
    /// Reads the command line, the environment and the config file it names.
    pub fn load() -> Result<Config, ConfigError> {
        let cli = Settings::try_parse().map_err(|err| match err.use_stderr() {
            true => ConfigError::Flag(flag_error(&err)),
            // `--help` and `--version` are answers, not failures.
            false => err.exit(),
        })?;
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        Config::from_sources(cli, file, open_file_limit())
    }

    /// Resolves settings from the command line (env already folded in by
    /// clap) over the file, over the defaults. Reports every problem at once.
    pub fn from_sources(
        cli: Settings,
        file: Settings,
        open_files: u64,
    ) -> Result<Config, ConfigError> {
        let s = cli.or(file);
        let mut problems = Vec::new();

        let jwt = jwt_settings(
            JwtSources {
                secret: s.jwt_secret,
                public_keys: s.jwt_public_key,
                jwks_url: s.jwt_jwks_url,
                jwks_refresh: s.jwt_jwks_refresh,
                issuers: s.jwt_issuer,
                audiences: s.jwt_audience,
                leeway: s.jwt_leeway,
                user_claim: s.jwt_user_claim,
                allow_no_exp: s.jwt_allow_no_exp,
            },
            &mut problems,
        );
        let dev_tokens = s.dev_tokens.unwrap_or(false);
        let has_secret = jwt.as_ref().is_some_and(|jwt| jwt.secret.is_some());
        if dev_tokens && !has_secret {
            problems.push(
                "dev tokens (HERALD_DEV_TOKENS) need a JWT secret (HERALD_JWT_SECRET) to sign with"
                    .to_owned(),
            );
        }
        let auth = s.auth.unwrap_or_default();
        if auth == AuthMode::Required && jwt.is_none() {
            problems.push(
                "auth is `required` but no JWT secret, public key or JWKS URL is set".to_owned(),
            );
        }
        if s.api_key.as_deref() == Some("") || s.admin_key.as_deref() == Some("") {
            problems.push("an API or admin key is empty".to_owned());
        }
        let tls = match (s.tls_cert.clone(), s.tls_key.clone()) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                problems.push("TLS needs both a certificate and a key file".to_owned());
                None
            }
        };
        if s.admin_key.is_some() && s.admin_key == s.api_key {
            problems.push("the admin key must differ from the API key".to_owned());
        }
        let node_id = s.node_id.unwrap_or_else(random_node_id);
        if node_id.is_empty()
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!(
                "node id `{node_id}` must be letters, digits, `-` or `_`"
            ));
        }
        let max_frame = s.max_frame.unwrap_or(65_536);
        if max_frame < 256 {
            problems.push("max frame must be at least 256 bytes".to_owned());
        }
        let outbound_queue_frames = s.outbound_queue_frames.unwrap_or(1024);
        let outbound_queue_bytes = s.outbound_queue_bytes.unwrap_or(1 << 20);
        if outbound_queue_frames == 0 || outbound_queue_bytes < max_frame {
            problems.push(
                "the outbound queue must hold at least one frame of the maximum size".to_owned(),
            );
        }
        let ping_interval = Duration::from_secs(s.ping_interval.unwrap_or(10));
        let client_timeout = Duration::from_secs(s.client_timeout.unwrap_or(30));
        if ping_interval.is_zero() || client_timeout <= ping_interval {
            problems
                .push("the client timeout must be longer than a non-zero ping interval".to_owned());
        }
        let broker_queue = s.broker_queue.unwrap_or(4096);
        let bridge_queue = s.bridge_queue.unwrap_or(4096);
        if broker_queue < 16 || bridge_queue < 16 {
            problems.push("the broker and bridge queues must hold at least 16 messages".to_owned());
        }
        let revocation_retention = s
            .revocation_retention
            .map_or(Duration::from_secs(24 * 3600), |span| span.0);
        let revocation_max_entries = s.revocation_max_entries.unwrap_or(100_000);
        if revocation_retention < Duration::from_secs(1) || revocation_max_entries == 0 {
            problems.push(
                "revocations need a retention of at least 1s and room for one entry".to_owned(),
            );
        }
        let trusted_proxies = parse_proxies(s.trusted_proxies.unwrap_or_default(), &mut problems);
        let max_connections_per_user = s.max_connections_per_user.unwrap_or(100);
        let max_connections_per_ip = s.max_connections_per_ip.unwrap_or(1000);
        if max_connections_per_user == 0 || max_connections_per_ip == 0 {
            problems.push("connections per user and per IP must allow at least one".to_owned());
        }
        let default_connections = open_files.saturating_sub(OPEN_FILE_RESERVE).max(1);
        let inbound = s.amqp.map(|amqp| amqp.inbound).unwrap_or_default();
        let amqp = match s.amqp_url {
            Some(url) => {
                let urls = herald_amqp::link::split_urls(&url);
                if urls.is_empty() {
                    problems.push("HERALD_AMQP_URL lists no broker".to_owned());
                }
                for one in &urls {
                    if let Err(why) = herald_amqp::link::check_url(one) {
                        problems.push(format!("HERALD_AMQP_URL: {why}"));
                    }
                }
                for mapping in &inbound {
                    problems.extend(check_mapping(mapping));
                }
                Some(AmqpSettings {
                    url,
                    prefetch: s.amqp_prefetch.unwrap_or(256).max(1),
                    inbound,
                })
            }
            None => {
                if !inbound.is_empty() {
                    problems.push("[[amqp.inbound]] mappings need an AMQP URL".to_owned());
                }
                None
            }
        };
        let permissions = Permissions::from_specs(&s.permissions.unwrap_or_default())
            .unwrap_or_else(|errors| {
                problems.extend(errors.iter().map(ToString::to_string));
                Permissions::default()
            });

        let requests = crate::upstream::settings::resolve(
            s.services,
            s.request_timeout,
            s.request_max_bytes,
            s.request_max_in_flight,
            &mut problems,
        );
        // A response is written whole into the session's outbound queue.
        if let Some((service, max)) = requests.largest_response() {
            if max > outbound_queue_bytes {
                problems.push(format!(
                    "the outbound queue ({outbound_queue_bytes} bytes) cannot hold one maximal response of service `{service}` ({max} bytes): raise HERALD_OUTBOUND_QUEUE_BYTES or lower the service's max_bytes"
                ));
            }
        }
        let authorize = authorize_settings(
            s.authorize_url,
            s.authorize_key,
            s.authorize_timeout,
            s.authorize_cache,
            &mut problems,
        );
        if permissions.asks() && authorize.is_none() {
            problems.push("a permissions rule says `ask`, but no authorization endpoint is set (HERALD_AUTHORIZE_URL)".to_owned());
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            listen: s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            node_id,
            jwt,
            dev_tokens,
            auth,
            log_format: s.log_format.unwrap_or_default(),
            api_key: s.api_key,
            admin_key: s.admin_key,
            cluster_secret: s.cluster_secret.filter(|secret| !secret.is_empty()),
            authorize,
            revocation_retention,
            revocation_max_entries,
            tls,
            allowed_origins: s.allowed_origins.filter(|origins| !origins.is_empty()),
            rate_limit: s
                .rate_limit
                .unwrap_or(NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN)),
            max_frame,
            max_connections: s.max_connections.unwrap_or(default_connections as usize),
            max_connections_per_user,
            max_connections_per_ip,
            handshake_rate_per_ip: s
                .handshake_rate_per_ip
                .unwrap_or(NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN)),
            trusted_proxies,
            max_subscriptions: s.max_subscriptions.unwrap_or(512),
            outbound_queue_frames,
            outbound_queue_bytes,
            ping_interval,
            client_timeout,
            stomp_heartbeat: s
                .stomp_heartbeat
                .map_or(Duration::from_secs(10), |span| span.0),
            // Capped, so the drain's deadlines cannot overflow.
            shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(5))
                .min(crate::shutdown::LONGEST),
            drain_window: s
                .drain_window
                .map_or(Duration::from_secs(10), |span| span.0)
                .min(crate::shutdown::LONGEST),
            broker_queue,
            bridge_queue,
            amqp,
            requests,
            permissions: Arc::new(permissions),
        })
    }
}

/// The token settings as given, before defaults.
struct JwtSources {
    secret: Option<String>,
    public_keys: Option<List>,
    jwks_url: Option<String>,
    jwks_refresh: Option<Span>,
    issuers: Option<List>,
    audiences: Option<List>,
    leeway: Option<Span>,
    user_claim: Option<String>,
    allow_no_exp: Option<bool>,
}

/// Token checking is on when any key source is set; the claim rules alone
/// would check nothing, so they are a mistake without one.
fn jwt_settings(given: JwtSources, problems: &mut Vec<String>) -> Option<JwtSettings> {
    if given.secret.as_deref() == Some("") {
        problems.push("the JWT secret is empty".to_owned());
    }
    let public_keys: Vec<PathBuf> = given
        .public_keys
        .map(|list| list.0.into_iter().map(PathBuf::from).collect())
        .unwrap_or_default();
    if let Some(url) = &given.jwks_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            problems.push(format!(
                "the JWKS URL `{url}` must start with https:// (or http://)"
            ));
        }
    }
    let jwks_refresh = given
        .jwks_refresh
        .map_or(Duration::from_secs(300), |span| span.0);
    if jwks_refresh < Duration::from_secs(1) {
        problems.push("the JWKS refresh period must be at least 1s".to_owned());
    }
    let user_claim = given.user_claim.unwrap_or_else(|| "sub".to_owned());
    if user_claim.is_empty() {
        problems.push("the JWT user claim is empty".to_owned());
    }
    let issuers = given.issuers.map(|list| list.0).unwrap_or_default();
    let audiences = given.audiences.map(|list| list.0).unwrap_or_default();
    let secret = given.secret.filter(|secret| !secret.is_empty());
    if secret.is_none() && public_keys.is_empty() && given.jwks_url.is_none() {
        if !issuers.is_empty() || !audiences.is_empty() {
            problems.push(
                "a JWT issuer or audience is set, but no JWT secret, public key or JWKS URL"
                    .to_owned(),
            );
        }
        return None;
    }
    Some(JwtSettings {
        secret,
        public_keys,
        jwks_url: given.jwks_url,
        jwks_refresh,
        issuers,
        audiences,
        leeway: given.leeway.map_or(Duration::from_secs(5), |span| span.0),
        user_claim,
        allow_no_exp: given.allow_no_exp.unwrap_or(false),
    })
}

/// CIDRs such as `10.0.0.0/8`; a bare address is a network of one.
fn parse_proxies(entries: Vec<String>, problems: &mut Vec<String>) -> Vec<IpNet> {
    entries
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let parsed = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
            if parsed.is_err() {
                problems.push(format!(
                    "HERALD_TRUSTED_PROXIES: trusted proxy `{entry}` is not a CIDR such as 10.0.0.0/8 or an IP address"
                ));
            }
            parsed.ok()
        })
        .collect()
}

fn check_mapping(mapping: &InboundMapping) -> Option<String> {
    if mapping.exchange.is_empty() || mapping.exchange.starts_with("herald.") {
        return Some(format!(
            "inbound exchange `{}` must be named and not one of Herald's own",
            mapping.exchange
        ));
    }
    if herald_actors::topic::Topic::parse(&mapping.topic_for("key")).is_err() {
        return Some(format!(
            "inbound topic `{}` is not a valid topic (with `{{routing_key}}` filled in)",
            mapping.topic
        ));
    }
    None
}

/// Clap's error on one line, led by the environment variable as well as the
/// flag, since most deployments set the former.
fn flag_error(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = err.to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split_whitespace().next(),
        _ => None,
    };
    match flag.and_then(|flag| flag.strip_prefix("--")) {
        Some(name) => format!(
            "HERALD_{} (--{name}): {first} (see herald --help)",
            name.to_uppercase().replace('-', "_")
        ),
        None => format!("{first} (see herald --help)"),
    }
}

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        line: source.span().map_or(1, |span| {
            1 + text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count()
        }),
        message: source.message().replace('\n', " "),
    })
}

/// Raises the soft open-file limit to the hard one and returns it: every
/// WebSocket holds a file descriptor.
fn open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

fn authorize_settings(
    url: Option<String>,
    key: Option<String>,
    timeout: Option<Span>,
    cache: Option<Span>,
    problems: &mut Vec<String>,
) -> Option<AuthorizeSettings> {
    let Some(url) = url.filter(|url| !url.is_empty()) else {
        if key.is_some() || timeout.is_some() || cache.is_some() {
            problems.push("the authorization endpoint's key, timeout or cache is set but its URL is not (HERALD_AUTHORIZE_URL)".to_owned());
        }
        return None;
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        problems.push(format!(
            "the authorization URL `{url}` must start with https:// (or http://)"
        ));
    }
    let timeout = timeout.map_or(Duration::from_secs(2), |span| span.0);
    if timeout.is_zero() {
        problems.push("the authorization timeout must be more than 0".to_owned());
    }
    Some(AuthorizeSettings {
        url,
        key: key.filter(|key| !key.is_empty()),
        timeout,
        cache: cache.map_or(Duration::from_secs(30), |span| span.0),
    })
}

fn random_node_id() -> String {
    let suffix: u32 = rand::random();
    format!("n-{:06x}", suffix & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Settings {
        let mut argv = vec!["herald"];
        argv.extend_from_slice(args);
        Settings::try_parse_from(argv).expect("parses")
    }

    fn file(text: &str) -> Settings {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn defaults_are_the_embedded_node_on_8080() {
        let config = Config::from_sources(Settings::default(), Settings::default(), 1024)
            .expect("valid test input");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_frame, 65_536);
        assert_eq!(config.rate_limit.get(), 100);
        assert_eq!(config.max_connections, 768);
        assert_eq!(config.auth, AuthMode::Optional);
        assert!(config.node_id.starts_with("n-"));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let config = Config::from_sources(
            cli(&["--listen", "127.0.0.1:0", "--rate-limit", "7"]),
            file("listen = \"0.0.0.0:9000\"\nmax_frame = 4096\nrate_limit = 9"),
            1024,
        )
        .expect("valid test input");
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.rate_limit.get(), 7);
        assert_eq!(config.max_frame, 4096);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::from_sources(
            cli(&[
                "--auth",
                "required",
                "--max-frame",
                "10",
                "--node-id",
                "a b",
            ]),
            Settings::default(),
            1024,
        )
        .expect_err("invalid test input")
        .to_string();
        assert!(err.contains("auth is `required`"), "{err}");
        assert!(err.contains("max frame"), "{err}");
        assert!(err.contains("node id"), "{err}");
    }

    #[test]
    fn amqp_comes_from_flags_or_the_amqp_table_with_its_mappings() {
        let file = file(
            "[amqp]\nurl = \"amqp://file\"\nprefetch = 10\n[[amqp.inbound]]\nexchange = \"greetings\"\ntopic = \"greetings.{routing_key}\"\n",
        );
        let config =
            Config::from_sources(Settings::default(), file, 1024).expect("valid test input");
        let amqp = config.amqp.expect("valid test input");
        assert_eq!((amqp.url.as_str(), amqp.prefetch), ("amqp://file", 10));
        assert_eq!(amqp.inbound[0].binding, "#");
        let config = Config::from_sources(
            cli(&["--amqp-url", "amqp://flag"]),
            Settings::default(),
            1024,
        )
        .expect("valid test input");
        assert_eq!(config.amqp.expect("valid test input").url, "amqp://flag");
        let bad = toml::from_str::<Settings>("[amqp]\nurl = \"amqp://x\"\n[[amqp.inbound]]\nexchange = \"herald.topics\"\ntopic = \"a b\"\n").expect("valid test input");
        assert!(Config::from_sources(Settings::default(), bad, 1024).is_err());
    }

    #[test]
    fn token_sources_combine_and_claim_rules_have_defaults() {
        let config = Config::from_sources(
            cli(&[
                "--jwt-secret",
                "s",
                "--jwt-public-key",
                "a.pem, b.pem",
                "--jwt-jwks-url",
                "https://idp.example/jwks",
                "--jwt-audience",
                "herald",
            ]),
            Settings::default(),
            1024,
        )
        .expect("valid test input");
        let jwt = config.jwt.expect("token checking on");
        assert_eq!(
            jwt.public_keys,
            [PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        assert_eq!(jwt.audiences, ["herald"]);
        assert!(jwt.issuers.is_empty());
        assert_eq!(jwt.leeway, Duration::from_secs(5));
        assert_eq!(jwt.user_claim, "sub");
        assert!(!jwt.allow_no_exp);
        assert_eq!(jwt.jwks_refresh, Duration::from_secs(300));
    }

    #[test]
    fn token_settings_read_from_the_file_as_strings_or_arrays() {
        let config = Config::from_sources(
            cli(&["--jwt-allow-no-exp"]),
            file("jwt_public_key = \"k.pem\"\njwt_issuer = [\"a\", \"b\"]\njwt_leeway = \"500ms\"\njwt_user_claim = \"oid\""),
            1024,
        )
        .expect("valid test input");
        let jwt = config.jwt.expect("token checking on");
        assert_eq!(jwt.public_keys, [PathBuf::from("k.pem")]);
        assert_eq!(jwt.issuers, ["a", "b"]);
        assert_eq!(jwt.leeway, Duration::from_millis(500));
        assert_eq!(jwt.user_claim, "oid");
        assert!(jwt.allow_no_exp);
    }

    #[test]
    fn claim_rules_without_a_key_are_a_mistake() {
        let err = Config::from_sources(
            cli(&["--jwt-issuer", "https://idp", "--jwt-jwks-url", "ftp://x"]),
            Settings::default(),
            1024,
        )
        .expect_err("invalid test input")
        .to_string();
        assert!(err.contains("https://"), "{err}");
        let err = Config::from_sources(
            cli(&["--jwt-issuer", "https://idp"]),
            Settings::default(),
            1024,
        )
        .expect_err("invalid test input")
        .to_string();
        assert!(err.contains("no JWT secret"), "{err}");
    }

    #[test]
    fn abuse_limits_have_defaults_and_trusted_proxies_parse_as_cidrs() {
        let config = Config::from_sources(Settings::default(), Settings::default(), 1024)
            .expect("valid test input");
        assert_eq!(config.max_connections_per_user, 100);
        assert_eq!(config.max_connections_per_ip, 1000);
        assert_eq!(config.handshake_rate_per_ip.get(), 100);
        assert!(config.trusted_proxies.is_empty());
        let config = Config::from_sources(
            cli(&["--trusted-proxies", "10.0.0.0/8, 127.0.0.1,::1/128"]),
            Settings::default(),
            1024,
        )
        .expect("valid test input");
        let proxies: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|net| net.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        let err = Config::from_sources(
            cli(&["--trusted-proxies", "10.0.0.0/33"]),
            Settings::default(),
            1024,
        )
        .expect_err("invalid test input")
        .to_string();
        assert!(err.contains("trusted proxy `10.0.0.0/33`"), "{err}");
    }

    #[test]
    fn permission_rules_come_from_the_file_in_order() {
        let config = Config::from_sources(
            Settings::default(),
            file("[[permissions]]\npattern = \"news.#\"\nsubscribe = \"anyone\"\npublish = \"nobody\"\n\n[[permissions]]\npattern = \"#\"\nsubscribe = \"nobody\"\npublish = \"nobody\"\n\n[[permissions]]\nservice = \"account\"\nrequest = \"claim:admin\"\n"),
            1024,
        )
        .expect("valid test input");
        let patterns: Vec<&str> = config
            .permissions
            .rules()
            .iter()
            .map(|r| r.pattern())
            .collect();
        assert_eq!(patterns, ["news.#", "#"]);
        assert!(!config.permissions.may_request("account", None));
        let open = Config::from_sources(Settings::default(), Settings::default(), 1024)
            .expect("valid test input");
        assert!(open.permissions.is_open());
    }

    #[test]
    fn bad_permission_rules_are_errors_naming_the_rule() {
        let cases = [
            (
                "pattern = \"a\"\nsubscribe = \"admins\"\npublish = \"nobody\"",
                "rule 1 (pattern \"a\"): subscribe: unknown subject `admins`",
            ),
            (
                "pattern = \"a..b\"\nsubscribe = \"anyone\"\npublish = \"anyone\"",
                "rule 1 (pattern \"a..b\"): bad pattern",
            ),
            (
                "pattern = \"a\"\nsubscribe = \"anyone\"",
                "rule 1 (pattern \"a\"): `publish` is missing",
            ),
            (
                "pattern = \"a\"\npublish = \"anyone\"",
                "rule 1 (pattern \"a\"): `subscribe` is missing",
            ),
            (
                "service = \"a b\"\nrequest = \"anyone\"",
                "rule 1 (service \"a b\"): bad service name pattern",
            ),
            (
                "pattern = \"a\"\nsubscribe = \"claim:\"\npublish = \"anyone\"",
                "needs a claim name",
            ),
        ];
        for (rule, expected) in cases {
            let err = Config::from_sources(
                Settings::default(),
                file(&format!("[[permissions]]\n{rule}\n")),
                1024,
            )
            .expect_err("invalid test input")
            .to_string();
            assert!(err.contains(expected), "{rule}: {err}");
        }
        assert!(
            toml::from_str::<Settings>("[[permissions]]\npattern = \"a\"\nsubscribe = \"anyone\"\npublish = \"anyone\"\nwho = \"x\"\n").is_err(),
            "unknown keys in a rule are errors"
        );
    }

    #[test]
    fn dev_tokens_are_off_by_default_and_need_a_secret() {
        let config = Config::from_sources(cli(&["--jwt-secret", "s"]), Settings::default(), 1024)
            .expect("valid test input");
        assert!(!config.dev_tokens);
        let config = Config::from_sources(cli(&["--dev-tokens"]), file("jwt_secret = \"s\""), 1024)
            .expect("valid test input");
        assert!(config.dev_tokens);
        for args in [
            &["--dev-tokens"][..],
            &["--dev-tokens", "--jwt-public-key", "k.pem"],
        ] {
            let err = Config::from_sources(cli(args), Settings::default(), 1024)
                .expect_err("invalid test input")
                .to_string();
            assert!(err.contains("dev tokens"), "{err}");
        }
        let config = Config::from_sources(cli(&["--dev-tokens=false"]), Settings::default(), 1024)
            .expect("off needs no secret");
        assert!(!config.dev_tokens);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err());
    }

    #[test]
    fn revocation_retention_and_cap_default_to_a_day_and_100k_and_take_flags_or_the_file() {
        let config =
            Config::from_sources(Settings::default(), Settings::default(), 1024).expect("valid");
        assert_eq!(config.revocation_retention, Duration::from_secs(86_400));
        assert_eq!(config.revocation_max_entries, 100_000);
        let file = file("revocation_retention = \"2h\"\nrevocation_max_entries = 7\n");
        let config = Config::from_sources(cli(&["--revocation-retention", "90m"]), file, 1024)
            .expect("valid");
        assert_eq!(config.revocation_retention, Duration::from_secs(5_400));
        assert_eq!(config.revocation_max_entries, 7);
        assert!(Config::from_sources(
            cli(&["--revocation-max-entries", "0"]),
            Settings::default(),
            1024
        )
        .is_err());
    }
}
