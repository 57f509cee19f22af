//! An in-process fake Okta org on 127.0.0.1:0 that behaves as SPEC.md B documents.
//!
//! `GET /api/v1/logs` serves events in **persistence order** (the order they were pushed),
//! independent of `published`; polling queries (`since`/`after`, no `until`) always answer
//! `rel="self"` and `rel="next"`, also on empty pages; `limit`, `filter` on `eventType` (`eq`,
//! `sw`, `or`), a configurable rate-limit bucket with `X-Rate-Limit-*` headers measured on the
//! fake's own (optionally skewed) clock, and injected 429/500/slow answers.
//! `POST /oauth2/v1/token` validates the `private_key_jwt` client assertion and, when the app
//! requires it, DPoP proofs per RFC 9449 with the `use_dpop_nonce` dance; API calls check SSWS,
//! Bearer or DPoP-bound tokens (with `ath`). Every request is recorded for assertions.
//!
//! `POST /api/v1/eventHooks` and `POST /api/v1/eventHooks/{id}/lifecycle/verify` manage Event
//! Hooks (SPEC.md A.4) with the same authentication (service apps need the scope
//! `okta.eventHooks.manage`). Verification does what Okta does: a `GET` to the hook URI with
//! `x-okta-verification-challenge` and the `authScheme` header, expecting the challenge back.
//! Unlike Okta, the fake accepts `http://` hook URIs on loopback, so tests can verify a local
//! okta-stream.
//!
//! `GET /api/v1/users/{id}` and `GET /api/v1/users` serve the org's users (SPEC.md I): list
//! pages of `limit` (at most 200) paged by an opaque `after` in `Link: rel="next"`, `search`
//! on `lastUpdated` (`gt`/`ge`/`lt`, joined by `and`), their own rate-limit bucket, injected
//! 429/5xx/slow answers, and an outage switch. Tests change a user's profile with
//! [`FakeOkta::update_user`], which bumps `lastUpdated` as Okta does. Service apps need the
//! scope `okta.users.read`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// How the fake org authenticates API callers.
#[derive(Clone, Debug)]
pub enum FakeAuth {
    /// `Authorization: SSWS <token>`.
    Ssws(String),
    /// An API Services app with a registered public key; `dpop` = "Require DPoP".
    ServiceApp {
        /// The app's client id.
        client_id: String,
        /// The registered public key.
        public_key: PublicKey,
        /// Whether the app requires DPoP-bound tokens.
        dpop: bool,
    },
}

/// A public key the fake verifies signatures with.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// RS256.
    Rsa(rsa::RsaPublicKey),
    /// ES256.
    Ec(p256::PublicKey),
}

/// A misbehaviour for the next `/api/v1/logs` request(s), consumed in order.
#[derive(Clone, Debug)]
pub enum Inject {
    /// Answer this 5xx status (500 with Okta's timeout body `E0000009`).
    Status(u16),
    /// Answer 429 with `X-Rate-Limit-Reset` this far in the future (by the fake's clock).
    RateLimited(Duration),
    /// Wait this long before answering normally.
    Delay(Duration),
    /// Answer normally, with this text (JSON or not) as the page's first element (logs only).
    RawElement(String),
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// When it arrived, by the test's monotonic clock.
    pub at: std::time::Instant,
    /// When it arrived, by the fake's (skewed) clock.
    pub server_time: DateTime<Utc>,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Decoded form body (token endpoint).
    pub form: HashMap<String, String>,
    /// JSON body (Event Hook endpoints).
    pub body: Option<Value>,
    /// Status answered.
    pub status: u16,
    /// `X-Okta-Request-Id` answered.
    pub request_id: String,
    /// `X-Rate-Limit-Reset` answered, if any.
    pub rate_reset: Option<i64>,
    /// Why the fake refused it, if it did.
    pub error: Option<String>,
    /// The `rel="next"` URL answered, if any.
    pub next_link: Option<String>,
}

impl Recorded {
    /// Decoded query pairs (percent- and `+`-decoded), in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_decode(self.query.as_deref().unwrap_or(""))
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A refusal: status, Okta error body, and the reason recorded for the test.
type Refusal = (StatusCode, String, String);

/// A page: the events and the `link` header values.
type PageOut = (Vec<Value>, Vec<String>);

struct Stored {
    value: Value,
    event_type: String,
    stored_at: DateTime<Utc>,
}

struct Bucket {
    limit: u64,
    window: Duration,
    used: u64,
    reset: Option<i64>,
}

struct Token {
    jkt: Option<String>,
    expires: std::time::Instant,
    /// Scopes granted.
    scopes: Vec<String>,
}

/// Scopes the fake's authorization server grants.
const KNOWN_SCOPES: &[&str] = &[
    "okta.logs.read",
    "okta.eventHooks.manage",
    "okta.users.read",
];

struct FakeState {
    auth: FakeAuth,
    events: Vec<Stored>,
    bucket: Option<Bucket>,
    injections: VecDeque<Inject>,
    skew: chrono::Duration,
    nonce: String,
    old_nonces: HashSet<String>,
    used_jtis: HashSet<String>,
    tokens: HashMap<String, Token>,
    token_lifetime_secs: u64,
    join_links: bool,
    requests: Vec<Recorded>,
    counter: u64,
    /// Event Hooks created so far, as Okta answers them (without the secret).
    hooks: Vec<Value>,
    /// The `authScheme` of each hook, by id (kept apart so answers never carry the secret).
    hook_auth: HashMap<String, Value>,
    /// The org's users, in creation order (the list order).
    users: Vec<Value>,
    /// The rate-limit bucket of the Users API (separate from `/api/v1/logs`, as in Okta).
    users_bucket: Option<Bucket>,
    /// Misbehaviours for the next Users API requests.
    users_injections: VecDeque<Inject>,
    /// While true, every Users API request answers 503.
    users_down: bool,
}

struct Shared {
    base: String,
    state: Mutex<FakeState>,
}

/// A running fake Okta org. Dropping it stops the server.
pub struct FakeOkta {
    /// `http://127.0.0.1:PORT` — the org URL to configure.
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOkta {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOkta {
    /// Starts a fake org with `auth` on 127.0.0.1:0.
    pub async fn start(auth: FakeAuth) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            base: base.clone(),
            state: Mutex::new(FakeState {
                auth,
                events: Vec::new(),
                bucket: None,
                injections: VecDeque::new(),
                skew: chrono::Duration::zero(),
                nonce: random_token(),
                old_nonces: HashSet::new(),
                used_jtis: HashSet::new(),
                tokens: HashMap::new(),
                token_lifetime_secs: 3600,
                join_links: false,
                requests: Vec::new(),
                counter: 0,
                hooks: Vec::new(),
                hook_auth: HashMap::new(),
                users: Vec::new(),
                users_bucket: None,
                users_injections: VecDeque::new(),
                users_down: false,
            }),
        });
        let app = Router::new()
            .route("/api/v1/logs", get(logs))
            .route("/api/v1/users", get(list_users))
            .route("/api/v1/users/{id}", get(get_user))
            .route("/oauth2/v1/token", post(token))
            .route("/api/v1/eventHooks", post(create_hook))
            .route(
                "/api/v1/eventHooks/{id}/lifecycle/verify",
                post(verify_hook),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, shared, task }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.shared.state.lock().unwrap()
    }

