//! The Okta side's own settings, built from the plain values of [`crate::config`]: the org URL
//! checked against what Okta's APIs need, the private key file read and parsed, the poller's
//! start chosen. Errors name the setting (`ENV (--flag)`), so `serve` exits 64 on them.

use super::ConfigError as KeyOrUrlError;
use super::{Credentials, PollerConfig, PrivateKey, StartFrom, origin, parse_org_url};
use crate::config::{ConfigError, OktaAuth, OktaOrgSettings, OktaSettings};

/// The checked org origin of `settings` (`https://acme.okta.com`), which must be set.
pub fn org_origin(settings: &OktaOrgSettings) -> Result<String, ConfigError> {
    let url = settings.required_org_url()?;
    let org = parse_org_url(url.as_str())
        .map_err(|e| ConfigError::invalid("okta-org-url", problem(e)))?;
    Ok(origin(&org))
}

impl Credentials {
    /// The credentials `auth` names; for a service app, its private key file is read here.
    pub fn from_settings(auth: &OktaAuth) -> Result<Self, ConfigError> {
        match auth {
            OktaAuth::ApiToken(token) => Ok(Credentials::ApiToken(token.clone())),
            OktaAuth::ServiceApp {
                client_id,
                private_key_file,
                private_key_id,
            } => {
                let invalid =
                    |problem: String| ConfigError::invalid("okta-private-key-file", problem);
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
    pub fn from_settings(settings: &OktaSettings) -> Result<Option<Self>, ConfigError> {
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

/// What is wrong, without the setting's name (the [`ConfigError`] adds it).
fn problem(error: KeyOrUrlError) -> String {
    match error {
        KeyOrUrlError::OrgUrl(problem) | KeyOrUrlError::PrivateKey(problem) => problem,
        KeyOrUrlError::Invalid { problem, .. } => problem,
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
