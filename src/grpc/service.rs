//! The `okta.events.v1.EventStream` service: Subscribe, GetEvent, ListEvents, ListQuarantined.
//!
//! A Subscribe stream is a plain `Stream` over the subscriber's [`Follower`] (no task and no
//! channel per subscriber): it yields the shared encoding of each matching event, heartbeats
//! when idle, and ends with a status that carries the last delivered cursor.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use super::auth::Scope;
use super::filter::Filter;
use crate::error::{ApiError, Code};
use crate::hub::{Delivery, FollowError, Follower, Hub};
use crate::journal::{
    Cursor, JournalError, QuarantineId, QuarantinePage, SharedEvent, SharedJournal,
};
use crate::proto::SubscribeResponse;
use crate::proto::{self, event_filter::Start};
use crate::telemetry::Metrics;

/// Replay `since` a time starts this much earlier in commit time, so an event whose clock ran
/// slightly ahead of ours is not missed; the filter then drops events published before.
pub const SINCE_CLOCK_SLACK: Duration = Duration::from_secs(300);

/// Default and largest ListEvents page.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
/// Most events one ListEvents call examines, so a sparse filter cannot pin the server.
const MAX_SCANNED_PER_PAGE: usize = 20_000;
/// Events read from the journal per ListEvents step.
const LIST_READ_CHUNK: usize = 256;
/// Default and largest ListQuarantined answer.
const DEFAULT_QUARANTINE_LIMIT: usize = 100;
const MAX_QUARANTINE_LIMIT: usize = 1000;
/// Bound on the entries' size in one ListQuarantined answer: well under the 4 MiB a default
/// gRPC client accepts.
const MAX_QUARANTINE_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// Limits and timings of Subscribe streams.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Heartbeat after this long without a message.
    pub heartbeat: Duration,
    /// End a subscriber (once it has been live) that falls further behind than this.
    pub max_lag: u64,
    /// Most concurrent Subscribe streams.
    pub max_subscribers: usize,
}

/// The EventStream implementation.
#[derive(Debug, Clone)]
pub struct EventStreamService {
    journal: SharedJournal,
    hub: Hub,
    metrics: Arc<Metrics>,
    settings: StreamSettings,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl EventStreamService {
    /// A service over `journal` and `hub`; open streams end when `shutdown` is cancelled.
    pub fn new(
        journal: SharedJournal,
        hub: Hub,
        metrics: Arc<Metrics>,
        settings: StreamSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_subscribers));
        Self {
            journal,
            hub,
            metrics,
            settings,
            slots,
            shutdown,
        }
    }

    /// The cursor a Subscribe with this start replays after, checked against retention.
    async fn start_after(&self, start: Option<&Start>) -> Result<Cursor, ApiError> {
        let bounds = self.journal.bounds().await?;
        // The first cursor still readable: the oldest retained, or the next one when empty.
        let oldest = bounds.oldest.unwrap_or(bounds.head + 1);
        match start {
            None => Ok(bounds.head),
            Some(Start::FromOldest(true)) => Ok(oldest - 1),
            // `{"from_oldest": false}` asks for nothing to replay: live, like no start.
            Some(Start::FromOldest(false)) => Ok(bounds.head),
            Some(Start::After(after)) => {
                if *after > bounds.head {
                    return Err(ApiError::new(
                        Code::OutOfRange,
                        format!(
                            "after: cursor {after} is ahead of the journal head {}",
                            bounds.head
                        ),
                    ));
                }
                if after + 1 < oldest {
                    return Err(out_of_range(*after, oldest));
                }
                Ok(*after)
            }
            Some(Start::Since(since)) => {
                let micros =
                    since.seconds.saturating_mul(1_000_000) + i64::from(since.nanos / 1000);
                let slack = SINCE_CLOCK_SLACK.as_micros() as i64;
                let after = self
                    .journal
                    .cursor_before_time(micros.saturating_sub(slack))
                    .await?;
                // Events before `oldest` were removed by retention: if the replay would have
                // needed them, say so instead of silently starting later.
                if after + 1 < oldest && oldest > 1 {
                    return Err(ApiError::new(
                        Code::OutOfRange,
                        format!(
                            "since: events from that time are no longer retained; oldest available cursor is {oldest}"
                        ),
                    ));
                }
                Ok(after.max(oldest - 1))
            }
        }
    }
}

