//! Credentials for the System Log API, turned into the headers of each request (SPEC.md B.4).
//!
//! Two ways in: an SSWS API token (`Authorization: SSWS <token>`), or an OAuth 2.0 service app
//! that signs a `private_key_jwt` client assertion and gets a `client_credentials` access token
//! scoped `okta.logs.read`. Service apps speak DPoP from the first token request on (new Okta
//! service apps require it, and a failed first request would show in the customer's audit log):
//! an ephemeral P-256 key signs a proof per request, the server nonce is cached and refreshed
//! from every `DPoP-Nonce` header, and a `use_dpop_nonce` answer is retried once with a fresh
//! assertion and proof. An app that answers `token_type: Bearer` is used with `Bearer`.
//!
//! Every secret (API token, private key, access token) lives in a redacting type whose
//! `Debug`/`Display` print `***`; header values carrying one are marked sensitive.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};

pub use crate::secret::Secret;
use p256::ecdsa::signature::Signer as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::SignatureEncoding as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::org::ConfigError;
use super::stats::PollerStats;

/// The OAuth scope the poller asks for: reading the System Log.
pub const SCOPE: &str = "okta.logs.read";

/// Lifetime of a client assertion (SPEC.md F: 5 minutes; Okta allows at most 1 hour).
const ASSERTION_LIFETIME_SECS: i64 = 300;

/// Share of `expires_in` after which a cached access token is renewed.
const RENEW_AT_SHARE: f64 = 0.9;

/// The `client_assertion_type` for `private_key_jwt` (RFC 7523).
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The service app's private key (RS256 or ES256), parsed from PEM or JWK. Prints as `***`.
#[derive(Clone)]
pub struct PrivateKey {
    key: KeyKind,
    /// `kid` found in a JWK, used when no key id is configured.
    jwk_kid: Option<String>,
}

#[derive(Clone)]
enum KeyKind {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(p256::SecretKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl PrivateKey {
    /// Parses the contents of `OKTA_PRIVATE_KEY_FILE`: a PEM (`PRIVATE KEY` (PKCS#8),
    /// `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1, P-256)) or a private JWK (`kty`
    /// `RSA`, or `EC` with `crv` `P-256`). Errors never contain key material.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            return Self::from_jwk(trimmed);
        }
        let bad = |what: &str| ConfigError::PrivateKey(format!("not a valid {what}"));
        let key = if trimmed.contains("-----BEGIN RSA PRIVATE KEY-----") {
            KeyKind::Rsa(Box::new(
                rsa::RsaPrivateKey::from_pkcs1_pem(trimmed).map_err(|_| bad("PKCS#1 RSA key"))?,
            ))
        } else if trimmed.contains("-----BEGIN EC PRIVATE KEY-----") {
            KeyKind::Ec(p256::SecretKey::from_sec1_pem(trimmed).map_err(|_| bad("SEC1 P-256 key"))?)
        } else if trimmed.contains("-----BEGIN PRIVATE KEY-----") {
            match rsa::RsaPrivateKey::from_pkcs8_pem(trimmed) {
                Ok(key) => KeyKind::Rsa(Box::new(key)),
                Err(_) => KeyKind::Ec(
                    p256::SecretKey::from_pkcs8_pem(trimmed)
                        .map_err(|_| bad("PKCS#8 RSA or P-256 key"))?,
                ),
            }
        } else {
            return Err(ConfigError::PrivateKey(
                "neither a PEM private key nor a JWK".to_owned(),
            ));
        };
        Self::checked(key, None)
    }

