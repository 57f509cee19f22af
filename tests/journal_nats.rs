//! What only the NATS JetStream journal has, against a real `nats-server` with JetStream
//! (`OKTA_STREAM_TEST_NATS_URL`, default `nats://127.0.0.1:4222`): several replicas on one
//! stream, the dedupe window and the lookup beyond it, reads across read windows and after an
//! operator's purge, stream settings checked at open, compare-and-set state, and the poller
//! lease. The behaviours both journals share run against both in `tests/journal.rs`. Each
//! test uses its own stream, subject and buckets (random suffix), deleted at the end, also on
//! failure.

#[path = "common/nats_stream.rs"]
mod nats_stream;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream;
use async_trait::async_trait;
use nats_stream::TestStream;
use okta_stream::hub::Hub;
use okta_stream::journal::nats::{LEASE_KEY, NatsConfig, NatsJournal, PollerLease};
use okta_stream::journal::{
    Appended, Batch, Bounds, Cursor, Journal, JournalError, NewEvent, QuarantineId, QuarantinePage,
    Quarantined, SharedEvent, SharedJournal, StateWrite,
};
use okta_stream::proto;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Fails the test instead of hanging it.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the test timed out")
}

fn event(uuid: &str) -> NewEvent {
    NewEvent::new(proto::Event {
        uuid: uuid.to_owned(),
        event_type: "user.account.update_profile".to_owned(),
        message: format!("event {uuid}"),
        ..Default::default()
    })
}

fn events(uuids: &[&str]) -> Batch {
    Batch {
        events: uuids.iter().map(|u| event(u)).collect(),
        ..Batch::default()
    }
}

fn cursors(events: &[SharedEvent]) -> Vec<Cursor> {
    events.iter().map(|e| e.cursor()).collect()
}

fn uuids(events: &[SharedEvent]) -> Vec<String> {
    events.iter().map(|e| e.uuid().to_owned()).collect()
}

async fn append(journal: &NatsJournal, uuids: &[&str]) -> Appended {
    journal.append(events(uuids)).await.unwrap()
}

#[tokio::test]
async fn concurrent_appends_of_the_same_uuids_store_each_once() {
    within(async {
        let test = TestStream::new("race");
        let (a, _hub_a) = test.open().await;
        let (b, _hub_b) = test.open().await;
        let batch: Vec<String> = (0..50).map(|i| format!("uuid-{i}")).collect();
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();

        let (from_a, from_b) = tokio::join!(append(&a, &refs), append(&b, &refs));

        assert_eq!(from_a.committed.len() + from_b.committed.len(), 50);
        assert_eq!(from_a.duplicates + from_b.duplicates, 50);
        let stored = a.read_after(0, 1000).await.unwrap();
        assert_eq!(cursors(&stored), (1..=50).collect::<Vec<_>>());
        let distinct: HashSet<String> = uuids(&stored).into_iter().collect();
        assert_eq!(distinct.len(), 50);
    })
    .await
}

#[tokio::test]
async fn a_uuid_older_than_the_duplicate_window_is_still_dropped() {
    within(async {
        let mut test = TestStream::new("window");
        test.config.duplicate_window = Duration::from_millis(300);
        let (journal, _hub) = test.open().await;
        append(&journal, &["late"]).await;

        tokio::time::sleep(Duration::from_millis(800)).await;
        let again = append(&journal, &["late", "new"]).await;

        assert_eq!(uuids(&again.committed), ["new"]);
        assert_eq!(again.duplicates, 1);
    })
    .await
}

#[tokio::test]
async fn a_long_read_spans_several_windows_without_a_gap() {
    within(async {
        let test = TestStream::new("long");
        let (journal, _hub) = test.open().await;
        let all: Vec<String> = (0..700).map(|i| format!("e{i}")).collect();
        for chunk in all.chunks(100) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            append(&journal, &refs).await;
        }
        // Another instance has no idea where the head is: it must still read everything.
        let (other, _hub) = test.open().await;
        let page = other.read_after(0, 10_000).await.unwrap();
        assert_eq!(cursors(&page), (1..=700).collect::<Vec<_>>());
        let back = other.read_before(701, 600).await.unwrap();
        assert_eq!(cursors(&back), (101..=700).rev().collect::<Vec<_>>());
    })
    .await
}