/// Why a Subscribe stream ends with an error, or is refused before it starts. Each names the
/// cursor to resume after; the gRPC status comes from the one map in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The server is shutting down.
    #[error("server is shutting down; resume after cursor {last}")]
    ShuttingDown {
        /// The last cursor delivered.
        last: Cursor,
    },
    /// The subscriber fell further behind the head than allowed.
    #[error(
        "subscriber fell more than {max_lag} events behind the head; resume after cursor {last}"
    )]
    TooFarBehind {
        /// The configured limit.
        max_lag: u64,
        /// The last cursor delivered.
        last: Cursor,
    },
    /// The hub closed.
    #[error("event hub closed; resume after cursor {last}")]
    HubClosed {
        /// The last cursor delivered.
        last: Cursor,
    },
    /// The journal could not be read (details are logged, not sent).
    #[error("journal unavailable; resume after cursor {last}")]
    JournalUnavailable {
        /// The last cursor delivered.
        last: Cursor,
    },
    /// The subscriber limit is reached.
    #[error("too many subscribers (limit {limit}); retry later")]
    TooManySubscribers {
        /// The configured limit.
        limit: usize,
    },
}

impl From<StreamError> for ApiError {
    fn from(error: StreamError) -> Self {
        let code = match error {
            StreamError::ShuttingDown { .. }
            | StreamError::HubClosed { .. }
            | StreamError::JournalUnavailable { .. } => Code::Unavailable,
            StreamError::TooFarBehind { .. } | StreamError::TooManySubscribers { .. } => {
                Code::ResourceExhausted
            }
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<StreamError> for Status {
    fn from(error: StreamError) -> Self {
        ApiError::from(error).into()
    }
}

fn out_of_range(after: Cursor, oldest: Cursor) -> ApiError {
    ApiError::new(
        Code::OutOfRange,
        format!(
            "after: events after cursor {after} are no longer retained; oldest available cursor is {oldest}"
        ),
    )
}

/// A subscriber that always has an event ready never polls the shutdown future, so it looks
/// at the token directly after this many loop turns.
const SHUTDOWN_CHECK_EVERY: u32 = 64;

/// One message a Subscribe stream sends.
pub enum Outgoing {
    /// A matching event, with its message framed for the wire.
    Event(Delivery),
    /// Nothing was sent for a heartbeat interval.
    Heartbeat(proto::Heartbeat),
}

impl Outgoing {
    /// The message as tonic's encoder takes it.
    fn into_response(self) -> SubscribeResponse {
        match self {
            Outgoing::Event(delivery) => SubscribeResponse::event(delivery.event.encoded.clone()),
            Outgoing::Heartbeat(heartbeat) => SubscribeResponse::heartbeat(heartbeat),
        }
    }

    /// The message as one length-prefixed gRPC message (shared bytes for a live event).
    pub fn into_frame(self) -> bytes::Bytes {
        match self {
            Outgoing::Event(delivery) => delivery.into_frame(),
            Outgoing::Heartbeat(heartbeat) => SubscribeResponse::heartbeat(heartbeat).grpc_frame(),
        }
    }
}

/// Everything one Subscribe stream owns; dropping it frees the subscriber's slot.
///
/// The hot path is one delivered event per subscriber: the heartbeat timer and the shutdown
/// future are created once per stream and polled only when no event is ready, so a busy
/// subscriber does not register and deregister a timer and a shutdown waiter per event (with
/// many subscribers on two cores that was a measurable share of the fan-out CPU).
pub struct Subscriber {
    follower: Follower,
    filter: Filter,
    hub: Hub,
    metrics: Arc<Metrics>,
    heartbeat: Duration,
    /// Fires at the earliest time a heartbeat may be due; re-armed from `last_sent` then.
    heartbeat_timer: Pin<Box<tokio::time::Sleep>>,
    /// When the last message (event or heartbeat) was produced.
    last_sent: Instant,
    max_lag: u64,
    /// Whether the subscriber has reached the head once; only then does lag end it.
    live: bool,
    shutdown: CancellationToken,
    shutdown_signal: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Loop turns (events taken, timer wake-ups) since the token was last looked at.
    since_shutdown_check: u32,
    done: bool,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

impl Subscriber {
    fn new(
        follower: Follower,
        filter: Filter,
        service: &EventStreamService,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let now = Instant::now();
        Self {
            follower,
            filter,
            hub: service.hub.clone(),
            metrics: service.metrics.clone(),
            heartbeat: service.settings.heartbeat,
            heartbeat_timer: Box::pin(tokio::time::sleep_until(now + service.settings.heartbeat)),
            last_sent: now,
            max_lag: service.settings.max_lag,
            live: false,
            shutdown: service.shutdown.clone(),
            shutdown_signal: Box::pin(service.shutdown.clone().cancelled_owned()),
            since_shutdown_check: 0,
            done: false,
            _slot: slot,
        }
    }

    fn end(&mut self, status: Status) -> Option<Result<Outgoing, Status>> {
        self.done = true;
        Some(Err(status))
    }

    fn shutting_down(&mut self) -> Option<Result<Outgoing, Status>> {
        let last = self.follower.last_delivered();
        self.end(StreamError::ShuttingDown { last }.into())
    }

    fn heartbeat_message(&mut self, now: Instant) -> Outgoing {
        self.last_sent = now;
        self.heartbeat_timer.as_mut().reset(now + self.heartbeat);
        Outgoing::Heartbeat(proto::Heartbeat {
            head_cursor: self.hub.head(),
            time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        })
    }

    /// Whether `event` ends the stream because the subscriber fell behind; records the lag.
    fn too_far_behind(&mut self, event: &SharedEvent) -> bool {
        let lag = self.hub.head().saturating_sub(event.cursor());
        self.metrics.subscriber_lag.observe(lag as f64);
        if lag == 0 {
            self.live = true;
        }
        self.live && lag > self.max_lag
    }

    /// The next message to send; `Some(Err)` ends the stream with that status, `None` after.
    pub async fn next_message(&mut self) -> Option<Result<Outgoing, Status>> {
        if self.done {
            return None;
        }
        loop {
            self.since_shutdown_check += 1;
            if self.since_shutdown_check >= SHUTDOWN_CHECK_EVERY {
                self.since_shutdown_check = 0;
                if self.shutdown.is_cancelled() {
                    return self.shutting_down();
                }
            }
            tokio::select! {
                biased;
                next = self.follower.next_delivery() => match next {
                    Ok(delivery) => {
                        let event = &delivery.event;
                        if self.too_far_behind(event) {
                            self.metrics.slow_consumer_disconnects.inc();
                            let last = event.cursor() - 1;
                            let max_lag = self.max_lag;
                            return self.end(StreamError::TooFarBehind { max_lag, last }.into());
                        }
                        if self.filter.matches(event.facts()) {
                            self.last_sent = Instant::now();
                            return Some(Ok(Outgoing::Event(delivery)));
                        }
                    }
                    Err(FollowError::Pruned { last_delivered, oldest }) => {
                        // Retention overtook this subscriber: it read too slowly, like any slow
                        // consumer (its start was valid; no request field is to blame).
                        self.metrics.slow_consumer_disconnects.inc();
                        return self.end(ApiError::new(
                            Code::ResourceExhausted,
                            format!(
                                "subscriber too slow: retention removed events after cursor \
                                 {last_delivered} before they were sent (last delivered cursor \
                                 {last_delivered}; oldest available cursor {oldest})"
                            ),
                        ).into());
                    }
                    Err(FollowError::Closed) => {
                        let last = self.follower.last_delivered();
                        return self.end(StreamError::HubClosed { last }.into());
                    }
                    Err(FollowError::Journal(error @ JournalError::Unreadable { .. })) => {
                        // Reading it again gives the same answer: end instead of stalling.
                        return self.end(ApiError::from(error).into());
                    }
                    Err(FollowError::Journal(error)) => {
                        let last = self.follower.last_delivered();
                        tracing::error!(%error, last, "subscriber cannot read the journal");
                        return self.end(StreamError::JournalUnavailable { last }.into());
                    }
                },
                _ = self.shutdown_signal.as_mut() => return self.shutting_down(),
                _ = self.heartbeat_timer.as_mut() => {
                    let now = Instant::now();
                    let due = self.last_sent + self.heartbeat;
                    if now >= due {
                        return Some(Ok(self.heartbeat_message(now)));
                    }
                    // Messages went out since the timer was armed: wait the rest of the interval.
                    self.heartbeat_timer.as_mut().reset(due);
                }
            }
        }
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

fn page_token(cursor: Cursor) -> String {
    format!("c{cursor}")
}

fn parse_page_token(token: &str) -> Result<Option<Cursor>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix('c')
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::invalid("page_token", "is not a token returned by ListEvents"))
}

impl EventStreamService {
    /// Starts a Subscribe stream for `filter` (checked, counted against the subscriber limit,
    /// its start resolved), or says why not. Both ways of serving Subscribe start here.
    pub async fn open_subscriber(&self, filter: &proto::EventFilter) -> Result<Subscriber, Status> {
        let compiled = Filter::compile(filter)?;
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            StreamError::TooManySubscribers {
                limit: self.settings.max_subscribers,
            }
        })?;
        let after = self.start_after(filter.start.as_ref()).await?;
        self.metrics.subscribers.inc();
        let follower = self.hub.follow(self.journal.clone(), after);
        Ok(Subscriber::new(follower, compiled, self, slot))
    }
}

#[tonic::async_trait]
impl proto::event_stream_server::EventStream for EventStreamService {
    type SubscribeStream = SubscribeStream;

    /// Served by tonic for gRPC-Web (the console); plain HTTP/2 gRPC takes
    /// `super::subscribe`, which sends the same messages without copying them.
    async fn subscribe(
        &self,
        request: Request<proto::EventFilter>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let subscriber = self.open_subscriber(request.get_ref()).await?;
        let stream = futures::stream::unfold(subscriber, |mut subscriber| async move {
            let message = subscriber.next_message().await?;
            Some((message.map(Outgoing::into_response), subscriber))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::GetEventResponse>, Status> {
        let uuid = request.into_inner().uuid;
        crate::mapping::check_uuid(&uuid).map_err(|problem| ApiError::invalid("uuid", problem))?;
        match self.journal.get(&uuid).await.map_err(ApiError::from)? {
            Some(event) => Ok(Response::new(proto::GetEventResponse {
                event: Some(event.record().map_err(ApiError::from)?),
            })),
            None => Err(ApiError::new(
                Code::NotFound,
                format!("no retained event has uuid {uuid:?}"),
            )
            .into()),
        }
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let request = request.into_inner();
        let filter = request.filter.unwrap_or_default();
        let compiled = Filter::compile(&filter)?;
        let page_size = match request.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ApiError::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                )
                .into());
            }
            n => n,
        };
        let token = parse_page_token(&request.page_token)?;
        let bounds = self.journal.bounds().await.map_err(ApiError::from)?;
        let since_floor = match &filter.start {
            Some(Start::Since(_)) => self.start_after(filter.start.as_ref()).await?,
            _ => 0,
        };

        // The first cursor not to examine (descending) or the last one already examined
        // (ascending); every cursor this call examines moves it.
        let newest_first = request.newest_first;
        let mut position = match (token, &filter.start, newest_first) {
            (Some(cursor), _, _) => cursor,
            // `after` is exclusive both ways: newest first, the page starts below it.
            (None, Some(Start::After(after)), true) => (*after).min(bounds.head + 1),
            (None, Some(Start::After(after)), false) => *after,
            (None, _, true) => bounds.head + 1,
            (None, Some(Start::Since(_)), false) => since_floor,
            (None, _, false) => 0,
        };
        let mut events = Vec::new();
        let mut scanned = 0usize;
        let mut exhausted = false;
        'scan: while events.len() < page_size && scanned < MAX_SCANNED_PER_PAGE {
            let chunk = if newest_first {
                self.journal.read_before(position, LIST_READ_CHUNK).await
            } else {
                self.journal.read_after(position, LIST_READ_CHUNK).await
            }
            .map_err(ApiError::from)?;
            if chunk.is_empty() {
                exhausted = true;
                break;
            }
            for event in chunk {
                if newest_first && event.cursor() <= since_floor {
                    exhausted = true;
                    break 'scan;
                }
                position = event.cursor();
                scanned += 1;
                if compiled.matches(event.facts()) {
                    events.push(event.record().map_err(ApiError::from)?);
                    if events.len() == page_size {
                        break 'scan;
                    }
                }
            }
        }
        exhausted |= if newest_first {
            position <= bounds.oldest.unwrap_or(u64::MAX)
        } else {
            position >= bounds.head
        };
        let next_page_token = if exhausted {
            String::new()
        } else {
            page_token(position)
        };
        Ok(Response::new(proto::ListEventsResponse {
            events,
            next_page_token,
        }))
    }

