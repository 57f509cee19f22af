//! Settings of the NATS JetStream journal and the parsing of `OKTA_STREAM_JOURNAL=nats://...`.
//!
//! Kept apart from the journal so the config layer can validate the URL list (and exit 64 with a
//! message naming the setting) without connecting to anything.

use std::time::Duration;

/// Default JetStream stream name.
pub const DEFAULT_STREAM: &str = "OKTA_EVENTS";
/// Default subject prefix; events are published on `<subject>.<encoded uuid>`.
pub const DEFAULT_SUBJECT: &str = "okta.events";
/// Default replication factor of the stream and buckets (1 = single server).
pub const DEFAULT_REPLICAS: usize = 1;
/// Default retention: 90 days, as long as Okta keeps the System Log.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default `Nats-Msg-Id` dedupe window: hours, not NATS's two minutes, so a late hook retry or a
/// poller re-reading a page is absorbed by the server itself.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// Where and how the NATS journal stores events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`), any member of the cluster; the client discovers the rest.
    pub servers: Vec<String>,
    /// JetStream stream name. The state bucket is `<stream>_STATE`, the quarantine stream
    /// `<stream>_QUARANTINE`.
    pub stream: String,
    /// Subject prefix of the events (`<subject>.>` is the stream's only subject).
    pub subject: String,
    /// Replication factor of the stream and buckets (1, 3 or 5).
    pub replicas: usize,
    /// How long events are retained.
    pub max_age: Duration,
    /// How long the server dedupes by `Nats-Msg-Id` (the event uuid).
    pub duplicate_window: Duration,
    /// Most bytes the quarantine stream keeps (the oldest entries go first); `None`: no
    /// limit but `max_age`.
    pub quarantine_max_bytes: Option<u64>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            stream: DEFAULT_STREAM.to_owned(),
            subject: DEFAULT_SUBJECT.to_owned(),
            replicas: DEFAULT_REPLICAS,
            max_age: DEFAULT_MAX_AGE,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            quarantine_max_bytes: None,
        }
    }
}

impl NatsConfig {
    /// The defaults with the servers of `url` (`nats://host:port[,host:port...]`).
    pub fn from_url(url: &str) -> Result<Self, NatsConfigError> {
        Ok(Self {
            servers: parse_servers(url)?,
            ..Self::default()
        })
    }

    /// Checks the settings that the server would otherwise reject with a less clear message.
    pub fn validate(&self) -> Result<(), NatsConfigError> {
        if self.servers.is_empty() {
            return Err(NatsConfigError::NoServer);
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&self.stream) {
            return Err(NatsConfigError::Invalid {
                setting: "stream",
                reason: format!(
                    "{:?} must be non-empty and only use letters, digits, '_' and '-'",
                    self.stream
                ),
            });
        }
        let subject_ok = !self.subject.is_empty()
            && self.subject.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .chars()
                        .all(|c| !c.is_whitespace() && c != '*' && c != '>')
            });
        if !subject_ok {
            return Err(NatsConfigError::Invalid {
                setting: "subject",
                reason: format!(
                    "{:?} must be dot-separated non-empty tokens without wildcards or spaces",
                    self.subject
                ),
            });
        }
        if !matches!(self.replicas, 1..=5) {
            return Err(NatsConfigError::Invalid {
                setting: "replicas",
                reason: format!("{} is not between 1 and 5", self.replicas),
            });
        }
        if self.max_age.is_zero() || self.duplicate_window.is_zero() {
            return Err(NatsConfigError::Invalid {
                setting: "max_age/duplicate_window",
                reason: "must be positive".to_owned(),
            });
        }
        if self.duplicate_window > self.max_age {
            return Err(NatsConfigError::Invalid {
                setting: "duplicate_window",
                reason: format!(
                    "{:?} is longer than max_age {:?}",
                    self.duplicate_window, self.max_age
                ),
            });
        }
        Ok(())
    }
}

/// Why a NATS journal setting is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatsConfigError {
    /// The URL list names no server.
    #[error("OKTA_STREAM_JOURNAL names no NATS server")]
    NoServer,
    /// One entry of the URL list is malformed.
    #[error("OKTA_STREAM_JOURNAL entry {entry:?} is not a NATS server address: {reason}")]
    BadServer {
        /// The offending entry, as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another setting is out of range.
    #[error("NATS journal setting {setting}: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Splits `nats://h:p,h:p` (the scheme may be given once, on every entry, or not at all) into
/// one `nats://host:port` URL per server.
pub fn parse_servers(url: &str) -> Result<Vec<String>, NatsConfigError> {
    let mut servers = Vec::new();
    for raw in url.split(',') {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("nats", entry),
        };
        let bad = |reason: &str| NatsConfigError::BadServer {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        if !matches!(scheme, "nats" | "tls") {
            return Err(bad("the scheme must be nats:// or tls://"));
        }
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad("expected host:port without path or credentials"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => (host, port),
            _ => return Err(bad("expected host:port")),
        };
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("the port must be a number between 1 and 65535"));
        }
        let normalized = format!("{scheme}://{host}:{port}");
        normalized
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| bad(&e.to_string()))?;
        servers.push(normalized);
    }
    if servers.is_empty() {
        return Err(NatsConfigError::NoServer);
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_with_one_scheme_yields_one_url_per_server() {
        assert_eq!(
            parse_servers("nats://a:4222,b:4223, 127.0.0.1:4224").unwrap(),
            vec!["nats://a:4222", "nats://b:4223", "nats://127.0.0.1:4224"]
        );
    }

    #[test]
    fn malformed_entries_are_named_in_the_error() {
        assert_eq!(parse_servers(" , "), Err(NatsConfigError::NoServer));
        for bad in [
            "http://a:1",
            "nats://a",
            "nats://a:0",
            "nats://a:x",
            "nats://u:p@a:1",
        ] {
            let err = parse_servers(bad).unwrap_err();
            assert!(
                matches!(&err, NatsConfigError::BadServer { entry, .. } if bad.ends_with(entry.as_str())),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        NatsConfig::default().validate().unwrap();
        let bad = NatsConfig {
            duplicate_window: Duration::from_secs(10),
            max_age: Duration::from_secs(5),
            ..NatsConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(NatsConfigError::Invalid {
                setting: "duplicate_window",
                ..
            })
        ));
        let bad = NatsConfig {
            subject: "okta.>".to_owned(),
            ..NatsConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(NatsConfigError::Invalid {
                setting: "subject",
                ..
            })
        ));
    }
}
