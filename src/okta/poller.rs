//! The System Log poller: every event, exactly once, across restarts, within Okta's limits.
//!
//! The loop follows SPEC.md B.2: resume from the `next` URL stored in the journal (or start
//! with `since` = now − look-back), fetch a page, map its events, and append them together with
//! the page's `rel="next"` URL in **one** journal transaction, so a crash re-reads at most one
//! page and the journal's uuid dedupe absorbs it. One request is in flight at a time; a full page
//! is followed at once, a short page waits the poll interval. Requests are spaced to stay within
//! a share of the rate limit; a 429 waits until the reset by the server's clock; 5xx and timeouts
//! back off exponentially; refused credentials are retried slowly, never in a hot loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientError, Page, RateLimit, RetryOf, pacing_delay};
use super::org::{ConfigError, origin};
use super::settings::{PollerConfig, StartFrom};
use super::stats::{PollerHealth, PollerStats};
use crate::ingest::{self, IngestError, Ingested};
use crate::journal::{JournalError, SharedJournal, StateWrite};
use crate::mapping::Delivery;
use crate::proto;

/// Journal state key of the stored `rel="next"` URL.
pub const NEXT_URL_STATE_KEY: &str = "poller.next_url";
/// Wait after a 429 without usable `X-Rate-Limit-Reset`/`Date`: one full rate-limit window.
const RATE_LIMIT_FALLBACK_WAIT: Duration = Duration::from_secs(60);
/// Upper bound of the random jitter added after a 429.
const RATE_LIMIT_JITTER: Duration = Duration::from_millis(1000);

/// Why the poller stopped. Okta errors never stop it; only the journal does.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    /// The journal failed to read state or to commit a page.
    #[error("poller cannot use the journal: {0}")]
    Journal(#[from] JournalError),
    /// The runtime shut down while a page was being mapped; nothing of the page was committed.
    #[error("the runtime shut down while the poller was mapping a page")]
    MappingCancelled,
}

impl From<IngestError> for PollerError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Journal(error) => Self::Journal(error),
            IngestError::Cancelled => Self::MappingCancelled,
        }
    }
}

/// The outcome of one request, with the times that pacing and back-off count from.
struct Fetched {
    /// When the request was sent: rate-limit pacing spaces request starts.
    started: Instant,
    /// When its answer (or failure) arrived: back-off and 429 waits count from here.
    answered: Instant,
    /// The page, mapped, or why there is none.
    result: Result<MappedPage, ClientError>,
}

/// A page whose events are mapped and encoded, ready to be appended with its `next` URL.
struct MappedPage {
    /// The events that mapped, and those quarantined.
    batch: ingest::Mapped,
    /// How many LogEvents the page held.
    received: usize,
    /// The page's `rel="next"` URL.
    next: Option<Url>,
    /// The page's rate-limit headers.
    rate: RateLimit,
    /// The server's `Date` of the page.
    server_date: Option<DateTime<Utc>>,
    /// When the page was mapped (the events' `received` time).
    now: DateTime<Utc>,
}

/// The System Log poller of one org. Build with [`Poller::new`], run with [`Poller::run`].
#[derive(Debug)]
pub struct Poller {
    client: Client,
    journal: SharedJournal,
    config: PollerConfig,
    source: String,
    stats: Arc<PollerStats>,
}

impl Poller {
    /// Checks `config` and prepares the client; no request is sent yet.
    pub fn new(config: PollerConfig, journal: SharedJournal) -> Result<Self, ConfigError> {
        Self::with_stats(config, journal, Arc::new(PollerStats::default()))
    }

    /// Like [`Poller::new`], counting into `stats`: the app keeps one set of counters across
    /// the pollers it runs (a new one each time this replica gains the poller lease).
    pub fn with_stats(
        config: PollerConfig,
        journal: SharedJournal,
        stats: Arc<PollerStats>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let client = Client::new(&config, stats.clone())?;
        let source = origin(client.org());
        Ok(Self {
            client,
            journal,
            config,
            source,
            stats,
        })
    }

    /// The poller's counters; keep a clone for metrics and readiness before calling `run`.
    pub fn stats(&self) -> Arc<PollerStats> {
        self.stats.clone()
    }

