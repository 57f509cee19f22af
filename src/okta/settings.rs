//! The poller's settings: what the client and the loop are built from, and how `serve` builds
//! them from the plain values of [`crate::config`] (the org URL checked against what Okta's APIs
//! need, the private key file read and parsed, the poller's start chosen). Errors name the
//! setting (`ENV (--flag)`), so `serve` exits 64 on them.
//!
//! Below the client and the poller, so both read one declaration and neither imports the other
//! for it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::auth::{Credentials, PrivateKey};
use super::org::{ConfigError, origin, parse_org_url};
use crate::config::{ConfigError as SettingError, OktaAuth, OktaOrgSettings, OktaSettings};

/// Default page size: Okta's maximum.
pub const DEFAULT_LIMIT: u32 = 1000;
/// Default per-request timeout. Okta ends a query after 30 s with `500 E0000009`; this leaves
/// room for that answer to arrive.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Default wait before retrying after Okta refused the credentials (401/403/4xx).
pub const DEFAULT_AUTH_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// Default first back-off after a 5xx, timeout or transport error.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default longest back-off.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Where the very first request starts when the journal holds no `next` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// `since` = now − this duration.
    LookBack(Duration),
    /// `since` = this time (Okta rejects more than 180 days back).
    Since(DateTime<Utc>),
}

/// Everything the poller needs; the app fills it from env/flags.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// `OKTA_ORG_URL`: `https://{org}`; `http://` only for loopback hosts.
    pub org_url: String,
    /// `OKTA_API_TOKEN`, or `OKTA_CLIENT_ID` + `OKTA_PRIVATE_KEY_FILE` (+ `OKTA_PRIVATE_KEY_ID`).
    pub credentials: Credentials,
    /// `OKTA_POLL_EVENT_TYPES`: the event types to pull.
    pub event_types: Vec<String>,
    /// `OKTA_POLL_INTERVAL_SECS`: wait after a short page.
    pub poll_interval: Duration,
    /// First `since` when no `next` URL is stored.
    pub start: StartFrom,
    /// Page size, 1..=1000.
    pub limit: u32,
    /// Timeout of every HTTP request (token and API).
    pub request_timeout: Duration,
    /// Share of `X-Rate-Limit-Limit` to stay within, in (0, 1].
    pub rate_limit_share: f64,
    /// Wait before retrying after Okta refused the credentials.
    pub auth_retry_interval: Duration,
    /// First back-off after a 5xx, timeout or transport error; doubles per failure.
    pub backoff_base: Duration,
    /// Longest back-off.
    pub backoff_cap: Duration,
    /// Whether an event hook also feeds the journal: events the poller newly commits are then
    /// counted as hook misses.
    pub hook_enabled: bool,
    /// `OKTA_STREAM_MAX_EVENT_BYTES`: a larger record is quarantined, not stored.
    pub max_event_bytes: usize,
}

impl PollerConfig {
    /// A config for `org_url` and `credentials` with every other setting at its default:
    /// the declared default of its setting in [`crate::config`], or this module's own.
    pub fn new(org_url: impl Into<String>, credentials: Credentials) -> Self {
        let declared = crate::config::OktaSettings::default();
        Self {
            org_url: org_url.into(),
            credentials,
            event_types: declared.poll_event_types,
            poll_interval: declared.poll_interval,
            start: StartFrom::LookBack(declared.poll_lookback),
            limit: DEFAULT_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rate_limit_share: declared.poll_rate_limit_share,
            auth_retry_interval: DEFAULT_AUTH_RETRY_INTERVAL,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            hook_enabled: false,
            max_event_bytes: crate::journal::DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// Checks the settings the client does not check itself.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rate_limit_share > 0.0 && self.rate_limit_share <= 1.0) {
            return Err(ConfigError::Invalid {
                setting: "rate_limit_share",
                problem: "must be in (0, 1]".to_owned(),
            });
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "OKTA_POLL_INTERVAL_SECS",
                problem: "must be positive".to_owned(),
            });
        }
        if self.auth_retry_interval.is_zero() || self.backoff_base.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "auth_retry_interval/backoff_base",
                problem: "must be positive".to_owned(),
            });
        }
        if self.backoff_cap < self.backoff_base {
            return Err(ConfigError::Invalid {
                setting: "backoff_cap",
                problem: "must be at least backoff_base".to_owned(),
            });
        }
        Ok(())
    }
}

/// The checked org origin of `settings` (`https://acme.okta.com`), which must be set.
pub fn org_origin(settings: &OktaOrgSettings) -> Result<String, SettingError> {
    let url = settings.required_org_url()?;
    let org = parse_org_url(url.as_str())
        .map_err(|e| SettingError::invalid("okta-org-url", problem(e)))?;
    Ok(origin(&org))
}

