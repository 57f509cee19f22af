//! The NATS JetStream journal: the same [`Journal`] contract as the embedded store, on a
//! replicated stream that several okta-stream replicas share.
//!
//! # Mapping onto JetStream
//! - **Cursor** = the stream sequence. Only this journal publishes on `<subject>.>` and a
//!   duplicate is rejected before it takes a sequence, so cursors are gap-free.
//! - **Subject per uuid.** Each event is published on `<subject>.u<base64url(uuid)>`. The uuid
//!   may hold any character; base64url is a valid, injective subject token. That makes the
//!   stream its own uuid index: [`Journal::get`] and the pre-publish dedupe check are one
//!   "last message on this subject" direct get, with nothing to keep consistent beside the
//!   stream. Trade-off: the server keeps per-subject state for every retained event (tens of
//!   bytes each; ~1 GB of server memory per 10 million retained events), which is acceptable
//!   for an org's audit events and bounded by `max_age`.
//! - **Dedupe** has two layers. `Nats-Msg-Id` (the same token) makes the server drop a repeat
//!   within `duplicate_window` exactly, also when two replicas race. Before publishing, each
//!   uuid is also looked up on its subject (pipelined direct gets), which catches repeats
//!   older than the window for as long as the event is retained. Beyond `max_age` an event is
//!   gone and the same uuid would be stored again.
//! - **Body** = [`NewEvent::encoded`](super::NewEvent::encoded), the record *without* its cursor; readers append the
//!   cursor from the message's sequence ([`NewEvent::commit`](super::NewEvent::commit)), so nothing is encoded twice.
//! - **Live**: a background tail (an ordered consumer from the head at open) is the only caller
//!   of the sink's [`CommitSink::committed`]. Events appended on other replicas reach local subscribers the same
//!   way as local ones, each exactly once and in sequence order. [`Journal::append`] therefore
//!   returns after the durable PubAcks, possibly *before* local subscribers see the events.
//! - **State** lives in the KV bucket `<stream>_STATE`; writes are compare-and-set against the
//!   revision this journal last read or wrote (see [`NatsJournal`]), so a replica that lost the
//!   poller lease cannot advance the poller's cursor. Quarantined events are JSON messages on
//!   the stream `<stream>_QUARANTINE`.
//!
//! # Atomicity
//! JetStream has no transaction across messages, the stream and a KV bucket. An append
//! publishes the events, then the quarantine, then writes the state. A failed append may have
//! stored a prefix of the batch; repeating it is safe because of dedupe. The poller's next URL
//! is written after its page's events, so a crash in between re-reads one page, which dedupe
//! absorbs (the same outcome the embedded journal's transaction gives). When the state write
//! loses its compare-and-set ([`JournalError::Conflict`]), the batch's events are stored
//! anyway (and reach subscribers through the tail); only the state is not advanced.
//!
//! # Time
//! [`Journal::cursor_before_time`] uses the time the stream leader stored each message (the
//! commit time, growing with the sequence), found by binary search over direct gets:
//! about log2(retained events) round trips.
//!
//! # Reads in a cluster
//! The stream allows direct gets, so any replica of the stream answers reads, not only its
//! leader. A replica that lags may not have the newest messages yet: a forward read then
//! stops early (never skips), and a follower simply reads again.

mod config;
mod lease;
mod tail;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::join_all;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use config::{
    DEFAULT_DUPLICATE_WINDOW, DEFAULT_MAX_AGE, DEFAULT_REPLICAS, DEFAULT_STREAM, DEFAULT_SUBJECT,
    NatsConfig, NatsConfigError, parse_servers,
};
pub use lease::{LEASE_KEY, LeaseError, PollerLease};

use super::{
    Appended, Batch, Bounds, CommitSink, Committed, Corruption, Cursor, Journal, JournalError,
    QuarantineId, QuarantinePage, Quarantined, SharedEvent, SharedSink, StateWrite,
};

/// Most direct gets a read keeps in flight at once.
const READ_WINDOW: u64 = 256;
/// How long to wait for the first connection to a server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// KV state keys that need no encoding start with none of this (see [`kv_key`]).
const ENCODED_KEY_PREFIX: &str = "_b64.";