    /// Persists `event` now: it comes after every event pushed before, whatever its
    /// `published`.
    pub fn push(&self, event: Value) {
        let event_type = event["eventType"].as_str().unwrap_or_default().to_owned();
        let mut state = self.state();
        let stored_at = Utc::now() + state.skew;
        state.events.push(Stored {
            value: event,
            event_type,
            stored_at,
        });
    }

    /// Pushes `count` events of `event_type` with uuids `{prefix}-{i}`.
    pub fn push_many(&self, prefix: &str, event_type: &str, count: usize) {
        for i in 0..count {
            self.push(log_event(
                &format!("{prefix}-{i}"),
                event_type,
                "2026-11-28T10:00:00.000Z",
            ));
        }
    }

    /// A rate-limit bucket of `limit` requests per `window` on `/api/v1/logs`.
    pub fn set_rate_limit(&self, limit: u64, window: Duration) {
        self.state().bucket = Some(Bucket {
            limit,
            window,
            used: 0,
            reset: None,
        });
    }

    /// Queues a misbehaviour for the next `/api/v1/logs` request.
    pub fn inject(&self, inject: Inject) {
        self.state().injections.push_back(inject);
    }

    /// Shifts the fake's clock (its `Date` header and rate-limit resets) by `skew`.
    pub fn set_clock_skew(&self, skew: chrono::Duration) {
        self.state().skew = skew;
    }

    /// Sends `self` and `next` in one comma-joined `link` header instead of two.
    pub fn join_links(&self, joined: bool) {
        self.state().join_links = joined;
    }

    /// Lifetime of the access tokens the token endpoint mints.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state().token_lifetime_secs = secs;
    }

    /// Revokes every access token minted so far (API calls with them get 401).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The `/api/v1/logs` requests so far.
    pub fn log_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/logs")
            .collect()
    }

    /// The Event Hook management requests so far.
    pub fn hook_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v1/eventHooks"))
            .collect()
    }

    /// The Event Hooks created so far, as Okta shows them.
    pub fn hooks(&self) -> Vec<Value> {
        self.state().hooks.clone()
    }

    /// The token endpoint requests so far.
    pub fn token_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/oauth2/v1/token")
            .collect()
    }

    /// Rotates the DPoP nonce (the old one stays valid for API calls, as Okta's does for 3 days).
    pub fn rotate_nonce(&self) {
        let mut state = self.state();
        let old = std::mem::replace(&mut state.nonce, random_token());
        state.old_nonces.insert(old);
    }

    /// The current DPoP nonce.
    pub fn nonce(&self) -> String {
        self.state().nonce.clone()
    }

    /// Creates user `id` with `profile` (a JSON object), `lastUpdated` now; returns that time.
    pub fn add_user(&self, id: &str, profile: Value) -> DateTime<Utc> {
        let mut state = self.state();
        let now = next_update_time(&state, None);
        state.users.retain(|u| u["id"] != id);
        state.users.push(json!({
            "id": id,
            "status": "ACTIVE",
            "created": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastUpdated": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "type": {"id": "oty1"},
            "profile": profile,
            "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": format!("{}/api/v1/users/{id}", self.base)}},
        }));
        now
    }

    /// Creates many users at once (`id`, `profile`), `lastUpdated` now; for the load tool,
    /// which seeds a large org (no check for existing ids).
    pub fn add_users(&self, users: impl IntoIterator<Item = (String, Value)>) {
        let mut state = self.state();
        let now = next_update_time(&state, None);
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (id, profile) in users {
            let user = json!({
                "id": id,
                "status": "ACTIVE",
                "created": at,
                "lastUpdated": at,
                "type": {"id": "oty1"},
                "profile": profile,
                "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
                "_links": {"self": {"href": format!("{}/api/v1/users/{id}", self.base)}},
            });
            state.users.push(user);
        }
    }

    /// Changes user `id`'s profile as an admin would: each member of `changes` is set (null
    /// sets null), and `lastUpdated` moves to now (strictly later than before). Returns it.
    pub fn update_user(&self, id: &str, changes: Value) -> DateTime<Utc> {
        let mut state = self.state();
        let index = state
            .users
            .iter()
            .position(|u| u["id"] == id)
            .expect("update_user: no such user");
        let before = state.users[index]["lastUpdated"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let now = next_update_time(&state, before);
        let user = &mut state.users[index];
        for (name, value) in changes.as_object().expect("changes is an object") {
            user["profile"][name] = value.clone();
        }
        user["lastUpdated"] = json!(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        now
    }

    /// A user as the API shows it.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.state().users.iter().find(|u| u["id"] == id).cloned()
    }

    /// A rate-limit bucket of `limit` requests per `window` on the Users API.
    pub fn set_users_rate_limit(&self, limit: u64, window: Duration) {
        self.state().users_bucket = Some(Bucket {
            limit,
            window,
            used: 0,
            reset: None,
        });
    }

    /// Queues a misbehaviour for the next Users API request.
    pub fn inject_users(&self, inject: Inject) {
        self.state().users_injections.push_back(inject);
    }

    /// Takes the Users API down (every request answers 503) or brings it back.
    pub fn set_users_down(&self, down: bool) {
        self.state().users_down = down;
    }

    /// The Users API requests so far.
    pub fn user_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v1/users"))
            .collect()
    }
}