    /// Polls until `shutdown` is cancelled (returns `Ok`) or the journal fails (returns the
    /// error). A page being committed when shutdown comes is committed first.
    ///
    /// After a full page the next one is fetched and mapped while this one is committed (its
    /// `next` URL is known once it has arrived): still one request in flight, and page N+1 is
    /// committed only after page N's commit succeeded, each with its own `next` URL, so a crash
    /// still re-reads at most one page. A short page is not followed at once: the poll interval
    /// passes first, as without the overlap.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PollerError> {
        let mut url = self.resume_url().await?;
        let mut retry: Option<RetryOf> = None;
        let mut failures: u32 = 0;
        let mut wait = Duration::ZERO;
        // The answer to `url`, when it was fetched while the previous page was committed.
        let mut prefetched: Option<Fetched> = None;
        loop {
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                None => match self
                    .fetch_after(wait, &url, retry.as_ref(), &shutdown)
                    .await?
                {
                    Some(fetched) => fetched,
                    None => return Ok(()),
                },
            };
            let Fetched {
                started,
                answered,
                result,
            } = fetched;
            match result {
                Ok(page) => {
                    retry = None;
                    failures = 0;
                    let full = page.received >= self.client.limit() as usize;
                    let pace =
                        pacing_delay(&page.rate, self.config.rate_limit_share, page.server_date);
                    let follow = if full { page.next.clone() } else { None };
                    let Some(next) = follow else {
                        if let Some(next) = self.commit(page, &url).await? {
                            url = next;
                        }
                        let after_page = if full {
                            Duration::ZERO
                        } else {
                            self.config.poll_interval
                        };
                        wait = after_page.max(pace.saturating_sub(started.elapsed()));
                        continue;
                    };
                    // A full page with a next URL: fetch and map that while this page is
                    // committed, no earlier than the rate-limit pacing allows.
                    let Some(fetched) = self
                        .commit_and_prefetch(page, &url, &next, started + pace, &shutdown)
                        .await?
                    else {
                        return Ok(());
                    };
                    url = next;
                    wait = Duration::ZERO;
                    prefetched = Some(fetched);
                }
                Err(error) => {
                    // Waits count from the answer: a prefetched failure may have arrived while
                    // the previous page was still being committed.
                    wait = self
                        .on_error(error, &mut retry, &mut failures)
                        .saturating_sub(answered.elapsed());
                }
            }
        }
    }

    /// Waits `wait`, then fetches and maps `url`; `None` when shutdown comes first.
    async fn fetch_after(
        &self,
        wait: Duration,
        url: &Url,
        retry: Option<&RetryOf>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Fetched>, PollerError> {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Ok(None),
            fetched = async {
                tokio::time::sleep(wait).await;
                self.fetch(url, retry).await
            } => fetched.map(Some),
        }
    }

    /// Requests `url` (as a retry of `retry` after a 429) and maps the page.
    async fn fetch(&self, url: &Url, retry: Option<&RetryOf>) -> Result<Fetched, PollerError> {
        let started = Instant::now();
        let result = self.client.page(url, retry).await;
        let answered = Instant::now();
        let result = match result {
            Ok(page) => Ok(self.map(page).await?),
            Err(error) => Err(error),
        };
        Ok(Fetched {
            started,
            answered,
            result,
        })
    }

    /// Commits `page` (fetched from `url`) while fetching and mapping `next` once `not_before`
    /// has passed. Returns the fetched next page, or `None` when shutdown came first (the
    /// commit itself always completes). A failed commit drops the prefetch (its request is
    /// abandoned); the next run resumes from the URL stored with the last committed page.
    async fn commit_and_prefetch(
        &self,
        page: MappedPage,
        url: &Url,
        next: &Url,
        not_before: Instant,
        shutdown: &CancellationToken,
    ) -> Result<Option<Fetched>, PollerError> {
        let prefetch = async {
            tokio::time::sleep_until(not_before).await;
            self.fetch(next, None).await
        };
        tokio::pin!(prefetch);
        let mut early: Option<Result<Fetched, PollerError>> = None;
        let committed = {
            let commit = self.commit(page, url);
            tokio::pin!(commit);
            loop {
                tokio::select! {
                    biased;
                    committed = &mut commit => break committed,
                    fetched = &mut prefetch, if early.is_none() => {
                        early = Some(fetched);
                    }
                }
            }
        };
        committed?;
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        Ok(Some(match early {
            Some(fetched) => fetched?,
            None => tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                fetched = &mut prefetch => fetched?,
            },
        }))
    }

    /// The stored `next` URL, or the first request.
    async fn resume_url(&self) -> Result<Url, PollerError> {
        if let Some(stored) = self.journal.state(NEXT_URL_STATE_KEY).await? {
            match std::str::from_utf8(&stored)
                .ok()
                .and_then(|s| Url::parse(s).ok())
            {
                Some(url)
                    if self.client.accepts(&url) && self.client.has_configured_filter(&url) =>
                {
                    tracing::info!(org = %self.source, "poller resumes from the stored next URL");
                    return Ok(url);
                }
                Some(url) if self.client.accepts(&url) => tracing::warn!(
                    org = %self.source,
                    "the configured event types changed since the next URL was stored; starting \
                     afresh from the configured since (the journal drops re-read events)"
                ),
                _ => tracing::warn!(
                    org = %self.source,
                    "stored next URL is not a System Log URL of this org; starting afresh"
                ),
            }
        }
        let since = match self.config.start {
            StartFrom::Since(since) => since,
            StartFrom::LookBack(look_back) => {
                Utc::now() - chrono::Duration::from_std(look_back).unwrap_or_default()
            }
        };
        tracing::info!(org = %self.source, since = %since.to_rfc3339(), "poller starts");
        Ok(self.client.first_url(since))
    }

    /// Maps and encodes a page's events. Milliseconds of CPU per page: done off the async
    /// workers, so the other page's request or commit (and the rest of the runtime) proceeds
    /// meanwhile.
    async fn map(&self, page: Page) -> Result<MappedPage, PollerError> {
        let Page {
            events: raw_events,
            next,
            rate,
            server_date,
            ..
        } = page;
        let now = Utc::now();
        let timestamp = prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
        };
        let delivery = Delivery {
            event_id: String::new(),
            event_time: Some(timestamp),
            source: self.source.clone(),
            headers: BTreeMap::new(),
            ingest_source: proto::IngestSource::Poller,
            received: Some(timestamp),
        };
        let received = raw_events.len();
        let raw = raw_events
            .into_iter()
            .map(ingest::raw_event_owned)
            .collect();
        let batch = ingest::map(
            raw,
            delivery,
            self.source.clone(),
            now,
            self.config.max_event_bytes,
        )
        .await?;
        Ok(MappedPage {
            batch,
            received,
            next,
            rate,
            server_date,
            now,
        })
    }

    /// Appends a mapped page's events and its `next` URL in one batch. Returns the URL to
    /// request next.
    async fn commit(&self, page: MappedPage, requested: &Url) -> Result<Option<Url>, PollerError> {
        let MappedPage {
            batch,
            received,
            next,
            rate,
            now,
            ..
        } = page;
        if next.is_none() {
            tracing::warn!(org = %self.source, "page without rel=\"next\"; requesting it again");
        }
        let moved = next.as_ref().is_some_and(|n| n != requested);
        if received > 0 || moved {
            let state = next.as_ref().map(|url| StateWrite {
                key: NEXT_URL_STATE_KEY.to_owned(),
                value: url.as_str().as_bytes().to_vec(),
            });
            let Ingested {
                appended,
                quarantined,
            } = ingest::append(self.journal.as_ref(), batch, state).await?;
            let committed = appended.committed.len() as u64;
            let s = &self.stats;
            s.events_committed.inc_by(committed);
            s.duplicates.inc_by(appended.duplicates as u64);
            if self.config.hook_enabled {
                s.hook_misses.inc_by(committed);
            }
            s.quarantined.inc_by(quarantined as u64);
        }
        let s = &self.stats;
        s.pages.inc_by(1);
        s.events_received.inc_by(received as u64);
        s.observe_rate_remaining(rate.remaining);
        s.observe_success(now);
        Ok(next)
    }

    /// Records a failed request and returns how long to wait before the next one.
    fn on_error(
        &self,
        error: ClientError,
        retry: &mut Option<RetryOf>,
        failures: &mut u32,
    ) -> Duration {
        let s = &self.stats;
        let reason = error.to_string();
        match error {
            ClientError::RateLimited {
                retry_after,
                request_id,
                rate,
                ..
            } => {
                s.rate_limited.inc_by(1);
                s.observe_rate_remaining(rate.remaining);
                let count = retry.as_ref().map_or(1, |r| r.count.saturating_add(1));
                *retry = request_id.map(|request_id| RetryOf { request_id, count });
                let wait =
                    retry_after.unwrap_or(RATE_LIMIT_FALLBACK_WAIT) + jitter(RATE_LIMIT_JITTER);
                tracing::warn!(org = %self.source, wait_ms = wait.as_millis() as u64, "rate limited by Okta");
                s.set_status(PollerHealth::RateLimited, Some(reason));
                wait
            }
            ClientError::Unauthorized { .. }
            | ClientError::Forbidden { .. }
            | ClientError::Rejected { .. } => {
                *retry = None;
                s.refusals.inc_by(1);
                tracing::error!(
                    org = %self.source,
                    error = %reason,
                    retry_in_secs = self.config.auth_retry_interval.as_secs(),
                    "Okta refused the poller's request; check the credentials, scopes and admin role"
                );
                s.set_status(PollerHealth::Refused, Some(reason));
                self.config.auth_retry_interval
            }
            ClientError::Server(_)
            | ClientError::Timeout
            | ClientError::Transport(_)
            | ClientError::BadResponse(_) => {
                *retry = None;
                *failures = failures.saturating_add(1);
                s.failures.inc_by(1);
                let delay =
                    backoff_delay(*failures, self.config.backoff_base, self.config.backoff_cap);
                let wait = delay + jitter(delay / 10);
                tracing::warn!(
                    org = %self.source,
                    error = %reason,
                    failures = *failures,
                    wait_ms = wait.as_millis() as u64,
                    "System Log request failed; backing off"
                );
                s.set_status(PollerHealth::BackingOff, Some(reason));
                wait
            }
        }
    }
}