/// The JetStream journal. Open with [`NatsJournal::open`]; use through [`Journal`].
///
/// State compare-and-set: a state write succeeds only if the key is still at the revision
/// this journal instance last read ([`Journal::state`]) or wrote; the first write of a key
/// this instance never read is unconditional. A poller that takes over the lease reads its
/// cursor with `state` first, which also adopts the current revision.
pub struct NatsJournal {
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    quarantine: stream::Stream,
    state: kv::Store,
    config: NatsConfig,
    /// Revision of each state key as last read or written here; 0 = known absent.
    revisions: Mutex<HashMap<String, u64>>,
    /// Highest sequence this instance knows of (its acks and the tail): sizes read windows.
    known_head: AtomicU64,
    tail: Arc<tail::TailProgress>,
    shutdown: CancellationToken,
    tail_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for NatsJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsJournal")
            .field("servers", &self.config.servers)
            .field("stream", &self.config.stream)
            .field("tail_position", &self.tail_position())
            .finish_non_exhaustive()
    }
}

impl NatsJournal {
    /// Connects, creates or checks the stream, the quarantine stream and the state bucket, and
    /// starts the tail that hands every event committed from now on (by any replica) to
    /// `sink`. The sink is told the stream's head first ([`CommitSink::opened`]); events
    /// already in the stream are read from the journal, not handed over.
    pub async fn open(
        config: NatsConfig,
        sink: impl CommitSink,
    ) -> Result<Arc<Self>, JournalError> {
        config
            .validate()
            .map_err(|e| JournalError::storage("use the NATS settings", e))?;
        let addrs = config
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JournalError::storage("parse the NATS server address", e))?;
        let client = async_nats::ConnectOptions::new()
            .name("okta-stream")
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(addrs)
            .await
            .map_err(|e| {
                JournalError::storage(
                    format!("connect to NATS at {}", config.servers.join(",")),
                    e,
                )
            })?;
        let js = jetstream::new(client.clone());

        let events = ensure_stream(&js, events_stream_config(&config)).await?;
        let quarantine = ensure_stream(&js, quarantine_stream_config(&config)).await?;
        let state = ensure_state_bucket(&js, &config).await?;

