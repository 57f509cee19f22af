//! One page of `GET /api/v1/logs`: the request, the answer, and error kinds to match on.
//!
//! The first request is built from config (SPEC.md B.2: `since`, `sortOrder=ASCENDING`,
//! `limit`, `filter` on the event types, and never `until`, which would make the query bounded
//! and ordered by `published`). Every later request is the opaque `Link: rel="next"` URL of the
//! previous page, parsed per RFC 8288 from one or several `link` headers and accepted only on
//! the org's own origin, so credentials never go anywhere else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::HeaderMap;
use reqwest::{StatusCode, Url};

use super::auth::{AuthError, Authorizer};
use super::org::{ConfigError, http_client, parse_org_url, same_origin};
use super::settings::PollerConfig;
use super::split::split_array;
use super::stats::PollerStats;

/// The System Log endpoint path.
pub const LOGS_PATH: &str = "/api/v1/logs";

/// The largest page Okta serves.
pub const MAX_LIMIT: u32 = 1000;

/// The rate-limit headers of one response (SPEC.md B.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `X-Rate-Limit-Limit`: the ceiling for this kind of request in the current window.
    pub limit: Option<u64>,
    /// `X-Rate-Limit-Remaining`: requests left in the window.
    pub remaining: Option<u64>,
    /// `X-Rate-Limit-Reset`: when the window resets, UTC epoch seconds.
    pub reset: Option<i64>,
}

impl RateLimit {
    /// Reads the three headers; a missing or malformed one is `None`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        Self {
            limit: number("x-rate-limit-limit").and_then(|v| u64::try_from(v).ok()),
            remaining: number("x-rate-limit-remaining").and_then(|v| u64::try_from(v).ok()),
            reset: number("x-rate-limit-reset"),
        }
    }
}

/// One page of the System Log.
#[derive(Debug)]
pub struct Page {
    /// The page's LogEvents, each the raw JSON Okta sent (input to `mapping::map_event`): a
    /// slice of the response body, so a 1000-event page is not copied event by event.
    pub events: Vec<Bytes>,
    /// The `rel="next"` URL; Okta always sends one on polling queries.
    pub next: Option<Url>,
    /// The rate-limit headers.
    pub rate: RateLimit,
    /// The server's `Date`, the clock `X-Rate-Limit-Reset` is relative to.
    pub server_date: Option<DateTime<Utc>>,
    /// `X-Okta-Request-Id`.
    pub request_id: Option<String>,
}

/// Identifies a retry after a 429: sent as `X-Okta-Retry-For` and `X-Okta-Retry-Count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOf {
    /// `X-Okta-Request-Id` of the request that got the 429.
    pub request_id: String,
    /// 1 for the first retry, 2 for the second, ...
    pub count: u32,
}

/// Why a page could not be fetched. Kinds the poller matches on; never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// HTTP 429. Wait `retry_after` (computed from `X-Rate-Limit-Reset` and the server's
    /// `Date`), then retry with `X-Okta-Retry-For: request_id`.
    #[error("rate limited by Okta (request id {request_id:?}), reset at {reset_at:?}")]
    RateLimited {
        /// `X-Rate-Limit-Reset` as a time.
        reset_at: Option<DateTime<Utc>>,
        /// `X-Rate-Limit-Reset − Date + 1 s`, when both headers were present.
        retry_after: Option<Duration>,
        /// `X-Okta-Request-Id` of the 429.
        request_id: Option<String>,
        /// The rate-limit headers of the 429.
        rate: RateLimit,
    },
    /// HTTP 401 from the API, or the token endpoint refused the client.
    #[error("Okta refused the credentials: {reason}")]
    Unauthorized {
        /// Okta's reason (error code and summary, or OAuth error); no secret.
        reason: String,
    },
    /// HTTP 403: the credentials lack a scope or admin role for the System Log.
    #[error("Okta forbids reading the System Log with these credentials: {reason}")]
    Forbidden {
        /// Okta's reason.
        reason: String,
    },
    /// Another 4xx, e.g. `400 E0000053` for an invalid filter or a `since` too far back.
    #[error("Okta rejected the request (HTTP {status}): {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Okta's `errorCode: errorSummary`.
        reason: String,
    },
    /// HTTP 5xx (a query timeout is `500 E0000009`).
    #[error("Okta failed with HTTP {0}")]
    Server(u16),
    /// No answer within the request timeout.
    #[error("request to Okta timed out")]
    Timeout,
    /// Connection-level failure.
    #[error("cannot reach Okta: {0}")]
    Transport(String),
    /// A 2xx answer that is not a page: bad JSON, a `next` link on another origin, ...
    #[error("unexpected answer from Okta: {0}")]
    BadResponse(String),
}

