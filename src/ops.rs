//! What operators see: `/healthz` (alive), `/readyz` (ready to take events), `/metrics`
//! (Prometheus text), and `grpc.health.v1`, all from one [`Health`] state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{StatusCode, header};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;

use crate::journal::SharedJournal;
use crate::telemetry::Metrics;

/// How often the journal is checked and the journal gauges refreshed.
const JOURNAL_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The gRPC service name health reports for.
pub const EVENT_STREAM_SERVICE: &str = "okta.events.v1.EventStream";

/// Readiness as one state behind HTTP and gRPC health.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: HealthServer<tonic_health::server::HealthService>,
    state: Arc<HealthState>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.state.ready())
            .finish()
    }
}

#[derive(Debug)]
struct HealthState {
    serving: AtomicBool,
    journal_ok: AtomicBool,
    poller_ok: AtomicBool,
}

impl HealthState {
    fn ready(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
            && self.journal_ok.load(Ordering::Relaxed)
            && self.poller_ok.load(Ordering::Relaxed)
    }
}

impl Health {
    /// Starts NOT_SERVING until [`Health::set_serving`].
    pub async fn new() -> Self {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(tonic_health::server::HealthService::from_health_reporter(
            reporter.clone(),
        ));
        let health = Self {
            reporter,
            service,
            state: Arc::new(HealthState {
                serving: AtomicBool::new(false),
                journal_ok: AtomicBool::new(true),
                poller_ok: AtomicBool::new(true),
            }),
        };
        health.publish().await;
        health
    }

    /// The `grpc.health.v1` service.
    pub fn service(&self) -> HealthServer<tonic_health::server::HealthService> {
        self.service.clone()
    }

    /// Whether `/readyz` says ready.
    pub fn ready(&self) -> bool {
        self.state.ready()
    }

    /// Serving (after start) or not (during shutdown).
    pub async fn set_serving(&self, serving: bool) {
        self.state.serving.store(serving, Ordering::Relaxed);
        self.publish().await;
    }

    /// Whether the journal can commit.
    pub async fn set_journal_ok(&self, ok: bool) {
        if self.state.journal_ok.swap(ok, Ordering::Relaxed) != ok {
            self.publish().await;
        }
    }

    /// Whether the poller (when enabled) has succeeded recently.
    pub async fn set_poller_ok(&self, ok: bool) {
        if self.state.poller_ok.swap(ok, Ordering::Relaxed) != ok {
            self.publish().await;
        }
    }

    async fn publish(&self) {
        let status = if self.ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(EVENT_STREAM_SERVICE, status)
            .await;
    }
}

/// What the ops routes read.
#[derive(Debug, Clone)]
pub struct Ops {
    /// For head/oldest gauges.
    pub journal: SharedJournal,
    /// Rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Behind `/readyz`.
    pub health: Health,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(ops))
}

async fn readyz(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    if ops.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.metrics.render(),
    )
}

/// Checks the journal periodically: health follows whether it can commit, and the journal
/// gauges follow its bounds. Runs until `shutdown`.
pub async fn watch_journal(
    journal: SharedJournal,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(JOURNAL_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match journal.check().await {
            Ok(()) => health.set_journal_ok(true).await,
            Err(error) => {
                tracing::error!(%error, "journal check failed");
                health.set_journal_ok(false).await;
            }
        }
        // Both read before either is set, and the head set last: a scrape that sees the new
        // head sees the size and oldest cursor of the same moment, not the previous tick's.
        let bounds = journal.bounds().await;
        let bytes = journal.stored_bytes().await;
        if let Ok(Some(bytes)) = bytes {
            metrics.journal_bytes.set(bytes);
        }
        if let Ok(bounds) = bounds {
            metrics.journal_oldest.set(bounds.oldest.unwrap_or(0));
            metrics.journal_head.set(bounds.head);
        }
    }
}