        let head = events
            .get_info()
            .await
            .map_err(|e| storage("read the stream info", e))?
            .state
            .last_sequence;
        sink.opened(head);
        let sink: SharedSink = Arc::new(sink);
        let progress = Arc::new(tail::TailProgress::new(head));
        let shutdown = CancellationToken::new();
        let task = tail::spawn(
            events.clone(),
            events_filter(&config),
            sink,
            progress.clone(),
            shutdown.clone(),
        );
        tracing::info!(
            stream = %config.stream,
            servers = %config.servers.join(","),
            head,
            "NATS journal open"
        );
        Ok(Arc::new(Self {
            client,
            js,
            events,
            quarantine,
            state,
            config,
            revisions: Mutex::new(HashMap::new()),
            known_head: AtomicU64::new(head),
            tail: progress,
            shutdown,
            tail_task: Mutex::new(Some(task)),
        }))
    }

    /// The settings this journal was opened with.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The last sequence the tail handed to the sink.
    pub fn tail_position(&self) -> Cursor {
        self.tail.position()
    }

    /// How many events the tail handed to the sink since open (a metric; also how tests
    /// prove each event reaches the sink exactly once).
    pub fn tail_published(&self) -> u64 {
        self.tail.published()
    }

    /// The KV bucket holding state and the poller lease.
    pub fn state_store(&self) -> kv::Store {
        self.state.clone()
    }

    /// The JetStream context this journal uses, for stores kept beside the stream (the
    /// profile values' buckets).
    pub fn jetstream(&self) -> jetstream::Context {
        self.js.clone()
    }

    /// Waits until this replica holds the lease at `key` (beside the poller's, for other work
    /// one replica at a time does); see [`PollerLease::acquire_key`].
    pub async fn acquire_lease(
        &self,
        key: &'static str,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<PollerLease, LeaseError> {
        PollerLease::acquire_key(self.state.clone(), key, holder, ttl).await
    }

    /// Waits until this replica holds the poller lease; see [`PollerLease::acquire`].
    pub async fn acquire_poller_lease(
        &self,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<PollerLease, LeaseError> {
        PollerLease::acquire(self.state.clone(), holder, ttl).await
    }

    /// Stops the tail and waits for it. Appends already running finish; every later call of
    /// the [`Journal`] methods fails with [`JournalError::Closed`], as the trait requires
    /// (the lease, outside the trait, still works so a shutting-down replica can release it).
    pub async fn close(&self) {
        self.shutdown.cancel();
        if let Some(task) = self.tail_task.lock().await.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "NATS journal tail task failed");
        }
    }

    /// `Closed` once [`NatsJournal::close`] was called.
    fn ensure_open(&self) -> Result<(), JournalError> {
        if self.shutdown.is_cancelled() {
            Err(JournalError::Closed)
        } else {
            Ok(())
        }
    }

    fn note_head(&self, seq: u64) {
        self.known_head.fetch_max(seq, Ordering::Relaxed);
    }

    fn event_subject(&self, uuid: &str) -> String {
        format!("{}.{}", self.config.subject, uuid_token(uuid))
    }

    /// The stored event with this uuid, if retained.
    async fn lookup(
        &self,
        uuid: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, JournalError> {
        optional(
            self.events
                .direct_get_last_for_subject(self.event_subject(uuid))
                .await,
        )
    }

    async fn write_state(&self, write: &StateWrite) -> Result<(), JournalError> {
        let key = kv_key(&write.key);
        let mut revisions = self.revisions.lock().await;
        let expected = match revisions.get(&write.key) {
            Some(&revision) => revision,
            None => match self
                .state
                .entry(key.clone())
                .await
                .map_err(|e| storage("read state", e))?
            {
                Some(entry) => entry.revision,
                None => 0,
            },
        };
        let value = Bytes::from(write.value.clone());
        let written = if expected == 0 {
            self.state.create(&key, value).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    conflict(&write.key)
                } else {
                    storage("write state", e)
                }
            })?
        } else {
            self.state
                .update(&key, value, expected)
                .await
                .map_err(|e| {
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                        conflict(&write.key)
                    } else {
                        storage("write state", e)
                    }
                })?
        };
        revisions.insert(write.key.clone(), written);
        Ok(())
    }

    /// Up to `limit` consecutive messages of `stream` from the first retained one after
    /// `after`, stopping at the first sequence not (yet) visible so the result has no hole.
    ///
    /// Direct gets may be answered by a stream replica that lags. Up to `known` (a sequence
    /// this instance has seen committed), a miss is asked again of the stream leader, so a
    /// read never returns less than what the local tail has already published: a follower
    /// that catches up after subscribing always reaches the live edge.
    async fn read_forward(
        &self,
        stream: &stream::Stream,
        filter: &str,
        after: u64,
        limit: usize,
        known: u64,
    ) -> Result<Vec<jetstream::message::StreamMessage>, JournalError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = after.saturating_add(1);
        let mut first = optional(stream.direct_get_next_for_subject(filter, Some(from)).await)?;
        if first.is_none() && from <= known {
            first = optional_raw(
                stream
                    .raw_message_builder()
                    .sequence(from)
                    .next_by_subject(filter)
                    .send()
                    .await,
            )?;
        }
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut next = first.sequence + 1;
        let mut out = vec![first];
        let limit = limit as u64;
        let mut window = known
            .saturating_sub(next)
            .saturating_add(1)
            .clamp(8, READ_WINDOW);
        while (out.len() as u64) < limit {
            let n = window.min(limit - out.len() as u64);
            let got = join_all((next..next + n).map(|seq| stream.direct_get(seq))).await;
            for (seq, result) in (next..next + n).zip(got) {
                match optional(result)? {
                    Some(message) => out.push(message),
                    None => {
                        self.read_from_leader(stream, seq, known, limit, &mut out)
                            .await?;
                        return Ok(out);
                    }
                }
            }
            next += n;
            window = (window * 2).min(READ_WINDOW);
        }
        Ok(out)
    }

    /// Continues a forward read at `seq` from the stream leader, up to `known` (rarely
    /// needed: only after a lagging replica answered).
    async fn read_from_leader(
        &self,
        stream: &stream::Stream,
        mut seq: u64,
        known: u64,
        limit: u64,
        out: &mut Vec<jetstream::message::StreamMessage>,
    ) -> Result<(), JournalError> {
        while seq <= known && (out.len() as u64) < limit {
            match optional_raw(stream.get_raw_message(seq).await)? {
                Some(message) => out.push(message),
                None => break,
            }
            seq += 1;
        }
        Ok(())
    }

    /// Up to `limit` quarantine messages below sequence `before` (all when `None`), newest
    /// first; sequences removed by retention are skipped.
    async fn quarantine_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<jetstream::message::StreamMessage>, JournalError> {
        let info = self
            .quarantine
            .get_info()
            .await
            .map_err(|e| storage("read the quarantine stream info", e))?;
        let state = info.state;
        let mut out = Vec::new();
        if state.messages == 0 || limit == 0 {
            return Ok(out);
        }
        let mut high = match before {
            Some(0 | 1) => return Ok(out),
            Some(before) => (before - 1).min(state.last_sequence),
            None => state.last_sequence,
        };
        while high >= state.first_sequence && out.len() < limit {
            let low = high
                .saturating_sub(READ_WINDOW - 1)
                .max(state.first_sequence);
            let got = join_all(
                (low..=high)
                    .rev()
                    .map(|seq| self.quarantine.direct_get(seq)),
            )
            .await;
            for result in got {
                if let Some(message) = optional(result)? {
                    out.push(message);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if low <= state.first_sequence {
                break;
            }
            high = low - 1;
        }
        Ok(out)
    }

    /// The newest sequence this instance has seen committed (acks, reads, the tail).
    fn known_head(&self) -> u64 {
        self.known_head
            .load(Ordering::Relaxed)
            .max(self.tail.position())
    }

    fn to_committed(
        &self,
        message: jetstream::message::StreamMessage,
    ) -> Result<SharedEvent, JournalError> {
        self.note_head(message.sequence);
        Ok(Arc::new(Committed::from_stored(
            message.payload,
            message.sequence,
        )?))
    }

    async fn info(&self) -> Result<stream::State, JournalError> {
        let info = self
            .events
            .get_info()
            .await
            .map_err(|e| storage("read the stream info", e))?;
        self.note_head(info.state.last_sequence);
        Ok(info.state)
    }
}

impl Drop for NatsJournal {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[async_trait]
impl Journal for NatsJournal {
    async fn close(&self) {
        NatsJournal::close(self).await
    }

    async fn stored_bytes(&self) -> Result<Option<u64>, JournalError> {
        self.ensure_open()?;
        Ok(Some(self.info().await?.bytes))
    }

    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        self.ensure_open()?;
        let mut duplicates = 0;
        let mut seen = HashSet::with_capacity(batch.events.len());
        let mut fresh = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            if seen.insert(event.uuid().to_owned()) {
                fresh.push(event);
            } else {
                duplicates += 1;
            }
        }
        // Beyond the duplicate window only this lookup catches a repeat.
        let subjects: Vec<String> = fresh.iter().map(|e| self.event_subject(e.uuid())).collect();
        let stored: Vec<_> = futures::stream::iter(subjects)
            .map(|subject| {
                let events = self.events.clone();
                async move { optional(events.direct_get_last_for_subject(subject).await) }
            })
            .buffered(READ_WINDOW as usize)
            .collect()
            .await;
        let mut to_publish = Vec::with_capacity(fresh.len());
        for (event, stored) in fresh.into_iter().zip(stored) {
            if stored?.is_some() {
                duplicates += 1;
            } else {
                to_publish.push(event);
            }
        }

        // Publish everything, then await the acks: one round trip for the whole batch.
        let mut pending = Vec::with_capacity(to_publish.len());
        for event in &to_publish {
            let token = uuid_token(event.uuid());
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, token.as_str());
            let subject = format!("{}.{token}", self.config.subject);
            let ack = self
                .js
                .publish_with_headers(subject, headers, event.encoded.clone())
                .await
                .map_err(|e| storage("publish an event", e))?;
            pending.push(ack);
        }
        let mut quarantine_pending = Vec::with_capacity(batch.quarantine.len());
        for item in &batch.quarantine {
            let body = serde_json::to_vec(item)
                .map_err(|e| JournalError::storage("encode a quarantined event", e))?;
            let ack = self
                .js
                .publish(quarantine_subject(&self.config), Bytes::from(body))
                .await
                .map_err(|e| storage("publish a quarantined event", e))?;
            quarantine_pending.push(ack);
        }

        let mut committed = Vec::with_capacity(pending.len());
        for (event, ack) in to_publish.into_iter().zip(pending) {
            let ack = ack.await.map_err(|e| storage("store an event", e))?;
            if ack.duplicate {
                duplicates += 1;
            } else {
                self.note_head(ack.sequence);
                committed.push(Arc::new(event.commit(ack.sequence)));
            }
        }
        committed.sort_by_key(|event| event.cursor());
        for ack in quarantine_pending {
            ack.await
                .map_err(|e| storage("store a quarantined event", e))?;
        }
        if let Some(write) = &batch.state {
            self.write_state(write).await?;
        }
        Ok(Appended {
            committed,
            duplicates,
        })
    }

    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.ensure_open()?;
        let known = self.known_head();
        self.read_forward(
            &self.events,
            &events_filter(&self.config),
            after,
            limit,
            known,
        )
        .await?
        .into_iter()
        .map(|message| self.to_committed(message))
        .collect()
    }

    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.ensure_open()?;
        if limit == 0 || before <= 1 {
            return Ok(Vec::new());
        }
        let state = self.info().await?;
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let top = (before - 1).min(state.last_sequence);
        if top < state.first_sequence {
            return Ok(Vec::new());
        }
        let bottom = top
            .saturating_sub(limit as u64 - 1)
            .max(state.first_sequence);
        let mut out = Vec::with_capacity((top - bottom + 1).min(READ_WINDOW) as usize);
        let mut high = top;
        loop {
            let low = high.saturating_sub(READ_WINDOW - 1).max(bottom);
            let got = join_all((low..=high).rev().map(|seq| self.events.direct_get(seq))).await;
            for result in got {
                // An absent sequence was removed (retention or an operator); skip it.
                if let Some(message) = optional(result)? {
                    out.push(self.to_committed(message)?);
                }
            }
            if low == bottom {
                return Ok(out);
            }
            high = low - 1;
        }
    }

    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        self.ensure_open()?;
        match self.lookup(uuid).await? {
            None => Ok(None),
            Some(message) => {
                let event = self.to_committed(message)?;
                if event.uuid() != uuid {
                    return Err(Corruption::MisplacedEvent {
                        cursor: event.cursor(),
                    }
                    .into());
                }
                Ok(Some(event))
            }
        }
    }

    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError> {
        self.ensure_open()?;
        let state = self.info().await?;
        if state.messages == 0 {
            return Ok(state.last_sequence);
        }
        let filter = events_filter(&self.config);
        // Smallest sequence s whose next retained message was stored at or after `since`;
        // message times grow with the sequence (the stream leader assigns both).
        let (mut low, mut high) = (state.first_sequence, state.last_sequence + 1);
        while low < high {
            let mid = low + (high - low) / 2;
            let at_or_after = match optional(
                self.events
                    .direct_get_next_for_subject(filter.as_str(), Some(mid))
                    .await,
            )? {
                Some(message) => micros(&message.time) >= since_micros,
                None => true,
            };
            if at_or_after {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Ok(low - 1)
    }

    async fn bounds(&self) -> Result<Bounds, JournalError> {
        self.ensure_open()?;
        let state = self.info().await?;
        Ok(Bounds {
            oldest: (state.messages > 0).then_some(state.first_sequence),
            head: state.last_sequence,
        })
    }

    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.ensure_open()?;
        let entry = self
            .state
            .entry(kv_key(key))
            .await
            .map_err(|e| storage("read state", e))?;
        // Revisions only grow. A read that raced with this instance's own write may have
        // fetched the older entry: it must not move the recorded revision back, or the
        // next write of this instance would lose its compare-and-set to itself.
        let mut revisions = self.revisions.lock().await;
        let read = entry.as_ref().map_or(0, |entry| entry.revision);
        let recorded = revisions.entry(key.to_owned()).or_insert(read);
        *recorded = (*recorded).max(read);
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| entry.value.to_vec()))
    }

    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError> {
        self.ensure_open()?;
        let messages = if page.newest_first {
            self.quarantine_before(page.after, page.limit).await?
        } else {
            self.read_forward(
                &self.quarantine,
                &quarantine_subject(&self.config),
                page.after.unwrap_or(0),
                page.limit,
                0,
            )
            .await?
        };
        messages
            .into_iter()
            .map(|message| {
                let entry = serde_json::from_slice(&message.payload).map_err(|source| {
                    JournalError::from(Corruption::Quarantine {
                        id: message.sequence,
                        source,
                    })
                })?;
                Ok((message.sequence, entry))
            })
            .collect()
    }

    async fn check(&self) -> Result<(), JournalError> {
        self.ensure_open()?;
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(JournalError::storage(
                "reach NATS",
                "not connected to any NATS server",
            ));
        }
        self.info().await.map(|_| ())
    }
}

