//! Configuration of `okta-stream serve`: every setting is a flag, an environment variable and a
//! key of an optional TOML file, with precedence flag > environment > file > default.
//!
//! **Each setting is declared once**, as a field of [`Config`] (or of one of its groups) with
//! clap's attributes: `long` (the flag; the TOML key is the flag with `_` or `-`), `env`, the
//! default, the value parser (its validation), the doc comment (the `--help` text and the
//! README's meaning) and `hide_env_values = true` for a secret (which also makes its type
//! [`Secret`]). To add a setting, add one such field to the group it belongs to, give it a row
//! in the README's configuration table (a test checks), and read it where the part that needs it
//! is built; cross-setting rules go in [`Config::validate`]. Nothing else lists settings.
//!
//! Values come from an abstract [`Sources`] (the environment as a map, the file), never from
//! the process environment directly, so tests never touch it. An empty value counts as unset.
//! This module yields plain typed values (addresses, paths, durations, URLs, secrets); the
//! domain parts (`okta`, `journal`, `hook`, `grpc`) build their own settings from them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, Args, Command, FromArgMatches as _};
use http::HeaderName;
use reqwest::Url;

use crate::secret::Secret;
/// Log output format: declared by telemetry, which must not know the configuration.
pub use crate::telemetry::LogFormat;

/// Default data directory of the embedded journal and the generated hook secret.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default header that carries the hook secret (Okta's `authScheme.key`).
pub const DEFAULT_HOOK_AUTH_HEADER: &str = "Authorization";
/// Default System Log event types polled (and subscribed to by `hook register`).
pub const DEFAULT_POLL_EVENT_TYPES: &str = "user.account.update_profile";

/// The validated configuration of `okta-stream serve`: one field per setting, in groups.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Hook listen address: POST /okta/hook only (faces Okta)
    #[arg(long, env = "OKTA_STREAM_HTTP_ADDR", default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = parse_addr)]
    pub http_addr: SocketAddr,
    /// gRPC listen address (also gRPC-Web)
    #[arg(long, env = "OKTA_STREAM_GRPC_ADDR", default_value = "127.0.0.1:50051", value_name = "ADDR", value_parser = parse_addr)]
    pub grpc_addr: SocketAddr,
    /// Directory of the embedded journal and the generated hook secret
    #[arg(long, env = "OKTA_STREAM_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// `embedded` (redb in the data dir) or `nats://host:port[,host:port...]` (JetStream)
    #[arg(long, env = "OKTA_STREAM_JOURNAL", default_value = "embedded", value_name = "JOURNAL", value_parser = parse_journal)]
    pub journal: JournalKind,
    /// Embedded journal: start empty when the data dir's journal has vanished (refused otherwise)
    #[arg(long, env = "OKTA_STREAM_ACCEPT_EMPTY_JOURNAL", default_value = "false", value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub accept_empty_journal: bool,
    /// Events older than this many days are removed
    #[arg(long = "retention-days", env = "OKTA_STREAM_RETENTION_DAYS", default_value = "90", value_name = "DAYS", value_parser = positive_days)]
    pub retention_max_age: Duration,
    /// Also remove the oldest events (embedded journal) and quarantine entries (either journal) beyond this many bytes; at least 16777216
    #[arg(long, env = "OKTA_STREAM_RETENTION_MAX_BYTES", value_name = "BYTES", value_parser = retention_bytes)]
    pub retention_max_bytes: Option<u64>,
    /// Largest stored record; a larger event is quarantined (below 4 MiB, what any gRPC client accepts)
    #[arg(long, env = "OKTA_STREAM_MAX_EVENT_BYTES", default_value = "3145728", value_name = "BYTES", value_parser = event_bytes)]
    pub max_event_bytes: usize,
    /// Embedded journal: how often retention runs
    #[arg(long = "retention-check-secs", env = "OKTA_STREAM_RETENTION_CHECK_SECS", default_value = "60", value_name = "SECS", value_parser = positive_secs)]
    pub retention_check_interval: Duration,
    /// JetStream settings (used with a `nats://` journal).
    #[command(flatten)]
    pub nats: NatsSettings,
    /// Hook endpoint settings.
    #[command(flatten)]
    pub hook: HookConfig,
    /// gRPC server settings.
    #[command(flatten)]
    pub grpc: GrpcConfig,
    /// The admin listener, connection limits of every listener, gRPC mutual TLS and reload.
    #[command(flatten)]
    pub listeners: ListenerSettings,
    /// Bound on a graceful shutdown
    #[arg(long = "shutdown-timeout-secs", env = "OKTA_STREAM_SHUTDOWN_TIMEOUT_SECS", default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    pub shutdown_timeout: Duration,
    /// `text` or `json`
    #[arg(long, env = "OKTA_STREAM_LOG_FORMAT", default_value = "text", value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Serve the browser console at `GET /` on the gRPC listener (`true` or `false`)
    #[arg(long, env = "OKTA_STREAM_CONSOLE", default_value = "true", value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub console: bool,
    /// System Log poller settings (the poller runs when `OKTA_ORG_URL` is set).
    #[command(flatten)]
    pub okta: OktaSettings,
    /// Old → new profile values of `user.account.update_profile` events (issue 13).
    #[command(flatten)]
    pub profile: ProfileValuesSettings,
}

/// Old → new profile values: read from Okta's Users API, kept per user, stored with the event.
#[derive(Debug, Clone, Args)]
pub struct ProfileValuesSettings {
    /// Attach old → new values to user.account.update_profile events (needs OKTA_ORG_URL and credentials with okta.users.read)
    #[arg(long = "profile-values", env = "OKTA_STREAM_PROFILE_VALUES", default_value = "false", value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enabled: bool,
    /// Comma-separated profile attributes kept and shown (empty: all)
    #[arg(long = "profile-attributes", env = "OKTA_STREAM_PROFILE_ATTRIBUTES", value_delimiter = ',', value_name = "ATTR", value_parser = trimmed)]
    pub attributes: Vec<String>,
    // The doc comment is the `--help` text, written for a terminal, not for rustdoc.
    #[allow(rustdoc::invalid_html_tags)]
    /// Comma-separated profile attributes shown only as sha256:<hex> of a keyed HMAC
    #[arg(long = "profile-redact", env = "OKTA_STREAM_PROFILE_REDACT", value_delimiter = ',', value_name = "ATTR", value_parser = trimmed)]
    pub redact: Vec<String>,
    /// Longest an update event waits for its values before it is delivered UNAVAILABLE
    #[arg(long = "profile-values-timeout-secs", env = "OKTA_STREAM_PROFILE_VALUES_TIMEOUT_SECS", default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    pub timeout: Duration,
    /// Share of the Users API rate limit okta-stream uses, in (0, 1]
    #[arg(long = "profile-rate-limit-share", env = "OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE", default_value = "0.3", value_name = "SHARE", value_parser = parse_share)]
    pub rate_limit_share: f64,
}