/// Now by the fake's clock, at millisecond precision, strictly after `before`.
fn next_update_time(state: &FakeState, before: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = Utc::now() + state.skew;
    let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap();
    match before {
        Some(before) if now <= before => before + chrono::Duration::milliseconds(1),
        _ => now,
    }
}

/// A minimal but realistic `user.account.update_profile`-shaped LogEvent (SPEC.md D).
pub fn log_event(uuid: &str, event_type: &str, published: &str) -> Value {
    json!({
        "uuid": uuid,
        "published": published,
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "legacyEventType": "core.user.config.profile_update.success",
        "displayMessage": "Update user profile for Okta",
        "actor": {"id": "00u1admin", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
        "client": {"ipAddress": "192.0.2.1", "userAgent": {"rawUserAgent": "test"}},
        "outcome": {"result": "SUCCESS"},
        "target": [{"id": "00u1target", "type": "User", "alternateId": "jane@example.com", "displayName": "Jane Doe"}],
        "transaction": {"type": "WEB", "id": "tx1", "detail": {}},
        "debugContext": {"debugData": {"changedAttributes": "lastName,mobilePhone"}},
        "authenticationContext": {"externalSessionId": "x"},
        "securityContext": {},
    })
}

/// Header and claims of a compact JWS, unverified (for assertions in tests).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let claims = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&claims).unwrap(),
    )
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

fn okta_error(status: StatusCode, code: &str, summary: &str) -> (StatusCode, String) {
    (
        status,
        json!({"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oae1", "errorCauses": []})
            .to_string(),
    )
}

/// Percent- and `+`-decoding of `a=b&c=d`.
fn form_decode(text: &str) -> Vec<(String, String)> {
    fn decode(part: &str) -> String {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Verifies a compact JWS with `key`; returns header and claims.
fn verify_jws(token: &str, key: &PublicKey) -> Result<(Value, Value), String> {
    let (header, claims) = unverified(token)?;
    let (signing_input, signature) = token.rsplit_once('.').ok_or("not a JWS")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "signature is not base64url")?;
    match (header["alg"].as_str(), key) {
        (Some("RS256"), PublicKey::Rsa(key)) => {
            use rsa::signature::Verifier as _;
            let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
            let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice())
                .map_err(|_| "bad RS256 signature")?;
            verifier
                .verify(signing_input.as_bytes(), &signature)
                .map_err(|_| "RS256 signature does not verify")?;
        }
        (Some("ES256"), PublicKey::Ec(key)) => {
            use p256::ecdsa::signature::Verifier as _;
            let verifier = p256::ecdsa::VerifyingKey::from(key);
            let signature = p256::ecdsa::Signature::from_slice(&signature)
                .map_err(|_| "bad ES256 signature")?;
            verifier
                .verify(signing_input.as_bytes(), &signature)
                .map_err(|_| "ES256 signature does not verify")?;
        }
        (alg, _) => return Err(format!("alg {alg:?} does not match the key")),
    }
    Ok((header, claims))
}

fn unverified(token: &str) -> Result<(Value, Value), String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not a compact JWS".to_owned());
    }
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "part is not base64url".to_owned())?;
        serde_json::from_slice(&bytes).map_err(|_| "part is not JSON".to_owned())
    };
    Ok((decode(parts[0])?, decode(parts[1])?))
}

/// The public key of a DPoP proof's `jwk` and its RFC 7638 thumbprint.
fn jwk_key(jwk: &Value) -> Result<(PublicKey, String), String> {
    if jwk.get("d").is_some() || jwk.get("p").is_some() {
        return Err("jwk contains private key material".to_owned());
    }
    let s = |name: &str| {
        jwk[name]
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("jwk.{name} missing"))
    };
    match jwk["kty"].as_str() {
        Some("EC") => {
            let canonical = format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                s("crv")?,
                s("x")?,
                s("y")?
            );
            let key = p256::PublicKey::from_jwk_str(&canonical).map_err(|_| "bad EC jwk")?;
            Ok((PublicKey::Ec(key), thumbprint(&canonical)))
        }
        Some("RSA") => {
            let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?);
            let big = |v: String| -> Result<rsa::BigUint, String> {
                Ok(rsa::BigUint::from_bytes_be(
                    &URL_SAFE_NO_PAD.decode(v).map_err(|_| "bad base64url")?,
                ))
            };
            let key =
                rsa::RsaPublicKey::new(big(s("n")?)?, big(s("e")?)?).map_err(|_| "bad RSA jwk")?;
            Ok((PublicKey::Rsa(key), thumbprint(&canonical)))
        }
        _ => Err("jwk.kty must be EC or RSA".to_owned()),
    }
}

fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Validates a DPoP proof (RFC 9449 section 4.3) except the nonce; returns its claims and
/// the key thumbprint.
fn check_proof(
    state: &mut FakeState,
    proof: &str,
    method: &str,
    htu: &str,
    now: DateTime<Utc>,
) -> Result<(Value, String), String> {
    let (header, _) = unverified(proof)?;
    if header["typ"] != "dpop+jwt" {
        return Err("typ must be dpop+jwt".to_owned());
    }
    let (key, jkt) = jwk_key(&header["jwk"])?;
    let (_, claims) = verify_jws(proof, &key)?;
    if claims["htm"] != method {
        return Err(format!("htm must be {method}"));
    }
    if claims["htu"] != htu {
        return Err(format!(
            "'htu' claim in the DPoP proof JWT is invalid: {}",
            claims["htu"]
        ));
    }
    let iat = claims["iat"].as_i64().ok_or("iat missing")?;
    if (iat - now.timestamp()).abs() > 60 {
        return Err("iat is not fresh".to_owned());
    }
    let jti = claims["jti"].as_str().ok_or("jti missing")?;
    if !state.used_jtis.insert(format!("dpop:{jti}")) {
        return Err("DPoP proof jti was already used".to_owned());
    }
    Ok((claims, jkt))
}