/// The subject token (and `Nats-Msg-Id`) of a uuid: `u` + unpadded base64url. Valid in a
/// subject and a header whatever the uuid holds, never empty, and injective.
fn uuid_token(uuid: &str) -> String {
    let mut token = String::with_capacity(1 + uuid.len() * 4 / 3 + 3);
    token.push('u');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(uuid, &mut token);
    token
}

/// A KV key for a state key: itself when KV accepts it, else base64url behind a prefix that
/// plain keys never carry, so the mapping is injective.
fn kv_key(key: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && !key.starts_with(ENCODED_KEY_PREFIX)
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '='));
    if plain {
        key.to_owned()
    } else {
        format!(
            "{ENCODED_KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
        )
    }
}

fn events_filter(config: &NatsConfig) -> String {
    format!("{}.>", config.subject)
}

/// Not under `<subject>.>`: subjects of two streams must not overlap.
fn quarantine_subject(config: &NatsConfig) -> String {
    format!("{}_quarantine", config.subject)
}

fn state_bucket(config: &NatsConfig) -> String {
    format!("{}_STATE", config.stream)
}

/// Creates (or opens) the state bucket. The bucket's stream is made here rather than with
/// `create_key_value`, whose account-info query does not parse on nats-server 2.9.
/// The stream behind a KV bucket named `bucket`: one entry per key, keys never deleted, on
/// file, `replicas` times. Buckets are created from this directly rather than with
/// `create_key_value`, whose account-info query does not parse on nats-server 2.9. Shared by
/// the journal's state bucket and the profile stores' buckets.
pub fn kv_bucket_stream(bucket: &str, description: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

async fn ensure_state_bucket(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<kv::Store, JournalError> {
    let bucket = state_bucket(config);
    let wanted = kv_bucket_stream(
        &bucket,
        "okta-stream state (poller cursor, lease)",
        config.replicas,
    );
    match js.get_stream(&wanted.name).await {
        Ok(_) => {}
        Err(e) if is_stream_not_found(&e) => {
            if let Err(create) = js.create_stream(wanted.clone()).await {
                // Another replica may have created it meanwhile.
                js.get_stream(&wanted.name)
                    .await
                    .map_err(|_| storage("create the state bucket", create))?;
            }
        }
        Err(e) => return Err(storage("look up the state bucket", e)),
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| storage("open the state bucket", e))
}

fn events_stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("okta-stream events; the sequence is the cursor".to_owned()),
        subjects: vec![events_filter(config)],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_age: config.max_age,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        ..Default::default()
    }
}

