//! The stage between the journal and the hub: committed events wait here, in cursor order,
//! until each `user.account.update_profile` event has its old → new values (or its deadline
//! passed), then the front of the queue is stored as released and handed to the hub.
//!
//! - The journal hands commits to a [`StageSink`] (its [`CommitSink`]), which only queues
//!   them: the hook's acknowledgement never waits for Okta's Users API.
//! - Pending users are fetched concurrently; one `GET /api/v1/users/{id}` serves every update
//!   of that user queued before the request started ([`super::values::resolve`]).
//! - An update waits at most `timeout` from its commit; then it gets UNAVAILABLE with a reason.
//! - Releasing writes the values, the snapshots their resolutions produced and the
//!   `released_through` cursor ([`ValuesStore::release_agreed`]: one transaction in redb; on
//!   JetStream values first, `released_through` last), then moves the released cursor readers
//!   are capped at ([`super::released::ReleasedJournal`]) and publishes the joined events with
//!   the values the store holds: where another replica stored an event's values first, those.
//!   A restart re-reads what was committed after `released_through`: events with stored
//!   values are released at once, the others resolved again.
//! - Releases are paced (`RELEASE_EVERY`): each is a durable transaction that holds the
//!   journal file's writer lock while it syncs, so one per Users API answer would make the
//!   hook's group commits wait.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::released::with_values;
use super::rules::AttributeRules;
use super::snapshot::Snapshot;
use super::store::{SnapshotStore, StoreError, StoredValues, ValuesStore};
use super::values::{UPDATE_PROFILE, Update, Values, resolve, update_cursors};
use crate::hub::Hub;
use crate::journal::{CommitSink, Cursor, Facts, JournalError, SharedEvent, SharedJournal};
use crate::okta::users::{User, UsersClient, UsersError};
use crate::proto;

/// Events read per page when re-reading the unreleased tail at start.
const BACKLOG_PAGE: usize = 256;

/// Wait before asking Okta again after a failed fetch (the client paces 429s itself).
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The least time between two releases. Each release is one durable write transaction in
/// the journal's file, and while it syncs it holds the file's single writer lock, which the
/// hook's group commits wait for: one release per Users API answer (hundreds a second when
/// Okta answers fast) kept that lock busy a third of the time. Batched, it is a few percent.
const RELEASE_EVERY: Duration = Duration::from_millis(20);

/// Where the journal hands its commits when profile values are on: a queue to the stage.
#[derive(Clone, Debug)]
pub struct StageSink {
    tx: mpsc::UnboundedSender<Vec<SharedEvent>>,
    head: Arc<AtomicU64>,
}

impl StageSink {
    /// A sink and the receiving end the [`Stage`] runs on.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Vec<SharedEvent>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                head: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// The journal's head when it opened.
    pub fn opened_head(&self) -> Cursor {
        self.head.load(Ordering::Acquire)
    }
}

impl CommitSink for StageSink {
    fn opened(&self, head: Cursor) {
        self.head.store(head, Ordering::Release);
    }

    fn committed(&self, events: &[SharedEvent]) {
        // The stage is gone only at shutdown; the events are in the journal and are released
        // again after the next start.
        let _ = self.tx.send(events.to_vec());
    }
}

/// Counters of the profile-values stage, in the service's registry.
#[derive(Debug, Default)]
pub struct ProfileStats {
    fetched: Counter,
    fetch_failed: Counter,
    not_found: Counter,
    snapshot_hits: Counter,
    snapshot_misses: Counter,
    complete: Counter,
    no_baseline: Counter,
    newer_than_event: Counter,
    unavailable: Counter,
}

impl ProfileStats {
    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "profile_fetches_ok",
                "Users API reads of a user that answered",
                &self.fetched,
            ),
            (
                "profile_fetches_failed",
                "Users API reads that failed (timeout, 429, 5xx, refused)",
                &self.fetch_failed,
            ),
            (
                "profile_fetches_not_found",
                "Users API reads answered 404",
                &self.not_found,
            ),
            (
                "profile_snapshot_hits",
                "Resolutions that found a stored snapshot of the user",
                &self.snapshot_hits,
            ),
            (
                "profile_snapshot_misses",
                "Resolutions with no stored snapshot of the user",
                &self.snapshot_misses,
            ),
            (
                "profile_events_complete",
                "Update events released with status COMPLETE",
                &self.complete,
            ),
            (
                "profile_events_no_baseline",
                "Update events released with status NO_BASELINE",
                &self.no_baseline,
            ),
            (
                "profile_events_newer_than_event",
                "Update events released with status NEWER_THAN_EVENT",
                &self.newer_than_event,
            ),
            (
                "profile_events_unavailable",
                "Update events released with status UNAVAILABLE",
                &self.unavailable,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }

    fn count_status(&self, status: proto::ProfileValuesStatus) {
        use proto::ProfileValuesStatus as S;
        let counter = match status {
            S::Complete => &self.complete,
            S::NoBaseline => &self.no_baseline,
            S::NewerThanEvent => &self.newer_than_event,
            S::Unavailable => &self.unavailable,
            _ => return,
        };
        counter.inc();
    }
}

