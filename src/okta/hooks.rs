//! Okta's Event Hook management API (SPEC.md A.4): create an Event Hook that delivers to
//! okta-stream, and ask Okta to verify it.
//!
//! This is the step users otherwise click through in the Admin Console. It authenticates
//! exactly as the poller does ([`Credentials`]: SSWS token, or a service app with
//! `private_key_jwt` and DPoP), asking service apps for the `okta.eventHooks.manage` scope.
//! The hook secret sent in `authScheme.value` is never printed: it is removed from every
//! answer this module returns.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use super::auth::{AuthError, Authorizer, Credentials};
use super::org::{ConfigError, http_client, parse_org_url};
use crate::secret::Secret;

/// The OAuth scope a service app needs to create and verify Event Hooks.
pub const SCOPE: &str = "okta.eventHooks.manage";

/// The collection path of Event Hooks.
pub const EVENT_HOOKS_PATH: &str = "/api/v1/eventHooks";

/// What to register: where Okta delivers, how it authenticates, which events.
#[derive(Debug, Clone)]
pub struct HookRegistration {
    /// The hook's name in Okta.
    pub name: String,
    /// The public URL of okta-stream's `/okta/hook`.
    pub url: String,
    /// Event types Okta delivers (`events.items`).
    pub event_types: Vec<String>,
    /// The header Okta sends the secret in (`authScheme.key`).
    pub auth_header: String,
    /// The secret Okta sends (`authScheme.value`).
    pub secret: Secret,
}

/// Why a management call failed. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// No access token could be obtained.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// Okta could not be reached or timed out.
    #[error("Okta unreachable: {0}")]
    Transport(String),
    /// Okta refused the request.
    #[error("Okta refused the request (HTTP {status}): {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Okta's `errorSummary` and causes, or the body's start.
        reason: String,
    },
    /// Okta answered something that is not an Event Hook.
    #[error("Okta answered unexpectedly: {0}")]
    BadResponse(String),
    /// The request itself is wrong (bad URL or hook id).
    #[error("{0}")]
    Invalid(String),
}

/// A client of `/api/v1/eventHooks` for one org.
#[derive(Debug)]
pub struct EventHooksClient {
    http: reqwest::Client,
    org: Url,
    auth: Authorizer,
    timeout: Duration,
}

impl EventHooksClient {
    /// A client for `org_url` (checked like `OKTA_ORG_URL`) with `credentials`.
    pub fn new(
        org_url: &str,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let org = parse_org_url(org_url)?;
        let auth = Authorizer::with_scope(credentials, &org, SCOPE)?;
        let http = http_client(timeout)?;
        Ok(Self {
            http,
            org,
            auth,
            timeout,
        })
    }

    /// Creates the Event Hook (`POST /api/v1/eventHooks`); returns Okta's answer without
    /// the secret. Okta verifies nothing yet: call [`EventHooksClient::verify`] next.
    pub async fn register(&self, registration: &HookRegistration) -> Result<Value, HooksError> {
        let target = Url::parse(&registration.url)
            .map_err(|e| HooksError::Invalid(format!("--url is not a URL: {e}")))?;
        if target.scheme() != "https" && target.scheme() != "http" {
            return Err(HooksError::Invalid(
                "--url must be an https:// URL".to_owned(),
            ));
        }
        if registration.event_types.is_empty() {
            return Err(HooksError::Invalid(
                "at least one --event-type is needed".to_owned(),
            ));
        }
        let body = json!({
            "name": registration.name,
            "events": {"type": "EVENT_TYPE", "items": registration.event_types},
            "channel": {
                "type": "HTTP",
                "version": "1.0.0",
                "config": {
                    "uri": registration.url,
                    "authScheme": {
                        "type": "HEADER",
                        "key": registration.auth_header,
                        "value": registration.secret.expose(),
                    },
                },
            },
        });
        let mut url = self.org.clone();
        url.set_path(EVENT_HOOKS_PATH);
        self.post(&url, Some(&body)).await
    }

