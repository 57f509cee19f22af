//! Configuration: every setting is a flag, an environment variable and a key of an optional
//! TOML file, with precedence flag > environment > file > default.
//!
//! Settings are resolved from an abstract [`Sources`] (flags, an environment map, a file), so
//! tests never touch the process environment. [`SETTINGS`] is the one table of names,
//! defaults and meanings; the README's configuration table is written from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use crate::okta::{Credentials, PollerConfig, PrivateKey, StartFrom};
use crate::secret::Secret;

/// Default HTTP listen address (hook, health, metrics): loopback only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default gRPC listen address: loopback only.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default data directory of the embedded journal and the generated hook secret.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default header that carries the hook secret (Okta's `authScheme.key`).
pub const DEFAULT_HOOK_AUTH_HEADER: &str = "Authorization";
/// Default largest hook body accepted: 10 MiB.
pub const DEFAULT_HOOK_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default retention: 90 days, as Okta's own System Log.
pub const DEFAULT_RETENTION_DAYS: u64 = 90;
/// Default heartbeat interval of idle Subscribe streams.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;
/// Default limit of concurrent Subscribe streams.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;
/// Default largest lag (head minus delivered cursor) before a subscriber is ended.
pub const DEFAULT_MAX_SUBSCRIBER_LAG: u64 = 1_000_000;
/// Default bound on a graceful shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// Default System Log event types polled.
pub const DEFAULT_POLL_EVENT_TYPES: &str = "user.account.update_profile";
/// Default wait after a short System Log page.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 10;
/// Default look-back of the first System Log poll when no cursor is stored.
pub const DEFAULT_POLL_LOOKBACK_SECS: u64 = 3600;
/// Default JetStream stream name.
pub const DEFAULT_NATS_STREAM: &str = "OKTA_EVENTS";
/// Default JetStream duplicate window: 6 hours (NATS's own default is 2 minutes).
pub const DEFAULT_NATS_DUPLICATE_WINDOW_SECS: u64 = 6 * 3600;

/// One setting: its flag, environment variable, TOML key (the flag with `_`), default, meaning.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Long flag name without `--`.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// Default, as text ("" when there is none).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
    /// Whether the value is a secret (never printed).
    pub secret: bool,
}

const fn setting(
    flag: &'static str,
    env: &'static str,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        flag,
        env,
        default,
        help,
        secret: false,
    }
}

const fn secret(flag: &'static str, env: &'static str, help: &'static str) -> Setting {
    Setting {
        flag,
        env,
        default: "",
        help,
        secret: true,
    }
}

