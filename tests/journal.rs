//! What every `Journal` implementation must do, as one behavioural suite.
//!
//! Each specification is a generic async function over a [`Backend`], the one thing an
//! implementation provides: open (or reopen) its journal at a fixed location with a given
//! retention. The suite runs against the embedded redb journal (module `redb`) and the NATS
//! JetStream journal (module `nats`, on the server at `OKTA_STREAM_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`, one fresh stream per test, deleted afterwards). Where the two
//! genuinely differ, the implementation declares it in [`Capabilities`] and the specification
//! asserts the weaker guarantee instead of skipping: nothing is silently left out. Every test
//! runs under a timeout so a hang fails.

#[path = "common/nats_stream.rs"]
mod nats_stream;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_trait::async_trait;
use nats_stream::TestStream;
use okta_stream::hub::Hub;
use okta_stream::journal::embedded::RedbJournal;
use okta_stream::journal::nats::NatsJournal;
use okta_stream::journal::{
    Appended, Batch, Bounds, Cursor, Journal, JournalError, NewEvent, Pruned, QuarantineId,
    QuarantinePage, Quarantined, Retention, SharedEvent, SharedJournal, StateWrite,
};
use okta_stream::proto;

/// Upper bound for any one specification.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A journal as a test sees it: the trait object, its hub, and implementation controls.
struct Opened {
    journal: SharedJournal,
    hub: Hub,
    control: Arc<dyn Control>,
}

/// Where implementations genuinely differ. A specification that depends on one of these
/// asserts the stronger guarantee when it is declared and the weaker, documented one when
/// it is not.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    /// A batch's events, quarantine and state become visible in one transaction, and a
    /// batch that fails leaves nothing behind. Without it (JetStream has no transaction
    /// across messages and a KV bucket) the state is written last: it is never visible
    /// before its events, but events may be visible before their state, and a failed
    /// append may have stored a prefix that repeating the append absorbs by dedupe.
    atomic_batch: bool,
    /// Concurrent appends share durable commits, counted by [`Control::commits`].
    /// JetStream stores each message as its own replicated write; nothing to count.
    group_commit: bool,
    /// Retention by size ([`Retention::max_bytes`]). The NATS journal retains by age only
    /// (`OKTA_STREAM_RETENTION_MAX_BYTES` is documented as embedded-only).
    retention_by_size: bool,
}

/// What the suite needs beyond the `Journal` trait.
#[async_trait]
trait Control: Send + Sync {
    /// How this implementation differs from the strongest contract.
    fn capabilities(&self) -> Capabilities;
    /// Applies retention now (or, where the store applies it itself, waits until it has)
    /// instead of waiting for the next background check.
    async fn prune_now(&self) -> Result<Pruned, JournalError>;
    /// Durable commits so far, if the implementation counts them (group commit evidence).
    fn commits(&self) -> Option<u64>;
    /// Stops the journal so the same location can be reopened.
    async fn close(&self);
}

/// One implementation under test, bound to one storage location for the whole test.
#[async_trait]
trait Backend: Send + Sync {
    /// Opens the journal at this backend's location (again, after a close, to test recovery).
    async fn open(&self, retention: Retention) -> Opened;
}

// ---------------------------------------------------------------------------------------------
// The embedded redb journal.

struct Redb {
    dir: tempfile::TempDir,
}

async fn redb_backend() -> Redb {
    Redb {
        dir: tempfile::tempdir().unwrap(),
    }
}

#[async_trait]
impl Backend for Redb {
    async fn open(&self, retention: Retention) -> Opened {
        // A subdirectory that does not exist yet: open must create it.
        let hub = Hub::new(1 << 16, 0);
        let journal = RedbJournal::open(&self.dir.path().join("data"), retention, hub.clone())
            .await
            .unwrap();
        Opened {
            hub,
            journal: journal.clone(),
            control: journal,
        }
    }
}

#[async_trait]
impl Control for RedbJournal {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_batch: true,
            group_commit: true,
            retention_by_size: true,
        }
    }
    async fn prune_now(&self) -> Result<Pruned, JournalError> {
        RedbJournal::prune_now(self).await
    }
    fn commits(&self) -> Option<u64> {
        Some(RedbJournal::commits(self))
    }
    async fn close(&self) {
        RedbJournal::close(self).await
    }
}

// ---------------------------------------------------------------------------------------------
// The NATS JetStream journal.

/// One test's stream on the test server; every open is a new journal instance on it (as a
/// restarted replica would be).
struct Nats {
    stream: TestStream,
}

async fn nats_backend() -> Nats {
    Nats {
        stream: TestStream::new("suite"),
    }
}

#[async_trait]
impl Backend for Nats {
    async fn open(&self, retention: Retention) -> Opened {
        let mut config = self.stream.config.clone();
        if let Some(max_age) = retention.max_age {
            // The stream's max_age is the retention; the dedupe window may not exceed it.
            config.max_age = max_age;
            config.duplicate_window = config.duplicate_window.min(max_age);
        }
        let hub = Hub::new(1 << 16, 0);
        let journal = NatsJournal::open(config.clone(), hub.clone())
            .await
            .unwrap();
        Opened {
            journal: journal.clone(),
            hub,
            control: Arc::new(NatsControl {
                journal,
                js: self.stream.context().await,
                streams: [
                    config.stream.clone(),
                    format!("{}_QUARANTINE", config.stream),
                ],
                max_age: retention.max_age,
            }),
        }
    }
}

