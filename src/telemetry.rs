//! Telemetry: `tracing` initialisation and the Prometheus metrics every part records.
//!
//! One [`Metrics`] value owns the registry; parts hold an `Arc<Metrics>` and record with
//! structured labels, or register their own metrics in it ([`Metrics::registry`]). `/metrics` renders it as Prometheus text.

use std::sync::atomic::AtomicU64;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Log output format, chosen by `OKTA_STREAM_LOG_FORMAT`. Declared here, below the
/// configuration, so telemetry knows no other module of the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber: human lines or JSON, filtered by `RUST_LOG`
/// (default `info`). Logs go to stderr; stdout is kept for the `listening ...` lines.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is not an error worth failing for.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The path an event came in by, as a metric label (`hook`, `poller`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngestPath {
    /// The Okta Event Hook.
    Hook,
    /// The System Log poller.
    Poller,
}

/// Label set `{path}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// Ingest path.
    pub path: IngestPath,
}

/// Why a hook request was rejected, as a metric label (`unauthorized`, `too_large`, ...).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// Missing or wrong secret (401).
    Unauthorized,
    /// Body too large (413).
    TooLarge,
    /// Not JSON content type (415).
    UnsupportedMediaType,
    /// Not a hook envelope (400).
    BadRequest,
    /// The journal could not commit (503).
    Unavailable,
}

impl EncodeLabelValue for IngestPath {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            IngestPath::Hook => "hook",
            IngestPath::Poller => "poller",
        })
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::BadRequest => "bad_request",
            RejectReason::Unavailable => "unavailable",
        })
    }
}

/// Label set `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: RejectReason,
}

/// Every metric of the service.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events newly stored, by path.
    pub events_ingested: Family<PathLabels, Counter>,
    /// Events dropped because their uuid was already stored, by path.
    pub duplicates_dropped: Family<PathLabels, Counter>,
    /// Events that could not be mapped and were quarantined, by path.
    pub events_quarantined: Family<PathLabels, Counter>,
    /// Hook requests rejected, by reason.
    pub hook_rejected: Family<ReasonLabels, Counter>,
    /// Seconds from receiving a hook delivery to acknowledging it (after the commit).
    pub hook_ack_seconds: Histogram,
    /// Newest cursor in the journal.
    pub journal_head: Gauge<u64, AtomicU64>,
    /// Oldest retained cursor (0 when empty).
    pub journal_oldest: Gauge<u64, AtomicU64>,
    /// Approximate bytes of the retained events.
    pub journal_bytes: Gauge<u64, AtomicU64>,
    /// Subscribe streams open now.
    pub subscribers: Gauge,
    /// Per-subscriber lag (head minus delivered cursor), sampled at each delivered event.
    pub subscriber_lag: Histogram,
    /// Subscribers ended because they fell too far behind.
    pub slow_consumer_disconnects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("okta_stream");
        let events_ingested = Family::<PathLabels, Counter>::default();
        registry.register(
            "events_ingested",
            "Events newly stored, by ingest path",
            events_ingested.clone(),
        );
        let duplicates_dropped = Family::<PathLabels, Counter>::default();
        registry.register(
            "duplicates_dropped",
            "Events dropped because their LogEvent uuid was already stored",
            duplicates_dropped.clone(),
        );
        let events_quarantined = Family::<PathLabels, Counter>::default();
        registry.register(
            "events_quarantined",
            "Events that could not be mapped, kept in quarantine",
            events_quarantined.clone(),
        );
        let hook_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "hook_rejected",
            "Hook requests rejected, by reason",
            hook_rejected.clone(),
        );
        let hook_ack_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "hook_ack_seconds",
            "Seconds from receiving a hook delivery to acknowledging it after the durable commit",
            hook_ack_seconds.clone(),
        );
        let journal_head = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "journal_head_cursor",
            "Newest cursor in the journal",
            journal_head.clone(),
        );
        let journal_oldest = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "journal_oldest_cursor",
            "Oldest retained cursor (0 when empty)",
            journal_oldest.clone(),
        );
        let journal_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "journal_size_bytes",
            "Approximate bytes of the retained events",
            journal_bytes.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "subscribers",
            "Subscribe streams open now",
            subscribers.clone(),
        );
        let subscriber_lag = Histogram::new(exponential_buckets(1.0, 4.0, 12));
        registry.register(
            "subscriber_lag_events",
            "Head cursor minus the cursor just delivered, per delivered event",
            subscriber_lag.clone(),
        );
        let slow_consumer_disconnects = Counter::default();
        registry.register(
            "slow_consumer_disconnects",
            "Subscribers ended because they fell further behind than allowed",
            slow_consumer_disconnects.clone(),
        );
        Self {
            registry,
            events_ingested,
            duplicates_dropped,
            events_quarantined,
            hook_rejected,
            hook_ack_seconds,
            journal_head,
            journal_oldest,
            journal_bytes,
            subscribers,
            subscriber_lag,
            slow_consumer_disconnects,
        }
    }

    /// The one registry `/metrics` renders, for a part to register its own metrics in (the
    /// poller's, for one); telemetry knows none of the parts.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Renders every metric as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records what one append did.
    pub fn record_append(
        &self,
        path: IngestPath,
        stored: usize,
        duplicates: usize,
        quarantined: usize,
    ) {
        let labels = PathLabels { path };
        self.events_ingested
            .get_or_create(&labels)
            .inc_by(stored as u64);
        self.duplicates_dropped
            .get_or_create(&labels)
            .inc_by(duplicates as u64);
        self.events_quarantined
            .get_or_create(&labels)
            .inc_by(quarantined as u64);
    }

    /// Records a rejected hook request.
    pub fn record_rejection(&self, reason: RejectReason) {
        self.hook_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