/// Decides a token request; returns status, body, and extra headers.
fn decide_token(
    state: &mut FakeState,
    base: &str,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(Value, bool), (StatusCode, Value, Option<String>)> {
    let oauth = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            json!({"error": error, "error_description": description}),
            None,
        )
    };
    let FakeAuth::ServiceApp {
        client_id,
        public_key,
        dpop,
    } = state.auth.clone()
    else {
        return Err(oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no OAuth app in this org",
        ));
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err(oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "client_credentials only",
        ));
    }
    let scopes: Vec<&str> = form
        .get("scope")
        .map(|s| s.split(' ').collect())
        .unwrap_or_default();
    if scopes.is_empty() || scopes.iter().any(|s| !KNOWN_SCOPES.contains(s)) {
        return Err(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The authorization server does not allow one or more of the requested scopes",
        ));
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err(oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "private_key_jwt only",
        ));
    }
    let token_url = format!("{base}/oauth2/v1/token");
    let assertion = form.get("client_assertion").cloned().unwrap_or_default();
    let checked = (|| -> Result<(), String> {
        let (_, claims) = verify_jws(&assertion, &public_key)?;
        if claims["iss"] != client_id.as_str() || claims["sub"] != client_id.as_str() {
            return Err("iss and sub must be the client id".to_owned());
        }
        if claims["aud"] != token_url.as_str() {
            return Err("aud must be the token URL".to_owned());
        }
        let exp = claims["exp"].as_i64().ok_or("exp missing")?;
        if exp <= now.timestamp() || exp > now.timestamp() + 3600 {
            return Err("exp must be within the next hour".to_owned());
        }
        if claims["iat"]
            .as_i64()
            .is_some_and(|iat| iat > now.timestamp() + 5)
        {
            return Err("iat is in the future".to_owned());
        }
        let jti = claims["jti"].as_str().ok_or("jti missing")?;
        if !state.used_jtis.insert(format!("assertion:{jti}")) {
            return Err("The client_assertion token has already been used.".to_owned());
        }
        Ok(())
    })();
    if let Err(reason) = checked {
        return Err(oauth(StatusCode::UNAUTHORIZED, "invalid_client", &reason));
    }
    if !dpop {
        return Ok((json!({"jkt": null}), false));
    }
    let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return Err(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            "DPoP proof is missing",
        ));
    };
    let (claims, jkt) = check_proof(state, proof, "POST", &token_url, now)
        .map_err(|reason| oauth(StatusCode::BAD_REQUEST, "invalid_dpop_proof", &reason))?;
    if claims["nonce"] != state.nonce.as_str() {
        let nonce = state.nonce.clone();
        return Err((
            StatusCode::BAD_REQUEST,
            json!({"error": "use_dpop_nonce", "error_description": "Authorization server requires nonce in DPoP proof."}),
            Some(nonce),
        ));
    }
    Ok((json!({ "jkt": jkt }), true))
}

async fn token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_decode(&String::from_utf8_lossy(&body))
        .into_iter()
        .collect();
    let mut state = shared.state.lock().unwrap();
    let now = Utc::now() + state.skew;
    let arrived = std::time::Instant::now();
    state.counter += 1;
    let request_id = format!("req-{}", state.counter);
    let outcome = decide_token(&mut state, &shared.base, &headers, &form, now);
    let dpop_app = matches!(state.auth, FakeAuth::ServiceApp { dpop: true, .. });
    let (status, body, nonce, error) = match outcome {
        Ok((binding, dpop)) => {
            let access_token = random_token();
            let lifetime = state.token_lifetime_secs;
            let scopes: Vec<String> = form
                .get("scope")
                .map(|s| s.split(' ').map(str::to_owned).collect())
                .unwrap_or_default();
            state.tokens.insert(
                access_token.clone(),
                Token {
                    jkt: binding["jkt"].as_str().map(str::to_owned),
                    expires: arrived + Duration::from_secs(lifetime),
                    scopes: scopes.clone(),
                },
            );
            let body = json!({
                "token_type": if dpop { "DPoP" } else { "Bearer" },
                "expires_in": lifetime,
                "access_token": access_token,
                "scope": scopes.join(" "),
            });
            (
                StatusCode::OK,
                body,
                dpop_app.then(|| state.nonce.clone()),
                None,
            )
        }
        Err((status, body, nonce)) => {
            let error = Some(body["error_description"].as_str().unwrap_or("").to_owned());
            (status, body, nonce, error)
        }
    };
    state.requests.push(Recorded {
        at: arrived,
        server_time: now,
        method: "POST".to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        form,
        body: None,
        status: status.as_u16(),
        request_id: request_id.clone(),
        rate_reset: None,
        error,
        next_link: None,
    });
    let mut response = (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(
        "x-okta-request-id",
        HeaderValue::from_str(&request_id).unwrap(),
    );
    h.insert("date", http_date(now));
    if let Some(nonce) = nonce {
        h.insert("dpop-nonce", HeaderValue::from_str(&nonce).unwrap());
    }
    response
}

fn http_date(time: DateTime<Utc>) -> HeaderValue {
    HeaderValue::from_str(&time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).unwrap()
}

/// Checks the credentials of a `GET /api/v1/logs` caller.
fn check_api_auth(
    state: &mut FakeState,
    base: &str,
    headers: &HeaderMap,
    path: &str,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    check_api_call(state, base, headers, "GET", path, "okta.logs.read", now)
}