/// Which journal implementation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalKind {
    /// redb in the data dir.
    Embedded,
    /// NATS JetStream at these servers (`nats://host:port` each); see [`NatsSettings`].
    Nats {
        /// Server URLs.
        servers: Vec<String>,
    },
}

/// The JetStream stream of the `nats://` journal.
#[derive(Debug, Clone, Args)]
pub struct NatsSettings {
    /// JetStream stream name
    #[arg(long = "nats-stream", env = "OKTA_STREAM_NATS_STREAM", default_value = "OKTA_EVENTS", value_name = "NAME", value_parser = non_blank)]
    pub stream: String,
    /// JetStream stream replicas (3 on a 3-node cluster)
    #[arg(long = "nats-replicas", env = "OKTA_STREAM_NATS_REPLICAS", default_value = "1", value_name = "N", value_parser = parse_replicas)]
    pub replicas: usize,
    /// JetStream dedupe window by LogEvent uuid
    #[arg(long = "nats-duplicate-window-secs", env = "OKTA_STREAM_NATS_DUPLICATE_WINDOW_SECS", default_value = "21600", value_name = "SECS", value_parser = positive_secs)]
    pub duplicate_window: Duration,
}

/// Hook endpoint settings.
#[derive(Debug, Clone, Args)]
pub struct HookConfig {
    /// Header whose whole value must equal a hook secret
    #[arg(long = "hook-auth-header", env = "OKTA_STREAM_HOOK_AUTH_HEADER", default_value = DEFAULT_HOOK_AUTH_HEADER, value_name = "HEADER", value_parser = parse_header_name)]
    pub auth_header: HeaderName,
    /// Comma-separated accepted hook secrets; if unset, one is generated in the data dir (`okta-stream hook secret` prints it)
    #[arg(long = "hook-secrets", env = "OKTA_STREAM_HOOK_SECRETS", hide_env_values = true, value_delimiter = ',', value_name = "SECRET", value_parser = parse_secret)]
    pub secrets: Vec<Secret>,
    /// Largest hook delivery body accepted (413 above)
    #[arg(long = "hook-max-body-bytes", env = "OKTA_STREAM_HOOK_MAX_BODY_BYTES", default_value = "10485760", value_name = "BYTES", value_parser = body_bytes)]
    pub max_body_bytes: usize,
}

/// gRPC server settings.
#[derive(Debug, Clone, Args)]
pub struct GrpcConfig {
    // Access to the gRPC listener (issue 11): tokens by scope and the explicit opt-out (the
    // client CA is a listener setting); `Config::validate` refuses an unauthenticated listener
    // off loopback.
    /// Comma-separated bearer tokens that may read events (or `sha256:<hex>` of a token)
    #[arg(long = "grpc-tokens", env = "OKTA_STREAM_GRPC_TOKENS", hide_env_values = true, value_delimiter = ',', value_name = "TOKEN", value_parser = parse_secret)]
    pub tokens: Vec<Secret>,
    /// Comma-separated bearer tokens that may read events and the quarantine (or `sha256:<hex>`)
    #[arg(long = "grpc-admin-tokens", env = "OKTA_STREAM_GRPC_ADMIN_TOKENS", hide_env_values = true, value_delimiter = ',', value_name = "TOKEN", value_parser = parse_secret)]
    pub admin_tokens: Vec<Secret>,
    /// Serve gRPC without a token or client CA on a non-loopback address
    #[arg(long = "grpc-allow-unauthenticated", env = "OKTA_STREAM_GRPC_ALLOW_UNAUTHENTICATED", default_value = "false", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub allow_unauthenticated: bool,
    /// PEM certificate chain file: serve gRPC over TLS
    #[arg(
        long = "grpc-tls-cert",
        env = "OKTA_STREAM_GRPC_TLS_CERT",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key file for --grpc-tls-cert
    #[arg(
        long = "grpc-tls-key",
        env = "OKTA_STREAM_GRPC_TLS_KEY",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Comma-separated origins allowed to call gRPC-Web from a browser, or `*`
    #[arg(long = "grpc-web-cors-origins", env = "OKTA_STREAM_GRPC_WEB_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGIN", value_parser = trimmed)]
    pub cors_origins: Vec<String>,
    /// Most concurrent Subscribe streams (RESOURCE_EXHAUSTED beyond)
    #[arg(long, env = "OKTA_STREAM_MAX_SUBSCRIBERS", default_value = "10000", value_name = "N", value_parser = positive_usize)]
    pub max_subscribers: usize,
    /// A live subscriber further behind the head than this many events is ended with its last cursor
    #[arg(long, env = "OKTA_STREAM_MAX_SUBSCRIBER_LAG", default_value = "1000000", value_name = "EVENTS", value_parser = positive_u64)]
    pub max_subscriber_lag: u64,
    /// Heartbeat interval of idle Subscribe streams
    #[arg(long = "heartbeat-secs", env = "OKTA_STREAM_HEARTBEAT_SECS", default_value = "15", value_name = "SECS", value_parser = positive_secs)]
    pub heartbeat: Duration,
}

/// The admin listener, what a client connection may hold on every listener (hook, admin,
/// gRPC), and gRPC mutual TLS and certificate reload.
#[derive(Debug, Clone, Args)]
pub struct ListenerSettings {
    /// Admin listen address: /metrics, /healthz, /readyz (keep it private)
    #[arg(long, env = "OKTA_STREAM_ADMIN_ADDR", default_value = "127.0.0.1:9090", value_name = "ADDR", value_parser = parse_addr)]
    pub admin_addr: SocketAddr,
    /// A connection must complete its first request's headers (HTTP/2: preface and first stream; TLS: handshake) within this long
    #[arg(long = "header-read-timeout-secs", env = "OKTA_STREAM_HEADER_READ_TIMEOUT_SECS", default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this long of its headers (408 otherwise)
    #[arg(long = "body-read-timeout-secs", env = "OKTA_STREAM_BODY_READ_TIMEOUT_SECS", default_value = "30", value_name = "SECS", value_parser = positive_secs)]
    pub body_read_timeout: Duration,
    /// A connection with no request or stream in flight for this long is closed
    #[arg(long = "idle-timeout-secs", env = "OKTA_STREAM_IDLE_TIMEOUT_SECS", default_value = "60", value_name = "SECS", value_parser = positive_secs)]
    pub idle_timeout: Duration,
    /// Most open connections per listener; more are closed at once, logged and counted
    #[arg(long, env = "OKTA_STREAM_MAX_CONNECTIONS", default_value = "10000", value_name = "N", value_parser = positive_usize)]
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection
    #[arg(long = "http2-max-streams", env = "OKTA_STREAM_HTTP2_MAX_STREAMS", default_value = "1000", value_name = "N", value_parser = positive_u32)]
    pub http2_max_streams: u32,
    /// gRPC: send an HTTP/2 ping after this long without frames
    #[arg(long = "grpc-keepalive-secs", env = "OKTA_STREAM_GRPC_KEEPALIVE_SECS", default_value = "30", value_name = "SECS", value_parser = positive_secs)]
    pub grpc_keepalive: Duration,
    /// gRPC: close a connection whose ping is not answered within this long
    #[arg(long = "grpc-keepalive-timeout-secs", env = "OKTA_STREAM_GRPC_KEEPALIVE_TIMEOUT_SECS", default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    pub grpc_keepalive_timeout: Duration,
    /// PEM CA file: gRPC clients must present a certificate it signed (mutual TLS; needs --grpc-tls-cert)
    #[arg(
        long = "grpc-tls-client-ca",
        env = "OKTA_STREAM_GRPC_TLS_CLIENT_CA",
        value_name = "FILE"
    )]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// How often the gRPC TLS files are checked for changes (they are also re-read on SIGHUP)
    #[arg(long = "grpc-tls-reload-secs", env = "OKTA_STREAM_GRPC_TLS_RELOAD_SECS", default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    pub grpc_tls_reload: Duration,
}