    fn from_jwk(text: &str) -> Result<Self, ConfigError> {
        let bad = |what: &str| ConfigError::PrivateKey(format!("JWK: {what}"));
        let jwk: Value = serde_json::from_str(text).map_err(|_| bad("not JSON"))?;
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        let kid = field("kid").map(str::to_owned);
        let key = match field("kty") {
            Some("RSA") => {
                let big = |name: &'static str| -> Result<rsa::BigUint, ConfigError> {
                    let raw = field(name).ok_or_else(|| bad(&format!("missing {name}")))?;
                    let bytes = URL_SAFE_NO_PAD
                        .decode(raw)
                        .map_err(|_| bad(&format!("{name} is not base64url")))?;
                    Ok(rsa::BigUint::from_bytes_be(&bytes))
                };
                let key = rsa::RsaPrivateKey::from_components(
                    big("n")?,
                    big("e")?,
                    big("d")?,
                    vec![big("p")?, big("q")?],
                )
                .map_err(|_| bad("inconsistent RSA components"))?;
                KeyKind::Rsa(Box::new(key))
            }
            Some("EC") => {
                if field("crv") != Some("P-256") {
                    return Err(bad("only EC keys on P-256 (ES256) are supported"));
                }
                let d = field("d")
                    .and_then(|d| URL_SAFE_NO_PAD.decode(d).ok())
                    .ok_or_else(|| bad("missing or bad d"))?;
                KeyKind::Ec(p256::SecretKey::from_slice(&d).map_err(|_| bad("bad EC key"))?)
            }
            _ => return Err(bad("kty must be RSA or EC")),
        };
        Self::checked(key, kid)
    }

    fn checked(key: KeyKind, jwk_kid: Option<String>) -> Result<Self, ConfigError> {
        if let KeyKind::Rsa(rsa) = &key {
            use rsa::traits::PublicKeyParts as _;
            if rsa.size() < 256 {
                return Err(ConfigError::PrivateKey(
                    "RSA keys must have at least 2048 bits".to_owned(),
                ));
            }
        }
        Ok(Self { key, jwk_kid })
    }

    /// The JWS algorithm this key signs with: `RS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            KeyKind::Rsa(_) => "RS256",
            KeyKind::Ec(_) => "ES256",
        }
    }

    /// The `kid` of a JWK key file, if it had one.
    pub fn jwk_key_id(&self) -> Option<&str> {
        self.jwk_kid.as_deref()
    }

    fn signer(&self) -> JwsKey {
        match &self.key {
            KeyKind::Rsa(key) => JwsKey::Rs256(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(
                (**key).clone(),
            ))),
            KeyKind::Ec(key) => JwsKey::Es256(p256::ecdsa::SigningKey::from(key)),
        }
    }
}

/// How the poller authenticates to Okta.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `OKTA_API_TOKEN`: sent as `Authorization: SSWS <token>`.
    ApiToken(Secret),
    /// An OAuth 2.0 API Services app: `OKTA_CLIENT_ID` + `OKTA_PRIVATE_KEY_FILE`
    /// (+ `OKTA_PRIVATE_KEY_ID`).
    ServiceApp {
        /// The app's client id (`iss` and `sub` of the client assertion).
        client_id: String,
        /// The key registered with the app.
        key: PrivateKey,
        /// The registered key's id, sent as `kid`; defaults to the JWK's own `kid`.
        key_id: Option<String>,
    },
}

/// Why no access token could be obtained. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint refused the request (bad client, key, scope or DPoP proof).
    #[error("token endpoint refused the request ({status}): {error}: {description}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// OAuth `error`, e.g. `invalid_client`.
        error: String,
        /// OAuth `error_description`.
        description: String,
    },
    /// The token endpoint failed (5xx).
    #[error("token endpoint failed with HTTP {0}")]
    Server(u16),
    /// The token request timed out.
    #[error("token request timed out")]
    Timeout,
    /// The token endpoint could not be reached.
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// The token endpoint's answer made no sense.
    #[error("token endpoint answered unexpectedly: {0}")]
    BadResponse(String),
}

/// A key that signs compact JWS.
enum JwsKey {
    Rs256(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    Es256(p256::ecdsa::SigningKey),
}

impl JwsKey {
    fn alg(&self) -> &'static str {
        match self {
            Self::Rs256(_) => "RS256",
            Self::Es256(_) => "ES256",
        }
    }

    /// Signs `header.claims` and returns the compact serialisation.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = match self {
            Self::Rs256(key) => key.sign(input.as_bytes()).to_vec(),
            Self::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
                signature.to_bytes().to_vec()
            }
        };
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(signature));
        input
    }
}