/// What the stage needs. See the module docs.
#[derive(Debug)]
pub struct Stage {
    /// The journal itself (not the released view): the unreleased tail is re-read at start.
    pub journal: SharedJournal,
    /// Where values, snapshots and `released_through` are written.
    pub values: Arc<dyn ValuesStore>,
    /// Where snapshots are read.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// The Users API.
    pub users: Arc<UsersClient>,
    /// The attribute rules.
    pub rules: Arc<AttributeRules>,
    /// The longest an update waits for its values.
    pub timeout: Duration,
    /// Where released events go.
    pub hub: Hub,
    /// The released cursor readers are capped at. Its value when the stage runs is where
    /// releasing resumes: the store's `released_through`, read before the service answers any
    /// reader, so no reader sees an event the stage will not hand to the hub after it (a
    /// lower value only makes the stage release stored values again, which is harmless).
    pub released: watch::Sender<Cursor>,
    /// The counters.
    pub stats: Arc<ProfileStats>,
}

/// One committed event waiting to be released.
#[derive(Debug)]
struct Pending {
    event: SharedEvent,
    /// The target user of an update event (none: released without values).
    user: Option<String>,
    /// Order of arrival: a fetch serves the updates queued before it started.
    seq: u64,
    deadline: Instant,
    /// `Some` once decided: the encoded profile fields, or `None` for no values.
    done: Option<Option<Bytes>>,
    /// A snapshot to store when this event is released (the last event a read served).
    snapshot: Option<(String, Snapshot)>,
    /// The last failure asking Okta for this event's user.
    last_error: Option<String>,
}

/// The outcome of one fetch task: the user, the newest seq it serves, the answer.
type Fetched = (String, u64, Result<User, UsersError>);