impl GrpcConfig {
    /// The TLS certificate chain and key files, when gRPC is served over TLS.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

/// The Okta org and the credentials for its APIs: shared by the poller (`serve`) and the
/// `hook register|verify` commands.
#[derive(Debug, Clone, Args)]
pub struct OktaOrgSettings {
    // The doc comment is the `--help` text, written for a terminal, not for rustdoc.
    #[allow(rustdoc::bare_urls)]
    /// Okta org URL, e.g. https://acme.okta.com; with it, `serve` also polls the System Log
    #[arg(long = "okta-org-url", env = "OKTA_ORG_URL", value_name = "URL", value_parser = parse_url)]
    pub org_url: Option<Url>,
    /// Okta API token (SSWS)
    #[arg(long = "okta-api-token", env = "OKTA_API_TOKEN", hide_env_values = true, value_name = "TOKEN", value_parser = parse_secret)]
    pub api_token: Option<Secret>,
    /// OAuth 2.0 service app client id (with OKTA_PRIVATE_KEY_FILE)
    #[arg(long = "okta-client-id", env = "OKTA_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// PEM or JWK private key of the service app (RS256 or ES256)
    #[arg(
        long = "okta-private-key-file",
        env = "OKTA_PRIVATE_KEY_FILE",
        value_name = "FILE"
    )]
    pub private_key_file: Option<PathBuf>,
    /// Key id (`kid`) of the private key, if registered with one
    #[arg(
        long = "okta-private-key-id",
        env = "OKTA_PRIVATE_KEY_ID",
        value_name = "KID"
    )]
    pub private_key_id: Option<String>,
}

/// Which credentials [`OktaOrgSettings`] give: exactly one kind, checked by
/// [`OktaOrgSettings::auth`]. The `okta` module turns them into its own credentials.
#[derive(Debug, Clone)]
pub enum OktaAuth {
    /// `OKTA_API_TOKEN`.
    ApiToken(Secret),
    /// `OKTA_CLIENT_ID` + `OKTA_PRIVATE_KEY_FILE` (+ `OKTA_PRIVATE_KEY_ID`).
    ServiceApp {
        /// The app's client id.
        client_id: String,
        /// The file of its private key (PEM or JWK).
        private_key_file: PathBuf,
        /// The key's registered id, if any.
        private_key_id: Option<String>,
    },
}

impl OktaOrgSettings {
    /// The org URL, or an error naming `OKTA_ORG_URL` when it is not set.
    pub fn required_org_url(&self) -> Result<&Url, ConfigError> {
        self.org_url
            .as_ref()
            .ok_or_else(|| ConfigError::invalid("okta-org-url", "is required"))
    }

    /// The one kind of credentials given, or an error naming the setting that is missing or
    /// too many.
    pub fn auth(&self) -> Result<OktaAuth, ConfigError> {
        let token = self.api_token.as_ref().filter(|t| !t.expose().is_empty());
        let client_id = self
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let key_file = self
            .private_key_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty());
        match (token, client_id, key_file) {
            (Some(token), None, None) => Ok(OktaAuth::ApiToken(token.clone())),
            (None, Some(client_id), Some(file)) => Ok(OktaAuth::ServiceApp {
                client_id: client_id.to_owned(),
                private_key_file: file.clone(),
                private_key_id: self
                    .private_key_id
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            }),
            (Some(_), _, _) => Err(ConfigError::invalid(
                "okta-api-token",
                "set either OKTA_API_TOKEN or OKTA_CLIENT_ID + OKTA_PRIVATE_KEY_FILE, not both",
            )),
            (None, Some(_), None) => Err(ConfigError::invalid(
                "okta-private-key-file",
                "is required with OKTA_CLIENT_ID",
            )),
            (None, None, Some(_)) => Err(ConfigError::invalid(
                "okta-client-id",
                "is required with OKTA_PRIVATE_KEY_FILE",
            )),
            (None, None, None) => Err(ConfigError::invalid(
                "okta-api-token",
                "OKTA_ORG_URL needs OKTA_API_TOKEN, or OKTA_CLIENT_ID + OKTA_PRIVATE_KEY_FILE",
            )),
        }
    }
}

/// The System Log poller: the org, its credentials and how to poll.
#[derive(Debug, Clone, Args)]
pub struct OktaSettings {
    /// The org and its credentials.
    #[command(flatten)]
    pub org: OktaOrgSettings,
    /// Comma-separated System Log event types to poll
    #[arg(long = "okta-poll-event-types", env = "OKTA_POLL_EVENT_TYPES", default_value = DEFAULT_POLL_EVENT_TYPES, value_delimiter = ',', value_name = "TYPE", value_parser = trimmed)]
    pub poll_event_types: Vec<String>,
    /// Wait after a short System Log page
    #[arg(long = "okta-poll-interval-secs", env = "OKTA_POLL_INTERVAL_SECS", default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    pub poll_interval: Duration,
    /// First poll starts this far back when no cursor is stored
    #[arg(long = "okta-poll-lookback-secs", env = "OKTA_POLL_LOOKBACK_SECS", default_value = "3600", value_name = "SECS", value_parser = secs)]
    pub poll_lookback: Duration,
    /// First poll starts at this RFC 3339 time instead (at most 180 days back)
    #[arg(long = "okta-poll-since", env = "OKTA_POLL_SINCE", value_name = "TIME", value_parser = parse_time)]
    pub poll_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Share of the System Log rate limit the poller may use
    #[arg(long = "okta-poll-rate-limit-share", env = "OKTA_POLL_RATE_LIMIT_SHARE", default_value = "0.5", value_name = "SHARE", value_parser = parse_share)]
    pub poll_rate_limit_share: f64,
    /// NATS journal: TTL of the leases that let one replica at a time poll and run the profile sweep
    #[arg(long = "okta-poll-lease-secs", env = "OKTA_POLL_LEASE_SECS", default_value = "15", value_name = "SECS", value_parser = positive_secs)]
    pub poll_lease: Duration,
}