/// Every setting of `okta-stream serve`.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    setting("http-addr", "OKTA_STREAM_HTTP_ADDR", DEFAULT_HTTP_ADDR, "HTTP listen address: the hook, /healthz, /readyz, /metrics"),
    setting("grpc-addr", "OKTA_STREAM_GRPC_ADDR", DEFAULT_GRPC_ADDR, "gRPC listen address (also gRPC-Web)"),
    setting("data-dir", "OKTA_STREAM_DATA_DIR", DEFAULT_DATA_DIR, "Directory of the embedded journal and the generated hook secret"),
    setting("journal", "OKTA_STREAM_JOURNAL", "embedded", "`embedded` (redb in the data dir) or `nats://host:port[,host:port...]` (JetStream)"),
    setting("accept-empty-journal", "OKTA_STREAM_ACCEPT_EMPTY_JOURNAL", "false", "Embedded journal: start empty when the data dir's journal has vanished (refused otherwise)"),
    setting("retention-days", "OKTA_STREAM_RETENTION_DAYS", "90", "Events older than this many days are removed"),
    setting("retention-max-bytes", "OKTA_STREAM_RETENTION_MAX_BYTES", "", "Embedded journal: also remove the oldest events beyond this many bytes"),
    setting("retention-check-secs", "OKTA_STREAM_RETENTION_CHECK_SECS", "60", "Embedded journal: how often retention runs"),
    setting("nats-stream", "OKTA_STREAM_NATS_STREAM", DEFAULT_NATS_STREAM, "JetStream stream name"),
    setting("nats-replicas", "OKTA_STREAM_NATS_REPLICAS", "1", "JetStream stream replicas (3 on a 3-node cluster)"),
    setting("nats-duplicate-window-secs", "OKTA_STREAM_NATS_DUPLICATE_WINDOW_SECS", "21600", "JetStream dedupe window by LogEvent uuid"),
    setting("hook-auth-header", "OKTA_STREAM_HOOK_AUTH_HEADER", DEFAULT_HOOK_AUTH_HEADER, "Header whose whole value must equal a hook secret"),
    secret("hook-secrets", "OKTA_STREAM_HOOK_SECRETS", "Comma-separated accepted hook secrets; if unset, one is generated in the data dir and printed once"),
    setting("hook-max-body-bytes", "OKTA_STREAM_HOOK_MAX_BODY_BYTES", "10485760", "Largest hook delivery body accepted (413 above)"),
    secret("grpc-tokens", "OKTA_STREAM_GRPC_TOKENS", "Comma-separated bearer tokens required of gRPC clients (none: open)"),
    setting("grpc-tls-cert", "OKTA_STREAM_GRPC_TLS_CERT", "", "PEM certificate chain file: serve gRPC over TLS"),
    setting("grpc-tls-key", "OKTA_STREAM_GRPC_TLS_KEY", "", "PEM private key file for --grpc-tls-cert"),
    setting("grpc-web-cors-origins", "OKTA_STREAM_GRPC_WEB_CORS_ORIGINS", "", "Comma-separated origins allowed to call gRPC-Web from a browser, or `*`"),
    setting("max-subscribers", "OKTA_STREAM_MAX_SUBSCRIBERS", "10000", "Most concurrent Subscribe streams (RESOURCE_EXHAUSTED beyond)"),
    setting("max-subscriber-lag", "OKTA_STREAM_MAX_SUBSCRIBER_LAG", "1000000", "A live subscriber further behind the head than this many events is ended with its last cursor"),
    setting("heartbeat-secs", "OKTA_STREAM_HEARTBEAT_SECS", "15", "Heartbeat interval of idle Subscribe streams"),
    setting("shutdown-timeout-secs", "OKTA_STREAM_SHUTDOWN_TIMEOUT_SECS", "10", "Bound on a graceful shutdown"),
    setting("log-format", "OKTA_STREAM_LOG_FORMAT", "text", "`text` or `json`"),
    setting("okta-org-url", "OKTA_ORG_URL", "", "Okta org URL, e.g. https://acme.okta.com; enables the System Log poller"),
    secret("okta-api-token", "OKTA_API_TOKEN", "Okta API token (SSWS) for the poller"),
    setting("okta-client-id", "OKTA_CLIENT_ID", "", "OAuth 2.0 service app client id (with OKTA_PRIVATE_KEY_FILE)"),
    setting("okta-private-key-file", "OKTA_PRIVATE_KEY_FILE", "", "PEM or JWK private key of the service app (RS256 or ES256)"),
    setting("okta-private-key-id", "OKTA_PRIVATE_KEY_ID", "", "Key id (`kid`) of the private key, if registered with one"),
    setting("okta-poll-event-types", "OKTA_POLL_EVENT_TYPES", DEFAULT_POLL_EVENT_TYPES, "Comma-separated System Log event types to poll"),
    setting("okta-poll-interval-secs", "OKTA_POLL_INTERVAL_SECS", "10", "Wait after a short System Log page"),
    setting("okta-poll-lookback-secs", "OKTA_POLL_LOOKBACK_SECS", "3600", "First poll starts this far back when no cursor is stored"),
    setting("okta-poll-since", "OKTA_POLL_SINCE", "", "First poll starts at this RFC 3339 time instead (at most 180 days back)"),
    setting("okta-poll-rate-limit-share", "OKTA_POLL_RATE_LIMIT_SHARE", "0.5", "Share of the System Log rate limit the poller may use"),
    setting("okta-poll-lease-secs", "OKTA_POLL_LEASE_SECS", "15", "NATS journal: TTL of the lease that lets one replica at a time poll"),
];