impl From<AuthError> for ClientError {
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

fn transport(error: reqwest::Error) -> ClientError {
    if error.is_timeout() {
        ClientError::Timeout
    } else {
        ClientError::Transport(error.without_url().to_string())
    }
}

/// The System Log client for one org: builds the first request, fetches pages.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    org: Url,
    auth: Authorizer,
    filter: String,
    limit: u32,
    timeout: Duration,
}

impl Client {
    /// A client for `config.org_url` with `config.credentials`; token and rate counters go to
    /// `stats`.
    pub fn new(config: &PollerConfig, stats: Arc<PollerStats>) -> Result<Self, ConfigError> {
        let org = parse_org_url(&config.org_url)?;
        if config.limit == 0 || config.limit > MAX_LIMIT {
            return Err(ConfigError::Invalid {
                setting: "limit",
                problem: format!("must be 1..={MAX_LIMIT}"),
            });
        }
        if config.request_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "request_timeout",
                problem: "must be positive".to_owned(),
            });
        }
        let filter = event_type_filter(&config.event_types)?;
        let auth = Authorizer::new(&config.credentials, &org, stats)?;
        let http = http_client(config.request_timeout)?;
        Ok(Self {
            http,
            org,
            auth,
            filter,
            limit: config.limit,
            timeout: config.request_timeout,
        })
    }

    /// The org URL this client talks to.
    pub fn org(&self) -> &Url {
        &self.org
    }

    /// The first polling request: `since`, `sortOrder=ASCENDING`, `limit`, `filter`; no
    /// `until`. Query values are percent-encoded (`%20`, `%22`), as in Okta's examples.
    pub fn first_url(&self, since: DateTime<Utc>) -> Url {
        let mut url = self.org.clone();
        url.set_path(LOGS_PATH);
        let query = format!(
            "since={}&sortOrder=ASCENDING&limit={}&filter={}",
            percent_encode(&since.to_rfc3339_opts(SecondsFormat::Millis, true)),
            self.limit,
            percent_encode(&self.filter),
        );
        url.set_query(Some(&query));
        url
    }

    /// True when `url` may be requested with this client's credentials: a System Log URL on the
    /// org's own origin.
    pub fn accepts(&self, url: &Url) -> bool {
        same_origin(&self.org, url) && url.path() == LOGS_PATH
    }

    /// True when `url` carries the configured event-type filter. A stored `next` URL from a run
    /// with other event types fails this, and the poller starts afresh rather than silently
    /// keep polling the old types.
    pub fn has_configured_filter(&self, url: &Url) -> bool {
        url.query_pairs()
            .any(|(name, value)| name == "filter" && value == self.filter.as_str())
    }

    /// The configured page size.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Fetches one page at `url` (the first URL or a stored `next` URL). `retry` marks a retry
    /// after a 429. An OAuth access token the API refuses is renewed and the request retried
    /// once.
    pub async fn page(&self, url: &Url, retry: Option<&RetryOf>) -> Result<Page, ClientError> {
        if !self.accepts(url) {
            return Err(ClientError::BadResponse(
                "refusing a System Log URL outside the org".to_owned(),
            ));
        }
        let headers = self
            .auth
            .headers(&self.http, "GET", url, self.timeout)
            .await?;
        match self.send(url, retry, headers).await {
            // The API refused an access token the token endpoint just accepted (revoked or
            // expired early): mint a new one and try once more.
            Err(ClientError::Unauthorized { .. }) if self.auth.is_service_app() => {
                self.auth.invalidate().await;
                let headers = self
                    .auth
                    .headers(&self.http, "GET", url, self.timeout)
                    .await?;
                self.send(url, retry, headers).await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        url: &Url,
        retry: Option<&RetryOf>,
        auth_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> Result<Page, ClientError> {
        let mut request = self
            .http
            .get(url.clone())
            .timeout(self.timeout)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in auth_headers {
            request = request.header(name, value);
        }
        if let Some(retry) = retry {
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
        let server_date = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc));
        let request_id = headers
            .get("x-okta-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status {
            StatusCode::OK | StatusCode::NO_CONTENT => {
                let events = if body.is_empty() {
                    Vec::new()
                } else {
                    split_array(&body).map_err(|e| {
                        ClientError::BadResponse(format!("body is not a JSON array: {e}"))
                    })?
                };
                let next = next_link(&headers, url)?;
                if next.as_ref().is_some_and(|next| !self.accepts(next)) {
                    return Err(ClientError::BadResponse(
                        "rel=\"next\" points outside the org's System Log".to_owned(),
                    ));
                }
                Ok(Page {
                    events,
                    next,
                    rate,
                    server_date,
                    request_id,
                })
            }
            StatusCode::TOO_MANY_REQUESTS => Err(ClientError::RateLimited {
                reset_at: rate.reset.and_then(|s| DateTime::from_timestamp(s, 0)),
                retry_after: rate_limit_wait(rate.reset, server_date),
                request_id,
                rate,
            }),
            StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized {
                reason: reason(&headers, &body),
            }),
            StatusCode::FORBIDDEN => Err(ClientError::Forbidden {
                reason: reason(&headers, &body),
            }),
            s if s.is_server_error() => Err(ClientError::Server(s.as_u16())),
            s => Err(ClientError::Rejected {
                status: s.as_u16(),
                reason: reason(&headers, &body),
            }),
        }
    }
}