fn quarantine_stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: format!("{}_QUARANTINE", config.stream),
        description: Some("okta-stream events that could not be mapped".to_owned()),
        subjects: vec![quarantine_subject(config)],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_age: config.max_age,
        max_bytes: config
            .quarantine_max_bytes
            .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        duplicate_window: config.duplicate_window.min(Duration::from_secs(120)),
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the stream, or checks an existing one: settings the journal's guarantees depend
/// on must match (an error names the first that does not); `max_age`, `duplicate_window`
/// and `allow_direct` are updated to the configured values.
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, JournalError> {
    let existing = match js.get_stream(&wanted.name).await {
        Ok(stream) => Some(stream),
        Err(e) if is_stream_not_found(&e) => None,
        Err(e) => return Err(storage("look up the stream", e)),
    };
    let Some(stream) = existing else {
        return match js.create_stream(wanted.clone()).await {
            Ok(stream) => Ok(stream),
            // Another replica created it meanwhile: check that one.
            Err(_) => {
                let stream = js
                    .get_stream(&wanted.name)
                    .await
                    .map_err(|e| storage("create the stream", e))?;
                check_and_update(js, stream, wanted).await
            }
        };
    };
    check_and_update(js, stream, wanted).await
}

async fn check_and_update(
    js: &jetstream::Context,
    stream: stream::Stream,
    wanted: stream::Config,
) -> Result<stream::Stream, JournalError> {
    let found = stream.cached_info().config.clone();
    let incompatible = |setting: &str, found: String, expected: String| {
        JournalError::storage(
            format!("use the NATS stream {}", wanted.name),
            format!("it exists with incompatible {setting}: found {found}, expected {expected}"),
        )
    };
    if found.subjects != wanted.subjects {
        return Err(incompatible(
            "subjects",
            format!("{:?}", found.subjects),
            format!("{:?}", wanted.subjects),
        ));
    }
    if found.retention != wanted.retention {
        return Err(incompatible(
            "retention",
            format!("{:?}", found.retention),
            format!("{:?}", wanted.retention),
        ));
    }
    if found.discard != wanted.discard {
        return Err(incompatible(
            "discard",
            format!("{:?}", found.discard),
            format!("{:?}", wanted.discard),
        ));
    }
    if found.storage != wanted.storage {
        return Err(incompatible(
            "storage",
            format!("{:?}", found.storage),
            format!("{:?}", wanted.storage),
        ));
    }
    if found.num_replicas.max(1) != wanted.num_replicas {
        return Err(incompatible(
            "replicas",
            found.num_replicas.to_string(),
            wanted.num_replicas.to_string(),
        ));
    }
    if found.sealed || found.mirror.is_some() {
        return Err(incompatible(
            "sealed/mirror",
            "a sealed or mirrored stream".to_owned(),
            "a writable stream".to_owned(),
        ));
    }
    // The server reports "no limit" as -1 whatever was asked for it.
    let byte_limit = |bytes: i64| if bytes <= 0 { -1 } else { bytes };
    if found.max_age == wanted.max_age
        && byte_limit(found.max_bytes) == byte_limit(wanted.max_bytes)
        && found.duplicate_window == wanted.duplicate_window
        && found.allow_direct
    {
        return Ok(stream);
    }
    let mut updated = found;
    updated.max_age = wanted.max_age;
    updated.max_bytes = byte_limit(wanted.max_bytes);
    updated.duplicate_window = wanted.duplicate_window;
    updated.allow_direct = true;
    tracing::info!(
        stream = %wanted.name,
        max_age_secs = wanted.max_age.as_secs(),
        duplicate_window_secs = wanted.duplicate_window.as_secs(),
        "updating NATS stream settings"
    );
    js.update_stream(&updated)
        .await
        .map_err(|e| storage("update the stream settings", e))?;
    js.get_stream(&wanted.name)
        .await
        .map_err(|e| storage("look up the stream", e))
}

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// A direct get's "no such message" as `None`.
fn optional(
    result: Result<jetstream::message::StreamMessage, stream::DirectGetError>,
) -> Result<Option<jetstream::message::StreamMessage>, JournalError> {
    match result {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(storage("read the stream", e)),
    }
}

