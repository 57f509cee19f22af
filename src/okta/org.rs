//! The org an okta-stream talks to: its URL checked once, the HTTP client every Okta API call
//! uses, and the configuration error both report. The floor of the Okta stack.

/// Why a poller configuration was refused; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `OKTA_ORG_URL` is not an absolute `https://` URL (or `http://` on a loopback host).
    #[error("OKTA_ORG_URL: {0}")]
    OrgUrl(String),
    /// The private key could not be read as PEM or JWK.
    #[error("OKTA_PRIVATE_KEY_FILE: {0}")]
    PrivateKey(String),
    /// Another setting is out of range.
    #[error("{setting}: {problem}")]
    Invalid {
        /// The setting's environment variable or field name.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Parses and checks the org URL: `https://` always, `http://` only for loopback hosts (tests and
/// local fakes), no path beyond `/`, no query, no credentials. Returns the origin without a
/// trailing slash, e.g. `https://example.okta.com`.
pub fn parse_org_url(raw: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| ConfigError::OrgUrl(format!("not a URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| ConfigError::OrgUrl("has no host".to_owned()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(ConfigError::OrgUrl(
                "must be https:// (http:// is accepted only for loopback hosts)".to_owned(),
            ));
        }
        other => return Err(ConfigError::OrgUrl(format!("unsupported scheme {other}"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::OrgUrl("must not carry credentials".to_owned()));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(ConfigError::OrgUrl(
            "must be the org origin only, without a path".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::OrgUrl(
            "must not have a query or fragment".to_owned(),
        ));
    }
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The HTTP client for Okta's APIs: every request bounded by `timeout`, redirects never
/// followed (credentials must not leave the org), our user agent.
pub(crate) fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("okta-stream/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Invalid {
            setting: "http client",
            problem: e.to_string(),
        })
}

/// The org origin as a string without a trailing slash (`https://example.okta.com`).
pub(crate) fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// True when `candidate` has the same scheme, host and port as `org`: the only URLs the
/// poller sends credentials to.
pub(crate) fn same_origin(org: &reqwest::Url, candidate: &reqwest::Url) -> bool {
    org.origin() == candidate.origin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_url_must_be_https_except_on_loopback() {
        assert!(parse_org_url("https://example.okta.com").is_ok());
        assert!(parse_org_url("https://example.okta.com/").is_ok());
        assert!(parse_org_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_org_url("http://[::1]:8080").is_ok());
        assert!(parse_org_url("http://localhost:1").is_ok());
        assert!(parse_org_url("http://example.okta.com").is_err());
        assert!(parse_org_url("ftp://example.okta.com").is_err());
        assert!(parse_org_url("https://example.okta.com/api").is_err());
        assert!(parse_org_url("https://u:p@example.okta.com").is_err());
        assert!(parse_org_url("example.okta.com").is_err());
    }

    #[test]
    fn origin_drops_trailing_slash() {
        let url = parse_org_url("https://example.okta.com/").unwrap();
        assert_eq!(origin(&url), "https://example.okta.com");
    }
}