impl Default for OktaSettings {
    /// Every poller setting at its declared default (no org: the poller is off).
    fn default() -> Self {
        Config::default().okta
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a wrong value; names the setting by its environment variable and flag.
    #[error("invalid setting {setting}: {problem}")]
    Invalid {
        /// `ENV_VAR (--flag)`.
        setting: String,
        /// What is wrong (never includes a secret's value).
        problem: String,
    },
    /// Not a settings problem: `--help`, `--version`, an unknown flag. Print it as it is.
    #[error("{0}")]
    Usage(clap::Error),
}

impl ConfigError {
    /// A wrong value of the setting whose flag is `--{flag}`.
    pub fn invalid(flag: &str, problem: impl Into<String>) -> Self {
        let env = settings()
            .into_iter()
            .find(|s| s.flag == flag)
            .map(|s| s.env);
        ConfigError::Invalid {
            setting: match env {
                Some(env) => format!("{env} (--{flag})"),
                None => format!("--{flag}"),
            },
            problem: problem.into(),
        }
    }
}

/// Where setting values come from, besides the command line.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The environment (variable name → value).
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The process environment (variables that are not UTF-8 are left out).
    pub fn from_process() -> Self {
        Sources {
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }
}

/// One setting, read from its declaration: for `--help`, the README check and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Long flag name without `--` (the TOML key is this with `_` or `-`).
    pub flag: String,
    /// Environment variable.
    pub env: String,
    /// Default, as text, if there is one.
    pub default: Option<String>,
    /// What it does.
    pub help: String,
    /// Whether the value is a secret (never printed).
    pub secret: bool,
}

/// Every setting of `okta-stream serve`, in declaration order.
pub fn settings() -> Vec<Setting> {
    declared_command()
        .get_arguments()
        .filter_map(|arg| {
            Some(Setting {
                flag: arg.get_long()?.to_owned(),
                env: arg.get_env()?.to_str()?.to_owned(),
                default: default_text(arg),
                help: arg.get_help().map(|h| h.to_string()).unwrap_or_default(),
                secret: arg.is_hide_env_values_set(),
            })
        })
        .collect()
}

/// The `serve` command as declared: `--config` and every setting, with clap's own env lookup.
fn declared_command() -> Command {
    let serve = Command::new("serve").bin_name("okta-stream serve").arg(
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML file of settings (keys are the flag names; flags and env override it)"),
    );
    // The derive sets the about from `Config`'s doc comment; this is the command's.
    Config::augment_args(serve)
        .about("Run the service: the hook endpoint, the gRPC stream and (if configured) the System Log poller")
        .long_about(None)
}

/// The `serve` command with values from `sources` and the file `file` (a map of flag → value)
/// layered under the command line: each setting's default becomes the first non-empty of its
/// environment variable, its file key and its declared default. `--help` shows the variable
/// and the declared default, never a value from the environment or the file.
fn layered_command(sources: &Sources, file: &HashMap<String, String>) -> Command {
    declared_command().mut_args(|arg| {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()).map(str::to_owned) else {
            return arg;
        };
        let declared = default_text(&arg);
        let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        help.push_str(&format!(" [env: {env}]"));
        if let Some(default) = &declared {
            help.push_str(&format!(" [default: {default}]"));
        }
        let value = non_empty(sources.env.get(&env))
            .or_else(|| non_empty(arg.get_long().and_then(|flag| file.get(flag))))
            .or(declared);
        let arg = arg.env(None).help(help).hide_default_value(true);
        match value {
            Some(value) => arg.default_value(value),
            None => arg,
        }
    })
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn default_text(arg: &Arg) -> Option<String> {
    let values: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// `command` (and its subcommands) with every flag whose environment variable is set but empty
/// reading no variable: for the client commands, which clap reads the environment for, an
/// empty value counts as unset as it does for `serve`.
pub fn ignore_empty_env(command: Command, sources: &Sources) -> Command {
    command
        .mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(|name| name.to_str())
                .and_then(|name| sources.env.get(name))
                .is_some_and(|value| value.trim().is_empty());
            if empty { arg.env(None) } else { arg }
        })
        .mut_subcommands(|sub| ignore_empty_env(sub, sources))
}

/// The `serve` command for `okta-stream --help` and `okta-stream help serve`.
pub fn serve_command() -> Command {
    layered_command(&Sources::default(), &HashMap::new())
}

impl Default for Config {
    /// Every setting at its declared default.
    fn default() -> Self {
        // The declared defaults are constants of this file; a unit test parses them.
        Config::load(["serve"], &Sources::default()).expect("the declared defaults are valid")
    }
}