/// A leader get's "no such message" as `None`.
fn optional_raw(
    result: Result<jetstream::message::StreamMessage, stream::RawMessageError>,
) -> Result<Option<jetstream::message::StreamMessage>, JournalError> {
    match result {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(storage("read the stream", e)),
    }
}

fn micros(time: &async_nats::datetime::DateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn storage(
    action: &str,
    error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> JournalError {
    JournalError::storage(format!("{action} in NATS"), error)
}

fn conflict(key: &str) -> JournalError {
    JournalError::Conflict {
        key: key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::NewEvent;
    use crate::proto;

    #[test]
    fn uuid_tokens_are_subject_safe_and_distinct() {
        let uuids = ["", "a", "a.b", "a b", "*", ">", "x\r\ny", "ü", "a=b/c"];
        let tokens: HashSet<String> = uuids.iter().map(|u| uuid_token(u)).collect();
        assert_eq!(tokens.len(), uuids.len());
        for token in &tokens {
            assert!(token.starts_with('u'));
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token}"
            );
        }
    }

    #[test]
    fn state_keys_map_injectively_to_kv_keys() {
        assert_eq!(kv_key("poller.next_url"), "poller.next_url");
        let keys = ["a", "a b", ".a", "a.", "a..b", "_b64.YQ", "YQ", "ü", ""];
        let mapped: HashSet<String> = keys.iter().map(|k| kv_key(k)).collect();
        assert_eq!(mapped.len(), keys.len());
    }

    #[test]
    fn a_stored_body_gets_the_cursor_of_its_sequence() {
        let new = NewEvent::new(proto::Event {
            uuid: "u-1".to_owned(),
            ..Default::default()
        });
        let expected = new.clone().commit(42);
        assert_eq!(Committed::from_stored(new.encoded, 42).unwrap(), expected);
        assert!(matches!(
            Committed::from_stored(expected.encoded, 43),
            Err(JournalError::Corrupt(_))
        ));
    }
}
