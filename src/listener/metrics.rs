//! The listeners' metrics (registered by their owner into the one registry) and a limiter that
//! keeps a flood of refused connections from flooding the log too.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set `{listener}` (`hook`, `admin`, `grpc`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ListenerLabels {
    /// Which listener.
    pub listener: &'static str,
}

/// Why the server closed a connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// No complete first request (or TLS handshake) within the header read timeout.
    HeaderTimeout,
    /// A request body not received within the body read timeout.
    BodyTimeout,
    /// No request in flight for the idle timeout.
    IdleTimeout,
    /// The TLS handshake failed (no or a wrong client certificate, not TLS at all).
    TlsHandshake,
}

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TlsHandshake => "tls_handshake",
        })
    }
}

/// Label set `{listener, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClosedLabels {
    /// Which listener.
    pub listener: &'static str,
    /// Why it was closed.
    pub reason: CloseReason,
}

/// Label set `{result}` (`ok`, `error`) of TLS reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReloadLabels {
    /// How the reload went.
    pub result: &'static str,
}

/// Connection counts of every listener, and the gRPC TLS reloads.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub(super) open: Family<ListenerLabels, Gauge>,
    /// Connections accepted (within the cap).
    pub(super) accepted: Family<ListenerLabels, Counter>,
    /// Connections closed at once because the cap was reached.
    pub(super) refused: Family<ListenerLabels, Counter>,
    /// `accept` failures (out of file descriptors, ...).
    pub(super) accept_errors: Family<ListenerLabels, Counter>,
    /// Connections the server closed, by reason.
    pub(super) closed: Family<ClosedLabels, Counter>,
    /// Re-reads of the gRPC TLS files, by result.
    pub(super) tls_reloads: Family<ReloadLabels, Counter>,
}

impl ListenerMetrics {
    /// New metrics, registered in `registry` (the one `/metrics` renders).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "listener_connections_open",
            "Connections open, by listener",
            metrics.open.clone(),
        );
        registry.register(
            "listener_connections_accepted",
            "Connections accepted, by listener",
            metrics.accepted.clone(),
        );
        registry.register(
            "listener_connections_refused",
            "Connections closed at once because the listener had its maximum open",
            metrics.refused.clone(),
        );
        registry.register(
            "listener_accept_errors",
            "Failed accepts (out of file descriptors, ...), by listener",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "listener_connections_closed",
            "Connections the server closed, by listener and reason (timeouts, failed TLS handshakes)",
            metrics.closed.clone(),
        );
        registry.register(
            "grpc_tls_reloads",
            "Re-reads of the gRPC TLS files after a change or SIGHUP, by result",
            metrics.tls_reloads.clone(),
        );
        metrics
    }

    pub(super) fn close(&self, listener: &'static str, reason: CloseReason) {
        self.closed
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }
}

/// Lets a repeated warning through at most once per interval, counting the ones held back.
#[derive(Debug)]
pub(super) struct LogLimiter {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl LogLimiter {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were held back
    /// since the last one logged; `None` when it should not.
    pub(super) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().ok()?;
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_lets_one_through_per_interval_and_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        let open = LogLimiter::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
        assert_eq!(limiter.held_back.load(Ordering::Relaxed), 2);
    }
}