#[tokio::test]
async fn retention_keeps_the_head_and_moves_oldest() {
    within(async {
        let test = TestStream::new("purge");
        let (journal, _hub) = test.open().await;
        append(&journal, &["a", "b", "c"]).await;
        let js = test.context().await;
        let stream = js.get_stream(&test.config.stream).await.unwrap();
        stream.purge().keep(1).await.unwrap();

        assert_eq!(
            journal.bounds().await.unwrap(),
            Bounds {
                oldest: Some(3),
                head: 3
            }
        );
        assert_eq!(cursors(&journal.read_after(0, 10).await.unwrap()), [3]);
        assert_eq!(
            cursors(&journal.read_before(u64::MAX, 10).await.unwrap()),
            [3]
        );
        stream.purge().await.unwrap();
        assert_eq!(
            journal.bounds().await.unwrap(),
            Bounds {
                oldest: None,
                head: 3
            },
            "the head never goes down"
        );
        let next = append(&journal, &["d"]).await;
        assert_eq!(cursors(&next.committed), [4]);
    })
    .await
}

fn state_write(value: &str) -> Option<StateWrite> {
    Some(StateWrite {
        key: "poller.next_url".to_owned(),
        value: value.as_bytes().to_vec(),
    })
}

#[tokio::test]
async fn a_replica_with_a_stale_revision_cannot_advance_the_state() {
    within(async {
        let test = TestStream::new("cas");
        let (old_poller, _hub_a) = test.open().await;
        let (new_poller, _hub_b) = test.open().await;
        old_poller
            .append(Batch {
                state: state_write("1"),
                ..Batch::default()
            })
            .await
            .unwrap();

        // The new lease holder reads the cursor, then advances it.
        assert_eq!(
            new_poller.state("poller.next_url").await.unwrap(),
            Some(b"1".to_vec())
        );
        new_poller
            .append(Batch {
                state: state_write("2"),
                ..Batch::default()
            })
            .await
            .unwrap();

        let stale = old_poller
            .append(Batch {
                state: state_write("stale"),
                ..Batch::default()
            })
            .await;
        assert!(
            matches!(stale, Err(JournalError::Conflict { ref key }) if key == "poller.next_url"),
            "{stale:?}"
        );
        assert!(
            old_poller
                .append(Batch {
                    state: state_write("stale again"),
                    ..Batch::default()
                })
                .await
                .is_err(),
            "it keeps failing until the replica re-reads the state"
        );
        assert_eq!(
            old_poller.state("poller.next_url").await.unwrap(),
            Some(b"2".to_vec())
        );
    })
    .await
}

/// A journal whose reads find nothing: a follower on it yields only what the hub publishes,
/// and stalls (failing the test by timeout) at a hole.
#[derive(Debug)]
struct LiveOnly(Arc<NatsJournal>);

#[async_trait]
impl Journal for LiveOnly {
    async fn close(&self) {
        self.0.close().await
    }
    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        self.0.append(batch).await
    }
    async fn read_after(&self, _: Cursor, _: usize) -> Result<Vec<SharedEvent>, JournalError> {
        Ok(Vec::new())
    }
    async fn read_before(&self, _: Cursor, _: usize) -> Result<Vec<SharedEvent>, JournalError> {
        Ok(Vec::new())
    }
    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        self.0.get(uuid).await
    }
    async fn cursor_before_time(&self, since: i64) -> Result<Cursor, JournalError> {
        self.0.cursor_before_time(since).await
    }
    async fn bounds(&self) -> Result<Bounds, JournalError> {
        self.0.bounds().await
    }
    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.0.state(key).await
    }
    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError> {
        self.0.quarantine_page(page).await
    }
    async fn check(&self) -> Result<(), JournalError> {
        self.0.check().await
    }
}