/// A fresh random `jti`: 128 bits, base64url.
fn new_jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `htu` for a DPoP proof: `scheme://host[:port]/path`, without query and fragment (RFC 9449).
pub fn dpop_htu(url: &reqwest::Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// `ath` for a DPoP proof: base64url(SHA-256(access token)) without padding.
pub fn dpop_ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// Builds the `Authorization` (and `DPoP`) headers of each API request.
#[derive(Debug)]
pub(crate) struct Authorizer {
    kind: AuthKind,
}

#[derive(Debug)]
enum AuthKind {
    Ssws(Secret),
    ServiceApp(Box<ServiceApp>),
}

struct ServiceApp {
    client_id: String,
    assertion_key: JwsKey,
    key_id: Option<String>,
    token_url: reqwest::Url,
    dpop_key: JwsKey,
    dpop_jwk: Value,
    /// The last `DPoP-Nonce` the server sent (token endpoint or API).
    nonce: Mutex<Option<String>>,
    /// The cached access token; a tokio mutex so concurrent callers mint one token.
    token: tokio::sync::Mutex<Option<CachedToken>>,
    /// Where minted and failed tokens are counted (the poller's metrics); `None` for one-off
    /// management calls, which count nothing.
    stats: Option<Arc<PollerStats>>,
    /// The OAuth scope asked for: [`SCOPE`] for the poller, others for management calls.
    scope: &'static str,
}

impl fmt::Debug for ServiceApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceApp")
            .field("client_id", &self.client_id)
            .field("key_id", &self.key_id)
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}

struct CachedToken {
    value: Secret,
    dpop: bool,
    renew_at: Instant,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token_type: String,
    access_token: String,
    expires_in: u64,
}