/// Exponential back-off: `base · 2^(failures − 1)`, at most `cap` (0 failures → zero).
pub fn backoff_delay(failures: u32, base: Duration, cap: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// A random duration in `[0, max]`.
fn jitter(max: Duration) -> Duration {
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::auth::Credentials;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_from_base_up_to_the_cap() {
        let (base, cap) = (S(1), S(60));
        let delays: Vec<_> = (0..10).map(|n| backoff_delay(n, base, cap)).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60].map(S).to_vec());
        assert_eq!(backoff_delay(u32::MAX, base, cap), cap);
        assert_eq!(backoff_delay(40, S(1), S(300)), S(300));
    }

    fn rate(limit: u64, remaining: u64, reset_in: i64) -> (RateLimit, Option<DateTime<Utc>>) {
        let date = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        (
            RateLimit {
                limit: Some(limit),
                remaining: Some(remaining),
                reset: Some(date.timestamp() + reset_in),
            },
            Some(date),
        )
    }

    #[test]
    fn pacing_spreads_the_remaining_share_until_the_reset() {
        // 120/min bucket, half of it ours, one used: 59 left over 60 s (+1 s margin).
        let (r, d) = rate(120, 119, 59);
        assert_eq!(pacing_delay(&r, 0.5, d), S(60) / 59);
        // Our share is used up: wait for the reset, by the server's clock.
        let (r, d) = rate(120, 60, 30);
        assert_eq!(pacing_delay(&r, 0.5, d), S(31));
        // Others used most of the bucket: also wait for the reset.
        let (r, d) = rate(120, 10, 5);
        assert_eq!(pacing_delay(&r, 0.5, d), S(6));
        // A huge bucket does not slow a catch-up down.
        let (r, d) = rate(1_000_000, 999_999, 59);
        assert!(pacing_delay(&r, 0.5, d) < Duration::from_millis(1));
    }

    #[test]
    fn no_rate_limit_headers_no_pacing() {
        assert_eq!(
            pacing_delay(&RateLimit::default(), 0.5, Some(Utc::now())),
            Duration::ZERO
        );
        let (r, _) = rate(120, 1, 10);
        assert_eq!(pacing_delay(&r, 0.5, None), Duration::ZERO);
    }

    #[test]
    fn config_defaults_are_the_documented_ones() {
        let config = PollerConfig::new(
            "https://example.okta.com",
            Credentials::ApiToken(crate::secret::Secret::new("t")),
        );
        assert_eq!(config.event_types, vec!["user.account.update_profile"]);
        assert_eq!(config.poll_interval, S(10));
        assert_eq!(config.limit, 1000);
        assert_eq!(config.start, StartFrom::LookBack(S(3600)));
        assert_eq!(config.auth_retry_interval, S(60));
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.rate_limit_share = 0.0;
        assert!(bad.validate().is_err());
    }
}