impl Config {
    /// Parses `serve ARGS...` (`args` starts with the command name) with the environment of
    /// `sources` and the `--config` file, if one is given, then validates across settings.
    pub fn load<I, T>(args: I, sources: &Sources) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let given: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let args = drop_empty_flags(given.clone());
        let mut matches = parse(layered_command(sources, &HashMap::new()), &args)?;
        let mut file = HashMap::new();
        if let Some(path) = matches.get_one::<PathBuf>("config").cloned() {
            file = read_file(&path)?;
            matches = parse(layered_command(sources, &file), &args)?;
        }
        refuse_blank_entries(&given, sources, &file)?;
        let mut config = Config::from_arg_matches(&matches).map_err(ConfigError::Usage)?;
        config.drop_empty_items();
        config.validate()?;
        Ok(config)
    }

    /// An empty item of a comma-separated list (`a,,b`, a trailing comma) counts as unset.
    fn drop_empty_items(&mut self) {
        self.hook.secrets.retain(|s| !s.expose().is_empty());
        self.grpc.tokens.retain(|s| !s.expose().is_empty());
        self.grpc.cors_origins.retain(|s| !s.is_empty());
        self.okta.poll_event_types.retain(|s| !s.is_empty());
    }

    /// Whether gRPC clients must authenticate: a token of either scope, or a client CA.
    pub fn grpc_authenticated(&self) -> bool {
        !self.grpc.tokens.is_empty()
            || !self.grpc.admin_tokens.is_empty()
            || self.listeners.grpc_tls_client_ca.is_some()
    }

    /// What is allowed but unwise in this configuration, for `serve` to log at start (never a
    /// secret's value): an unauthenticated gRPC listener off loopback that was allowed
    /// explicitly, and secrets or tokens shorter than [`MIN_SECRET_CHARS`].
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.grpc_addr.ip().is_loopback() && !self.grpc_authenticated() {
            warnings.push(format!(
                "gRPC on {} serves events to anyone who can reach it: \
                 OKTA_STREAM_GRPC_ALLOW_UNAUTHENTICATED is set and no OKTA_STREAM_GRPC_TOKENS",
                self.grpc_addr
            ));
        }
        for (env, secrets) in [
            ("OKTA_STREAM_HOOK_SECRETS", &self.hook.secrets),
            ("OKTA_STREAM_GRPC_TOKENS", &self.grpc.tokens),
            ("OKTA_STREAM_GRPC_ADMIN_TOKENS", &self.grpc.admin_tokens),
        ] {
            let short = secrets
                .iter()
                .filter(|s| !s.expose().starts_with("sha256:"))
                .filter(|s| s.expose().chars().count() < MIN_SECRET_CHARS)
                .count();
            if short > 0 {
                warnings.push(format!(
                    "{env}: {short} of its values are shorter than {MIN_SECRET_CHARS} characters; \
                     use long random values"
                ));
            }
        }
        warnings
    }

    /// The rules that involve more than one setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.grpc_addr.ip().is_loopback()
            && !self.grpc_authenticated()
            && !self.grpc.allow_unauthenticated
        {
            return Err(ConfigError::invalid(
                "grpc-tokens",
                format!(
                    "gRPC listens on {}, not a loopback address, and would serve the audit trail \
                     to anyone: set OKTA_STREAM_GRPC_TOKENS (or OKTA_STREAM_GRPC_ADMIN_TOKENS, \
                     or OKTA_STREAM_GRPC_TLS_CLIENT_CA), or OKTA_STREAM_GRPC_ALLOW_UNAUTHENTICATED=true \
                     to serve it open on purpose",
                    self.grpc_addr
                ),
            ));
        }
        for token in self.grpc.tokens.iter().chain(&self.grpc.admin_tokens) {
            if let Err(problem) = crate::secret::check_token_form(token) {
                let flag = if self.grpc.tokens.contains(token) {
                    "grpc-tokens"
                } else {
                    "grpc-admin-tokens"
                };
                return Err(ConfigError::invalid(flag, problem));
            }
        }
        match (&self.grpc.tls_cert, &self.grpc.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "grpc-tls-key",
                    "is required with --grpc-tls-cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "grpc-tls-cert",
                    "is required with --grpc-tls-key",
                ));
            }
            _ => {}
        }
        if self.listeners.grpc_tls_client_ca.is_some() && self.grpc.tls_cert.is_none() {
            return Err(ConfigError::invalid(
                "grpc-tls-client-ca",
                "needs --grpc-tls-cert and --grpc-tls-key (mutual TLS is TLS first)",
            ));
        }
        if self.profile.enabled && self.okta.org.org_url.is_none() {
            return Err(ConfigError::invalid(
                "profile-values",
                "needs OKTA_ORG_URL and Okta credentials \
                 (OKTA_API_TOKEN, or OKTA_CLIENT_ID with OKTA_PRIVATE_KEY_FILE)",
            ));
        }
        if self.okta.org.org_url.is_some() {
            self.okta.org.auth()?;
            if self.okta.poll_event_types.is_empty() {
                return Err(ConfigError::invalid(
                    "okta-poll-event-types",
                    "must name at least one event type",
                ));
            }
        }
        Ok(())
    }
}

/// Shortest secret or token that passes without a warning at start.
pub const MIN_SECRET_CHARS: usize = 16;

/// Settings every comma-separated entry of which must hold a value: a blank entry (`a,,b`, a
/// trailing comma, `' '`, TOML `[""]`) is a mistake that would otherwise open the gRPC
/// listener or silently generate a hook secret, so it is refused, not dropped.
const NON_BLANK_LISTS: [&str; 3] = ["hook-secrets", "grpc-tokens", "grpc-admin-tokens"];

/// Refuses a blank entry in any source of a [`NON_BLANK_LISTS`] setting.
fn refuse_blank_entries(
    args: &[OsString],
    sources: &Sources,
    file: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    let all = settings();
    for flag in NON_BLANK_LISTS {
        let env = all.iter().find(|s| s.flag == flag).map(|s| s.env.as_str());
        let mut given: Vec<String> = flag_values(args, flag);
        given.extend(env.and_then(|env| sources.env.get(env)).cloned());
        given.extend(file.get(flag).cloned());
        if given
            .iter()
            .any(|value| value.split(',').any(|item| item.trim().is_empty()))
        {
            return Err(ConfigError::invalid(
                flag,
                "has a blank entry (an empty value, `,,` or a trailing comma): give every entry \
                 a value, or leave the setting out",
            ));
        }
    }
    Ok(())
}

/// The values given on the command line to `--{flag}` (as `--flag V` or `--flag=V`).
fn flag_values(args: &[OsString], flag: &str) -> Vec<String> {
    let long = format!("--{flag}");
    let mut values = Vec::new();
    let mut args = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == long {
            values.extend(args.next().map(|v| v.into_owned()));
        } else if let Some(value) = arg.strip_prefix(&format!("{long}=")) {
            values.push(value.to_owned());
        }
    }
    values
}

/// Runs clap on `args`, turning a wrong value into a [`ConfigError::Invalid`] naming the
/// setting.
fn parse(mut command: Command, args: &[OsString]) -> Result<clap::ArgMatches, ConfigError> {
    command.build();
    command
        .try_get_matches_from_mut(args)
        .map_err(|error| invalid_value(&command, error))
}

fn invalid_value(command: &Command, error: clap::Error) -> ConfigError {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return ConfigError::Usage(error);
    }
    let text = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // `--grpc-addr <ADDR>`: the flag is the first word.
    let Some(flag) = text(ContextKind::InvalidArg).and_then(|a| {
        a.split_whitespace()
            .next()
            .map(|f| f.trim_start_matches('-').to_owned())
    }) else {
        return ConfigError::Usage(error);
    };
    let secret = command
        .get_arguments()
        .find(|a| a.get_long() == Some(flag.as_str()))
        .is_some_and(|a| a.is_hide_env_values_set());
    let reason = std::error::Error::source(&error)
        .map(|e| e.to_string())
        .or_else(|| match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => Some(format!("expected {}", valid.join(", "))),
            _ => None,
        })
        .unwrap_or_else(|| "not a valid value".to_owned());
    let problem = match text(ContextKind::InvalidValue) {
        Some(value) if !secret => format!("`{value}` is not valid: {reason}"),
        _ => format!("the value is not valid: {reason}"),
    };
    ConfigError::invalid(&flag, problem)
}

/// `--flag ""` and `--flag=` count as unset, like an empty variable.
fn drop_empty_flags(args: Vec<OsString>) -> Vec<OsString> {
    let takes_value: Vec<String> = settings()
        .into_iter()
        .map(|s| format!("--{}", s.flag))
        .collect();
    let mut kept = Vec::with_capacity(args.len());
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            kept.push(arg);
            kept.extend(args);
            break;
        }
        if text
            .strip_suffix('=')
            .is_some_and(|flag| takes_value.iter().any(|f| f == flag))
        {
            continue;
        }
        if takes_value.iter().any(|f| *f == text)
            && args
                .peek()
                .is_some_and(|next| next.to_string_lossy().trim().is_empty())
        {
            args.next();
            continue;
        }
        kept.push(arg);
    }
    kept
}

