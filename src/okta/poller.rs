//! The System Log poller: every event, exactly once, across restarts, within Okta's limits.
//!
//! The loop follows SPEC.md B.2: resume from the `next` URL stored in the journal (or start
//! with `since` = now − look-back), fetch a page, map its events, and append them together with
//! the page's `rel="next"` URL in **one** journal transaction, so a crash re-reads at most the
//! pages not yet committed and the journal's uuid dedupe absorbs any overlap. Fetching, mapping
//! and committing overlap (page N+1 is fetched and mapped while page N commits), yet pages are
//! committed strictly in order and at most two run ahead of the stored URL. One request is in
//! flight at a time; a full page is followed at once, a short page waits the poll interval.
//! Requests are spaced to stay within
//! a share of the rate limit; a 429 waits until the reset by the server's clock; 5xx and timeouts
//! back off exponentially; refused credentials are retried slowly, never in a hot loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientError, Page, RateLimit, RetryOf, pacing_delay, wait_until};
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

/// Pages held at once: the one being committed, one being mapped and one being fetched. So at
/// most two pages run ahead of the checkpoint stored in the journal, and a crash loses them
/// both without harm (the next run re-reads them from the stored `next` URL).
const PAGES_IN_FLIGHT: usize = 3;

/// One request's outcome on its way through the pipeline, in request order.
struct Staged<T> {
    /// The URL that was requested (a page whose `next` equals it stores nothing new).
    url: Url,
    /// The page (fetched, then mapped), or the failed request.
    step: Result<T, Failure>,
    /// The page's place among [`PAGES_IN_FLIGHT`], given back once it is committed.
    _slot: OwnedSemaphorePermit,
}

