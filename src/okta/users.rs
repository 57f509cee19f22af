//! Okta's Users API (SPEC.md I): one user (`GET /api/v1/users/{id}`) and pages of users
//! (`GET /api/v1/users?limit=200[&search=lastUpdated gt "<time>"]`, paged by the opaque
//! `Link: rel="next"`), the source of profile values.
//!
//! It authenticates exactly as the System Log poller does ([`Credentials`]: SSWS token, or a
//! service app with `private_key_jwt` and DPoP, asking for `okta.users.read`), with the same
//! HTTP client settings. Requests are spaced to stay within a share of the Users API's
//! `X-Rate-Limit-*` budget (the same formula as the poller, [`pacing_delay`]); after a 429 no
//! request leaves before the reset by the server's clock, and the next one carries
//! `X-Okta-Retry-For`. Calls may run concurrently: each takes the next free slot. The client
//! never retries by itself (except once after the API refused a fresh OAuth token): the
//! caller owns the deadline and matches on [`UsersError`].

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use http::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

use super::auth::{AuthError, Authorizer, Credentials};
use super::client::{
    RateLimit, RetryOf, next_link, pacing_delay, percent_encode, rate_limit_wait, reason,
    wait_until,
};
use super::org::{ConfigError, http_client, parse_org_url, same_origin};

/// The OAuth scope a service app needs to read users.
pub const SCOPE: &str = "okta.users.read";

/// The collection path of users.
pub const USERS_PATH: &str = "/api/v1/users";

/// The largest page of users Okta serves.
pub const MAX_LIMIT: u32 = 200;

/// Wait after a 429 without usable `X-Rate-Limit-Reset`/`Date`: one full window.
const RATE_LIMIT_FALLBACK_WAIT: Duration = Duration::from_secs(60);

/// One Okta user, as much of it as profile values need.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The user id, `00u…`.
    pub id: String,
    /// `status`, e.g. `ACTIVE`, `DEPROVISIONED` (empty when absent).
    pub status: String,
    /// `lastUpdated`: moves on any change of the user (profile, status, credentials).
    pub last_updated: DateTime<Utc>,
    /// `profile`: every base and custom attribute Okta returned.
    pub profile: serde_json::Map<String, Value>,
}

/// One page of `GET /api/v1/users`.
#[derive(Debug)]
pub struct UsersPage {
    /// The users of the page.
    pub users: Vec<User>,
    /// The `rel="next"` URL; `None` on the last page.
    pub next: Option<Url>,
    /// The rate-limit headers of the answer.
    pub rate: RateLimit,
}

/// Why a Users API call failed: kinds a caller matches on; never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// HTTP 429. The client holds every request until `reset_at`; retrying sooner only waits.
    #[error("rate limited by Okta's Users API until {reset_at:?}")]
    RateLimited {
        /// `X-Rate-Limit-Reset` as a time.
        reset_at: Option<DateTime<Utc>>,
        /// `X-Rate-Limit-Reset − Date + 1 s` by the server's clock, when both were sent.
        retry_after: Option<Duration>,
        /// `X-Okta-Request-Id` of the 429.
        request_id: Option<String>,
    },
    /// HTTP 404 `E0000007`: no such user (deleted, or never existed).
    #[error("Okta has no user {0:?}")]
    NotFound(String),
    /// HTTP 401, or the token endpoint refused the client.
    #[error("Okta refused the credentials: {reason}")]
    Unauthorized {
        /// Okta's reason; no secret.
        reason: String,
    },
    /// HTTP 403: the credentials lack `okta.users.read` or an admin role covering users.
    #[error("Okta forbids reading users with these credentials (scope okta.users.read): {reason}")]
    Forbidden {
        /// Okta's reason.
        reason: String,
    },
    /// Another 4xx, e.g. `400 E0000031` for a search Okta does not accept.
    #[error("Okta rejected the request (HTTP {status}): {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Okta's `errorCode: errorSummary`.
        reason: String,
    },
    /// HTTP 5xx.
    #[error("Okta's Users API failed with HTTP {0}")]
    Server(u16),
    /// No answer within the request timeout.
    #[error("request to Okta's Users API timed out")]
    Timeout,
    /// Connection-level failure.
    #[error("cannot reach Okta: {0}")]
    Transport(String),
    /// A 2xx answer that is not a user or a page of users, or a bad argument.
    #[error("unexpected answer from Okta's Users API: {0}")]
    BadResponse(String),
}