    async fn list_quarantined(
        &self,
        request: Request<proto::ListQuarantinedRequest>,
    ) -> Result<Response<proto::ListQuarantinedResponse>, Status> {
        super::auth::require(&request, Scope::Admin, "ListQuarantined")?;
        let request = request.into_inner();
        let limit = match request.limit as usize {
            0 => DEFAULT_QUARANTINE_LIMIT,
            n if n > MAX_QUARANTINE_LIMIT => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be at most {MAX_QUARANTINE_LIMIT}"),
                )
                .into());
            }
            n => n,
        };
        let after = parse_quarantine_token(&request.page_token)?;
        let page = QuarantinePage {
            after,
            newest_first: request.newest_first,
            // One more than asked: whether a next page exists.
            limit: limit + 1,
        };
        let found = self
            .journal
            .quarantine_page(page)
            .await
            .map_err(ApiError::from)?;
        let more = found.len() > limit;
        let taken = found.len().min(limit);
        let mut entries = Vec::new();
        let mut size = 0usize;
        let mut last = None;
        for (id, entry) in found.into_iter().take(limit) {
            // Every entry's `raw` is capped, so one always fits; stop before the answer grows
            // past what a default client accepts.
            size += entry.size();
            if !entries.is_empty() && size > MAX_QUARANTINE_RESPONSE_BYTES {
                break;
            }
            last = Some(id);
            let raw_truncated = entry.is_truncated();
            entries.push(proto::QuarantinedEvent {
                reason: entry.reason,
                raw: entry.raw,
                origin: entry.origin,
                received: entry.received,
                raw_bytes: entry.raw_bytes,
                raw_truncated,
            });
        }
        let next_page_token = match last {
            Some(id) if more || entries.len() < taken => format!("q{id}"),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListQuarantinedResponse {
            entries,
            next_page_token,
        }))
    }
}

fn parse_quarantine_token(token: &str) -> Result<Option<QuarantineId>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix('q')
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid("page_token", "is not a token returned by ListQuarantined")
        })
}
