//! The Okta Event Hook endpoint, `/okta/hook`.
//!
//! `GET` answers Okta's one-time verification challenge; `POST` takes a delivery, maps every
//! event, and answers 204 only after the whole delivery is durably committed. Okta retries a
//! delivery once after a timeout or a 5xx and never after a 4xx, so a commit failure is a 503
//! (the retry happens) and only a request that can never succeed gets a 4xx. A body may be
//! gzip-encoded; the size limit applies to the decompressed body.

pub mod auth;
mod body;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};

pub use auth::HookAuth;

use crate::error::{ApiError, Code};
use crate::ingest::{self, BodyError, Ingested};
use crate::journal::SharedJournal;
use crate::mapping::{self, Delivery};
use crate::proto;
use crate::telemetry::{IngestPath, Metrics, RejectReason};

/// The path Okta posts to.
pub const HOOK_PATH: &str = "/okta/hook";

/// The header of Okta's verification request.
pub const VERIFICATION_HEADER: &str = "x-okta-verification-challenge";

/// What the hook endpoint needs.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Who may call.
    pub auth: HookAuth,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Largest stored record; a larger event is quarantined.
    pub max_event_bytes: usize,
    /// Where deliveries are committed.
    pub journal: SharedJournal,
    /// Where outcomes are counted.
    pub metrics: Arc<Metrics>,
}

/// The routes of the hook endpoint.
pub fn router(hook: Arc<Hook>) -> Router {
    Router::new()
        .route(HOOK_PATH, get(verify).post(deliver))
        .with_state(hook)
}

/// A rejected hook request: counted, logged with its reason, answered with its status.
fn reject(hook: &Hook, reason: RejectReason, error: ApiError) -> Response {
    hook.metrics.record_rejection(reason);
    tracing::warn!(?reason, message = %error.message, "hook request rejected");
    error.into_response()
}

fn unauthorized(hook: &Hook) -> Response {
    let message = format!(
        "missing or wrong secret in the `{}` header",
        hook.auth.header()
    );
    reject(
        hook,
        RejectReason::Unauthorized,
        ApiError::new(Code::Unauthenticated, message),
    )
}

/// `GET /okta/hook`: Okta's one-time verification. Authenticated like deliveries.
async fn verify(State(hook): State<Arc<Hook>>, headers: HeaderMap) -> Response {
    if !hook.auth.allows(&headers) {
        return unauthorized(&hook);
    }
    match headers.get(VERIFICATION_HEADER).map(|v| v.to_str()) {
        Some(Ok(challenge)) => {
            axum::Json(serde_json::json!({ "verification": challenge })).into_response()
        }
        Some(Err(_)) => reject(
            &hook,
            RejectReason::BadRequest,
            ApiError::invalid(VERIFICATION_HEADER, "is not visible ASCII"),
        ),
        None => reject(
            &hook,
            RejectReason::BadRequest,
            ApiError::invalid(
                VERIFICATION_HEADER,
                "header is missing (Okta sends it on verification)",
            ),
        ),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence
                .get(essence.len() - 5..)
                .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// `POST /okta/hook`: one delivery, committed whole before the answer.
async fn deliver(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    if !hook.auth.allows(&headers) {
        return unauthorized(&hook);
    }
    if !is_json(&headers) {
        return reject(
            &hook,
            RejectReason::UnsupportedMediaType,
            ApiError::new(
                Code::UnsupportedMediaType,
                "Content-Type must be application/json",
            ),
        );
    }
    let gzipped = match body::content_encoding(&headers) {
        Ok(gzipped) => gzipped,
        Err(error) => return reject(&hook, RejectReason::UnsupportedMediaType, error),
    };
    let body = match body::read(body, gzipped, hook.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => {
            let reason = match error.code {
                Code::PayloadTooLarge => RejectReason::TooLarge,
                _ => RejectReason::BadRequest,
            };
            return reject(&hook, reason, error);
        }
    };
    let received = chrono::Utc::now();
    let delivery = Delivery {
        headers: mapping::redact_headers(&headers, hook.auth.header().as_str()),
        ingest_source: proto::IngestSource::Hook,
        received: Some(timestamp(received)),
        ..Delivery::default()
    };
    let ingested = async {
        let body = ingest::map_body(body, delivery, received, hook.max_event_bytes).await?;
        let ingested = ingest::append(hook.journal.as_ref(), body.mapped, None).await?;
        Ok::<_, BodyError>((body.event_id, ingested))
    };
    match ingested.await {
        Ok((
            event_id,
            Ingested {
                appended,
                quarantined,
            },
        )) => {
            hook.metrics.record_append(
                IngestPath::Hook,
                appended.committed.len(),
                appended.duplicates,
                quarantined,
            );
            hook.metrics
                .hook_ack_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(
                %event_id,
                stored = appended.committed.len(),
                duplicates = appended.duplicates,
                quarantined,
                "delivery committed"
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(BodyError::Envelope(error)) => reject(
            &hook,
            RejectReason::BadRequest,
            ApiError::new(Code::InvalidArgument, error.to_string()),
        ),
        Err(BodyError::Ingest(error)) => {
            reject(&hook, RejectReason::Unavailable, ApiError::from(error))
        }
    }
}