/// `Reset − Date + 1 s` (the Okta SDKs' formula): how long to wait after a 429, by the server's
/// clock. `None` when either header is missing.
pub fn rate_limit_wait(reset: Option<i64>, server_date: Option<DateTime<Utc>>) -> Option<Duration> {
    let seconds = reset?
        .saturating_sub(server_date?.timestamp())
        .saturating_add(1);
    Some(Duration::from_secs(
        u64::try_from(seconds.max(1)).unwrap_or(1),
    ))
}

/// The reason of a 4xx, from Okta's error body (`errorCode: errorSummary`) or the
/// `WWW-Authenticate` header's `error`/`error_description`. Bounded in length.
pub(crate) fn reason(headers: &HeaderMap, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct OktaError {
        #[serde(rename = "errorCode", default)]
        code: String,
        #[serde(rename = "errorSummary", default)]
        summary: String,
    }
    let mut parts = Vec::new();
    if let Ok(error) = serde_json::from_slice::<OktaError>(body) {
        if !(error.code.is_empty() && error.summary.is_empty()) {
            parts.push(format!("{}: {}", error.code, error.summary));
        }
    }
    if let Some(challenge) = headers
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
    {
        parts.push(format!("WWW-Authenticate: {challenge}"));
    }
    if parts.is_empty() {
        parts.push("no error details".to_owned());
    }
    let mut text = parts.join("; ");
    if text.len() > 500 {
        let mut end = 500;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `eventType eq "a" or eventType eq "b"`. Types must be non-empty names of letters, digits,
/// `.`, `_` and `-`, so nothing needs escaping inside the quotes.
pub fn event_type_filter(types: &[String]) -> Result<String, ConfigError> {
    if types.is_empty() {
        return Err(ConfigError::Invalid {
            setting: "OKTA_POLL_EVENT_TYPES",
            problem: "at least one event type is needed".to_owned(),
        });
    }
    let mut clauses = Vec::with_capacity(types.len());
    for event_type in types {
        let valid = !event_type.is_empty()
            && event_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(ConfigError::Invalid {
                setting: "OKTA_POLL_EVENT_TYPES",
                problem: format!("{event_type:?} is not an event type name"),
            });
        }
        clauses.push(format!("eventType eq \"{event_type}\""));
    }
    Ok(clauses.join(" or "))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `rel="next"` target among all `link` headers, resolved against the request URL.
pub(crate) fn next_link(headers: &HeaderMap, base: &Url) -> Result<Option<Url>, ClientError> {
    let mut next = None;
    for value in headers.get_all(http::header::LINK) {
        let value = value
            .to_str()
            .map_err(|_| ClientError::BadResponse("link header is not ASCII".to_owned()))?;
        for link in parse_link_header(value)
            .map_err(|e| ClientError::BadResponse(format!("link header: {e}")))?
        {
            if link
                .rel
                .split_ascii_whitespace()
                .any(|rel| rel.eq_ignore_ascii_case("next"))
            {
                let url = base
                    .join(&link.target)
                    .map_err(|e| ClientError::BadResponse(format!("next link: {e}")))?;
                next = Some(url);
            }
        }
    }
    Ok(next)
}

/// One link of a `Link` header (RFC 8288): its target and `rel` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URI-reference between `<` and `>`.
    pub target: String,
    /// The `rel` parameter (space-separated relation types), empty when absent.
    pub rel: String,
}

/// Parses one `Link` header field value: `<uri>; param=value; param="quoted", <uri2>; ...`.
/// Commas inside `<…>` and inside quoted strings do not split links.
pub fn parse_link_header(value: &str) -> Result<Vec<Link>, String> {
    let mut links = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma.trim_start();
            continue;
        }
        let Some(after_open) = rest.strip_prefix('<') else {
            return Err("expected '<'".to_owned());
        };
        let close = after_open.find('>').ok_or("unterminated '<'")?;
        let target = after_open[..close].trim().to_owned();
        rest = after_open[close + 1..].trim_start();
        let mut rel = String::new();
        // Parameters until the next top-level comma.
        while let Some(after_semi) = rest.strip_prefix(';') {
            rest = after_semi.trim_start();
            let name_end = rest
                .find(|c: char| c == '=' || c == ';' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            let name = rest[..name_end].to_ascii_lowercase();
            rest = rest[name_end..].trim_start();
            let mut param_value = String::new();
            if let Some(after_eq) = rest.strip_prefix('=') {
                rest = after_eq.trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    param_value.push(escaped);
                                }
                            }
                            '"' => {
                                end = Some(i);
                                break;
                            }
                            c => param_value.push(c),
                        }
                    }
                    let end = end.ok_or("unterminated quoted string")?;
                    rest = quoted[end + 1..].trim_start();
                } else {
                    let end = rest
                        .find(|c: char| c == ';' || c == ',' || c.is_whitespace())
                        .unwrap_or(rest.len());
                    param_value = rest[..end].to_owned();
                    rest = rest[end..].trim_start();
                }
            }
            // RFC 8288 3.3: only the first rel parameter counts.
            if name == "rel" && rel.is_empty() {
                rel = param_value;
            }
        }
        links.push(Link { target, rel });
        rest = rest.trim_start();
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err("expected ',' between links".to_owned());
        }
    }
    Ok(links)
}

