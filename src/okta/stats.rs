//! What a poller has done, as Prometheus metrics in the service's one registry, plus its
//! health for readiness.
//!
//! The counters are `prometheus-client` metrics: the poller (and the token minting of its
//! credentials) increment them, [`PollerStats::register`] adds them to the registry that
//! `/metrics` renders, and [`PollerStats::snapshot`] reads them back for readiness and tests.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the poller is doing, for health and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollerHealth {
    /// No page fetched yet.
    Starting,
    /// The last request succeeded.
    Polling,
    /// Waiting for a rate-limit window to reset.
    RateLimited,
    /// Backing off after a 5xx, timeout or transport error.
    BackingOff,
    /// Okta refused the credentials or the request (401/403/4xx); retried slowly.
    Refused,
}

impl fmt::Display for PollerHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Polling => "polling",
            Self::RateLimited => "rate_limited",
            Self::BackingOff => "backing_off",
            Self::Refused => "refused",
        })
    }
}

/// Live counters of a poller, shared with the app for metrics and readiness. Never holds a
/// secret: errors are stored by their `Display`, which carries none.
#[derive(Debug)]
pub struct PollerStats {
    pub(super) pages: Counter,
    pub(super) events_received: Counter,
    pub(super) events_committed: Counter,
    pub(super) duplicates: Counter,
    pub(super) hook_misses: Counter,
    pub(super) quarantined: Counter,
    pub(super) rate_limited: Counter,
    pub(super) failures: Counter,
    pub(super) refusals: Counter,
    token_refreshes: Counter,
    token_failures: Counter,
    /// Last `X-Rate-Limit-Remaining`; −1 when unknown.
    rate_limit_remaining: Gauge<i64, AtomicI64>,
    /// Unix seconds of the last successful page; 0 before the first.
    last_success_seconds: Gauge<i64, AtomicI64>,
    status: Mutex<(PollerHealth, Option<String>)>,
}

impl Default for PollerStats {
    fn default() -> Self {
        let rate_limit_remaining = Gauge::default();
        rate_limit_remaining.set(-1);
        Self {
            pages: Counter::default(),
            events_received: Counter::default(),
            events_committed: Counter::default(),
            duplicates: Counter::default(),
            hook_misses: Counter::default(),
            quarantined: Counter::default(),
            rate_limited: Counter::default(),
            failures: Counter::default(),
            refusals: Counter::default(),
            token_refreshes: Counter::default(),
            token_failures: Counter::default(),
            rate_limit_remaining,
            last_success_seconds: Gauge::default(),
            status: Mutex::new((PollerHealth::Starting, None)),
        }
    }
}

/// A point-in-time copy of [`PollerStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerSnapshot {
    /// Pages fetched successfully.
    pub pages: u64,
    /// LogEvents received in those pages.
    pub events_received: u64,
    /// Events the poller newly committed to the journal.
    pub events_committed: u64,
    /// Events the journal already held (from the hook, or a page re-read after a crash).
    pub duplicates: u64,
    /// With a hook configured: events the poller committed that the hook had not delivered.
    pub hook_misses: u64,
    /// Events that did not map and went to quarantine.
    pub quarantined: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 5xx, timeouts, transport and bad-response failures.
    pub failures: u64,
    /// 401/403/other 4xx answers, token endpoint refusals included.
    pub refusals: u64,
    /// Access tokens minted.
    pub token_refreshes: u64,
    /// Failed token requests.
    pub token_failures: u64,
    /// Last `X-Rate-Limit-Remaining`, if Okta sent one.
    pub rate_limit_remaining: Option<u64>,
    /// Time of the last successful page.
    pub last_success: Option<DateTime<Utc>>,
    /// What the poller is doing.
    pub health: PollerHealth,
    /// The last error, as displayed (no secrets).
    pub last_error: Option<String>,
}

impl PollerStats {
    /// Adds every poller metric to `registry` (names `poller_*`, as `/metrics` has always shown
    /// them). The metrics are shared: what the poller records afterwards is what is rendered.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            ("poller_pages", "System Log pages fetched", &self.pages),
            (
                "poller_events_received",
                "LogEvents received from the System Log",
                &self.events_received,
            ),
            (
                "poller_events_committed",
                "Events the poller newly stored",
                &self.events_committed,
            ),
            (
                "poller_duplicates",
                "Polled events already stored (by the hook or a re-read page)",
                &self.duplicates,
            ),
            (
                "poller_hook_misses",
                "Events the poller stored that the hook had not delivered",
                &self.hook_misses,
            ),
            (
                "poller_quarantined",
                "Polled events that could not be mapped",
                &self.quarantined,
            ),
            (
                "poller_rate_limited",
                "HTTP 429 answers from Okta",
                &self.rate_limited,
            ),
            (
                "poller_failures",
                "5xx, timeouts and transport failures",
                &self.failures,
            ),
            (
                "poller_refusals",
                "401/403/4xx answers (credentials or request refused)",
                &self.refusals,
            ),
            (
                "poller_token_refreshes",
                "OAuth access tokens minted",
                &self.token_refreshes,
            ),
            (
                "poller_token_failures",
                "Failed OAuth token requests",
                &self.token_failures,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "poller_rate_limit_remaining",
            "Last X-Rate-Limit-Remaining from Okta (-1 before the first answer)",
            self.rate_limit_remaining.clone(),
        );
        registry.register(
            "poller_last_success_timestamp_seconds",
            "Unix time of the last successful System Log page (0 before the first)",
            self.last_success_seconds.clone(),
        );
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> PollerSnapshot {
        let (health, last_error) = self
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or((PollerHealth::Starting, None));
        let last_seconds = self.last_success_seconds.get();
        PollerSnapshot {
            pages: self.pages.get(),
            events_received: self.events_received.get(),
            events_committed: self.events_committed.get(),
            duplicates: self.duplicates.get(),
            hook_misses: self.hook_misses.get(),
            quarantined: self.quarantined.get(),
            rate_limited: self.rate_limited.get(),
            failures: self.failures.get(),
            refusals: self.refusals.get(),
            token_refreshes: self.token_refreshes.get(),
            token_failures: self.token_failures.get(),
            rate_limit_remaining: u64::try_from(self.rate_limit_remaining.get()).ok(),
            last_success: (last_seconds > 0)
                .then(|| DateTime::from_timestamp(last_seconds, 0))
                .flatten(),
            health,
            last_error,
        }
    }

    pub(super) fn token_refreshed(&self) {
        self.token_refreshes.inc();
    }

    pub(super) fn token_failed(&self) {
        self.token_failures.inc();
    }

    pub(super) fn set_status(&self, health: PollerHealth, error: Option<String>) {
        if let Ok(mut status) = self.status.lock() {
            status.0 = health;
            if error.is_some() || health == PollerHealth::Polling {
                status.1 = error;
            }
        }
    }

    /// Records Okta's last `X-Rate-Limit-Remaining`, when it sent one.
    pub(super) fn observe_rate_remaining(&self, remaining: Option<u64>) {
        if let Some(remaining) = remaining {
            self.rate_limit_remaining
                .set(i64::try_from(remaining).unwrap_or(i64::MAX));
        }
    }

    /// Records a successful page at `now`.
    pub(super) fn observe_success(&self, now: DateTime<Utc>) {
        self.last_success_seconds.set(now.timestamp());
        self.set_status(PollerHealth::Polling, None);
    }
}