/// Checks an API caller's credentials for `method path`; OAuth tokens need `scope`.
fn check_api_call(
    state: &mut FakeState,
    base: &str,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    scope: &str,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let refuse = |reason: String| {
        let (status, body) = okta_error(
            StatusCode::UNAUTHORIZED,
            "E0000011",
            "Invalid token provided",
        );
        (status, body, reason)
    };
    match state.auth.clone() {
        FakeAuth::Ssws(expected) => {
            if authorization != format!("SSWS {expected}") {
                return Err(refuse("SSWS token mismatch".to_owned()));
            }
            Ok(())
        }
        FakeAuth::ServiceApp { .. } => {
            let (scheme, value) = authorization.split_once(' ').unwrap_or(("", ""));
            let Some(token) = state.tokens.get(value) else {
                return Err(refuse("unknown access token".to_owned()));
            };
            if token.expires <= std::time::Instant::now() {
                return Err(refuse("access token expired".to_owned()));
            }
            if !token.scopes.iter().any(|s| s == scope) {
                let (status, body) = okta_error(
                    StatusCode::FORBIDDEN,
                    "E0000006",
                    "You do not have permission to perform the requested action",
                );
                return Err((status, body, format!("token lacks scope {scope}")));
            }
            match token.jkt.clone() {
                None => {
                    if scheme != "Bearer" {
                        return Err(refuse("Bearer token sent with another scheme".to_owned()));
                    }
                    Ok(())
                }
                Some(jkt) => {
                    if scheme != "DPoP" {
                        return Err(refuse(
                            "DPoP-bound token must use the DPoP scheme".to_owned(),
                        ));
                    }
                    let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
                        return Err(refuse("DPoP proof missing".to_owned()));
                    };
                    let htu = format!("{base}{path}");
                    let (claims, proof_jkt) =
                        check_proof(state, proof, method, &htu, now).map_err(refuse)?;
                    if proof_jkt != jkt {
                        return Err(refuse("proof key is not the token's key".to_owned()));
                    }
                    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()));
                    if claims["ath"] != ath.as_str() {
                        return Err(refuse("ath does not match the access token".to_owned()));
                    }
                    if let Some(nonce) = claims["nonce"].as_str() {
                        if nonce != state.nonce && !state.old_nonces.contains(nonce) {
                            return Err(refuse("unknown nonce".to_owned()));
                        }
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Parses `eventType eq "a" or eventType sw "b"`; returns the clauses.
fn parse_filter(filter: &str) -> Result<Vec<(bool, String)>, String> {
    let mut clauses = Vec::new();
    let mut rest = filter.trim();
    loop {
        let (attr, after) = rest.split_once(' ').ok_or("expected an attribute")?;
        if attr != "eventType" {
            return Err(format!("unsupported attribute {attr}"));
        }
        let (op, after) = after
            .trim_start()
            .split_once(' ')
            .ok_or("expected an operator")?;
        let prefix = match op.to_ascii_lowercase().as_str() {
            "eq" => false,
            "sw" => true,
            other => return Err(format!("unsupported operator {other}")),
        };
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or("expected a quoted value")?;
        let (value, after) = after.split_once('"').ok_or("unterminated value")?;
        clauses.push((prefix, value.to_owned()));
        let after = after.trim_start();
        if after.is_empty() {
            return Ok(clauses);
        }
        let (joiner, after) = after.split_once(' ').ok_or("expected 'or'")?;
        if !joiner.eq_ignore_ascii_case("or") {
            return Err(format!("unsupported joiner {joiner}"));
        }
        rest = after.trim_start();
    }
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The page a polling query gets, or a refusal.
fn decide_logs(
    state: &mut FakeState,
    base: &str,
    query: &[(String, String)],
    raw_query: &str,
) -> Result<PageOut, Refusal> {
    let bad = |summary: &str| {
        let (status, body) = okta_error(StatusCode::BAD_REQUEST, "E0000053", summary);
        (status, body, summary.to_owned())
    };
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if param("until").is_some() {
        return Err(bad("fake Okta serves polling queries only: until is set"));
    }
    if param("sortOrder").is_some_and(|s| s != "ASCENDING") {
        return Err(bad("polling needs sortOrder=ASCENDING"));
    }
    let limit: usize = match param("limit") {
        None => 100,
        Some(l) => match l.parse() {
            Ok(l) if l <= 1000 => l,
            _ => return Err(bad("limit must be 0..=1000")),
        },
    };
    let filter = match param("filter") {
        None => None,
        Some(f) => Some(parse_filter(&f).map_err(|e| bad(&format!("Invalid filter: {e}")))?),
    };
    let start = match (param("since"), param("after")) {
        (Some(_), Some(_)) => return Err(bad("since and after are mutually exclusive")),
        (Some(since), None) => {
            let since = DateTime::parse_from_rfc3339(&since)
                .map_err(|_| bad("since is not an ISO-8601 time"))?
                .with_timezone(&Utc);
            state
                .events
                .iter()
                .position(|e| e.stored_at >= since)
                .unwrap_or(state.events.len())
        }
        (None, Some(after)) => after
            .split_once('_')
            .and_then(|(_, idx)| idx.parse::<usize>().ok())
            .ok_or_else(|| bad("after is not a cursor of this org"))?,
        (None, None) => return Err(bad("fake Okta needs since or after")),
    };
    let matches = |event_type: &str| match &filter {
        None => true,
        Some(clauses) => clauses.iter().any(|(prefix, value)| {
            if *prefix {
                event_type.starts_with(value.as_str())
            } else {
                event_type == value
            }
        }),
    };
    let mut events = Vec::new();
    let mut position = start.min(state.events.len());
    while position < state.events.len() && events.len() < limit {
        let stored = &state.events[position];
        if matches(&stored.event_type) {
            events.push(stored.value.clone());
        }
        position += 1;
    }
    let cursor_time = state
        .events
        .get(position.saturating_sub(1))
        .map_or(0, |e| e.stored_at.timestamp_millis());
    let mut next_query =
        format!("after={cursor_time}_{position}&limit={limit}&sortOrder=ASCENDING");
    if let Some(f) = param("filter") {
        next_query.push_str(&format!("&filter={}", percent_encode(&f)));
    }
    let links = vec![
        format!("<{base}/api/v1/logs?{raw_query}>; rel=\"self\""),
        format!("<{base}/api/v1/logs?{next_query}>; rel=\"next\""),
    ];
    Ok((events, links))
}

async fn logs(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let arrived = std::time::Instant::now();
    let injection = shared.state.lock().unwrap().injections.pop_front();
    if let Some(Inject::Delay(delay)) = &injection {
        tokio::time::sleep(*delay).await;
    }
    let mut state = shared.state.lock().unwrap();
    let now = Utc::now() + state.skew;
    state.counter += 1;
    let request_id = format!("req-{}", state.counter);
    let raw_query = uri.query().unwrap_or("").to_owned();
    let query = form_decode(&raw_query);
    let mut extra: Vec<(String, String)> = Vec::new();
    let mut rate_reset = None;

    let outcome: Result<PageOut, Refusal> = (|| {
        check_api_auth(&mut state, &shared.base, &headers, uri.path(), now)?;
        // The bucket counts every authenticated request.
        if let Some(bucket) = state.bucket.as_mut() {
            if bucket.reset.is_some_and(|reset| now.timestamp() >= reset) {
                bucket.reset = None;
                bucket.used = 0;
            }
            let reset = *bucket.reset.get_or_insert_with(|| {
                (now + chrono::Duration::from_std(bucket.window).unwrap()).timestamp() + 1
            });
            bucket.used += 1;
            rate_reset = Some(reset);
            let remaining = bucket.limit.saturating_sub(bucket.used);
            extra.push(("x-rate-limit-limit".into(), bucket.limit.to_string()));
            extra.push(("x-rate-limit-remaining".into(), remaining.to_string()));
            extra.push(("x-rate-limit-reset".into(), reset.to_string()));
            if bucket.used > bucket.limit {
                let (s, b) = okta_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                );
                return Err((s, b, "bucket exhausted".to_owned()));
            }
        }
        match &injection {
            Some(Inject::Status(code)) => {
                let (_, b) = okta_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "E0000009",
                    "Internal Server Error",
                );
                return Err((
                    StatusCode::from_u16(*code).unwrap(),
                    b,
                    "injected".to_owned(),
                ));
            }
            Some(Inject::RateLimited(reset_in)) => {
                let reset = (now + chrono::Duration::from_std(*reset_in).unwrap()).timestamp() + 1;
                rate_reset = Some(reset);
                extra.retain(|(k, _)| !k.starts_with("x-rate-limit"));
                extra.push(("x-rate-limit-limit".into(), "120".into()));
                extra.push(("x-rate-limit-remaining".into(), "0".into()));
                extra.push(("x-rate-limit-reset".into(), reset.to_string()));
                let (s, b) = okta_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                );
                return Err((s, b, "injected 429".to_owned()));
            }
            _ => {}
        }
        decide_logs(&mut state, &shared.base, &query, &raw_query)
    })();

    let (status, body, links, error) = match outcome {
        Ok((events, links)) => {
            let mut body = Value::Array(events).to_string();
            if let Some(Inject::RawElement(raw)) = &injection {
                let rest = &body[1..];
                let separator = if rest == "]" { "" } else { "," };
                body = format!("[{raw}{separator}{rest}");
            }
            (StatusCode::OK, body, links, None)
        }
        Err((status, body, reason)) => (status, body, Vec::new(), Some(reason)),
    };
    state.requests.push(Recorded {
        at: arrived,
        server_time: now,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        form: HashMap::new(),
        body: None,
        status: status.as_u16(),
        request_id: request_id.clone(),
        rate_reset,
        error,
        next_link: links
            .get(1)
            .and_then(|l| l.strip_prefix('<'))
            .and_then(|l| l.split_once('>'))
            .map(|(url, _)| url.to_owned()),
    });
    let join = state.join_links;
    drop(state);
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    let h = response.headers_mut();
    h.insert(
        "x-okta-request-id",
        HeaderValue::from_str(&request_id).unwrap(),
    );
    h.insert("date", http_date(now));
    for (name, value) in extra {
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    if join && !links.is_empty() {
        h.append("link", HeaderValue::from_str(&links.join(", ")).unwrap());
    } else {
        for link in links {
            h.append("link", HeaderValue::from_str(&link).unwrap());
        }
    }
    response
}

/// What a management request answers: status, JSON body, and the reason recorded.
type Answer = (StatusCode, Value, Option<String>);

fn okta_json_error(status: StatusCode, code: &str, summary: &str, cause: &str) -> Answer {
    let (status, body) = okta_error(status, code, summary);
    let mut body: Value = serde_json::from_str(&body).unwrap();
    if !cause.is_empty() {
        body["errorCauses"] = json!([{ "errorSummary": cause }]);
    }
    (status, body, Some(format!("{summary}: {cause}")))
}

/// Checks an Event Hook as Okta's API validates it (SPEC.md A.4).
fn validate_hook(body: &Value) -> Result<(), String> {
    if body["name"].as_str().is_none_or(str::is_empty) {
        return Err("name: must not be empty".to_owned());
    }
    if body["events"]["type"] != "EVENT_TYPE" {
        return Err("events.type: must be EVENT_TYPE".to_owned());
    }
    if body["events"]["items"]
        .as_array()
        .is_none_or(|items| items.is_empty() || items.iter().any(|i| !i.is_string()))
    {
        return Err("events.items: must list event types".to_owned());
    }
    let channel = &body["channel"];
    if channel["type"] != "HTTP" || channel["version"] != "1.0.0" {
        return Err("channel: type must be HTTP and version 1.0.0".to_owned());
    }
    let uri = channel["config"]["uri"].as_str().unwrap_or_default();
    let loopback = uri.starts_with("http://127.0.0.1:") || uri.starts_with("http://localhost:");
    if !uri.starts_with("https://") && !loopback {
        return Err("channel.config.uri: must be an https URL".to_owned());
    }
    let scheme = &channel["config"]["authScheme"];
    if scheme["type"] != "HEADER"
        || scheme["key"].as_str().is_none_or(str::is_empty)
        || scheme["value"].as_str().is_none_or(str::is_empty)
    {
        return Err("channel.config.authScheme: type HEADER with key and value".to_owned());
    }
    Ok(())
}

fn record(
    shared: &Shared,
    arrived: std::time::Instant,
    uri: &Uri,
    headers: HeaderMap,
    body: Option<Value>,
    answer: &Answer,
) {
    let mut state = shared.state.lock().unwrap();
    let now = Utc::now() + state.skew;
    state.counter += 1;
    let request_id = format!("req-{}", state.counter);
    state.requests.push(Recorded {
        at: arrived,
        server_time: now,
        method: "POST".to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        form: HashMap::new(),
        body,
        status: answer.0.as_u16(),
        request_id,
        rate_reset: None,
        error: answer.2.clone(),
        next_link: None,
    });
}

fn respond(shared: &Shared, answer: Answer) -> Response {
    let nonce = {
        let state = shared.state.lock().unwrap();
        matches!(state.auth, FakeAuth::ServiceApp { dpop: true, .. }).then(|| state.nonce.clone())
    };
    let mut response = (
        answer.0,
        [("content-type", "application/json")],
        answer.1.to_string(),
    )
        .into_response();
    if let Some(nonce) = nonce {
        response
            .headers_mut()
            .insert("dpop-nonce", HeaderValue::from_str(&nonce).unwrap());
    }
    response
}

/// `POST /api/v1/eventHooks`.
async fn create_hook(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = std::time::Instant::now();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let answer: Answer = (|| {
        let mut state = shared.state.lock().unwrap();
        let now = Utc::now() + state.skew;
        if let Err((status, body, reason)) = check_api_call(
            &mut state,
            &shared.base,
            &headers,
            "POST",
            uri.path(),
            "okta.eventHooks.manage",
            now,
        ) {
            return (status, serde_json::from_str(&body).unwrap(), Some(reason));
        }
        let Some(hook) = parsed.clone() else {
            return okta_json_error(
                StatusCode::BAD_REQUEST,
                "E0000003",
                "The request body was not well-formed.",
                "",
            );
        };
        if let Err(cause) = validate_hook(&hook) {
            return okta_json_error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: eventHook",
                &cause,
            );
        }
        let id = format!("who{}", random_token().replace(['-', '_'], "x"));
        let mut answer = hook.clone();
        let scheme = answer["channel"]["config"]["authScheme"].take();
        answer["channel"]["config"]["authScheme"] =
            json!({"type": scheme["type"], "key": scheme["key"]});
        answer["channel"]["config"]["method"] = json!("POST");
        answer["id"] = json!(id);
        answer["status"] = json!("ACTIVE");
        answer["verificationStatus"] = json!("UNVERIFIED");
        answer["created"] = json!(now.to_rfc3339());
        answer["lastUpdated"] = json!(now.to_rfc3339());
        answer["_links"] = json!({
            "self": {"href": format!("{}/api/v1/eventHooks/{id}", shared.base)},
            "verify": {"href": format!("{}/api/v1/eventHooks/{id}/lifecycle/verify", shared.base)},
        });
        state.hook_auth.insert(id, scheme);
        state.hooks.push(answer.clone());
        (StatusCode::OK, answer, None)
    })();
    record(&shared, arrived, &uri, headers, parsed, &answer);
    respond(&shared, answer)
}

/// `POST /api/v1/eventHooks/{id}/lifecycle/verify`: calls the hook as Okta does.
async fn verify_hook(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let arrived = std::time::Instant::now();
    let target = {
        let mut state = shared.state.lock().unwrap();
        let now = Utc::now() + state.skew;
        match check_api_call(
            &mut state,
            &shared.base,
            &headers,
            "POST",
            uri.path(),
            "okta.eventHooks.manage",
            now,
        ) {
            Err((status, body, reason)) => Err((
                status,
                serde_json::from_str::<Value>(&body).unwrap(),
                Some(reason),
            )),
            Ok(()) => match state.hooks.iter().find(|h| h["id"] == id.as_str()) {
                None => Err(okta_json_error(
                    StatusCode::NOT_FOUND,
                    "E0000007",
                    &format!("Not found: Resource not found: {id} (EventHook)"),
                    "",
                )),
                Some(hook) => Ok((
                    hook["channel"]["config"]["uri"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    state.hook_auth.get(&id).cloned().unwrap_or(Value::Null),
                )),
            },
        }
    };
    let answer: Answer = match target {
        Err(answer) => answer,
        Ok((hook_uri, scheme)) => {
            let challenge = random_token();
            let call = reqwest::Client::new()
                .get(&hook_uri)
                .timeout(Duration::from_secs(3))
                .header("x-okta-verification-challenge", &challenge)
                .header(
                    scheme["key"].as_str().unwrap_or("authorization"),
                    scheme["value"].as_str().unwrap_or_default(),
                )
                .send()
                .await;
            let echoed = match call {
                Ok(response) if response.status() == StatusCode::OK => response
                    .json::<Value>()
                    .await
                    .ok()
                    .is_some_and(|v| v["verification"] == challenge.as_str()),
                _ => false,
            };
            let mut state = shared.state.lock().unwrap();
            if echoed {
                let hook = state
                    .hooks
                    .iter_mut()
                    .find(|h| h["id"] == id.as_str())
                    .unwrap();
                hook["verificationStatus"] = json!("VERIFIED");
                (StatusCode::OK, hook.clone(), None)
            } else {
                okta_json_error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: Verification failed",
                    "The event hook did not answer the verification challenge",
                )
            }
        }
    };
    record(&shared, arrived, &uri, headers, None, &answer);
    respond(&shared, answer)
}

/// A Users API answer: the JSON body and the `link` header values.
type UsersOut = (Value, Vec<String>);

/// Parses `lastUpdated gt "t" [and lastUpdated lt "t" ...]`: (operator, time) clauses.
fn parse_user_search(search: &str) -> Result<Vec<(String, DateTime<Utc>)>, String> {
    let mut clauses = Vec::new();
    for clause in search.split(" and ") {
        let mut parts = clause.trim().splitn(3, ' ');
        let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("cannot parse {clause:?}"));
        };
        if attr != "lastUpdated" {
            return Err(format!("the fake searches lastUpdated only, not {attr}"));
        }
        let op = op.to_ascii_lowercase();
        if !matches!(op.as_str(), "gt" | "ge" | "lt") {
            return Err(format!("unsupported operator {op}"));
        }
        let time = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .ok_or("the time must be a quoted ISO 8601 time")?
            .with_timezone(&Utc);
        clauses.push((op, time));
    }
    Ok(clauses)
}