/// Why the stage stopped: the unreleased tail could not be read back at start, so nothing
/// after it can be released in order.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The journal's unreleased events could not be read.
    #[error("cannot re-read unreleased events: {0}")]
    Backlog(#[from] JournalError),
    /// The profile values already stored for them could not be read.
    #[error("cannot read stored profile values: {0}")]
    StoredValues(#[from] StoreError),
}

impl Stage {
    /// Runs until `shutdown`: re-reads the unreleased tail, then resolves and releases.
    pub async fn run(
        self,
        mut commits: mpsc::UnboundedReceiver<Vec<SharedEvent>>,
        shutdown: CancellationToken,
    ) -> Result<(), StageError> {
        let mut run = Run {
            queue: VecDeque::new(),
            fetching: HashSet::new(),
            fetches: JoinSet::new(),
            latest: HashMap::new(),
            next_seq: 0,
            last_queued: 0,
            stage: self,
        };
        run.start().await?;
        let mut release_after = Instant::now();
        loop {
            if Instant::now() >= release_after && run.release().await {
                release_after = Instant::now() + RELEASE_EVERY;
            }
            let deadline = run.next_deadline();
            // Decided events not released yet (paced): wake when they may be.
            let release_at = run.ready().then_some(release_after);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                commit = commits.recv() => match commit {
                    Some(events) => run.enqueue(events, None),
                    None => return Ok(()),
                },
                Some(fetched) = run.fetches.join_next(), if !run.fetches.is_empty() => {
                    match fetched {
                        Ok(fetched) => run.fetched(fetched).await,
                        Err(e) => tracing::warn!(error = %e, "a profile fetch task failed"),
                    }
                }
                () = sleep_until(deadline) => run.expire(),
                () = sleep_until(release_at) => {}
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Run {
    stage: Stage,
    queue: VecDeque<Pending>,
    fetching: HashSet<String>,
    fetches: JoinSet<Fetched>,
    /// Snapshots read but not yet stored (their event is not released yet).
    latest: HashMap<String, Snapshot>,
    next_seq: u64,
    last_queued: Cursor,
}

impl Run {
    /// Tells the hub where releasing stopped, and queues the unreleased tail.
    async fn start(&mut self) -> Result<(), StageError> {
        // Where readers were capped from the first request on (see [`Stage::released`]), so
        // every event after it reaches the hub through this stage; with replicas, events
        // another replica released meanwhile are re-queued and released with its values.
        let released = *self.stage.released.borrow();
        self.stage.hub.opened(released);
        self.last_queued = released;
        loop {
            let page = match self
                .stage
                .journal
                .read_after(self.last_queued, BACKLOG_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => return Err(e.into()),
            };
            if page.is_empty() {
                break;
            }
            let stored: HashMap<Cursor, Bytes> = self
                .stage
                .values
                .values_at(&update_cursors(&page))
                .await?
                .into_iter()
                .collect();
            self.enqueue(page, Some(&stored));
        }
        tracing::info!(
            released_through = released,
            pending = self.queue.len(),
            "profile values stage started"
        );
        Ok(())
    }

    /// Queues committed events; `stored`: values already stored for some of them (restart).
    fn enqueue(&mut self, events: Vec<SharedEvent>, stored: Option<&HashMap<Cursor, Bytes>>) {
        let deadline = Instant::now() + self.stage.timeout;
        let mut to_fetch = Vec::new();
        for event in events {
            if event.cursor() <= self.last_queued {
                continue; // already queued from the re-read tail
            }
            self.last_queued = event.cursor();
            let user = target_user(event.facts());
            let done = match (stored.and_then(|s| s.get(&event.cursor())), &user) {
                (Some(values), _) => Some(Some(values.clone())),
                (None, None) => Some(None),
                (None, Some(user)) => {
                    to_fetch.push(user.clone());
                    None
                }
            };
            self.next_seq += 1;
            self.queue.push_back(Pending {
                event,
                user,
                seq: self.next_seq,
                deadline,
                done,
                snapshot: None,
                last_error: None,
            });
        }
        for user in to_fetch {
            self.fetch(user, Duration::ZERO);
        }
    }

    /// Starts reading `user` after `delay`, unless a read of that user is under way.
    fn fetch(&mut self, user: String, delay: Duration) {
        if !self.fetching.insert(user.clone()) {
            return;
        }
        let client = self.stage.users.clone();
        let seq = self.next_seq;
        self.fetches.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let answer = client.user(&user).await;
            (user, seq, answer)
        });
    }

    /// Resolves the updates a read served; asks again for those it did not.
    async fn fetched(&mut self, (user, served_seq, answer): Fetched) {
        self.fetching.remove(&user);
        let now = Instant::now();
        match answer {
            Ok(read) => {
                self.stage.stats.fetched.inc();
                self.resolve(&user, served_seq, &read).await;
            }
            Err(UsersError::NotFound(_)) => {
                self.stage.stats.not_found.inc();
                let reason = format!("Okta's Users API has no user {user} (deleted?)");
                let stats = self.stage.stats.clone();
                for p in self.waiting(&user, served_seq) {
                    p.done = Some(Some(encode(Values::unavailable(reason.clone()))));
                    stats.unavailable.inc();
                }
            }
            Err(e) => {
                self.stage.stats.fetch_failed.inc();
                tracing::warn!(user = %user, error = %e, "reading a user's profile failed");
                for p in self.waiting(&user, u64::MAX) {
                    p.last_error = Some(e.to_string());
                }
            }
        }
        let retry = self
            .queue
            .iter()
            .any(|p| p.done.is_none() && p.user.as_deref() == Some(&user) && p.deadline > now);
        if retry {
            let delay = if self.queue.iter().any(|p| {
                p.done.is_none() && p.user.as_deref() == Some(&user) && p.last_error.is_some()
            }) {
                RETRY_AFTER
            } else {
                Duration::ZERO
            };
            self.fetch(user, delay);
        }
    }

    /// The undecided updates of `user` queued up to `seq`, in cursor order.
    fn waiting<'a>(&'a mut self, user: &'a str, seq: u64) -> impl Iterator<Item = &'a mut Pending> {
        self.queue
            .iter_mut()
            .filter(move |p| p.done.is_none() && p.seq <= seq && p.user.as_deref() == Some(user))
    }

    async fn resolve(&mut self, user: &str, served_seq: u64, read: &User) {
        let stored = match self.latest.get(user) {
            Some(s) => Some(s.clone()),
            None => match self.stage.snapshots.get(user).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(user, error = %e, "cannot read the stored snapshot; no baseline");
                    None
                }
            },
        };
        if stored.is_some() {
            self.stage.stats.snapshot_hits.inc();
        } else {
            self.stage.stats.snapshot_misses.inc();
        }
        let rules = self.stage.rules.clone();
        let current = Snapshot::from_profile(&rules, &read.profile, read.last_updated);
        let indexes: Vec<usize> = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.done.is_none() && p.seq <= served_seq && p.user.as_deref() == Some(user)
            })
            .map(|(i, _)| i)
            .collect();
        let changed: Vec<Vec<String>> = indexes
            .iter()
            .map(|&i| {
                let event = self.queue[i].event.facts();
                event.changed_attributes().map(str::to_owned).collect()
            })
            .collect();
        let updates: Vec<Update<'_>> = indexes
            .iter()
            .zip(&changed)
            .map(|(&i, changed_attributes)| Update {
                published: published(self.queue[i].event.facts()),
                changed_attributes,
            })
            .collect();
        let resolution = resolve(&rules, stored.as_ref(), &current, &updates);
        drop(updates);
        for (&i, values) in indexes.iter().zip(resolution.values) {
            self.stage.stats.count_status(values.status);
            self.queue[i].done = Some(Some(encode(values)));
        }
        if let (Some(snapshot), Some(&last)) = (resolution.store, indexes.last()) {
            self.latest.insert(user.to_owned(), snapshot.clone());
            self.queue[last].snapshot = Some((user.to_owned(), snapshot));
        }
    }

    /// Gives UNAVAILABLE to every undecided update past its deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        let timeout = self.stage.timeout;
        for p in self.queue.iter_mut() {
            if p.done.is_none() && p.deadline <= now {
                let reason = match &p.last_error {
                    Some(e) => format!(
                        "no answer from Okta's Users API within {}s: {e}",
                        timeout.as_secs()
                    ),
                    None => format!(
                        "no answer from Okta's Users API within {}s",
                        timeout.as_secs()
                    ),
                };
                p.done = Some(Some(encode(Values::unavailable(reason))));
                self.stage.stats.unavailable.inc();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue
            .iter()
            .filter(|p| p.done.is_none())
            .map(|p| p.deadline)
            .min()
    }

    /// Whether the front of the queue is decided (there is something to release).
    fn ready(&self) -> bool {
        self.queue.front().is_some_and(|p| p.done.is_some())
    }

    /// Stores and publishes the decided front of the queue; whether it stored anything.
    async fn release(&mut self) -> bool {
        let ready = self.queue.iter().take_while(|p| p.done.is_some()).count();
        if ready == 0 {
            return false;
        }
        let mut values: Vec<StoredValues> = Vec::new();
        let mut snapshots = Vec::new();
        for p in self.queue.iter().take(ready) {
            if let Some(Some(bytes)) = &p.done {
                values.push((p.event.cursor(), bytes.clone()));
            }
            if let Some(s) = &p.snapshot {
                snapshots.push(s.clone());
            }
        }
        let through = self.queue[ready - 1].event.cursor();
        // What is stored is what every replica serves: another replica's values where it
        // released an event first.
        let agreed: HashMap<Cursor, Bytes> = match self
            .stage
            .values
            .release_agreed(values, snapshots.clone(), through)
            .await
        {
            Ok(agreed) => agreed.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, through, "cannot store released profile values; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
                return false;
            }
        };
        for (user, snapshot) in &snapshots {
            if self
                .latest
                .get(user)
                .is_some_and(|s| s.as_of <= snapshot.as_of)
            {
                self.latest.remove(user);
            }
        }
        let mut out = Vec::with_capacity(ready);
        for p in self.queue.drain(..ready) {
            let done = match p.done {
                Some(Some(own)) => {
                    Some(Some(agreed.get(&p.event.cursor()).cloned().unwrap_or(own)))
                }
                other => other,
            };
            let event = match done {
                Some(Some(bytes)) => match with_values(&p.event, &bytes) {
                    Ok(joined) => Arc::new(joined),
                    Err(e) => {
                        tracing::error!(error = %e, "profile values do not join");
                        p.event
                    }
                },
                _ => p.event,
            };
            out.push(event);
        }
        self.stage.released.send_replace(through);
        self.stage.hub.publish(&out);
        true
    }
}

/// The user an update event's values are about: its `okta_user` (first User target).
fn target_user(event: Facts<'_>) -> Option<String> {
    if event.event_type() != UPDATE_PROFILE {
        return None;
    }
    event
        .okta_user()
        .map(|u| u.id)
        .filter(|id| !id.is_empty() && id.len() <= 256)
        .map(str::to_owned)
}

/// The event's `published` time (the epoch when absent: then any snapshot is newer).
fn published(event: Facts<'_>) -> DateTime<Utc> {
    event
        .published()
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The encoded profile fields (30–33) of `values`, to store and append to the record.
fn encode(values: Values) -> Bytes {
    let mut fields = proto::Event::default();
    values.attach(&mut fields);
    Bytes::from(prost::Message::encode_to_vec(&fields))
}