struct NatsControl {
    journal: Arc<NatsJournal>,
    js: jetstream::Context,
    /// The events and the quarantine stream.
    streams: [String; 2],
    max_age: Option<Duration>,
}

#[async_trait]
impl Control for NatsControl {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_batch: false,
            group_commit: false,
            retention_by_size: false,
        }
    }
    /// JetStream removes messages older than the stream's `max_age` itself: wait (bounded)
    /// until neither stream holds a message older than that.
    async fn prune_now(&self) -> Result<Pruned, JournalError> {
        let Some(max_age) = self.max_age else {
            return Ok(Pruned::default());
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for name in &self.streams {
            loop {
                let state = self
                    .js
                    .get_stream(name)
                    .await
                    .map_err(|e| JournalError::storage("read the stream", e))?
                    .get_info()
                    .await
                    .map_err(|e| JournalError::storage("read the stream", e))?
                    .state;
                let cutoff = now_micros() as i128 * 1000 - max_age.as_nanos() as i128;
                if state.messages == 0 || state.first_timestamp.unix_timestamp_nanos() >= cutoff {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "JetStream never applied max_age to {name}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Pruned::default())
    }
    fn commits(&self) -> Option<u64> {
        None
    }
    async fn close(&self) {
        self.journal.close().await
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn event(uuid: &str) -> NewEvent {
    NewEvent::new(proto::Event {
        uuid: uuid.to_owned(),
        ..Default::default()
    })
}

fn big_event(uuid: &str, size: usize) -> NewEvent {
    NewEvent::new(proto::Event {
        uuid: uuid.to_owned(),
        message: "x".repeat(size),
        ..Default::default()
    })
}

fn batch(uuids: &[&str]) -> Batch {
    Batch {
        events: uuids.iter().map(|u| event(u)).collect(),
        ..Default::default()
    }
}

fn keep_all() -> Retention {
    Retention::keep_all()
}

fn cursors(events: &[SharedEvent]) -> Vec<Cursor> {
    events.iter().map(|e| e.cursor()).collect()
}

fn uuids(events: &[SharedEvent]) -> Vec<String> {
    events.iter().map(|e| e.uuid().to_owned()).collect()
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn quarantined(n: usize) -> Quarantined {
    Quarantined {
        reason: format!("field `published` is not a timestamp ({n})"),
        raw: format!(r#"{{"uuid":"q{n}","published":"yesterday"}}"#),
        origin: "hook delivery evt-1 from https://example.okta.com".into(),
        received: "2026-11-28T13:00:00Z".into(),
        raw_bytes: 0,
    }
}

async fn everything(journal: &SharedJournal) -> Vec<SharedEvent> {
    journal.read_after(0, usize::MAX).await.unwrap()
}

async fn within<F: Future<Output = ()>>(spec: F) {
    tokio::time::timeout(TEST_TIMEOUT, spec)
        .await
        .expect("specification timed out");
}

// ---------------------------------------------------------------------------------------------
// Specifications.

async fn cursors_start_at_one_and_are_gap_free_across_batches(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;

    let first = j.append(batch(&["a", "b", "c"])).await.unwrap();
    let second = j.append(batch(&["d", "e"])).await.unwrap();

    assert_eq!(cursors(&first.committed), [1, 2, 3]);
    assert_eq!(cursors(&second.committed), [4, 5]);
    assert_eq!((first.duplicates, second.duplicates), (0, 0));
    let stored = everything(&j).await;
    assert_eq!(cursors(&stored), [1, 2, 3, 4, 5]);
    assert_eq!(uuids(&stored), ["a", "b", "c", "d", "e"]);
    // The stored encoding carries the cursor and decodes to the committed record.
    assert_eq!(*stored[3], *second.committed[0]);
}

async fn a_uuid_already_stored_is_dropped_as_a_duplicate(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;

    j.append(batch(&["a", "b"])).await.unwrap();
    let again = j.append(batch(&["b", "c"])).await.unwrap();

    assert_eq!(uuids(&again.committed), ["c"]);
    assert_eq!(
        cursors(&again.committed),
        [3],
        "a duplicate takes no cursor"
    );
    assert_eq!(again.duplicates, 1);
    assert_eq!(uuids(&everything(&j).await), ["a", "b", "c"]);
}

async fn a_uuid_repeated_within_one_batch_is_stored_once(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;

    let appended = j.append(batch(&["a", "a", "b", "a"])).await.unwrap();

    assert_eq!(uuids(&appended.committed), ["a", "b"]);
    assert_eq!(cursors(&appended.committed), [1, 2]);
    assert_eq!(appended.duplicates, 2);
    assert_eq!(uuids(&everything(&j).await), ["a", "b"]);
}

async fn a_batch_commits_events_state_and_quarantine_together(backend: &dyn Backend) {
    let opened = backend.open(keep_all()).await;
    let j = opened.journal.clone();
    let atomic = opened.control.capabilities().atomic_batch;

    // A reader that trusts the state (as the poller does) must always find the events that
    // were committed with it: the state names the last event of its batch.
    let rounds = 40;
    let writer = {
        let j = j.clone();
        tokio::spawn(async move {
            for round in 0..rounds {
                let last = format!("r{round}-e2");
                let appended = j
                    .append(Batch {
                        events: vec![
                            event(&format!("r{round}-e0")),
                            event(&format!("r{round}-e1")),
                            event(&last),
                        ],
                        quarantine: vec![quarantined(round)],
                        state: Some(StateWrite {
                            key: "poller.next_url".into(),
                            value: last.into_bytes(),
                        }),
                    })
                    .await
                    .unwrap();
                assert_eq!(appended.committed.len(), 3);
            }
        })
    };
    let mut observed = 0;
    while !writer.is_finished() {
        // Events first, then the state: with one transaction per batch, a state read after
        // the events names a batch at least as new as every event seen before it.
        let head = j.bounds().await.unwrap().head;
        if let Some(last) = j.state("poller.next_url").await.unwrap() {
            let last = String::from_utf8(last).unwrap();
            assert!(
                j.get(&last).await.unwrap().is_some(),
                "state {last} visible before its events"
            );
            let round: u64 = last[1..last.find('-').unwrap()].parse().unwrap();
            // Without transactions the state may lag its events (never lead them: above).
            if atomic {
                assert!(
                    round + 1 >= head / 3,
                    "events of round {} visible before their state ({last})",
                    head / 3 - 1
                );
            }
            observed += 1;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert!(observed > 0, "the reader never saw a commit in progress");

    assert_eq!(everything(&j).await.len(), 3 * rounds);
    assert_eq!(j.quarantined(usize::MAX).await.unwrap().len(), rounds);
    assert_eq!(
        j.state("poller.next_url").await.unwrap(),
        Some(format!("r{}-e2", rounds - 1).into_bytes())
    );
    // A batch that cannot commit (the journal is closed) leaves nothing behind at all: a
    // closed journal refuses it before storing anything, whatever its atomicity.
    opened.control.close().await;
    let refused = j
        .append(Batch {
            events: vec![event("late")],
            quarantine: vec![quarantined(999)],
            state: Some(StateWrite {
                key: "poller.next_url".into(),
                value: b"late".to_vec(),
            }),
        })
        .await;
    assert!(matches!(refused, Err(JournalError::Closed)), "{refused:?}");
    drop(opened);
    drop(j);
    let j = backend.open(keep_all()).await.journal;
    assert!(j.get("late").await.unwrap().is_none());
    assert_eq!(j.quarantined(usize::MAX).await.unwrap().len(), rounds);
    assert_eq!(
        j.state("poller.next_url").await.unwrap(),
        Some(format!("r{}-e2", rounds - 1).into_bytes())
    );
}

async fn pages_forwards_and_backwards_by_cursor(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    let names: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    j.append(batch(&refs[..6])).await.unwrap();
    j.append(batch(&refs[6..])).await.unwrap();

    assert_eq!(cursors(&j.read_after(0, 4).await.unwrap()), [1, 2, 3, 4]);
    assert_eq!(cursors(&j.read_after(4, 4).await.unwrap()), [5, 6, 7, 8]);
    assert_eq!(cursors(&j.read_after(8, 4).await.unwrap()), [9, 10]);
    assert!(j.read_after(10, 4).await.unwrap().is_empty());
    assert!(j.read_after(Cursor::MAX, 4).await.unwrap().is_empty());
    assert!(j.read_after(0, 0).await.unwrap().is_empty());

    assert_eq!(cursors(&j.read_before(11, 4).await.unwrap()), [10, 9, 8, 7]);
    assert_eq!(cursors(&j.read_before(7, 4).await.unwrap()), [6, 5, 4, 3]);
    assert_eq!(cursors(&j.read_before(3, 4).await.unwrap()), [2, 1]);
    assert!(j.read_before(1, 4).await.unwrap().is_empty());
    assert_eq!(cursors(&j.read_before(Cursor::MAX, 1).await.unwrap()), [10]);
    assert_eq!(
        uuids(&j.read_before(Cursor::MAX, 1).await.unwrap()),
        ["e10"]
    );
}

async fn gets_an_event_by_its_uuid(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    let appended = j.append(batch(&["a", "b", "c"])).await.unwrap();

    let b = j.get("b").await.unwrap().expect("b is stored");
    assert_eq!(b.cursor(), 2);
    assert_eq!(b.uuid(), "b");
    assert_eq!(b.encoded, appended.committed[1].encoded);
    assert!(j.get("missing").await.unwrap().is_none());
}

async fn an_append_that_returned_is_read_at_once(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    for n in 0..200 {
        let uuid = format!("read-your-write-{n}");
        let appended = j.append(batch(&[uuid.as_str()])).await.unwrap();
        let cursor = appended.committed[0].cursor();
        // Straight after the append returned, from another task, as a subscriber would.
        let (by_uuid, by_cursor, bounds) = {
            let j = j.clone();
            let uuid = uuid.clone();
            tokio::spawn(async move {
                (
                    j.get(&uuid).await.unwrap(),
                    j.read_after(cursor - 1, 1).await.unwrap(),
                    j.bounds().await.unwrap(),
                )
            })
            .await
            .unwrap()
        };
        let by_uuid = by_uuid.unwrap_or_else(|| panic!("{uuid} is found by its uuid"));
        assert_eq!(by_uuid.cursor(), cursor);
        assert_eq!(
            cursors(&by_cursor),
            vec![cursor],
            "{uuid} is read at its cursor"
        );
        assert_eq!(bounds.head, cursor, "the head includes {uuid}");
    }
}

async fn finds_the_cursor_before_a_time(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    assert_eq!(j.cursor_before_time(now_micros()).await.unwrap(), 0);

    let before_everything = now_micros() - 1_000_000;
    let early = j.append(batch(&["a", "b"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = now_micros();
    tokio::time::sleep(Duration::from_millis(20)).await;
    j.append(batch(&["c", "d"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_everything = now_micros();

    let c = j.cursor_before_time(between).await.unwrap();
    assert_eq!(c, early.committed[1].cursor());
    assert_eq!(uuids(&j.read_after(c, 10).await.unwrap()), ["c", "d"]);
    assert_eq!(j.cursor_before_time(before_everything).await.unwrap(), 0);
    assert_eq!(j.cursor_before_time(after_everything).await.unwrap(), 4);
}

async fn reports_bounds(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    assert_eq!(
        j.bounds().await.unwrap(),
        Bounds {
            oldest: None,
            head: 0
        }
    );

    j.append(batch(&["a", "b", "c"])).await.unwrap();
    j.append(batch(&["a"])).await.unwrap(); // a duplicate moves nothing

    assert_eq!(
        j.bounds().await.unwrap(),
        Bounds {
            oldest: Some(1),
            head: 3
        }
    );
}

async fn state_round_trips(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    assert_eq!(j.state("poller.next_url").await.unwrap(), None);

    let state = |value: &str| Batch {
        state: Some(StateWrite {
            key: "poller.next_url".into(),
            value: value.as_bytes().to_vec(),
        }),
        ..Default::default()
    };
    j.append(state("https://example.okta.com/api/v1/logs?after=1"))
        .await
        .unwrap();
    assert_eq!(
        j.state("poller.next_url").await.unwrap().as_deref(),
        Some(&b"https://example.okta.com/api/v1/logs?after=1"[..])
    );
    j.append(state("https://example.okta.com/api/v1/logs?after=2"))
        .await
        .unwrap();
    assert_eq!(
        j.state("poller.next_url").await.unwrap().as_deref(),
        Some(&b"https://example.okta.com/api/v1/logs?after=2"[..])
    );
    assert_eq!(j.state("other").await.unwrap(), None);
    // Any key round-trips, also one a key-value store would reject as it is.
    let odd = StateWrite {
        key: "a key with spaces ü/*>".to_owned(),
        value: b"v".to_vec(),
    };
    j.append(Batch {
        state: Some(odd.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(j.state(&odd.key).await.unwrap(), Some(odd.value));
    assert_eq!(j.bounds().await.unwrap().head, 0, "state takes no cursor");
}

async fn any_uuid_characters_round_trip(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    let odd = [
        "a.b",
        "*",
        ">",
        "with space",
        "line\r\nbreak",
        "ü-ñ",
        "a/b=c",
    ];

    let appended = j.append(batch(&odd)).await.unwrap();
    assert_eq!(uuids(&appended.committed), odd);
    for uuid in odd {
        assert_eq!(j.get(uuid).await.unwrap().unwrap().uuid(), uuid);
    }
    assert_eq!(j.append(batch(&odd)).await.unwrap().duplicates, odd.len());
}

async fn quarantine_round_trips_oldest_first(backend: &dyn Backend) {
    let j = backend.open(keep_all()).await.journal;
    assert!(j.quarantined(10).await.unwrap().is_empty());

    j.append(Batch {
        events: vec![event("good")],
        quarantine: vec![quarantined(1), quarantined(2)],
        state: None,
    })
    .await
    .unwrap();
    j.append(Batch {
        quarantine: vec![quarantined(3)],
        ..Default::default()
    })
    .await
    .unwrap();

    assert_eq!(
        j.quarantined(10).await.unwrap(),
        [quarantined(1), quarantined(2), quarantined(3)]
    );
    assert_eq!(j.quarantined(1).await.unwrap(), [quarantined(1)]);
    assert_eq!(uuids(&everything(&j).await), ["good"]);

    // Pages continue after an id (exclusive), oldest or newest first.
    let page = |after, newest_first, limit| QuarantinePage {
        after,
        newest_first,
        limit,
    };
    let entries = |page: Vec<(QuarantineId, Quarantined)>| -> Vec<Quarantined> {
        page.into_iter().map(|(_, entry)| entry).collect()
    };
    let first = j.quarantine_page(page(None, false, 1)).await.unwrap();
    assert_eq!(entries(first.clone()), [quarantined(1)]);
    let rest = j
        .quarantine_page(page(Some(first[0].0), false, 10))
        .await
        .unwrap();
    assert_eq!(entries(rest), [quarantined(2), quarantined(3)]);
    let newest = j.quarantine_page(page(None, true, 2)).await.unwrap();
    assert_eq!(entries(newest.clone()), [quarantined(3), quarantined(2)]);
    let older = j
        .quarantine_page(page(Some(newest[1].0), true, 10))
        .await
        .unwrap();
    assert_eq!(entries(older), [quarantined(1)]);
}

async fn reopening_keeps_everything_and_continues_without_gap(backend: &dyn Backend) {
    let first = backend.open(keep_all()).await;
    first.journal.append(batch(&["a", "b"])).await.unwrap();
    first
        .journal
        .append(Batch {
            events: vec![event("c")],
            quarantine: vec![quarantined(1)],
            state: Some(StateWrite {
                key: "k".into(),
                value: b"v".to_vec(),
            }),
        })
        .await
        .unwrap();
    let before = everything(&first.journal).await;
    first.control.close().await;
    drop(first);

    let second = backend.open(keep_all()).await;
    let j = second.journal;

    assert_eq!(everything(&j).await, before);
    assert_eq!(
        j.bounds().await.unwrap(),
        Bounds {
            oldest: Some(1),
            head: 3
        }
    );
    assert_eq!(second.hub.head(), 3, "the hub starts at the recovered head");
    assert_eq!(j.state("k").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(j.quarantined(10).await.unwrap(), [quarantined(1)]);
    let appended = j.append(batch(&["b", "d", "c", "e"])).await.unwrap();
    assert_eq!(uuids(&appended.committed), ["d", "e"]);
    assert_eq!(cursors(&appended.committed), [4, 5]);
    assert_eq!(appended.duplicates, 2);
    j.append(Batch {
        quarantine: vec![quarantined(2)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        j.quarantined(10).await.unwrap(),
        [quarantined(1), quarantined(2)]
    );
}

/// Counts catch-up reads, to tell live delivery (none) from repair by re-reading the journal.
#[derive(Debug)]
struct CountingReads {
    inner: SharedJournal,
    reads: AtomicUsize,
}

#[async_trait]
impl Journal for CountingReads {
    async fn close(&self) {
        self.inner.close().await
    }
    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        self.inner.append(batch).await
    }
    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_after(after, limit).await
    }
    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.inner.read_before(before, limit).await
    }
    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        self.inner.get(uuid).await
    }
    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError> {
        self.inner.cursor_before_time(since_micros).await
    }
    async fn bounds(&self) -> Result<Bounds, JournalError> {
        self.inner.bounds().await
    }
    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.inner.state(key).await
    }
    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError> {
        self.inner.quarantine_page(page).await
    }
    async fn check(&self) -> Result<(), JournalError> {
        self.inner.check().await
    }
}

async fn the_hub_gets_committed_events_in_cursor_order_without_duplicates(backend: &dyn Backend) {
    let opened = backend.open(keep_all()).await;
    let counting = Arc::new(CountingReads {
        inner: opened.journal.clone(),
        reads: AtomicUsize::new(0),
    });
    let mut follower = opened.hub.follow(counting.clone(), 0);
    let mut head = opened.hub.watch_head();

    let mut expected = Vec::new();
    for round in 0..20 {
        let names = [
            format!("r{round}-a"),
            format!("r{round}-b"),
            format!("r{}-b", round.max(1) - 1), // from the previous round: a duplicate
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let appended = opened.journal.append(batch(&refs)).await.unwrap();
        let last = appended.committed.last().unwrap().cursor();
        // Published shortly after the append returned, still once each and in cursor order:
        // by the embedded writer once redb committed the group (it answers once the group is
        // durable), or by JetStream's tail, which publishes what the stream stored, also for
        // other replicas.
        tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= last))
            .await
            .expect("the hub reaches the appended cursor")
            .unwrap();
        assert_eq!(
            *head.borrow_and_update(),
            last,
            "never ahead of the journal"
        );
        expected.extend(appended.committed);
    }
    assert_eq!(expected.len(), 40);

    for want in &expected {
        let got = follower.next().await.unwrap();
        assert_eq!(got, *want);
    }
    // Only the first, empty, catch-up read: everything else arrived live, in order, no hole.
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1);
    // And nothing more was published.
    let more = tokio::time::timeout(Duration::from_millis(200), follower.next()).await;
    assert!(more.is_err(), "unexpected extra event: {more:?}");
}

async fn concurrent_appends_share_commits_and_stay_gap_free(backend: &dyn Backend) {
    let opened = backend.open(keep_all()).await;
    let group_commit = opened.control.capabilities().group_commit;
    let commits_before = opened.control.commits();
    let (tasks, per_task) = (64, 50);

    let mut handles = Vec::new();
    for task in 0..tasks {
        let j = opened.journal.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..per_task {
                // Every task also re-sends its previous event: always a duplicate.
                let mut names = vec![format!("t{task}-e{i}")];
                if i > 0 {
                    names.push(format!("t{task}-e{}", i - 1));
                }
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let appended = j.append(batch(&refs)).await.unwrap();
                assert_eq!(appended.committed.len(), 1);
                assert_eq!(appended.duplicates, usize::from(i > 0));
                mine.push(appended.committed[0].cursor());
            }
            mine
        }));
    }
    let mut all: Vec<Cursor> = Vec::new();
    for handle in handles {
        let mine = handle.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "a task's cursors rise"
        );
        all.extend(mine);
    }

    let total = (tasks * per_task) as u64;
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    let stored = everything(&opened.journal).await;
    assert_eq!(cursors(&stored), (1..=total).collect::<Vec<_>>());
    let distinct: HashSet<String> = uuids(&stored).into_iter().collect();
    assert_eq!(distinct.len(), total as usize);
    if group_commit {
        let commits = opened.control.commits().unwrap() - commits_before.unwrap();
        assert!(
            commits < total,
            "{commits} commits for {total} appends: no group commit"
        );
    } else {
        assert_eq!(
            commits_before, None,
            "commits are counted only with group commit"
        );
    }
}

async fn check_reports_a_working_journal_and_a_closed_one(backend: &dyn Backend) {
    let opened = backend.open(keep_all()).await;
    opened.journal.check().await.unwrap();
    opened.control.close().await;
    assert!(matches!(
        opened.journal.check().await,
        Err(JournalError::Closed)
    ));
}

async fn retention_by_age_removes_the_oldest_and_forgets_their_uuids(backend: &dyn Backend) {
    let max_age = Duration::from_millis(600);
    let retention = Retention {
        max_age: Some(max_age),
        max_bytes: None,
        check_interval: Duration::from_secs(3600),
    };
    let opened = backend.open(retention).await;
    let j = opened.journal.clone();

    j.append(Batch {
        quarantine: vec![quarantined(1)],
        ..batch(&["old1", "old2", "old3"])
    })
    .await
    .unwrap();
    tokio::time::sleep(max_age + Duration::from_millis(200)).await;
    let young = j
        .append(Batch {
            quarantine: vec![quarantined(2)],
            ..batch(&["young1", "young2"])
        })
        .await
        .unwrap();
    opened.control.prune_now().await.unwrap();

    assert_eq!(
        j.bounds().await.unwrap(),
        Bounds {
            oldest: Some(4),
            head: 5
        }
    );
    assert_eq!(everything(&j).await, young.committed);
    assert!(j.get("old1").await.unwrap().is_none());
    assert_eq!(
        j.quarantined(10).await.unwrap(),
        [quarantined(2)],
        "quarantine ages like events"
    );
    assert_eq!(j.cursor_before_time(0).await.unwrap(), 3);
    // A removed uuid is forgotten with its record: appending it again makes a new record.
    let again = j.append(batch(&["old1", "young1"])).await.unwrap();
    assert_eq!(uuids(&again.committed), ["old1"]);
    assert_eq!(cursors(&again.committed), [6]);
    assert_eq!(again.duplicates, 1);

    // Once everything is too old, nothing is retained but the head stays.
    tokio::time::sleep(max_age + Duration::from_millis(200)).await;
    opened.control.prune_now().await.unwrap();
    let emptied = Bounds {
        oldest: None,
        head: 6,
    };
    assert_eq!(j.bounds().await.unwrap(), emptied);
    assert!(everything(&j).await.is_empty());
    assert!(j.quarantined(10).await.unwrap().is_empty());
    assert_eq!(j.cursor_before_time(0).await.unwrap(), 6);
    opened.control.close().await;
    drop((opened, j));

    let reopened = backend.open(retention).await;
    assert_eq!(reopened.journal.bounds().await.unwrap(), emptied);
    let next = reopened.journal.append(batch(&["new"])).await.unwrap();
    assert_eq!(cursors(&next.committed), [7]);
}

async fn retention_runs_in_the_background(backend: &dyn Backend) {
    let retention = Retention {
        max_age: Some(Duration::from_millis(300)),
        max_bytes: None,
        check_interval: Duration::from_millis(100),
    };
    let opened = backend.open(retention).await;
    opened.journal.append(batch(&["a", "b"])).await.unwrap();

    // Nobody calls prune_now: the journal's own task removes them.
    let emptied = Bounds {
        oldest: None,
        head: 2,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while opened.journal.bounds().await.unwrap() != emptied {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn retention_by_size_removes_the_oldest_first(backend: &dyn Backend) {
    let sized = |i: usize| big_event(&format!("e{i:02}"), 1000);
    let one = sized(0).commit(10).encoded.len() as u64;
    let max_bytes = 5 * one;
    let retention = Retention {
        max_age: None,
        max_bytes: Some(max_bytes),
        check_interval: Duration::from_secs(3600),
    };
    let opened = backend.open(retention).await;
    let j = opened.journal.clone();
    let by_size = opened.control.capabilities().retention_by_size;
    // Quarantine entries of about one event's size each: kept within the same limit.
    let bulky = |i: usize| Quarantined {
        raw: format!("{i:02}{}", "q".repeat(one as usize)),
        ..quarantined(i)
    };
    for chunk in 0..2 {
        j.append(Batch {
            events: (chunk * 5..chunk * 5 + 5).map(sized).collect(),
            quarantine: (chunk * 5..chunk * 5 + 5).map(bulky).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    opened.control.prune_now().await.unwrap();

    let retained = everything(&j).await;
    let quarantine = j.quarantined(100).await.unwrap();
    if !by_size {
        // Documented: this implementation retains by age only; a size limit removes nothing.
        assert_eq!(cursors(&retained), (1..=10).collect::<Vec<_>>());
        assert_eq!(quarantine.len(), 10);
        return;
    }
    let quarantine_size: usize = quarantine.iter().map(|q| q.raw.len()).sum();
    assert!(
        (quarantine_size as u64) <= max_bytes && quarantine.len() >= 3,
        "{} entries, {quarantine_size} bytes kept, limit {max_bytes}",
        quarantine.len()
    );
    assert_eq!(quarantine.last(), Some(&bulky(9)), "the newest are kept");
    let size: u64 = retained.iter().map(|e| e.encoded.len() as u64).sum();
    assert!(
        size <= max_bytes,
        "{size} bytes retained, limit {max_bytes}"
    );
    assert!(retained.len() >= 4, "only {} retained", retained.len());
    let oldest = retained[0].cursor();
    assert!(oldest > 1);
    assert_eq!(
        cursors(&retained),
        (oldest..=10).collect::<Vec<_>>(),
        "the newest are kept"
    );
    assert!(j.get("e00").await.unwrap().is_none());
    assert_eq!(
        j.bounds().await.unwrap(),
        Bounds {
            oldest: Some(oldest),
            head: 10
        }
    );
    let again = j.append(batch(&["e00"])).await.unwrap();
    assert_eq!(
        cursors(&again.committed),
        [11],
        "a pruned uuid is new again"
    );
}

async fn events_committed_together_read_back_across_any_boundary(backend: &dyn Backend) {
    // 200 events of about 3 KB in one commit: more than one stored chunk of the embedded
    // journal (about 126 KiB each).
    let j = backend.open(keep_all()).await.journal;
    let names: Vec<String> = (0..200).map(|i| format!("big-{i:03}")).collect();
    let appended = j
        .append(Batch {
            events: names.iter().map(|n| big_event(n, 3000)).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cursors(&appended.committed), (1..=200).collect::<Vec<_>>());

    for (after, limit) in [(0, 200), (0, 7), (37, 50), (41, 100), (150, 1000), (199, 5)] {
        let read = j.read_after(after, limit).await.unwrap();
        let expected: Vec<Cursor> = (after + 1..=200).take(limit).collect();
        assert_eq!(cursors(&read), expected, "read_after({after}, {limit})");
        for event in &read {
            assert_eq!(event.uuid(), names[event.cursor() as usize - 1]);
        }
    }
    for (before, limit) in [(201, 200), (90, 60), (44, 3), (2, 10)] {
        let read = j.read_before(before, limit).await.unwrap();
        let expected: Vec<Cursor> = (1..before).rev().take(limit).collect();
        assert_eq!(cursors(&read), expected, "read_before({before}, {limit})");
    }
    for (i, name) in names.iter().enumerate() {
        let got = j.get(name).await.unwrap().expect("stored");
        assert_eq!(got.cursor(), i as u64 + 1);
        assert_eq!(got.record().unwrap().message.len(), 3000);
    }
}

async fn retention_keeps_the_newest_of_events_committed_together(backend: &dyn Backend) {
    let sized = |i: usize| big_event(&format!("t{i:02}"), 1000);
    let one = sized(0).commit(10).encoded.len() as u64;
    let retention = Retention {
        max_age: None,
        max_bytes: Some(3 * one),
        check_interval: Duration::from_secs(3600),
    };
    let opened = backend.open(retention).await;
    if !opened.control.capabilities().retention_by_size {
        return;
    }
    let j = opened.journal.clone();
    j.append(Batch {
        events: (0..10).map(sized).collect(),
        ..Default::default()
    })
    .await
    .unwrap();

    // (The background pass may have pruned first: what is retained is what counts.)
    opened.control.prune_now().await.unwrap();

    assert_eq!(cursors(&everything(&j).await), [8, 9, 10]);
    assert_eq!(
        j.bounds().await.unwrap(),
        Bounds {
            oldest: Some(8),
            head: 10
        }
    );
    assert!(j.get("t06").await.unwrap().is_none());
    assert_eq!(j.get("t07").await.unwrap().map(|e| e.cursor()), Some(8));
    assert_eq!(cursors(&j.read_before(11, 10).await.unwrap()), [10, 9, 8]);
    // Nothing more is due, and what is kept stays readable after another pass.
    assert_eq!(opened.control.prune_now().await.unwrap().events, 0);
    assert_eq!(cursors(&everything(&j).await), [8, 9, 10]);
    let next = j.append(batch(&["t00", "t11"])).await.unwrap();
    assert_eq!(
        cursors(&next.committed),
        [11, 12],
        "a pruned uuid is new again"
    );
}

// ---------------------------------------------------------------------------------------------
// One module per implementation.

macro_rules! journal_suite {
    ($backend:path => $($spec:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $spec() {
                let backend = $backend().await;
                within(super::$spec(&backend)).await;
            }
        )*
    };
}

/// The specifications every implementation runs.
macro_rules! every_spec {
    ($backend:path) => {
        journal_suite!($backend =>
        cursors_start_at_one_and_are_gap_free_across_batches,
        a_uuid_already_stored_is_dropped_as_a_duplicate,
        a_uuid_repeated_within_one_batch_is_stored_once,
        a_batch_commits_events_state_and_quarantine_together,
        pages_forwards_and_backwards_by_cursor,
        gets_an_event_by_its_uuid,
        an_append_that_returned_is_read_at_once,
        finds_the_cursor_before_a_time,
        reports_bounds,
        state_round_trips,
        quarantine_round_trips_oldest_first,
        reopening_keeps_everything_and_continues_without_gap,
        the_hub_gets_committed_events_in_cursor_order_without_duplicates,
        concurrent_appends_share_commits_and_stay_gap_free,
        check_reports_a_working_journal_and_a_closed_one,
        retention_by_age_removes_the_oldest_and_forgets_their_uuids,
        retention_runs_in_the_background,
        retention_by_size_removes_the_oldest_first,
        retention_keeps_the_newest_of_events_committed_together,
        events_committed_together_read_back_across_any_boundary,
        any_uuid_characters_round_trip,
        );
    };
}

mod redb {
    use super::*;

    every_spec!(redb_backend);
}

mod nats {
    use super::*;

    every_spec!(nats_backend);
}

/// The embedded journal survives `kill -9`: the test re-runs its own binary as a child that
/// appends from many tasks and reports each acknowledged append, kills it at a random moment,
/// and reopens the file.
mod redb_crash {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// Set (to the data dir) in the child process only.
    const CHILD_DIR: &str = "OKTA_STREAM_TEST_JOURNAL_CHILD_DIR";
    /// How long a child appends at most if nobody kills it.
    const CHILD_LIFETIME: Duration = Duration::from_secs(30);

    async fn child(dir: &std::path::Path) {
        let journal = RedbJournal::open(dir, Retention::keep_all(), Hub::new(1024, 0))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for task in 0..16 {
            let journal = journal.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    // Unique per child process: a restarted child appends new events.
                    let pid = std::process::id();
                    let names: Vec<String> =
                        (0..5).map(|i| format!("p{pid}-t{task}-{n}-{i}")).collect();
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    let appended = journal.append(batch(&refs)).await.unwrap();
                    let acked: Vec<String> = appended
                        .committed
                        .iter()
                        .map(|e| format!("{}={}", e.uuid(), e.cursor()))
                        .collect();
                    // One write per line so a kill never leaves half a line that parses.
                    println!("acked {}", acked.join(" "));
                }
            }));
        }
        tokio::time::sleep(CHILD_LIFETIME).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_event_survives_kill_9_exactly_once() {
        if let Some(dir) = std::env::var_os(CHILD_DIR) {
            return child(std::path::Path::new(&dir)).await;
        }
        within(async {
            let dir = tempfile::tempdir().unwrap();
            let mut acked: Vec<(String, Cursor)> = Vec::new();
            for round in 0..3 {
                let kill_after = rand::random_range(50..600);
                let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "redb_crash::every_acknowledged_event_survives_kill_9_exactly_once",
                        "--exact",
                        "--nocapture",
                    ])
                    .env(CHILD_DIR, dir.path())
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                let mut acks = 0;
                while acks < kill_after {
                    let line = lines.next_line().await.unwrap().expect("child ended early");
                    let Some(pairs) = line.strip_prefix("acked ") else {
                        continue;
                    };
                    for pair in pairs.split(' ') {
                        let (uuid, cursor) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad ack line {line:?}"));
                        acked.push((uuid.to_owned(), cursor.parse().unwrap()));
                    }
                    acks += 1;
                }
                child.kill().await.unwrap(); // SIGKILL
                child.wait().await.unwrap();

                let journal = RedbJournal::open(dir.path(), Retention::keep_all(), Hub::new(16, 0))
                    .await
                    .unwrap();
                let shared: SharedJournal = journal.clone();
                let stored = everything(&shared).await;
                let head = journal.bounds().await.unwrap().head;
                assert_eq!(
                    cursors(&stored),
                    (1..=head).collect::<Vec<_>>(),
                    "round {round}: gap-free"
                );
                let distinct: HashSet<String> = uuids(&stored).into_iter().collect();
                assert_eq!(
                    distinct.len(),
                    stored.len(),
                    "round {round}: each uuid once"
                );
                for (uuid, cursor) in &acked {
                    let found = journal.get(uuid).await.unwrap();
                    assert_eq!(
                        found.map(|e| e.cursor()),
                        Some(*cursor),
                        "round {round}: acknowledged {uuid} lost"
                    );
                }
                journal.close().await;
            }
        })
        .await;
    }
}