/// The next `n` events the hub publishes, via a live-only follower started now.
fn live_events(
    hub: &Hub,
    journal: &Arc<NatsJournal>,
    n: usize,
) -> tokio::task::JoinHandle<Vec<SharedEvent>> {
    let live: SharedJournal = Arc::new(LiveOnly(journal.clone()));
    let mut follower = hub.follow(live, hub.head());
    tokio::spawn(async move {
        let mut seen = Vec::with_capacity(n);
        while seen.len() < n {
            seen.push(follower.next().await.unwrap());
        }
        seen
    })
}

/// Waits until `journal`'s tail has published `n` events, then checks no more come.
async fn assert_published_exactly(journal: &NatsJournal, n: u64) {
    while journal.tail_published() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(journal.tail_published(), n);
}

#[tokio::test]
async fn an_event_appended_on_one_replica_reaches_both_hubs_once_in_order() {
    within(async {
        let test = TestStream::new("replicas");
        let (a, hub_a) = test.open().await;
        let (b, hub_b) = test.open().await;
        let live_a = live_events(&hub_a, &a, 40);
        let live_b = live_events(&hub_b, &b, 40);

        for round in 0..10 {
            let on_a = [format!("a{round}-1"), format!("a{round}-2")];
            let on_b = [format!("b{round}-1"), format!("b{round}-2")];
            let batch_a = [on_a[0].as_str(), on_a[1].as_str()];
            // B also carries one of A's uuids: whichever lands second is a duplicate.
            let batch_b = [on_b[0].as_str(), on_b[1].as_str(), on_a[0].as_str()];
            let (x, y) = tokio::join!(append(&a, &batch_a), append(&b, &batch_b));
            assert_eq!(x.committed.len() + y.committed.len(), 4);
        }

        let (seen_a, seen_b) = (live_a.await.unwrap(), live_b.await.unwrap());
        assert_eq!(cursors(&seen_a), (1..=40).collect::<Vec<_>>());
        assert_eq!(
            uuids(&seen_a),
            uuids(&seen_b),
            "both replicas see one order"
        );
        assert_eq!(seen_a, seen_b);
        assert_published_exactly(&a, 40).await;
        assert_published_exactly(&b, 40).await;
    })
    .await
}

#[tokio::test]
async fn a_replica_opened_later_does_not_republish_old_events() {
    within(async {
        let test = TestStream::new("late");
        let (a, _hub_a) = test.open().await;
        append(&a, &["old-1", "old-2"]).await;
        let (b, hub_b) = test.open().await;
        assert_eq!(hub_b.head(), 2, "a fresh hub starts at the stream's head");
        let live = live_events(&hub_b, &b, 1);

        append(&a, &["new"]).await;

        assert_eq!(uuids(&live.await.unwrap()), ["new"]);
        assert_published_exactly(&b, 1).await;
    })
    .await
}