/// Where setting values come from. Each map is keyed by the setting's flag name.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Values given as command-line flags.
    pub flags: HashMap<String, String>,
    /// The environment (variable name → value).
    pub env: HashMap<String, String>,
    /// Values of the TOML file, keyed by flag name (file keys use `_` or `-`).
    pub file: HashMap<String, String>,
}

impl Sources {
    /// The value of a setting by precedence flag > env > file; `None` if unset or empty.
    fn get(&self, setting: &Setting) -> Option<&str> {
        self.flags
            .get(setting.flag)
            .or_else(|| self.env.get(setting.env))
            .or_else(|| self.file.get(setting.flag))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Reads a TOML file into [`Sources::file`].
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        let table: toml::Table = text.parse().map_err(|e| {
            ConfigError::new(
                "config",
                format!("{} is not valid TOML: {e}", path.display()),
            )
        })?;
        for (key, value) in table {
            let flag = key.replace('_', "-");
            if setting_by_flag(&flag).is_none() {
                return Err(ConfigError::new(
                    "config",
                    format!("unknown setting `{key}` in {}", path.display()),
                ));
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            self.file.insert(flag, value);
        }
        Ok(())
    }
}

fn setting_by_flag(flag: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.flag == flag)
}

/// A setting that has a wrong value; names the setting by its environment variable and flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {problem}")]
pub struct ConfigError {
    /// `ENV_VAR (--flag)`.
    pub setting: String,
    /// What is wrong (never includes a secret's value).
    pub problem: String,
}

impl ConfigError {
    fn new(flag: &str, problem: impl Into<String>) -> Self {
        let setting = match setting_by_flag(flag) {
            Some(s) => format!("{} (--{})", s.env, s.flag),
            None => format!("--{flag}"),
        };
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// Which journal implementation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalKind {
    /// redb in the data dir.
    Embedded,
    /// NATS JetStream at these servers (`nats://host:port` each).
    Nats {
        /// Server URLs.
        servers: Vec<String>,
        /// Stream name.
        stream: String,
        /// Stream replicas.
        replicas: usize,
        /// Dedupe window.
        duplicate_window: Duration,
    },
}

/// Hook endpoint settings.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// Header carrying the secret.
    pub auth_header: HeaderName,
    /// Accepted secrets; empty means "generate one in the data dir".
    pub secrets: Vec<Secret>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
}