#[derive(serde::Deserialize, Default)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl Authorizer {
    /// Prepares the credentials for the org at `org`, counting tokens in the poller's `stats`.
    pub(crate) fn new(
        credentials: &Credentials,
        org: &reqwest::Url,
        stats: Arc<PollerStats>,
    ) -> Result<Self, ConfigError> {
        Self::build(credentials, org, Some(stats), SCOPE)
    }

    /// Like [`Authorizer::new`], but a service app asks for `scope` instead of [`SCOPE`]
    /// (e.g. `okta.eventHooks.manage` for `okta-stream hook register`). SSWS tokens ignore it.
    /// Tokens minted this way are not counted in any metric.
    pub(crate) fn with_scope(
        credentials: &Credentials,
        org: &reqwest::Url,
        scope: &'static str,
    ) -> Result<Self, ConfigError> {
        Self::build(credentials, org, None, scope)
    }

    fn build(
        credentials: &Credentials,
        org: &reqwest::Url,
        stats: Option<Arc<PollerStats>>,
        scope: &'static str,
    ) -> Result<Self, ConfigError> {
        let kind = match credentials {
            Credentials::ApiToken(token) => {
                if token.expose().trim().is_empty()
                    || HeaderValue::from_str(&format!("SSWS {}", token.expose())).is_err()
                {
                    return Err(ConfigError::Invalid {
                        setting: "OKTA_API_TOKEN",
                        problem: "empty or not a valid header value".to_owned(),
                    });
                }
                AuthKind::Ssws(token.clone())
            }
            Credentials::ServiceApp {
                client_id,
                key,
                key_id,
            } => {
                if client_id.trim().is_empty() {
                    return Err(ConfigError::Invalid {
                        setting: "OKTA_CLIENT_ID",
                        problem: "empty".to_owned(),
                    });
                }
                let token_url = org
                    .join("/oauth2/v1/token")
                    .map_err(|e| ConfigError::OrgUrl(format!("cannot build the token URL: {e}")))?;
                let dpop_secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
                let dpop_jwk: Value = serde_json::from_str(
                    &dpop_secret.public_key().to_jwk_string(),
                )
                .map_err(|e| ConfigError::PrivateKey(format!("cannot encode the DPoP key: {e}")))?;
                AuthKind::ServiceApp(Box::new(ServiceApp {
                    client_id: client_id.clone(),
                    assertion_key: key.signer(),
                    key_id: key_id.clone().or_else(|| key.jwk_kid.clone()),
                    token_url,
                    dpop_key: JwsKey::Es256(p256::ecdsa::SigningKey::from(&dpop_secret)),
                    dpop_jwk,
                    nonce: Mutex::new(None),
                    token: tokio::sync::Mutex::new(None),
                    stats,
                    scope,
                }))
            }
        };
        Ok(Self { kind })
    }

    /// True for OAuth service apps (whose tokens can be renewed after a 401).
    pub(crate) fn is_service_app(&self) -> bool {
        matches!(self.kind, AuthKind::ServiceApp(_))
    }

    /// The headers authorising `method url`: `Authorization`, and `DPoP` for DPoP tokens.
    /// Mints or renews the access token when needed.
    pub(crate) async fn headers(
        &self,
        http: &reqwest::Client,
        method: &str,
        url: &reqwest::Url,
        timeout: Duration,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        match &self.kind {
            AuthKind::Ssws(token) => Ok(vec![(
                http::header::AUTHORIZATION,
                sensitive(&format!("SSWS {}", token.expose()))?,
            )]),
            AuthKind::ServiceApp(app) => app.headers(http, method, url, timeout).await,
        }
    }

    /// Remembers a `DPoP-Nonce` from any response.
    pub(crate) fn observe(&self, headers: &http::HeaderMap) {
        if let AuthKind::ServiceApp(app) = &self.kind {
            app.observe(headers);
        }
    }

    /// Drops the cached access token (after the API refused it), so the next call mints one.
    pub(crate) async fn invalidate(&self) {
        if let AuthKind::ServiceApp(app) = &self.kind {
            *app.token.lock().await = None;
        }
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| AuthError::BadResponse("credential is not a valid header value".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

impl ServiceApp {
    fn observe(&self, headers: &http::HeaderMap) {
        let Some(nonce) = headers
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        else {
            return;
        };
        if let Ok(mut slot) = self.nonce.lock() {
            *slot = Some(nonce.to_owned());
        }
    }

    fn current_nonce(&self) -> Option<String> {
        self.nonce.lock().ok().and_then(|slot| slot.clone())
    }

    fn assertion(&self) -> String {
        let now = now_epoch();
        let mut header = json!({ "alg": self.assertion_key.alg(), "typ": "JWT" });
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url.as_str(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            "jti": new_jti(),
        });
        self.assertion_key.sign(&header, &claims)
    }

    fn proof(&self, method: &str, url: &reqwest::Url, access_token: Option<&str>) -> String {
        let header = json!({ "typ": "dpop+jwt", "alg": self.dpop_key.alg(), "jwk": self.dpop_jwk });
        let mut claims = json!({
            "htm": method,
            "htu": dpop_htu(url),
            "iat": now_epoch(),
            "jti": new_jti(),
        });
        if let Some(nonce) = self.current_nonce() {
            claims["nonce"] = json!(nonce);
        }
        if let Some(token) = access_token {
            claims["ath"] = json!(dpop_ath(token));
        }
        self.dpop_key.sign(&header, &claims)
    }

    async fn headers(
        &self,
        http: &reqwest::Client,
        method: &str,
        url: &reqwest::Url,
        timeout: Duration,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let mut slot = self.token.lock().await;
        let fresh = slot.as_ref().is_some_and(|t| Instant::now() < t.renew_at);
        if !fresh {
            match self.mint(http, timeout).await {
                Ok(token) => {
                    if let Some(stats) = &self.stats {
                        stats.token_refreshed();
                    }
                    *slot = Some(token);
                }
                Err(e) => {
                    if let Some(stats) = &self.stats {
                        stats.token_failed();
                    }
                    *slot = None;
                    return Err(e);
                }
            }
        }
        let Some(token) = slot.as_ref() else {
            return Err(AuthError::BadResponse("no access token".to_owned()));
        };
        if token.dpop {
            let proof = self.proof(method, url, Some(token.value.expose()));
            Ok(vec![
                (
                    http::header::AUTHORIZATION,
                    sensitive(&format!("DPoP {}", token.value.expose()))?,
                ),
                (HeaderName::from_static("dpop"), sensitive(&proof)?),
            ])
        } else {
            Ok(vec![(
                http::header::AUTHORIZATION,
                sensitive(&format!("Bearer {}", token.value.expose()))?,
            )])
        }
    }

    /// The client-credentials grant, DPoP first, with one retry on `use_dpop_nonce`.
    async fn mint(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<CachedToken, AuthError> {
        let mut nonce_retried = false;
        loop {
            let sent_nonce = self.current_nonce();
            let proof = self.proof("POST", &self.token_url, None);
            let form = [
                ("grant_type", "client_credentials"),
                ("scope", self.scope),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &self.assertion()),
            ];
            let response = http
                .post(self.token_url.clone())
                .timeout(timeout)
                .header(http::header::ACCEPT, "application/json")
                .header("DPoP", proof)
                .form(&form)
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        AuthError::Timeout
                    } else {
                        AuthError::Transport(e.without_url().to_string())
                    }
                })?;
            self.observe(response.headers());
            let status = response.status();
            let body = response.bytes().await.map_err(|e| {
                if e.is_timeout() {
                    AuthError::Timeout
                } else {
                    AuthError::Transport(e.without_url().to_string())
                }
            })?;
            if status.is_success() {
                let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                    AuthError::BadResponse(format!("token response does not parse: {e}"))
                })?;
                let dpop = if token.token_type.eq_ignore_ascii_case("DPoP") {
                    true
                } else if token.token_type.eq_ignore_ascii_case("Bearer") {
                    false
                } else {
                    return Err(AuthError::BadResponse(format!(
                        "unknown token_type {:?}",
                        token.token_type
                    )));
                };
                if token.access_token.is_empty() {
                    return Err(AuthError::BadResponse("empty access_token".to_owned()));
                }
                let lifetime = Duration::from_secs(token.expires_in).mul_f64(RENEW_AT_SHARE);
                return Ok(CachedToken {
                    value: Secret::new(token.access_token),
                    dpop,
                    renew_at: Instant::now() + lifetime,
                });
            }
            if status.is_server_error() {
                return Err(AuthError::Server(status.as_u16()));
            }
            let error: OAuthErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            let nonce_now = self.current_nonce();
            if status == reqwest::StatusCode::BAD_REQUEST
                && error.error == "use_dpop_nonce"
                && !nonce_retried
                && nonce_now.is_some()
                && nonce_now != sent_nonce
            {
                nonce_retried = true;
                continue;
            }
            return Err(AuthError::Rejected {
                status: status.as_u16(),
                error: error.error,
                description: error.error_description,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_redacted() {
        let secret = Secret::new("00abcdefSECRET");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        let credentials = Credentials::ApiToken(secret);
        assert!(!format!("{credentials:?}").contains("SECRET"));
    }

    #[test]
    fn htu_has_no_query_or_fragment() {
        let url =
            reqwest::Url::parse("https://example.okta.com:8443/api/v1/logs?after=1_2#x").unwrap();
        assert_eq!(dpop_htu(&url), "https://example.okta.com:8443/api/v1/logs");
        let url = reqwest::Url::parse("https://example.okta.com/api/v1/logs?limit=1").unwrap();
        assert_eq!(dpop_htu(&url), "https://example.okta.com/api/v1/logs");
    }

    #[test]
    fn ath_is_unpadded_base64url_sha256() {
        // RFC 9449 section 4.3 example access token and its ath.
        assert_eq!(
            dpop_ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn garbage_is_not_a_key_and_the_error_names_no_material() {
        let err = PrivateKey::parse("-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----")
            .unwrap_err();
        assert!(!err.to_string().contains("QUJD"));
        assert!(PrivateKey::parse("hello").is_err());
        assert!(PrivateKey::parse(r#"{"kty":"oct","k":"AAAA"}"#).is_err());
    }

    #[test]
    fn rsa_keys_parse_from_pkcs8_pkcs1_and_jwk_and_small_keys_are_refused() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::EncodePrivateKey as _;
        use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(PrivateKey::parse(&pkcs8).unwrap().algorithm(), "RS256");
        let pkcs1 = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(PrivateKey::parse(&pkcs1).unwrap().algorithm(), "RS256");
        let b64 = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
        let jwk = json!({
            "kty": "RSA", "kid": "rsa-1",
            "n": b64(key.n()), "e": b64(key.e()), "d": b64(key.d()),
            "p": b64(&key.primes()[0]), "q": b64(&key.primes()[1]),
        });
        let parsed = PrivateKey::parse(&jwk.to_string()).unwrap();
        assert_eq!(parsed.algorithm(), "RS256");
        assert_eq!(parsed.jwk_key_id(), Some("rsa-1"));
        let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let small = small.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(
            PrivateKey::parse(&small)
                .unwrap_err()
                .to_string()
                .contains("2048")
        );
    }

    #[test]
    fn ec_keys_parse_from_pem_and_jwk() {
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
        let pem = secret.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
        let key = PrivateKey::parse(&pem).unwrap();
        assert_eq!(key.algorithm(), "ES256");
        let sec1 = secret.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        assert_eq!(PrivateKey::parse(&sec1).unwrap().algorithm(), "ES256");
        let mut jwk: Value = serde_json::from_str(&secret.to_jwk_string()).unwrap();
        jwk["kid"] = json!("key-1");
        let key = PrivateKey::parse(&jwk.to_string()).unwrap();
        assert_eq!(key.algorithm(), "ES256");
        assert_eq!(key.jwk_key_id(), Some("key-1"));
        assert_eq!(format!("{key:?}"), "***");
    }
}