/// The page of users a list query gets, or a refusal.
fn decide_users(
    state: &FakeState,
    base: &str,
    query: &[(String, String)],
) -> Result<UsersOut, Refusal> {
    let bad = |summary: &str| {
        let (status, body) = okta_error(StatusCode::BAD_REQUEST, "E0000031", summary);
        (status, body, summary.to_owned())
    };
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let limit: usize = match param("limit") {
        None => 200,
        Some(l) => match l.parse() {
            Ok(l) if (1..=200).contains(&l) => l,
            _ => return Err(bad("limit must be 1..=200")),
        },
    };
    let search = match param("search") {
        None => Vec::new(),
        Some(s) => parse_user_search(&s).map_err(|e| bad(&format!("Invalid search: {e}")))?,
    };
    let start = match param("after") {
        None => 0,
        Some(after) => after
            .strip_prefix("c")
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| bad("after is not a cursor of this list"))?,
    };
    let matches = |user: &Value| {
        let Some(updated) = user["lastUpdated"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            return false;
        };
        search.iter().all(|(op, time)| match op.as_str() {
            "gt" => updated > *time,
            "ge" => updated >= *time,
            _ => updated < *time,
        })
    };
    let mut users = Vec::new();
    let mut position = start.min(state.users.len());
    while position < state.users.len() && users.len() < limit {
        if matches(&state.users[position]) {
            users.push(state.users[position].clone());
        }
        position += 1;
    }
    let raw: String = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut links = vec![format!("<{base}/api/v1/users?{raw}>; rel=\"self\"")];
    let more = state.users[position..].iter().any(matches);
    if more {
        let mut next = format!("limit={limit}&after=c{position}");
        if let Some(s) = param("search") {
            next.push_str(&format!("&search={}", percent_encode(&s)));
        }
        links.push(format!("<{base}/api/v1/users?{next}>; rel=\"next\""));
    }
    Ok((Value::Array(users), links))
}