    /// Asks Okta to verify the hook (`POST /api/v1/eventHooks/{id}/lifecycle/verify`): Okta
    /// sends the one-time verification request to the hook URL, which okta-stream answers.
    /// Returns Okta's answer (with `verificationStatus`) without the secret.
    pub async fn verify(&self, hook_id: &str) -> Result<Value, HooksError> {
        if hook_id.is_empty()
            || hook_id.len() > 64
            || !hook_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(HooksError::Invalid(format!(
                "{hook_id:?} is not an Event Hook id (letters and digits, e.g. who1a2b3c...)"
            )));
        }
        let mut url = self.org.clone();
        url.set_path(&format!("{EVENT_HOOKS_PATH}/{hook_id}/lifecycle/verify"));
        self.post(&url, None).await
    }

    async fn post(&self, url: &Url, body: Option<&Value>) -> Result<Value, HooksError> {
        match self.send(url, body).await {
            // A service app's fresh token was refused (revoked, expired early): mint once more.
            Err(HooksError::Rejected { status: 401, .. }) if self.auth.is_service_app() => {
                self.auth.invalidate().await;
                self.send(url, body).await
            }
            other => other,
        }
    }

    async fn send(&self, url: &Url, body: Option<&Value>) -> Result<Value, HooksError> {
        let headers = self
            .auth
            .headers(&self.http, "POST", url, self.timeout)
            .await?;
        let mut request = self
            .http
            .post(url.clone())
            .timeout(self.timeout)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| HooksError::Transport(e.without_url().to_string());
        let response = request.send().await.map_err(transport)?;
        self.auth.observe(response.headers());
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(HooksError::Rejected {
                status: status.as_u16(),
                reason: okta_reason(status, &bytes),
            });
        }
        let mut hook: Value = serde_json::from_slice(&bytes)
            .map_err(|e| HooksError::BadResponse(format!("body is not JSON: {e}")))?;
        if !hook.get("id").is_some_and(Value::is_string) {
            return Err(HooksError::BadResponse(
                "the answer has no Event Hook id".to_owned(),
            ));
        }
        redact(&mut hook);
        Ok(hook)
    }
}

/// Removes `channel.config.authScheme.value` (the hook secret) if Okta echoed it.
fn redact(hook: &mut Value) {
    if let Some(scheme) = hook
        .pointer_mut("/channel/config/authScheme")
        .and_then(Value::as_object_mut)
    {
        scheme.remove("value");
    }
}

/// Okta's `errorSummary` (+ causes), or the start of the body.
fn okta_reason(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let summary = parsed
        .as_ref()
        .and_then(|v| v.get("errorSummary"))
        .and_then(Value::as_str);
    match summary {
        Some(summary) => {
            let causes: Vec<&str> = parsed
                .as_ref()
                .and_then(|v| v.get("errorCauses"))
                .and_then(Value::as_array)
                .map(|causes| {
                    causes
                        .iter()
                        .filter_map(|c| c.get("errorSummary").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            if causes.is_empty() {
                summary.to_owned()
            } else {
                format!("{summary} ({})", causes.join("; "))
            }
        }
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            if text.trim().is_empty() {
                status.to_string()
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_secret_is_removed() {
        let mut hook = json!({"id": "who1", "channel": {"config": {"authScheme": {"type": "HEADER", "key": "Authorization", "value": "s3cret"}}}});
        redact(&mut hook);
        assert!(!hook.to_string().contains("s3cret"));
        assert_eq!(
            hook["channel"]["config"]["authScheme"]["key"],
            "Authorization"
        );
    }

    #[test]
    fn okta_errors_read_as_their_summary_and_causes() {
        let body = br#"{"errorCode":"E0000001","errorSummary":"Api validation failed: channel","errorCauses":[{"errorSummary":"channel.config.uri: must be https"}]}"#;
        assert_eq!(
            okta_reason(StatusCode::BAD_REQUEST, body),
            "Api validation failed: channel (channel.config.uri: must be https)"
        );
        assert_eq!(okta_reason(StatusCode::BAD_GATEWAY, b""), "502 Bad Gateway");
    }

    #[tokio::test]
    async fn a_hook_id_is_checked_before_anything_is_sent() {
        let client = EventHooksClient::new(
            "http://127.0.0.1:9",
            &Credentials::ApiToken(Secret::new("t")),
            Duration::from_secs(1),
        )
        .unwrap();
        let err = client.verify("../users").await.unwrap_err();
        assert!(matches!(err, HooksError::Invalid(_)), "{err}");
    }
}