#[tokio::test]
async fn an_incompatible_stream_is_refused_naming_the_setting() {
    within(async {
        let test = TestStream::new("incompatible");
        let js = test.context().await;
        js.create_stream(stream::Config {
            name: test.config.stream.clone(),
            subjects: vec![format!("{}.other", test.config.subject)],
            ..Default::default()
        })
        .await
        .unwrap();
        let err = NatsJournal::open(test.config.clone(), Hub::new(16, 0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("subjects"), "{err}");

        js.delete_stream(&test.config.stream).await.unwrap();
        js.create_stream(stream::Config {
            name: test.config.stream.clone(),
            subjects: vec![format!("{}.>", test.config.subject)],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
        let err = NatsJournal::open(test.config.clone(), Hub::new(16, 0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("retention"), "{err}");
    })
    .await
}

#[tokio::test]
async fn compatible_settings_of_an_existing_stream_are_updated() {
    within(async {
        let mut test = TestStream::new("update");
        let (first, _hub) = test.open().await;
        append(&first, &["kept"]).await;
        test.config.max_age = Duration::from_secs(3600);
        test.config.duplicate_window = Duration::from_secs(600);

        let (reopened, _hub) = test.open().await;

        let info = test
            .context()
            .await
            .get_stream(&test.config.stream)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        assert_eq!(info.config.max_age, Duration::from_secs(3600));
        assert_eq!(info.config.duplicate_window, Duration::from_secs(600));
        assert_eq!(reopened.get("kept").await.unwrap().unwrap().cursor(), 1);
    })
    .await
}

#[tokio::test]
async fn the_quarantine_stream_keeps_within_the_size_limit_oldest_first() {
    within(async {
        let mut stream = TestStream::new("qbytes");
        stream.config.quarantine_max_bytes = Some(64 * 1024);
        let (journal, _hub) = stream.open().await;
        for i in 0..20 {
            let entry = Quarantined::new(
                format!("uuid: missing ({i})"),
                &format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(10 * 1024)),
                "hook eventId=e".into(),
                "2026-12-01T00:00:00Z".into(),
            );
            journal
                .append(Batch {
                    quarantine: vec![entry],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let kept = journal.quarantined(100).await.unwrap();
        let bytes: usize = kept.iter().map(|q| q.raw.len()).sum();
        assert!(kept.len() < 20 && bytes <= 64 * 1024, "{} kept", kept.len());
        assert!(
            kept.last().unwrap().reason.contains("(19)"),
            "the newest are kept"
        );
        // An existing stream takes a changed limit at the next open.
        journal.close().await;
        stream.config.quarantine_max_bytes = Some(32 * 1024);
        let (reopened, _hub) = stream.open().await;
        let bytes: usize = reopened
            .quarantined(100)
            .await
            .unwrap()
            .iter()
            .map(|q| q.raw.len())
            .sum();
        assert!(bytes <= 32 * 1024, "{bytes}");
    })
    .await
}

#[tokio::test]
async fn an_unreachable_server_is_a_storage_error() {
    within(async {
        let config = NatsConfig {
            servers: vec!["nats://127.0.0.1:1".to_owned()],
            ..NatsConfig::default()
        };
        let err = NatsJournal::open(config, Hub::new(16, 0))
            .await
            .unwrap_err();
        assert!(matches!(err, JournalError::Storage { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    })
    .await
}

const LEASE_TTL: Duration = Duration::from_millis(600);

#[tokio::test]
async fn only_one_of_two_contenders_holds_the_lease() {
    within(async {
        let test = TestStream::new("lease1");
        let (a, _hub_a) = test.open().await;
        let (b, _hub_b) = test.open().await;
        let contend = |journal: Arc<NatsJournal>, name: &'static str| {
            tokio::spawn(async move { journal.acquire_poller_lease(name, LEASE_TTL).await })
        };
        let mut contenders = [contend(a, "replica-a"), contend(b, "replica-b")];

        // The winner keeps renewing, so the other one still waits after several TTLs.
        tokio::time::sleep(LEASE_TTL * 4).await;
        let finished: Vec<bool> = contenders.iter().map(|c| c.is_finished()).collect();
        assert_eq!(finished.iter().filter(|f| **f).count(), 1, "{finished:?}");

        let winner = finished.iter().position(|f| *f).unwrap();
        let lease = (&mut contenders[winner]).await.unwrap().unwrap();
        assert!(lease.is_held());
        contenders[1 - winner].abort();
    })
    .await
}

#[tokio::test]
async fn a_dropped_holder_is_taken_over_within_the_ttl() {
    within(async {
        let test = TestStream::new("lease2");
        let (journal, _hub) = test.open().await;
        let first = journal
            .acquire_poller_lease("replica-1", LEASE_TTL)
            .await
            .unwrap();
        let lost = first.lost();
        let contender = tokio::spawn({
            let journal = journal.clone();
            async move { journal.acquire_poller_lease("replica-2", LEASE_TTL).await }
        });
        tokio::time::sleep(LEASE_TTL).await;
        assert!(!contender.is_finished());

        let dropped_at = tokio::time::Instant::now();
        drop(first);
        let second = contender.await.unwrap().unwrap();

        assert!(lost.is_cancelled(), "a dropped lease is not held");
        assert!(second.is_held());
        // At most one TTL of unchanged revision plus one poll and round trips.
        assert!(
            dropped_at.elapsed() < LEASE_TTL * 2,
            "{:?}",
            dropped_at.elapsed()
        );
    })
    .await
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    within(async {
        let test = TestStream::new("lease3");
        let (journal, _hub) = test.open().await;
        let first = journal
            .acquire_poller_lease("replica-1", Duration::from_secs(30))
            .await
            .unwrap();
        first.release().await.unwrap();

        let second = tokio::time::timeout(
            Duration::from_secs(5),
            journal.acquire_poller_lease("replica-2", Duration::from_secs(30)),
        )
        .await
        .expect("a released lease does not wait for the TTL")
        .unwrap();
        assert!(second.is_held());
    })
    .await
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_sees_it_lost_at_once() {
    within(async {
        let test = TestStream::new("lease4");
        let (journal, _hub) = test.open().await;
        let lease = PollerLease::acquire(journal.state_store(), "replica-1", LEASE_TTL)
            .await
            .unwrap();
        let lost = lease.lost();

        // Another writer changes the lease under the holder (as a contender's CAS would).
        journal
            .state_store()
            .put(LEASE_KEY, r#"{"holder":"replica-2","nonce":7}"#.into())
            .await
            .unwrap();

        tokio::time::timeout(LEASE_TTL, lost.cancelled())
            .await
            .expect("the holder notices at its next renewal");
        assert!(!lease.is_held());
    })
    .await
}

#[tokio::test]
async fn a_holder_that_cannot_renew_gives_up_before_others_take_over() {
    within(async {
        let test = TestStream::new("lease5");
        let (journal, _hub) = test.open().await;
        let lease = journal
            .acquire_poller_lease("replica-1", LEASE_TTL)
            .await
            .unwrap();
        let lost = lease.lost();
        let acquired = tokio::time::Instant::now();

        // The bucket disappears: renewals fail.
        let js = test.context().await;
        js.delete_key_value(format!("{}_STATE", test.config.stream))
            .await
            .unwrap();

        tokio::time::timeout(LEASE_TTL * 2, lost.cancelled())
            .await
            .expect("the lease is given up when it cannot be renewed");
        assert!(acquired.elapsed() <= LEASE_TTL, "{:?}", acquired.elapsed());
    })
    .await
}

#[tokio::test]
async fn a_closed_journal_stops_publishing_to_its_hub() {
    within(async {
        let test = TestStream::new("close");
        let (a, _hub_a) = test.open().await;
        let (b, hub_b) = test.open().await;
        append(&a, &["one"]).await;
        assert_published_exactly(&b, 1).await;

        b.close().await;
        append(&a, &["two"]).await;
        assert_published_exactly(&a, 2).await;

        assert_eq!(b.tail_published(), 1);
        assert_eq!(hub_b.head(), 1);
        assert!(
            matches!(b.get("two").await, Err(JournalError::Closed)),
            "a closed journal answers Closed, as the Journal trait says"
        );
        assert!(matches!(
            b.append(events(&["three"])).await,
            Err(JournalError::Closed)
        ));
        assert_eq!(a.get("two").await.unwrap().unwrap().cursor(), 2);
        assert!(
            a.get("three").await.unwrap().is_none(),
            "nothing was stored"
        );
    })
    .await
}