/// A failed request and the wait the fetch stage chose; recorded (stats, status, log) in
/// order with the pages, so a failure fetched ahead is not overwritten by the success of an
/// earlier page committed after it.
struct Failure {
    error: ClientError,
    wait: Duration,
    /// Consecutive failures so far (for the log line).
    failures: u32,
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
    /// Three stages run at once, each in request order: fetch (one request in flight; page
    /// N+1's URL is known as soon as page N arrived), map (on the blocking pool, a page at a
    /// time on one thread) and commit (a page's events with its `next` URL in one journal append,
    /// page N+1 only after page N's append succeeded or in the same one: pages already mapped
    /// when a commit starts join it). At most `PAGES_IN_FLIGHT` pages are
    /// held, so a crash at any moment re-reads at most the pages after the stored URL, which
    /// were never committed. Pacing, 429 waits and back-off apply to the fetch stage as to a
    /// serial loop: a full page is followed no earlier than the pacing allows, a short page
    /// after the poll interval.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PollerError> {
        let url = self.resume_url().await?;
        let window = Arc::new(Semaphore::new(PAGES_IN_FLIGHT));
        let (fetched_tx, fetched_rx) = mpsc::channel(PAGES_IN_FLIGHT);
        let (mapped_tx, mapped_rx) = mpsc::channel(PAGES_IN_FLIGHT);
        let fetching = async {
            self.fetch_pages(url, window, fetched_tx, &shutdown).await;
            Ok(())
        };
        tokio::try_join!(
            fetching,
            self.map_pages(fetched_rx, mapped_tx, &shutdown),
            self.commit_pages(mapped_rx, &shutdown),
        )?;
        Ok(())
    }

    /// The fetch stage: requests pages one at a time, following `next` links, until shutdown
    /// (or until the later stages are gone). Each request first takes a slot of `window`.
    async fn fetch_pages(
        &self,
        mut url: Url,
        window: Arc<Semaphore>,
        out: mpsc::Sender<Staged<Page>>,
        shutdown: &CancellationToken,
    ) {
        let mut retry: Option<RetryOf> = None;
        let mut failures: u32 = 0;
        let mut not_before = Instant::now();
        loop {
            let slot = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                slot = window.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_closed) => return,
                },
            };
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                result = async {
                    wait_until(not_before).await;
                    let started = Instant::now();
                    (started, self.client.page(&url, retry.as_ref()).await)
                } => result,
            };
            let requested = url.clone();
            let step = match result {
                (started, Ok(page)) => {
                    retry = None;
                    failures = 0;
                    let full = page.events.len() >= self.client.limit() as usize;
                    let pace =
                        pacing_delay(&page.rate, self.config.rate_limit_share, page.server_date);
                    let after_page = if full {
                        Duration::ZERO
                    } else {
                        self.config.poll_interval
                    };
                    not_before = (started + pace).max(Instant::now() + after_page);
                    if let Some(next) = &page.next {
                        url = next.clone();
                    }
                    Ok(page)
                }
                (_, Err(error)) => {
                    let wait = self.retry_wait(&error, &mut retry, &mut failures);
                    not_before = Instant::now() + wait;
                    Err(Failure {
                        error,
                        wait,
                        failures,
                    })
                }
            };
            let staged = Staged {
                url: requested,
                step,
                _slot: slot,
            };
            if out.send(staged).await.is_err() {
                return;
            }
        }
    }

    /// The map stage: maps each fetched page, in order, until shutdown or the fetch stage
    /// ends. A failure passes through unchanged.
    async fn map_pages(
        &self,
        mut input: mpsc::Receiver<Staged<Page>>,
        out: mpsc::Sender<Staged<MappedPage>>,
        shutdown: &CancellationToken,
    ) -> Result<(), PollerError> {
        loop {
            let Staged { url, step, _slot } = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                staged = input.recv() => match staged {
                    Some(staged) => staged,
                    None => return Ok(()),
                },
            };
            let step = match step {
                Ok(page) => Ok(self.map(page).await?),
                Err(failure) => Err(failure),
            };
            if out.send(Staged { url, step, _slot }).await.is_err() {
                return Ok(());
            }
        }
    }

    /// The commit stage: appends mapped pages in order, each with its `next` URL, and records
    /// failures, until shutdown or the map stage ends. Pages already mapped when a commit
    /// starts join it (one transaction, one fsync, stored with the last page's `next` URL), so
    /// a slow disk costs one fsync per group of pages, not per page. A commit under way when
    /// shutdown comes completes; a failed one stops the poller.
    async fn commit_pages(
        &self,
        mut input: mpsc::Receiver<Staged<MappedPage>>,
        shutdown: &CancellationToken,
    ) -> Result<(), PollerError> {
        // A failure taken from the queue while gathering pages: recorded after their commit.
        let mut held: Option<Staged<MappedPage>> = None;
        loop {
            let staged = match held.take() {
                Some(staged) => staged,
                None => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    staged = input.recv() => match staged {
                        Some(staged) => staged,
                        None => return Ok(()),
                    },
                },
            };
            let Staged { url, step, _slot } = staged;
            let page = match step {
                Ok(page) => page,
                Err(failure) => {
                    self.record_failure(failure);
                    continue;
                }
            };
            let mut group = vec![(page, _slot)];
            while let Ok(waiting) = input.try_recv() {
                match waiting.step {
                    Ok(page) => group.push((page, waiting._slot)),
                    Err(failure) => {
                        held = Some(Staged {
                            url: waiting.url,
                            step: Err(failure),
                            _slot: waiting._slot,
                        });
                        break;
                    }
                }
            }
            // The pages' slots are given back once the commit returns.
            let (pages, _slots): (Vec<MappedPage>, Vec<OwnedSemaphorePermit>) =
                group.into_iter().unzip();
            self.commit(pages, &url).await?;
        }
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

    /// Maps and encodes a page's events off the async workers (milliseconds of CPU per page),
    /// in the page's order, on one thread.
    ///
    /// Why one: a page of 1,000 events maps in about 3 ms, far less than Okta takes to serve
    /// it, so mapping is never what catch-up waits for; what it waits for is the next page.
    /// Mapping in parallel chunks (one per CPU, as before) took the CPU the fetch chain needed
    /// when both ran at once: catch-up was 76-77% of the raw paging rate with two chunks
    /// against 80-81% with one (`load poller`, interleaved, BENCHMARKS.md, issue 15).
    async fn map(&self, page: Page) -> Result<MappedPage, PollerError> {
        let Page {
            events: raw,
            next,
            rate,
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
        let received = raw.len();
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
            now,
        })
    }

    /// Appends consecutive mapped pages' events, in order, with the last `next` URL any of them
    /// carried, in one batch; `requested` is the URL the first page was fetched from.
    async fn commit(&self, pages: Vec<MappedPage>, requested: &Url) -> Result<(), PollerError> {
        let count = pages.len() as u64;
        let mut batch = ingest::Mapped::default();
        let mut received = 0;
        let mut next: Option<Url> = None;
        let mut last = None;
        for page in pages {
            if page.next.is_none() {
                tracing::warn!(org = %self.source, "page without rel=\"next\"; requesting it again");
            }
            received += page.received;
            if batch.events.is_empty() {
                batch.events = page.batch.events;
            } else {
                batch.events.extend(page.batch.events);
            }
            batch.quarantine.extend(page.batch.quarantine);
            next = page.next.or(next);
            last = Some((page.rate, page.now));
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
        s.pages.inc_by(count);
        s.events_received.inc_by(received as u64);
        if let Some((rate, now)) = last {
            s.observe_rate_remaining(rate.remaining);
            s.observe_success(now);
        }
        Ok(())
    }

    /// How long to wait after a failed request before the next one; keeps the 429 retry
    /// headers and the count of consecutive failures.
    fn retry_wait(
        &self,
        error: &ClientError,
        retry: &mut Option<RetryOf>,
        failures: &mut u32,
    ) -> Duration {
        match error {
            ClientError::RateLimited {
                retry_after,
                request_id,
                ..
            } => {
                let count = retry.as_ref().map_or(1, |r| r.count.saturating_add(1));
                *retry = request_id
                    .clone()
                    .map(|request_id| RetryOf { request_id, count });
                retry_after.unwrap_or(RATE_LIMIT_FALLBACK_WAIT) + jitter(RATE_LIMIT_JITTER)
            }
            ClientError::Unauthorized { .. }
            | ClientError::Forbidden { .. }
            | ClientError::Rejected { .. } => {
                *retry = None;
                self.config.auth_retry_interval
            }
            ClientError::Server(_)
            | ClientError::Timeout
            | ClientError::Transport(_)
            | ClientError::BadResponse(_) => {
                *retry = None;
                *failures = failures.saturating_add(1);
                let delay =
                    backoff_delay(*failures, self.config.backoff_base, self.config.backoff_cap);
                delay + jitter(delay / 10)
            }
        }
    }

    /// Counts, logs and shows (health) a failed request.
    fn record_failure(&self, failure: Failure) {
        let Failure {
            error,
            wait,
            failures,
        } = failure;
        let s = &self.stats;
        let reason = error.to_string();
        match error {
            ClientError::RateLimited { rate, .. } => {
                s.rate_limited.inc_by(1);
                s.observe_rate_remaining(rate.remaining);
                tracing::warn!(org = %self.source, wait_ms = wait.as_millis() as u64, "rate limited by Okta");
                s.set_status(PollerHealth::RateLimited, Some(reason));
            }
            ClientError::Unauthorized { .. }
            | ClientError::Forbidden { .. }
            | ClientError::Rejected { .. } => {
                s.refusals.inc_by(1);
                tracing::error!(
                    org = %self.source,
                    error = %reason,
                    retry_in_secs = wait.as_secs(),
                    "Okta refused the poller's request; check the credentials, scopes and admin role"
                );
                s.set_status(PollerHealth::Refused, Some(reason));
            }
            ClientError::Server(_)
            | ClientError::Timeout
            | ClientError::Transport(_)
            | ClientError::BadResponse(_) => {
                s.failures.inc_by(1);
                tracing::warn!(
                    org = %self.source,
                    error = %reason,
                    failures,
                    wait_ms = wait.as_millis() as u64,
                    "System Log request failed; backing off"
                );
                s.set_status(PollerHealth::BackingOff, Some(reason));
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