impl From<AuthError> for UsersError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Rejected { .. } => Self::Unauthorized {
                reason: error.to_string(),
            },
            AuthError::Server(status) => Self::Server(status),
            AuthError::Timeout => Self::Timeout,
            AuthError::Transport(reason) => Self::Transport(format!("token endpoint: {reason}")),
            AuthError::BadResponse(reason) => {
                Self::BadResponse(format!("token endpoint: {reason}"))
            }
        }
    }
}

fn transport(error: reqwest::Error) -> UsersError {
    if error.is_timeout() {
        UsersError::Timeout
    } else {
        UsersError::Transport(error.without_url().to_string())
    }
}

/// When the next request may start, and what a retry after a 429 must say.
#[derive(Debug)]
struct Pacer {
    /// The earliest start of the next request.
    next_slot: Instant,
    /// The spacing the last answer's rate-limit headers call for.
    spacing: Duration,
    /// Set after a 429: sent with the next request.
    retry: Option<RetryOf>,
}

/// The Users API client for one org. See the module docs.
#[derive(Debug)]
pub struct UsersClient {
    http: reqwest::Client,
    org: Url,
    auth: Authorizer,
    timeout: Duration,
    share: f64,
    pacer: Mutex<Pacer>,
}

impl UsersClient {
    /// A client for `org_url` (checked like `OKTA_ORG_URL`) with `credentials`; each request
    /// times out after `timeout`; it uses at most `rate_limit_share` (in (0, 1]) of the
    /// Users API's rate limit.
    pub fn new(
        org_url: &str,
        credentials: &Credentials,
        timeout: Duration,
        rate_limit_share: f64,
    ) -> Result<Self, ConfigError> {
        if !(rate_limit_share > 0.0 && rate_limit_share <= 1.0) {
            return Err(ConfigError::Invalid {
                setting: "OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE",
                problem: format!("{rate_limit_share} is not in (0, 1]"),
            });
        }
        if timeout.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "request_timeout",
                problem: "must be positive".to_owned(),
            });
        }
        let org = parse_org_url(org_url)?;
        let auth = Authorizer::with_scope(credentials, &org, SCOPE)?;
        Ok(Self {
            http: http_client(timeout)?,
            org,
            auth,
            timeout,
            share: rate_limit_share,
            pacer: Mutex::new(Pacer {
                next_slot: Instant::now(),
                spacing: Duration::ZERO,
                retry: None,
            }),
        })
    }

    /// `GET /api/v1/users/{id}` (an id, or a login).
    pub async fn user(&self, id: &str) -> Result<User, UsersError> {
        if id.is_empty() || id.len() > 256 {
            return Err(UsersError::BadResponse(format!(
                "refusing to ask for user {:?}: not an id",
                id.chars().take(64).collect::<String>()
            )));
        }
        let mut url = self.org.clone();
        url.set_path(USERS_PATH);
        url.path_segments_mut()
            .map_err(|()| UsersError::BadResponse("org URL cannot have a path".to_owned()))?
            .push(id);
        let (_, body) = match self.get(&url).await {
            Err(UsersError::Rejected { status: 404, .. }) => {
                return Err(UsersError::NotFound(id.to_owned()));
            }
            other => other?,
        };
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| UsersError::BadResponse(format!("user is not JSON: {e}")))?;
        parse_user(&value)
    }

    /// The first URL of a sweep: every user (`updated_after` `None`), or those whose
    /// `lastUpdated` is after `updated_after` (`search=lastUpdated gt "<time>"`), 200 a page.
    pub fn list_url(&self, updated_after: Option<DateTime<Utc>>) -> Url {
        let mut url = self.org.clone();
        url.set_path(USERS_PATH);
        let mut query = format!("limit={MAX_LIMIT}");
        if let Some(after) = updated_after {
            let search = format!(
                "lastUpdated gt \"{}\"",
                after.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
            query.push_str("&search=");
            query.push_str(&percent_encode(&search));
        }
        url.set_query(Some(&query));
        url
    }

    /// One page of users at `url` (a [`UsersClient::list_url`] or a `next` URL).
    pub async fn list_page(&self, url: &Url) -> Result<UsersPage, UsersError> {
        if !self.accepts(url) {
            return Err(UsersError::BadResponse(
                "refusing a users URL outside the org".to_owned(),
            ));
        }
        let (headers, body) = self.get(url).await?;
        let values: Vec<Value> = serde_json::from_slice(&body)
            .map_err(|e| UsersError::BadResponse(format!("body is not a JSON array: {e}")))?;
        let users = values
            .iter()
            .map(parse_user)
            .collect::<Result<Vec<_>, _>>()?;
        let next = next_link(&headers, url).map_err(|e| UsersError::BadResponse(e.to_string()))?;
        if next.as_ref().is_some_and(|next| !self.accepts(next)) {
            return Err(UsersError::BadResponse(
                "rel=\"next\" points outside the org's Users API".to_owned(),
            ));
        }
        Ok(UsersPage {
            users,
            next,
            rate: RateLimit::from_headers(&headers),
        })
    }

    /// True for a URL of the users collection on the org's own origin.
    fn accepts(&self, url: &Url) -> bool {
        same_origin(&self.org, url) && url.path() == USERS_PATH
    }

    /// Takes the next request slot: waits for it, returns when it started and the retry
    /// marker to send.
    async fn slot(&self) -> (Instant, Option<RetryOf>) {
        let (start, retry) = {
            let mut pacer = self.pacer.lock().unwrap_or_else(|e| e.into_inner());
            let start = pacer.next_slot.max(Instant::now());
            pacer.next_slot = start + pacer.spacing;
            (start, pacer.retry.take())
        };
        wait_until(start).await;
        (start, retry)
    }

    /// Learns the spacing from the answer to the request sent at `started`: the next request
    /// starts no sooner than `started + spacing`; after a 429, no sooner than the reset.
    fn observe(
        &self,
        started: Instant,
        status: StatusCode,
        rate: &RateLimit,
        headers: &HeaderMap,
        retry: Option<&RetryOf>,
    ) {
        let server_date = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc));
        let mut pacer = self.pacer.lock().unwrap_or_else(|e| e.into_inner());
        pacer.spacing = pacing_delay(rate, self.share, server_date);
        pacer.next_slot = pacer.next_slot.max(started + pacer.spacing);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = rate_limit_wait(rate.reset, server_date).unwrap_or(RATE_LIMIT_FALLBACK_WAIT);
            pacer.next_slot = pacer.next_slot.max(Instant::now() + wait);
            if let Some(request_id) = headers
                .get("x-okta-request-id")
                .and_then(|v| v.to_str().ok())
            {
                let count = retry.map_or(1, |r| r.count.saturating_add(1));
                pacer.retry = Some(RetryOf {
                    request_id: request_id.to_owned(),
                    count,
                });
            }
        }
    }

    /// A paced, authorised GET; a refused fresh OAuth token is renewed and tried once more.
    async fn get(&self, url: &Url) -> Result<(HeaderMap, bytes::Bytes), UsersError> {
        match self.send(url).await {
            Err(UsersError::Unauthorized { .. }) if self.auth.is_service_app() => {
                self.auth.invalidate().await;
                self.send(url).await
            }
            other => other,
        }
    }

    async fn send(&self, url: &Url) -> Result<(HeaderMap, bytes::Bytes), UsersError> {
        let auth_headers = self
            .auth
            .headers(&self.http, "GET", url, self.timeout)
            .await?;
        let (started, retry) = self.slot().await;
        let mut request = self
            .http
            .get(url.clone())
            .timeout(self.timeout)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in auth_headers {
            request = request.header(name, value);
        }
        if let Some(retry) = &retry {
            request = request
                .header("X-Okta-Retry-For", retry.request_id.as_str())
                .header("X-Okta-Retry-Count", retry.count.to_string());
        }
        let response = request.send().await.map_err(transport)?;
        self.auth.observe(response.headers());
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        let rate = RateLimit::from_headers(&headers);
        self.observe(started, status, &rate, &headers, retry.as_ref());
        match status {
            s if s.is_success() => Ok((headers, body)),
            StatusCode::TOO_MANY_REQUESTS => {
                let server_date = headers
                    .get(http::header::DATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
                    .map(|d| d.with_timezone(&Utc));
                Err(UsersError::RateLimited {
                    reset_at: rate.reset.and_then(|s| DateTime::from_timestamp(s, 0)),
                    retry_after: rate_limit_wait(rate.reset, server_date),
                    request_id: headers
                        .get("x-okta-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                })
            }
            StatusCode::UNAUTHORIZED => Err(UsersError::Unauthorized {
                reason: reason(&headers, &body),
            }),
            StatusCode::FORBIDDEN => Err(UsersError::Forbidden {
                reason: reason(&headers, &body),
            }),
            s if s.is_server_error() => Err(UsersError::Server(s.as_u16())),
            s => Err(UsersError::Rejected {
                status: s.as_u16(),
                reason: reason(&headers, &body),
            }),
        }
    }
}

/// A user object of the Users API; names the missing or malformed field.
fn parse_user(value: &Value) -> Result<User, UsersError> {
    let bad = |problem: &str| UsersError::BadResponse(format!("user {problem}"));
    let id = value["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad("has no id"))?;
    let last_updated = value["lastUpdated"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| {
            bad(&format!(
                "{id}: lastUpdated is missing or not an RFC 3339 time"
            ))
        })?
        .with_timezone(&Utc);
    let profile = value["profile"]
        .as_object()
        .ok_or_else(|| bad(&format!("{id}: profile is not an object")))?
        .clone();
    Ok(User {
        id: id.to_owned(),
        status: value["status"].as_str().unwrap_or_default().to_owned(),
        last_updated,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client() -> UsersClient {
        UsersClient::new(
            "https://example.okta.com",
            &Credentials::ApiToken(crate::secret::Secret::new("t")),
            Duration::from_secs(5),
            0.3,
        )
        .unwrap()
    }

    #[test]
    fn the_incremental_sweep_searches_by_last_updated_with_okta_s_encoding() {
        let after = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            client().list_url(Some(after)).as_str(),
            "https://example.okta.com/api/v1/users?limit=200&search=lastUpdated%20gt%20%222026-01-01T00%3A00%3A00.000Z%22"
        );
        assert_eq!(
            client().list_url(None).as_str(),
            "https://example.okta.com/api/v1/users?limit=200"
        );
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused_naming_the_setting() {
        let err = UsersClient::new(
            "https://example.okta.com",
            &Credentials::ApiToken(crate::secret::Secret::new("t")),
            Duration::from_secs(5),
            0.0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE"),
            "{err}"
        );
    }

    #[test]
    fn users_parse_and_a_user_without_last_updated_is_named() {
        let user = parse_user(&json!({
            "id": "00u1", "status": "ACTIVE", "lastUpdated": "2026-11-28T10:00:00.000Z",
            "profile": {"login": "jane@example.com", "title": null}, "credentials": {"provider": {"type": "OKTA"}}
        }))
        .unwrap();
        assert_eq!(user.id, "00u1");
        assert_eq!(user.profile["title"], Value::Null);
        let err = parse_user(&json!({"id": "00u2", "profile": {}})).unwrap_err();
        assert!(err.to_string().contains("00u2: lastUpdated"), "{err}");
        assert!(
            parse_user(&json!({"lastUpdated": "2026-11-28T10:00:00Z", "profile": {}})).is_err()
        );
    }
}
