//! The poller's settings and their defaults: what the client and the loop are built from.
//!
//! Below both of them, so the client and the poller read one declaration and neither imports
//! the other for it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::auth::Credentials;
use super::org::ConfigError;

/// Default `OKTA_POLL_EVENT_TYPES`.
pub const DEFAULT_EVENT_TYPE: &str = "user.account.update_profile";
/// Default `OKTA_POLL_INTERVAL_SECS`: the wait after a short page.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Default look-back of the very first request (no stored `next` URL, no configured `since`):
/// one hour, so a fresh start picks up what the hook may have missed recently without replaying
/// the 90-day retention.
pub const DEFAULT_LOOK_BACK: Duration = Duration::from_secs(3600);
/// Default page size: Okta's maximum.
pub const DEFAULT_LIMIT: u32 = 1000;
/// Default per-request timeout. Okta ends a query after 30 s with `500 E0000009`; this leaves
/// room for that answer to arrive.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Default share of `X-Rate-Limit-Limit` the poller may use (Okta's own per-app default cap).
pub const DEFAULT_RATE_LIMIT_SHARE: f64 = 0.5;
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
}

impl PollerConfig {
    /// A config for `org_url` and `credentials` with every other setting at its default.
    pub fn new(org_url: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            org_url: org_url.into(),
            credentials,
            event_types: vec![DEFAULT_EVENT_TYPE.to_owned()],
            poll_interval: DEFAULT_POLL_INTERVAL,
            start: StartFrom::LookBack(DEFAULT_LOOK_BACK),
            limit: DEFAULT_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rate_limit_share: DEFAULT_RATE_LIMIT_SHARE,
            auth_retry_interval: DEFAULT_AUTH_RETRY_INTERVAL,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            hook_enabled: false,
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