impl Credentials {
    /// The credentials `auth` names; for a service app, its private key file is read here.
    pub fn from_settings(auth: &OktaAuth) -> Result<Self, SettingError> {
        match auth {
            OktaAuth::ApiToken(token) => Ok(Credentials::ApiToken(token.clone())),
            OktaAuth::ServiceApp {
                client_id,
                private_key_file,
                private_key_id,
            } => {
                let invalid =
                    |problem: String| SettingError::invalid("okta-private-key-file", problem);
                let text = std::fs::read_to_string(private_key_file).map_err(|e| {
                    invalid(format!("cannot read {}: {e}", private_key_file.display()))
                })?;
                let key = PrivateKey::parse(&text).map_err(|e| invalid(problem(e)))?;
                Ok(Credentials::ServiceApp {
                    client_id: client_id.clone(),
                    key,
                    key_id: private_key_id.clone(),
                })
            }
        }
    }
}

impl PollerConfig {
    /// The poller's configuration from `settings`; `None` when no org URL is set (the poller is
    /// off). Settings that are not configurable keep [`PollerConfig::new`]'s values.
    pub fn from_settings(settings: &OktaSettings) -> Result<Option<Self>, SettingError> {
        if settings.org.org_url.is_none() {
            return Ok(None);
        }
        let org = org_origin(&settings.org)?;
        let credentials = Credentials::from_settings(&settings.org.auth()?)?;
        let start = match settings.poll_since {
            Some(since) => StartFrom::Since(since),
            None => StartFrom::LookBack(settings.poll_lookback),
        };
        Ok(Some(PollerConfig {
            event_types: settings.poll_event_types.clone(),
            poll_interval: settings.poll_interval,
            start,
            rate_limit_share: settings.poll_rate_limit_share,
            ..PollerConfig::new(org, credentials)
        }))
    }
}

/// What is wrong, without the setting's name (the [`SettingError`] adds it).
fn problem(error: ConfigError) -> String {
    match error {
        ConfigError::OrgUrl(problem) | ConfigError::PrivateKey(problem) => problem,
        ConfigError::Invalid { problem, .. } => problem,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn okta(env: &[(&str, &str)]) -> OktaSettings {
        let sources = crate::config::Sources {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Config::load(["serve"], &sources).unwrap().okta
    }

    #[test]
    fn no_org_url_means_no_poller() {
        assert!(
            PollerConfig::from_settings(&OktaSettings::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_settings_become_the_poller_config() {
        let settings = okta(&[
            ("OKTA_ORG_URL", "https://acme.okta.com/"),
            ("OKTA_API_TOKEN", "t0k3n"),
            ("OKTA_POLL_EVENT_TYPES", "a.b, c.d"),
            ("OKTA_POLL_INTERVAL_SECS", "3"),
            ("OKTA_POLL_SINCE", "2026-11-01T00:00:00Z"),
            ("OKTA_POLL_RATE_LIMIT_SHARE", "0.25"),
        ]);
        let config = PollerConfig::from_settings(&settings).unwrap().unwrap();
        assert_eq!(config.org_url, "https://acme.okta.com");
        assert_eq!(config.event_types, vec!["a.b", "c.d"]);
        assert_eq!(config.poll_interval, Duration::from_secs(3));
        assert!(
            matches!(config.start, StartFrom::Since(t) if t.to_rfc3339() == "2026-11-01T00:00:00+00:00")
        );
        assert_eq!(config.rate_limit_share, 0.25);
        assert!(matches!(config.credentials, Credentials::ApiToken(t) if t.expose() == "t0k3n"));
        assert!(
            !config.hook_enabled,
            "the app decides whether a hook runs beside it"
        );
    }

    #[test]
    fn a_bad_org_url_or_key_file_names_the_setting() {
        let settings = okta(&[
            ("OKTA_ORG_URL", "http://acme.okta.com"),
            ("OKTA_API_TOKEN", "t"),
        ]);
        let err = PollerConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OKTA_ORG_URL (--okta-org-url)"), "{err}");
        assert!(err.contains("https"), "{err}");
        let settings = okta(&[
            ("OKTA_ORG_URL", "https://acme.okta.com"),
            ("OKTA_CLIENT_ID", "0oa1"),
            ("OKTA_PRIVATE_KEY_FILE", "/nonexistent/key.pem"),
        ]);
        let err = PollerConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OKTA_PRIVATE_KEY_FILE (--okta-private-key-file)"),
            "{err}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a key").unwrap();
        let settings = okta(&[
            ("OKTA_ORG_URL", "https://acme.okta.com"),
            ("OKTA_CLIENT_ID", "0oa1"),
            ("OKTA_PRIVATE_KEY_FILE", file.path().to_str().unwrap()),
        ]);
        let err = PollerConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid setting OKTA_PRIVATE_KEY_FILE (--okta-private-key-file): "),
            "{err}"
        );
        assert_eq!(err.matches("OKTA_PRIVATE_KEY_FILE").count(), 1, "{err}");
    }
}