/// Reads a TOML file of settings into flag → value; lists may be arrays.
fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let file_error = |problem: String| ConfigError::Invalid {
        setting: "--config".to_owned(),
        problem,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error(format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| file_error(format!("{} is not valid TOML: {e}", path.display())))?;
    let known = settings();
    let mut values = HashMap::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !known.iter().any(|s| s.flag == flag) {
            return Err(file_error(format!(
                "unknown setting `{key}` in {}",
                path.display()
            )));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        values.insert(flag, text);
    }
    Ok(values)
}

// Value parsers: each setting's validation, named by what it accepts. Their errors are the
// `problem` of a `ConfigError`, which adds the setting's name.

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|e| format!("{e}"))
}

fn parse_u64(value: &str) -> Result<u64, String> {
    value.trim().parse().map_err(|e| format!("{e}"))
}

fn positive_u64(value: &str) -> Result<u64, String> {
    match parse_u64(value)? {
        0 => Err("must be greater than 0".to_owned()),
        n => Ok(n),
    }
}

fn positive_u32(value: &str) -> Result<u32, String> {
    u32::try_from(positive_u64(value)?).map_err(|e| format!("{e}"))
}

fn positive_usize(value: &str) -> Result<usize, String> {
    usize::try_from(positive_u64(value)?).map_err(|e| format!("{e}"))
}

/// Largest `OKTA_STREAM_HOOK_MAX_BODY_BYTES`: the most the body parser reads (the app checks
/// that at compile time against `mapping::MAX_INPUT_BYTES`).
pub const MAX_HOOK_BODY_BYTES: usize = 128 << 20;

fn body_bytes(value: &str) -> Result<usize, String> {
    let max = MAX_HOOK_BODY_BYTES;
    match positive_usize(value)? {
        n if n > max => Err(format!("must be at most {max} bytes (128 MiB)")),
        n => Ok(n),
    }
}

/// Smallest `OKTA_STREAM_RETENTION_MAX_BYTES`: a few of the largest events, so size retention
/// never removes what it just stored.
pub const MIN_RETENTION_MAX_BYTES: u64 = 16 * 1024 * 1024;

fn retention_bytes(value: &str) -> Result<u64, String> {
    match parse_u64(value)? {
        n if n < MIN_RETENTION_MAX_BYTES => Err(format!(
            "must be at least {MIN_RETENTION_MAX_BYTES} bytes (16 MiB)"
        )),
        n => Ok(n),
    }
}

/// Bounds of `OKTA_STREAM_MAX_EVENT_BYTES`: a record must fit a default gRPC client's 4 MiB
/// message limit with room for the Subscribe envelope, and hold an ordinary event.
pub const MAX_EVENT_BYTES_RANGE: (usize, usize) = (64 * 1024, 4 * 1024 * 1024 - 64 * 1024);

fn event_bytes(value: &str) -> Result<usize, String> {
    let n = usize::try_from(parse_u64(value)?).map_err(|e| format!("{e}"))?;
    let (min, max) = MAX_EVENT_BYTES_RANGE;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {min} and {max} bytes"))
    }
}

fn secs(value: &str) -> Result<Duration, String> {
    parse_u64(value).map(Duration::from_secs)
}

fn positive_secs(value: &str) -> Result<Duration, String> {
    positive_u64(value).map(Duration::from_secs)
}

fn positive_days(value: &str) -> Result<Duration, String> {
    positive_u64(value).map(|days| Duration::from_secs(days.saturating_mul(86_400)))
}

fn parse_replicas(value: &str) -> Result<usize, String> {
    match positive_usize(value)? {
        n if n > 5 => Err("JetStream allows at most 5 replicas".to_owned()),
        n => Ok(n),
    }
}

fn parse_share(value: &str) -> Result<f64, String> {
    let share: f64 = value.trim().parse().map_err(|e| format!("{e}"))?;
    if share > 0.0 && share <= 1.0 {
        Ok(share)
    } else {
        Err("must be greater than 0 and at most 1".to_owned())
    }
}

fn non_blank(value: &str) -> Result<String, String> {
    match value.trim() {
        "" => Err("must not be empty".to_owned()),
        v => Ok(v.to_owned()),
    }
}

fn trimmed(value: &str) -> Result<String, String> {
    Ok(value.trim().to_owned())
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value.trim()))
}

fn parse_header_name(value: &str) -> Result<HeaderName, String> {
    value.trim().parse().map_err(|e| format!("{e}"))
}

fn parse_url(value: &str) -> Result<Url, String> {
    Url::parse(value.trim()).map_err(|e| format!("not a URL: {e}"))
}

fn parse_time(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// A switch: exactly `true` or `false`, so a typo is named instead of read as either.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("`{other}` is neither `true` nor `false`")),
    }
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("is neither `text` nor `json`".to_owned()),
    }
}