/// Serves one Users API request: auth, outage, bucket, injections, then `decide`.
async fn users_request(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    decide: impl FnOnce(&FakeState) -> Result<UsersOut, Refusal>,
) -> Response {
    let arrived = std::time::Instant::now();
    let injection = shared.state.lock().unwrap().users_injections.pop_front();
    if let Some(Inject::Delay(delay)) = &injection {
        tokio::time::sleep(*delay).await;
    }
    let mut state = shared.state.lock().unwrap();
    let now = Utc::now() + state.skew;
    state.counter += 1;
    let request_id = format!("req-{}", state.counter);
    let mut extra: Vec<(String, String)> = Vec::new();
    let mut rate_reset = None;
    let outcome: Result<UsersOut, Refusal> = (|| {
        if state.users_down {
            let (s, b) = okta_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "E0000009",
                "Service Unavailable",
            );
            return Err((s, b, "users API down".to_owned()));
        }
        check_api_call(
            &mut state,
            &shared.base,
            &headers,
            "GET",
            uri.path(),
            "okta.users.read",
            now,
        )?;
        if let Some(bucket) = state.users_bucket.as_mut() {
            if bucket.reset.is_some_and(|reset| now.timestamp() >= reset) {
                bucket.reset = None;
                bucket.used = 0;
            }
            let reset = *bucket.reset.get_or_insert_with(|| {
                (now + chrono::Duration::from_std(bucket.window).unwrap()).timestamp() + 1
            });
            bucket.used += 1;
            rate_reset = Some(reset);
            extra.push(("x-rate-limit-limit".into(), bucket.limit.to_string()));
            extra.push((
                "x-rate-limit-remaining".into(),
                bucket.limit.saturating_sub(bucket.used).to_string(),
            ));
            extra.push(("x-rate-limit-reset".into(), reset.to_string()));
            if bucket.used > bucket.limit {
                let (s, b) = okta_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                );
                return Err((s, b, "bucket exhausted".to_owned()));
            }
        }
        match &injection {
            Some(Inject::Status(code)) => {
                let (_, b) = okta_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "E0000009",
                    "Internal Server Error",
                );
                return Err((
                    StatusCode::from_u16(*code).unwrap(),
                    b,
                    "injected".to_owned(),
                ));
            }
            Some(Inject::RateLimited(reset_in)) => {
                let reset = (now + chrono::Duration::from_std(*reset_in).unwrap()).timestamp() + 1;
                rate_reset = Some(reset);
                extra.retain(|(k, _)| !k.starts_with("x-rate-limit"));
                extra.push(("x-rate-limit-limit".into(), "600".into()));
                extra.push(("x-rate-limit-remaining".into(), "0".into()));
                extra.push(("x-rate-limit-reset".into(), reset.to_string()));
                let (s, b) = okta_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                );
                return Err((s, b, "injected 429".to_owned()));
            }
            _ => {}
        }
        decide(&state)
    })();
    let (status, body, links, error) = match outcome {
        Ok((body, links)) => (StatusCode::OK, body.to_string(), links, None),
        Err((status, body, reason)) => (status, body, Vec::new(), Some(reason)),
    };
    state.requests.push(Recorded {
        at: arrived,
        server_time: now,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        form: HashMap::new(),
        body: None,
        status: status.as_u16(),
        request_id: request_id.clone(),
        rate_reset,
        error,
        next_link: links
            .iter()
            .find(|l| l.ends_with("rel=\"next\""))
            .and_then(|l| l.strip_prefix('<'))
            .and_then(|l| l.split_once('>'))
            .map(|(url, _)| url.to_owned()),
    });
    let dpop_nonce =
        matches!(state.auth, FakeAuth::ServiceApp { dpop: true, .. }).then(|| state.nonce.clone());
    drop(state);
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    let h = response.headers_mut();
    h.insert(
        "x-okta-request-id",
        HeaderValue::from_str(&request_id).unwrap(),
    );
    h.insert("date", http_date(now));
    if let Some(nonce) = dpop_nonce {
        h.insert("dpop-nonce", HeaderValue::from_str(&nonce).unwrap());
    }
    for (name, value) in extra {
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    for link in links {
        h.append("link", HeaderValue::from_str(&link).unwrap());
    }
    response
}

/// `GET /api/v1/users`.
async fn list_users(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query = form_decode(uri.query().unwrap_or(""));
    let base = shared.base.clone();
    users_request(shared, method, uri, headers, move |state| {
        decide_users(state, &base, &query)
    })
    .await
}

/// `GET /api/v1/users/{id}` (an id or a login).
async fn get_user(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    users_request(shared, method, uri, headers, move |state| {
        state
            .users
            .iter()
            .find(|u| u["id"] == id.as_str() || u["profile"]["login"] == id.as_str())
            .map(|u| (u.clone(), Vec::new()))
            .ok_or_else(|| {
                let (s, b) = okta_error(
                    StatusCode::NOT_FOUND,
                    "E0000007",
                    &format!("Not found: Resource not found: {id} (User)"),
                );
                (s, b, "no such user".to_owned())
            })
    })
    .await
}