/// Waits until `deadline`, or not at all once it has passed.
///
/// Why not `sleep_until` alone: tokio's timer rounds a deadline up to its next millisecond
/// tick, so waiting until "now" still took 1-2 ms. The poller waited so before every request
/// of a catch-up, about 1.7 ms of each page's 9.7 ms turn (BENCHMARKS.md, issue 15).
pub async fn wait_until(deadline: tokio::time::Instant) {
    if deadline > tokio::time::Instant::now() {
        tokio::time::sleep_until(deadline).await;
    }
}

/// The spacing between request starts that keeps the poller within `share` of the rate limit:
/// the requests it may still send in this window (`limit · share − used`) spread evenly until
/// the reset (by the server's clock); the whole rest of the window once the share is used up.
/// Zero when Okta sent no rate-limit headers.
pub fn pacing_delay(rate: &RateLimit, share: f64, server_date: Option<DateTime<Utc>>) -> Duration {
    let (Some(limit), Some(remaining), Some(reset), Some(date)) =
        (rate.limit, rate.remaining, rate.reset, server_date)
    else {
        return Duration::ZERO;
    };
    let until_reset = Duration::from_secs(
        u64::try_from(reset.saturating_sub(date.timestamp()).max(0)).unwrap_or(0) + 1,
    );
    let budget = ((limit as f64) * share).floor().max(1.0) as u64;
    let used = limit.saturating_sub(remaining);
    if used >= budget {
        return until_reset;
    }
    let left = u32::try_from(budget - used).unwrap_or(u32::MAX);
    until_reset / left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_that_has_passed_is_not_waited_for() {
        use futures::FutureExt as _;
        let now = tokio::time::Instant::now();
        assert_eq!(wait_until(now).now_or_never(), Some(()));
        assert_eq!(
            wait_until(now - Duration::from_millis(5)).now_or_never(),
            Some(())
        );
        assert_eq!(
            wait_until(now + Duration::from_secs(60)).now_or_never(),
            None,
            "a deadline still ahead is waited for"
        );
    }

    #[test]
    fn filter_joins_event_types_with_or() {
        let types = vec![
            "user.account.update_profile".to_owned(),
            "user.session.start".to_owned(),
        ];
        assert_eq!(
            event_type_filter(&types).unwrap(),
            r#"eventType eq "user.account.update_profile" or eventType eq "user.session.start""#
        );
        assert!(event_type_filter(&[]).is_err());
        assert!(event_type_filter(&["a\" or 1 eq \"1".to_owned()]).is_err());
    }

    #[test]
    fn percent_encoding_matches_okta_examples() {
        assert_eq!(
            percent_encode(r#"eventType eq "user.account.update_profile""#),
            "eventType%20eq%20%22user.account.update_profile%22"
        );
        assert_eq!(
            percent_encode("2017-05-03T16:22:18.000Z"),
            "2017-05-03T16%3A22%3A18.000Z"
        );
    }

    #[test]
    fn link_header_with_two_links_in_one_line() {
        let links = parse_link_header(
            r#"<https://o.okta.com/api/v1/logs?limit=2&a=b,c>; rel="self", <https://o.okta.com/api/v1/logs?after=1_2>; rel="next""#,
        )
        .unwrap();
        assert_eq!(
            links,
            vec![
                Link {
                    target: "https://o.okta.com/api/v1/logs?limit=2&a=b,c".to_owned(),
                    rel: "self".to_owned()
                },
                Link {
                    target: "https://o.okta.com/api/v1/logs?after=1_2".to_owned(),
                    rel: "next".to_owned()
                },
            ]
        );
    }

    #[test]
    fn link_header_params_unquoted_multiple_and_with_commas_in_quotes() {
        let links =
            parse_link_header(r#"<a>;title="x, y";REL=next, <b> ; rel="prev  next" ;x"#).unwrap();
        assert_eq!(links[0].rel, "next");
        assert_eq!(links[1].target, "b");
        assert_eq!(links[1].rel, "prev  next");
        assert!(parse_link_header("https://no-brackets; rel=next").is_err());
        assert!(parse_link_header(r#"<a>; rel="open"#).is_err());
    }

    #[test]
    fn next_link_is_found_across_header_lines_and_resolved() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::LINK,
            "<https://o.okta.com/api/v1/logs?since=x>; rel=\"self\""
                .parse()
                .unwrap(),
        );
        headers.append(
            http::header::LINK,
            "</api/v1/logs?after=1627500044869_1>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        let base = Url::parse("https://o.okta.com/api/v1/logs?since=x").unwrap();
        let next = next_link(&headers, &base).unwrap().unwrap();
        assert_eq!(
            next.as_str(),
            "https://o.okta.com/api/v1/logs?after=1627500044869_1"
        );
        assert_eq!(next_link(&HeaderMap::new(), &base).unwrap(), None);
    }

    #[test]
    fn rate_limit_wait_uses_the_server_clock() {
        let date = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(
            rate_limit_wait(Some(1_000_030), Some(date)),
            Some(Duration::from_secs(31))
        );
        // Reset already passed by the server's clock: wait a second, not zero.
        assert_eq!(
            rate_limit_wait(Some(999_000), Some(date)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(rate_limit_wait(None, Some(date)), None);
        assert_eq!(rate_limit_wait(Some(1), None), None);
    }
}