/// gRPC server settings.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Bearer tokens required of clients; empty: open.
    pub tokens: Vec<Secret>,
    /// TLS certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Origins allowed for gRPC-Web (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Most concurrent Subscribe streams.
    pub max_subscribers: usize,
    /// Largest lag before a subscriber is ended.
    pub max_subscriber_lag: u64,
    /// Heartbeat interval.
    pub heartbeat: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of `okta-stream serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Journal implementation.
    pub journal: JournalKind,
    /// Start with an empty embedded journal when the data dir's journal vanished.
    pub accept_empty_journal: bool,
    /// Retention by age.
    pub retention_max_age: Duration,
    /// Retention by size (embedded journal).
    pub retention_max_bytes: Option<u64>,
    /// How often retention runs (embedded journal).
    pub retention_check_interval: Duration,
    /// Hook settings.
    pub hook: HookConfig,
    /// gRPC settings.
    pub grpc: GrpcConfig,
    /// System Log poller settings, when `OKTA_ORG_URL` is set.
    pub okta: Option<PollerConfig>,
    /// TTL of the poller lease that lets one replica at a time poll (NATS journal).
    pub poller_lease: Duration,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(&Sources::default()).expect("the defaults are valid")
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| ConfigError::new(flag, format!("`{value}` is not valid: {e}")))
}

/// Drops a leading `SETTING: ` from a nested error, since [`ConfigError`] names the setting.
fn strip_setting(message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if head.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
            rest.to_owned()
        }
        _ => message.to_owned(),
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Config {
    /// Resolves and validates every setting from `sources`.
    pub fn resolve(sources: &Sources) -> Result<Config, ConfigError> {
        let value = |flag: &str| -> Option<&str> {
            let setting = setting_by_flag(flag)?;
            sources
                .get(setting)
                .or(Some(setting.default))
                .filter(|v| !v.is_empty())
        };
        let required = |flag: &str| value(flag).unwrap_or_default().to_owned();
        let number = |flag: &str| -> Result<u64, ConfigError> { parse(flag, &required(flag)) };
        let positive = |flag: &str| -> Result<u64, ConfigError> {
            match number(flag)? {
                0 => Err(ConfigError::new(flag, "must be greater than 0")),
                n => Ok(n),
            }
        };

        let journal = match value("journal") {
            None | Some("embedded") => JournalKind::Embedded,
            Some(url) if url.starts_with("nats://") => {
                let servers = list(url);
                if servers
                    .iter()
                    .any(|s| !s.starts_with("nats://") || s.len() <= "nats://".len())
                {
                    return Err(ConfigError::new(
                        "journal",
                        "every server must be `nats://host:port`",
                    ));
                }
                let replicas = positive("nats-replicas")? as usize;
                if replicas > 5 {
                    return Err(ConfigError::new(
                        "nats-replicas",
                        "JetStream allows at most 5 replicas",
                    ));
                }
                JournalKind::Nats {
                    servers,
                    stream: required("nats-stream"),
                    replicas,
                    duplicate_window: Duration::from_secs(positive("nats-duplicate-window-secs")?),
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "journal",
                    format!("`{other}` is neither `embedded` nor a `nats://` URL"),
                ));
            }
        };

        let auth_header: HeaderName = parse("hook-auth-header", &required("hook-auth-header"))?;
        let hook = HookConfig {
            auth_header,
            secrets: value("hook-secrets")
                .map(list)
                .unwrap_or_default()
                .into_iter()
                .map(Secret::new)
                .collect(),
            max_body_bytes: positive("hook-max-body-bytes")? as usize,
        };

        let tls = match (value("grpc-tls-cert"), value("grpc-tls-key")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "grpc-tls-key",
                    "is required with --grpc-tls-cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "grpc-tls-cert",
                    "is required with --grpc-tls-key",
                ));
            }
        };
        let grpc = GrpcConfig {
            tokens: value("grpc-tokens")
                .map(list)
                .unwrap_or_default()
                .into_iter()
                .map(Secret::new)
                .collect(),
            tls,
            cors_origins: value("grpc-web-cors-origins").map(list).unwrap_or_default(),
            max_subscribers: positive("max-subscribers")? as usize,
            max_subscriber_lag: positive("max-subscriber-lag")?,
            heartbeat: Duration::from_secs(positive("heartbeat-secs")?),
        };

        let okta = match value("okta-org-url") {
            None => None,
            Some(org_url) => {
                crate::okta::parse_org_url(org_url)
                    .map_err(|e| ConfigError::new("okta-org-url", strip_setting(&e.to_string())))?;
                let credentials = match (
                    value("okta-api-token"),
                    value("okta-client-id"),
                    value("okta-private-key-file"),
                ) {
                    (Some(token), None, None) => Credentials::ApiToken(Secret::new(token)),
                    (None, Some(client_id), Some(key_file)) => {
                        let text = std::fs::read_to_string(key_file).map_err(|e| {
                            ConfigError::new(
                                "okta-private-key-file",
                                format!("cannot read {key_file}: {e}"),
                            )
                        })?;
                        let key = PrivateKey::parse(&text).map_err(|e| {
                            ConfigError::new("okta-private-key-file", strip_setting(&e.to_string()))
                        })?;
                        Credentials::ServiceApp {
                            client_id: client_id.to_owned(),
                            key,
                            key_id: value("okta-private-key-id").map(str::to_owned),
                        }
                    }
                    (Some(_), _, _) => {
                        return Err(ConfigError::new(
                            "okta-api-token",
                            "set either OKTA_API_TOKEN or OKTA_CLIENT_ID + OKTA_PRIVATE_KEY_FILE, not both",
                        ));
                    }
                    (None, Some(_), None) => {
                        return Err(ConfigError::new(
                            "okta-private-key-file",
                            "is required with OKTA_CLIENT_ID",
                        ));
                    }
                    (None, None, Some(_)) => {
                        return Err(ConfigError::new(
                            "okta-client-id",
                            "is required with OKTA_PRIVATE_KEY_FILE",
                        ));
                    }
                    (None, None, None) => {
                        return Err(ConfigError::new(
                            "okta-org-url",
                            "the poller needs OKTA_API_TOKEN or OKTA_CLIENT_ID + OKTA_PRIVATE_KEY_FILE",
                        ));
                    }
                };
                let event_types = list(&required("okta-poll-event-types"));
                if event_types.is_empty() {
                    return Err(ConfigError::new(
                        "okta-poll-event-types",
                        "must name at least one event type",
                    ));
                }
                let start = match value("okta-poll-since") {
                    Some(since) => StartFrom::Since(
                        chrono::DateTime::parse_from_rfc3339(since)
                            .map_err(|e| {
                                ConfigError::new(
                                    "okta-poll-since",
                                    format!("`{since}` is not an RFC 3339 time: {e}"),
                                )
                            })?
                            .with_timezone(&chrono::Utc),
                    ),
                    None => {
                        StartFrom::LookBack(Duration::from_secs(number("okta-poll-lookback-secs")?))
                    }
                };
                let share: f64 = parse(
                    "okta-poll-rate-limit-share",
                    &required("okta-poll-rate-limit-share"),
                )?;
                if !(share > 0.0 && share <= 1.0) {
                    return Err(ConfigError::new(
                        "okta-poll-rate-limit-share",
                        "must be greater than 0 and at most 1",
                    ));
                }
                Some(PollerConfig {
                    event_types,
                    poll_interval: Duration::from_secs(positive("okta-poll-interval-secs")?),
                    start,
                    rate_limit_share: share,
                    // The hook endpoint always runs, so events only the poller found are hook misses.
                    hook_enabled: true,
                    ..PollerConfig::new(org_url.trim_end_matches('/'), credentials)
                })
            }
        };

        let log_format = match required("log-format").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log-format",
                    format!("`{other}` is neither `text` nor `json`"),
                ));
            }
        };

        let retention_days = positive("retention-days")?;
        Ok(Config {
            http_addr: parse("http-addr", &required("http-addr"))?,
            grpc_addr: parse("grpc-addr", &required("grpc-addr"))?,
            data_dir: PathBuf::from(required("data-dir")),
            journal,
            accept_empty_journal: parse("accept-empty-journal", &required("accept-empty-journal"))?,
            retention_max_age: Duration::from_secs(retention_days.saturating_mul(86_400)),
            retention_check_interval: Duration::from_secs(positive("retention-check-secs")?),
            retention_max_bytes: value("retention-max-bytes")
                .map(|v| parse("retention-max-bytes", v))
                .transpose()?,
            hook,
            grpc,
            okta,
            poller_lease: Duration::from_secs(positive("okta-poll-lease-secs")?),
            shutdown_timeout: Duration::from_secs(positive("shutdown-timeout-secs")?),
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(flags: &[(&str, &str)], env: &[(&str, &str)], file: &[(&str, &str)]) -> Sources {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Sources {
            flags: map(flags),
            env: map(env),
            file: map(file),
        }
    }

    #[test]
    fn defaults_listen_on_loopback_with_the_embedded_journal() {
        let config = Config::default();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.journal, JournalKind::Embedded);
        assert_eq!(config.hook.auth_header, "authorization");
        assert_eq!(config.hook.max_body_bytes, DEFAULT_HOOK_MAX_BODY_BYTES);
        assert_eq!(config.retention_max_age, Duration::from_secs(90 * 86_400));
        assert_eq!(
            config.grpc.heartbeat,
            Duration::from_secs(DEFAULT_HEARTBEAT_SECS)
        );
        assert!(config.okta.is_none());
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let all = sources(
            &[("http-addr", "127.0.0.1:1")],
            &[("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:2")],
            &[("http-addr", "127.0.0.1:3")],
        );
        assert_eq!(Config::resolve(&all).unwrap().http_addr.port(), 1);
        let env_and_file = sources(
            &[],
            &[("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:2")],
            &[("http-addr", "127.0.0.1:3")],
        );
        assert_eq!(Config::resolve(&env_and_file).unwrap().http_addr.port(), 2);
        let file = sources(&[], &[], &[("http-addr", "127.0.0.1:3")]);
        assert_eq!(Config::resolve(&file).unwrap().http_addr.port(), 3);
    }

    #[test]
    fn a_wrong_value_names_the_setting() {
        let err = Config::resolve(&sources(&[], &[("OKTA_STREAM_GRPC_ADDR", "nowhere")], &[]))
            .unwrap_err();
        assert!(err.to_string().contains("OKTA_STREAM_GRPC_ADDR"), "{err}");
        let err = Config::resolve(&sources(
            &[],
            &[("OKTA_STREAM_JOURNAL", "postgres://x")],
            &[],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("OKTA_STREAM_JOURNAL"), "{err}");
        let err = Config::resolve(&sources(&[], &[("OKTA_STREAM_HEARTBEAT_SECS", "0")], &[]))
            .unwrap_err();
        assert!(
            err.to_string().contains("OKTA_STREAM_HEARTBEAT_SECS"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_comma_separated_and_never_printed() {
        let config = Config::resolve(&sources(
            &[],
            &[("OKTA_STREAM_HOOK_SECRETS", "old-secret, new-secret")],
            &[],
        ))
        .unwrap();
        assert_eq!(config.hook.secrets.len(), 2);
        assert!(!format!("{config:?}").contains("old-secret"));
    }

    #[test]
    fn the_poller_needs_exactly_one_kind_of_credentials() {
        let env = [("OKTA_ORG_URL", "https://acme.okta.com/")];
        let err = Config::resolve(&sources(&[], &env, &[])).unwrap_err();
        assert!(err.to_string().contains("OKTA_ORG_URL"), "{err}");
        let plain_http = [
            ("OKTA_ORG_URL", "http://acme.okta.com"),
            ("OKTA_API_TOKEN", "t"),
        ];
        let err = Config::resolve(&sources(&[], &plain_http, &[])).unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let missing_key = [
            ("OKTA_ORG_URL", "https://acme.okta.com"),
            ("OKTA_CLIENT_ID", "0oa1"),
            ("OKTA_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ];
        let err = Config::resolve(&sources(&[], &missing_key, &[])).unwrap_err();
        assert!(err.to_string().contains("OKTA_PRIVATE_KEY_FILE"), "{err}");
        let ok =
            Config::resolve(&sources(&[], &[env[0], ("OKTA_API_TOKEN", "t0k3n")], &[])).unwrap();
        let okta = ok.okta.unwrap();
        assert_eq!(okta.org_url, "https://acme.okta.com");
        assert!(okta.hook_enabled);
        assert_eq!(okta.event_types, vec!["user.account.update_profile"]);
        assert!(!format!("{okta:?}").contains("t0k3n"));
    }

    #[test]
    fn nats_journal_takes_several_servers() {
        let config = Config::resolve(&sources(
            &[],
            &[(
                "OKTA_STREAM_JOURNAL",
                "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            )],
            &[],
        ))
        .unwrap();
        match config.journal {
            JournalKind::Nats {
                servers, stream, ..
            } => {
                assert_eq!(servers.len(), 2);
                assert_eq!(stream, DEFAULT_NATS_STREAM);
            }
            other => panic!("expected NATS, got {other:?}"),
        }
    }
}