fn parse_journal(value: &str) -> Result<JournalKind, String> {
    let value = value.trim();
    if value == "embedded" {
        return Ok(JournalKind::Embedded);
    }
    if !value.starts_with("nats://") {
        return Err("is neither `embedded` nor a `nats://` URL".to_owned());
    }
    let servers: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if servers
        .iter()
        .any(|s| !s.starts_with("nats://") || s.len() <= "nats://".len())
    {
        return Err("every server must be `nats://host:port`".to_owned());
    }
    Ok(JournalKind::Nats { servers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let sources = Sources {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Config::load(
            std::iter::once("serve").chain(args.iter().copied()),
            &sources,
        )
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_console_is_served_by_default_turned_off_with_false_and_a_typo_is_named() {
        assert!(
            Config::default().console,
            "the console is served by default"
        );
        let config = load(&["--console", "false"], &[]).expect("valid");
        assert!(!config.console);
        let err = load(&[], &[("OKTA_STREAM_CONSOLE", "off")]).unwrap_err();
        assert!(err.to_string().contains("OKTA_STREAM_CONSOLE"), "{err}");
        assert!(err.to_string().contains("`off`"), "{err}");
    }

    #[test]
    fn defaults_listen_on_loopback_with_the_embedded_journal() {
        let config = Config::default();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.journal, JournalKind::Embedded);
        assert_eq!(config.hook.auth_header, "authorization");
        assert_eq!(config.hook.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(config.retention_max_age, Duration::from_secs(90 * 86_400));
        assert_eq!(config.grpc.heartbeat, Duration::from_secs(15));
        assert!(config.grpc.tls().is_none());
        assert!(config.okta.org.org_url.is_none());
        assert_eq!(config.okta.poll_event_types, vec![DEFAULT_POLL_EVENT_TYPES]);
        assert_eq!(config.okta.poll_rate_limit_share, 0.5);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let toml = file("http_addr = \"127.0.0.1:3\"\nheartbeat-secs = 7\n");
        let path = toml.path().to_str().unwrap();
        let env = [("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:2")];
        let all = load(&["--config", path, "--http-addr", "127.0.0.1:1"], &env).unwrap();
        assert_eq!(all.http_addr.port(), 1);
        let env_and_file = load(&["--config", path], &env).unwrap();
        assert_eq!(env_and_file.http_addr.port(), 2);
        let file_only = load(&["--config", path], &[]).unwrap();
        assert_eq!(file_only.http_addr.port(), 3);
        assert_eq!(file_only.grpc.heartbeat, Duration::from_secs(7));
        assert_eq!(file_only.grpc_addr.port(), 50051);
    }

    #[test]
    fn an_empty_value_counts_as_unset() {
        let config = load(
            &["--grpc-addr", "", "--heartbeat-secs="],
            &[("OKTA_STREAM_HTTP_ADDR", " "), ("OKTA_ORG_URL", "")],
        )
        .unwrap();
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(config.grpc_addr.port(), 50051);
        assert_eq!(config.grpc.heartbeat, Duration::from_secs(15));
        assert!(config.okta.org.org_url.is_none());
    }

    #[test]
    fn a_wrong_value_names_the_setting_by_variable_and_flag() {
        for (env, value) in [
            ("OKTA_STREAM_GRPC_ADDR", "nowhere"),
            ("OKTA_STREAM_JOURNAL", "postgres://x"),
            ("OKTA_STREAM_HEARTBEAT_SECS", "0"),
            ("OKTA_STREAM_NATS_REPLICAS", "6"),
            ("OKTA_STREAM_LOG_FORMAT", "xml"),
            ("OKTA_POLL_RATE_LIMIT_SHARE", "1.5"),
            ("OKTA_POLL_SINCE", "yesterday"),
        ] {
            let err = load(&[], &[(env, value)]).unwrap_err();
            let text = err.to_string();
            let flag = settings().into_iter().find(|s| s.env == env).unwrap().flag;
            assert!(text.contains(&format!("{env} (--{flag})")), "{text}");
            assert!(text.contains(&format!("`{value}`")), "{text}");
            assert!(matches!(err, ConfigError::Invalid { .. }));
        }
        let err = load(&["--grpc-tls-cert", "cert.pem"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("OKTA_STREAM_GRPC_TLS_KEY"),
            "{err}"
        );
    }

    #[test]
    fn the_file_takes_arrays_for_lists_and_refuses_unknown_keys() {
        let toml = file(
            "hook_secrets = [\"old-secret\", \"new-secret\"]\ngrpc-web-cors-origins = [\"*\"]\n",
        );
        let config = load(&["--config", toml.path().to_str().unwrap()], &[]).unwrap();
        assert_eq!(config.hook.secrets.len(), 2);
        assert_eq!(config.grpc.cors_origins, vec!["*"]);
        let unknown = file("no_such_setting = 1\n");
        let err = load(&["--config", unknown.path().to_str().unwrap()], &[]).unwrap_err();
        assert!(err.to_string().contains("no_such_setting"), "{err}");
        let err = load(&["--config", "/nonexistent/okta-stream.toml"], &[]).unwrap_err();
        assert!(err.to_string().contains("--config"), "{err}");
    }

    #[test]
    fn secrets_are_comma_separated_and_never_printed() {
        let config = load(
            &["--grpc-tokens", "t1,t2"],
            &[("OKTA_STREAM_HOOK_SECRETS", "old-secret, new-secret")],
        )
        .unwrap();
        assert_eq!(config.hook.secrets.len(), 2);
        assert_eq!(config.hook.secrets[1].expose(), "new-secret");
        assert_eq!(config.grpc.tokens.len(), 2);
        assert!(!format!("{config:?}").contains("old-secret"));
        // `--help` shows the variables and the declared defaults, never a value from outside.
        let sources = Sources {
            env: [(
                "OKTA_STREAM_HOOK_SECRETS".to_owned(),
                "old-secret".to_owned(),
            )]
            .into(),
        };
        let help = layered_command(&sources, &HashMap::new())
            .render_long_help()
            .to_string();
        assert!(!help.contains("old-secret"), "{help}");
        for setting in settings() {
            assert!(help.contains(&format!("[env: {}]", setting.env)), "{help}");
            if let Some(default) = setting.default {
                assert!(help.contains(&format!("[default: {default}]")), "{help}");
            }
        }
    }

    /// Arguments, environment, and the setting the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn a_blank_token_or_secret_entry_is_refused_naming_the_setting() {
        let toml = file("grpc_tokens = [\"\"]\n");
        let toml_path = toml.path().to_str().unwrap().to_owned();
        let cases: [Case; 7] = [
            (
                &[],
                &[("OKTA_STREAM_GRPC_TOKENS", ",,")],
                "OKTA_STREAM_GRPC_TOKENS",
            ),
            (
                &[],
                &[("OKTA_STREAM_GRPC_TOKENS", " ")],
                "OKTA_STREAM_GRPC_TOKENS",
            ),
            (
                &[],
                &[("OKTA_STREAM_GRPC_TOKENS", "")],
                "OKTA_STREAM_GRPC_TOKENS",
            ),
            (&["--grpc-tokens", ","], &[], "OKTA_STREAM_GRPC_TOKENS"),
            (
                &["--grpc-admin-tokens=a-long-admin-token,"],
                &[],
                "OKTA_STREAM_GRPC_ADMIN_TOKENS",
            ),
            (
                &[],
                &[("OKTA_STREAM_HOOK_SECRETS", " ")],
                "OKTA_STREAM_HOOK_SECRETS",
            ),
            (&["--config", &toml_path], &[], "OKTA_STREAM_GRPC_TOKENS"),
        ];
        for (args, env, setting) in cases {
            let err = load(args, env).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains(setting), "{args:?} {env:?}: {err}");
        }
        let err = load(&["--grpc-tokens", "sha256:abcd"], &[]).unwrap_err();
        assert!(err.to_string().contains("OKTA_STREAM_GRPC_TOKENS"), "{err}");
        assert!(!err.to_string().contains("abcd"), "{err}");
    }

    #[test]
    fn grpc_off_loopback_needs_a_token_a_client_ca_or_an_explicit_opt_out() {
        let open = [("OKTA_STREAM_GRPC_ADDR", "0.0.0.0:50051")];
        let err = load(&[], &open).unwrap_err();
        assert!(err.to_string().contains("OKTA_STREAM_GRPC_TOKENS"), "{err}");
        let token = load(&["--grpc-tokens", "a-long-read-token-1"], &open).unwrap();
        assert!(token.warnings().is_empty(), "{:?}", token.warnings());
        load(&["--grpc-admin-tokens", "a-long-admin-token"], &open).unwrap();
        let mtls = [
            "--grpc-tls-client-ca",
            "ca.pem",
            "--grpc-tls-cert",
            "c.pem",
            "--grpc-tls-key",
            "k.pem",
        ];
        load(&mtls, &open).unwrap();
        let err = load(&mtls[..2], &open).unwrap_err();
        assert!(err.to_string().contains("--grpc-tls-cert"), "{err}");
        let allowed = load(&["--grpc-allow-unauthenticated"], &open).unwrap();
        assert!(allowed.grpc.allow_unauthenticated);
        assert!(
            allowed.warnings()[0].contains("anyone"),
            "{:?}",
            allowed.warnings()
        );
        let env = [open[0], ("OKTA_STREAM_GRPC_ALLOW_UNAUTHENTICATED", "true")];
        assert!(load(&[], &env).unwrap().grpc.allow_unauthenticated);
        // Loopback stays open by default, as before.
        assert!(load(&[], &[]).unwrap().warnings().is_empty());
    }

    #[test]
    fn short_secrets_are_warned_about_without_their_value() {
        let config = load(
            &["--grpc-tokens", "short1"],
            &[("OKTA_STREAM_HOOK_SECRETS", "tiny-secret")],
        )
        .unwrap();
        let warnings = config.warnings().join("\n");
        assert!(warnings.contains("OKTA_STREAM_GRPC_TOKENS"), "{warnings}");
        assert!(warnings.contains("OKTA_STREAM_HOOK_SECRETS"), "{warnings}");
        assert!(!warnings.contains("short1") && !warnings.contains("tiny-secret"));
    }

    #[test]
    fn retention_and_record_sizes_have_sane_bounds() {
        for (env, value) in [
            ("OKTA_STREAM_RETENTION_MAX_BYTES", "0"),
            ("OKTA_STREAM_RETENTION_MAX_BYTES", "1000"),
            ("OKTA_STREAM_MAX_EVENT_BYTES", "4194304"),
            ("OKTA_STREAM_MAX_EVENT_BYTES", "100"),
            ("OKTA_STREAM_HOOK_MAX_BODY_BYTES", "0"),
            ("OKTA_STREAM_HOOK_MAX_BODY_BYTES", "134217729"),
        ] {
            let err = load(&[], &[(env, value)]).unwrap_err();
            assert!(err.to_string().contains(env), "{err}");
        }
        let config = load(&[], &[("OKTA_STREAM_RETENTION_MAX_BYTES", "16777216")]).unwrap();
        assert_eq!(config.retention_max_bytes, Some(16 * 1024 * 1024));
        assert_eq!(config.max_event_bytes, 3 * 1024 * 1024);
        let config = load(&[], &[("OKTA_STREAM_HOOK_MAX_BODY_BYTES", "134217728")]).unwrap();
        assert_eq!(config.hook.max_body_bytes, 128 * 1024 * 1024);
    }

    #[test]
    fn the_poller_needs_exactly_one_kind_of_credentials() {
        let org = ("OKTA_ORG_URL", "https://acme.okta.com/");
        let err = load(&[], &[org]).unwrap_err();
        assert!(err.to_string().contains("OKTA_ORG_URL"), "{err}");
        let both = [org, ("OKTA_API_TOKEN", "t0k3n"), ("OKTA_CLIENT_ID", "0oa1")];
        let err = load(&[], &both).unwrap_err();
        assert!(err.to_string().contains("OKTA_API_TOKEN"), "{err}");
        assert!(!err.to_string().contains("t0k3n"), "{err}");
        let no_key = [org, ("OKTA_CLIENT_ID", "0oa1")];
        let err = load(&[], &no_key).unwrap_err();
        assert!(err.to_string().contains("OKTA_PRIVATE_KEY_FILE"), "{err}");
        let ok = load(&[], &[org, ("OKTA_API_TOKEN", "t0k3n")]).unwrap();
        assert!(
            matches!(ok.okta.org.auth().unwrap(), OktaAuth::ApiToken(t) if t.expose() == "t0k3n")
        );
        assert!(!format!("{ok:?}").contains("t0k3n"));
    }

    #[test]
    fn an_empty_variable_reads_as_unset_for_the_client_commands_too() {
        let command = Command::new("hook").subcommand(OktaOrgSettings::augment_args(
            Command::new("verify").no_binary_name(true),
        ));
        let sources = Sources {
            env: [("OKTA_ORG_URL".to_owned(), " ".to_owned())].into(),
        };
        let verify = ignore_empty_env(command, &sources);
        let verify = verify.find_subcommand("verify").unwrap();
        let org = verify
            .get_arguments()
            .find(|a| a.get_long() == Some("okta-org-url"))
            .unwrap();
        assert!(org.get_env().is_none());
        let client = verify
            .get_arguments()
            .find(|a| a.get_long() == Some("okta-client-id"))
            .unwrap();
        assert_eq!(
            client.get_env().and_then(|e| e.to_str()),
            Some("OKTA_CLIENT_ID")
        );
    }

    #[test]
    fn listeners_default_to_loopback_and_bounded_connections() {
        let config = Config::default();
        let listeners = &config.listeners;
        assert_eq!(listeners.admin_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(listeners.header_read_timeout, Duration::from_secs(10));
        assert_eq!(listeners.max_connections, 10_000);
        assert!(listeners.grpc_tls_client_ca.is_none());
        let err = load(&[], &[("OKTA_STREAM_GRPC_TLS_CLIENT_CA", "ca.pem")]).unwrap_err();
        assert!(
            err.to_string().contains("OKTA_STREAM_GRPC_TLS_CLIENT_CA"),
            "{err}"
        );
        let err = load(&["--http2-max-streams", "5000000000"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("OKTA_STREAM_HTTP2_MAX_STREAMS"),
            "{err}"
        );
    }

    #[test]
    fn nats_journal_takes_several_servers() {
        let config = load(
            &[],
            &[(
                "OKTA_STREAM_JOURNAL",
                "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            )],
        )
        .unwrap();
        assert_eq!(
            config.journal,
            JournalKind::Nats {
                servers: vec![
                    "nats://127.0.0.1:4222".into(),
                    "nats://127.0.0.1:4223".into()
                ]
            }
        );
        assert_eq!(config.nats.stream, "OKTA_EVENTS");
        let err = load(&[], &[("OKTA_STREAM_JOURNAL", "nats://a:1,b:2")]).unwrap_err();
        assert!(err.to_string().contains("OKTA_STREAM_JOURNAL"), "{err}");
    }

    #[test]
    fn every_setting_has_a_flag_a_variable_and_help() {
        let all = settings();
        assert!(all.len() >= 33, "{}", all.len());
        for setting in &all {
            assert!(!setting.help.is_empty(), "{setting:?}");
            assert!(
                setting.env.starts_with("OKTA_"),
                "{setting:?} is not an OKTA_ variable"
            );
            assert!(
                !(setting.secret && setting.default.is_some()),
                "{setting:?}"
            );
        }
        let secrets: Vec<_> = all
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.env.as_str())
            .collect();
        assert_eq!(
            secrets,
            [
                "OKTA_STREAM_HOOK_SECRETS",
                "OKTA_STREAM_GRPC_TOKENS",
                "OKTA_STREAM_GRPC_ADMIN_TOKENS",
                "OKTA_API_TOKEN"
            ]
        );
    }
}
