//! The profile snapshot store: one suite of behaviour, run on both implementations (a redb
//! table in a database handed in, and a JetStream KV bucket on the test NATS server); and the
//! JetStream values store replicas share (first writer wins, one redaction key).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::within;
use okta_stream::hub::Hub;
use okta_stream::journal::embedded::RedbJournal;
use okta_stream::journal::{Batch, Journal, NewEvent, Retention};
use okta_stream::profile::store::nats::bucket_name;
use okta_stream::profile::store::nats_values::{NatsValues, bucket_name as values_bucket_name};
use okta_stream::profile::{
    AttributeRules, NatsSnapshots, RedactionKey, RedbSnapshots, Snapshot, SnapshotStore,
    ValuesStore,
};
use okta_stream::proto;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_580_000 + seconds, 0).unwrap()
}

fn snapshot(seconds: i64, title: &str) -> Snapshot {
    let rules = AttributeRules::new(
        &[],
        &["mobilePhone".to_owned()],
        RedactionKey::from_bytes([5; 32]),
    )
    .unwrap();
    let profile = json!({"title": title, "mobilePhone": "+1 555 0100", "groups": ["a", {"b": 1}]});
    Snapshot::from_profile(&rules, profile.as_object().unwrap(), at(seconds))
}

/// The behaviour both stores share.
async fn suite(store: &dyn SnapshotStore) {
    // A user never seen has no snapshot; the first put stores it whole.
    assert_eq!(store.get("00u1").await.unwrap(), None);
    assert!(store.put("00u1", &snapshot(10, "Engineer")).await.unwrap());
    assert_eq!(
        store.get("00u1").await.unwrap(),
        Some(snapshot(10, "Engineer"))
    );

    // A newer reading replaces it; an older one never does.
    assert!(store.put("00u1", &snapshot(20, "Manager")).await.unwrap());
    assert!(!store.put("00u1", &snapshot(15, "Stale")).await.unwrap());
    assert_eq!(
        store.get("00u1").await.unwrap(),
        Some(snapshot(20, "Manager"))
    );

    // Users are independent; ids that are not plain tokens are keys too.
    assert!(
        store
            .put("jane.doe@example.com", &snapshot(1, "Odd id"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("jane.doe@example.com").await.unwrap(),
        Some(snapshot(1, "Odd id"))
    );
    assert_eq!(
        store.get("00u1").await.unwrap(),
        Some(snapshot(20, "Manager"))
    );

    // A sweep page: every newer reading written, older ones skipped.
    let page = vec![
        ("00u1".to_owned(), snapshot(19, "Older")),
        ("00u2".to_owned(), snapshot(30, "New")),
        ("00u3".to_owned(), snapshot(31, "New too")),
    ];
    assert_eq!(store.put_many(&page).await.unwrap(), 2);
    assert_eq!(
        store.get("00u1").await.unwrap(),
        Some(snapshot(20, "Manager"))
    );
    assert_eq!(
        store.get("00u3").await.unwrap(),
        Some(snapshot(31, "New too"))
    );

    // The sweep watermark starts unset and never goes back.
    assert_eq!(store.watermark().await.unwrap(), None);
    store.set_watermark(at(100)).await.unwrap();
    store.set_watermark(at(50)).await.unwrap();
    assert_eq!(store.watermark().await.unwrap(), Some(at(100)));

    // A key that cannot be a user id is refused, naming it.
    let err = store.get("").await.unwrap_err();
    assert!(err.to_string().contains("not an Okta user id"), "{err}");
}

#[tokio::test]
async fn redb_snapshots_in_a_database_handed_in() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("journal.redb")).unwrap());
        let store = RedbSnapshots::open(db.clone()).await.unwrap();
        suite(&store).await;
        // Another handle on the same database (as after a restart) sees the same snapshots.
        let again = RedbSnapshots::open(db).await.unwrap();
        assert_eq!(again.get("00u2").await.unwrap(), Some(snapshot(30, "New")));
    })
    .await;
}

/// An event of about 1 KB, so retention by size removes a known number of them.
fn sized_event(n: u64) -> NewEvent {
    NewEvent::new(proto::Event {
        uuid: format!("event-{n}"),
        message: "x".repeat(1000),
        ..Default::default()
    })
}

/// Stored values that name their cursor, so a row read back shows whose it is.
fn values_of(cursors: std::ops::RangeInclusive<u64>) -> Vec<(u64, bytes::Bytes)> {
    cursors
        .map(|c| (c, bytes::Bytes::from(format!("values of {c}"))))
        .collect()
}

#[tokio::test]
async fn retention_removes_the_values_of_the_events_it_removes_and_keeps_the_rest() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let one = sized_event(1).commit(1).encoded.len() as u64;
        // Room for the newest two events.
        let retention = Retention {
            max_age: None,
            max_bytes: Some(2 * one),
            check_interval: Duration::from_secs(3600),
        };
        let journal = RedbJournal::open(dir.path(), retention, Hub::new(16, 0))
            .await
            .unwrap();
        let store = RedbSnapshots::in_journal(journal.clone()).await.unwrap();
        journal
            .append(Batch {
                events: (1..=5).map(sized_event).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .release(values_of(1..=5), Vec::new(), 5)
            .await
            .unwrap();
        assert_eq!(store.values(1, 5).await.unwrap(), values_of(1..=5));

        // The retention task's first check (at open) may already have pruned: the outcome, not
        // which of the two did it, is what counts.
        journal.prune_now().await.unwrap();
        assert_eq!(journal.bounds().await.unwrap().oldest, Some(4));
        assert_eq!(
            store.values(1, 5).await.unwrap(),
            values_of(4..=5),
            "the removed events' values are gone, the kept events' values stay as stored"
        );

        // A row written late for an event retention already removed (the stage released it
        // after the prune) goes with the next prune; the kept rows still stay.
        store
            .release(values_of(2..=2), Vec::new(), 5)
            .await
            .unwrap();
        journal
            .append(Batch {
                events: (6..=6).map(sized_event).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .release(values_of(6..=6), Vec::new(), 6)
            .await
            .unwrap();
        assert_eq!(journal.prune_now().await.unwrap().events, 1);
        assert_eq!(store.values(1, 6).await.unwrap(), values_of(5..=6));
        assert_eq!(store.released_through().await.unwrap(), 6);

        // A late row goes at the next check also when that check removes no event.
        store
            .release(values_of(3..=3), Vec::new(), 6)
            .await
            .unwrap();
        assert_eq!(journal.prune_now().await.unwrap().events, 0);
        assert_eq!(store.values(1, 6).await.unwrap(), values_of(5..=6));

        // Durable: the file opened again has the same rows.
        journal.close().await;
        let journal = RedbJournal::open(dir.path(), Retention::keep_all(), Hub::new(16, 0))
            .await
            .unwrap();
        let store = RedbSnapshots::in_journal(journal.clone()).await.unwrap();
        assert_eq!(store.values(1, 6).await.unwrap(), values_of(5..=6));
        journal.close().await;
    })
    .await;
}

/// A KV bucket unique to one test, deleted on drop.
struct TestBucket {
    stream: String,
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let names = [
            format!("KV_{}", bucket_name(&self.stream)),
            format!("KV_{}", values_bucket_name(&self.stream)),
        ];
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let js = jetstream::new(client);
                    for name in names {
                        let _ = js.delete_stream(name).await;
                    }
                }
            });
        })
        .join();
    }
}

fn nats_url() -> String {
    std::env::var("OKTA_STREAM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

#[tokio::test]
async fn nats_snapshots_in_a_kv_bucket_named_after_the_stream() {
    within(LIMIT, async {
        let bucket = TestBucket {
            stream: format!("T_profiles_{:08x}", rand::random::<u32>()),
        };
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        let store = NatsSnapshots::open(&js, &bucket.stream, 1).await.unwrap();
        assert_eq!(store.bucket(), format!("{}_PROFILES", bucket.stream));
        suite(&store).await;
        // A second replica opening the same bucket shares the snapshots.
        let replica = NatsSnapshots::open(&js, &bucket.stream, 1).await.unwrap();
        assert_eq!(
            replica.get("00u2").await.unwrap(),
            Some(snapshot(30, "New"))
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_puts_on_nats_converge_on_the_newest_reading() {
    within(LIMIT, async {
        let bucket = TestBucket {
            stream: format!("T_profiles_{:08x}", rand::random::<u32>()),
        };
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        let a = NatsSnapshots::open(&js, &bucket.stream, 1).await.unwrap();
        let b = NatsSnapshots::open(&js, &bucket.stream, 1).await.unwrap();
        let writes = (0..16).map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move { store.put("00u9", &snapshot(i, &format!("t{i}"))).await }
        });
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
        assert_eq!(a.get("00u9").await.unwrap(), Some(snapshot(15, "t15")));
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_entry_is_an_error_naming_the_user_until_a_fresh_reading_replaces_it() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("j.redb")).unwrap());
        let store = RedbSnapshots::open(db.clone()).await.unwrap();
        {
            const TABLE: redb::TableDefinition<&str, &[u8]> =
                redb::TableDefinition::new("profile_snapshots");
            let txn = db.begin_write().unwrap();
            txn.open_table(TABLE)
                .unwrap()
                .insert("00uBad", b"garbage".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = store.get("00uBad").await.unwrap_err();
        assert!(err.to_string().contains("00uBad"), "{err}");
        // A fresh reading heals it.
        assert!(store.put("00uBad", &snapshot(1, "x")).await.unwrap());
        assert_eq!(store.get("00uBad").await.unwrap(), Some(snapshot(1, "x")));
    })
    .await;
}

/// The `max_age` of the values bucket of `stream`.
async fn bucket_max_age(js: &jetstream::Context, stream: &str) -> Duration {
    let name = format!("KV_{}", values_bucket_name(stream));
    let mut bucket = js.get_stream(&name).await.unwrap();
    bucket.info().await.unwrap().config.max_age
}

/// Values stored at `cursor`, as a store keeps them (opaque bytes).
fn values(cursor: u64, by: &str) -> (u64, Bytes) {
    (cursor, Bytes::from(format!("{by}{cursor}")))
}

#[tokio::test]
async fn nats_values_first_writer_wins_and_released_through_never_moves_back() {
    within(LIMIT, async {
        let bucket = TestBucket {
            stream: format!("T_values_{:08x}", rand::random::<u32>()),
        };
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        let hour = Duration::from_secs(3600);
        let open = |max_age| {
            let js = js.clone();
            let stream = bucket.stream.clone();
            async move {
                let snapshots = NatsSnapshots::open(&js, &stream, 1).await.unwrap();
                NatsValues::open(&js, &stream, 1, max_age, snapshots)
                    .await
                    .unwrap()
            }
        };
        let (a, b) = (open(hour).await, open(hour).await);
        assert_eq!(a.bucket(), format!("{}_VALUES", bucket.stream));
        assert_eq!(a.released_through().await.unwrap(), 0);

        // A releases 3 and 5; B resolved 5 too, but A's values were stored first.
        let agreed = a
            .release_agreed(vec![values(3, "a"), values(5, "a")], vec![], 5)
            .await
            .unwrap();
        assert_eq!(agreed, vec![values(3, "a"), values(5, "a")]);
        let agreed = b
            .release_agreed(
                vec![values(5, "b"), values(7, "b")],
                vec![("00u1".to_owned(), snapshot(10, "Engineer"))],
                7,
            )
            .await
            .unwrap();
        assert_eq!(agreed, vec![values(5, "a"), values(7, "b")]);
        assert_eq!(
            a.values_at(&[3, 4, 5, 7]).await.unwrap(),
            vec![values(3, "a"), values(5, "a"), values(7, "b")]
        );
        assert_eq!(
            a.values(4, 10).await.unwrap(),
            a.values_at(&[5, 7]).await.unwrap()
        );
        // The snapshots of a release are stored; released_through never moves back.
        let snapshots = NatsSnapshots::open(&js, &bucket.stream, 1).await.unwrap();
        assert_eq!(
            snapshots.get("00u1").await.unwrap(),
            Some(snapshot(10, "Engineer"))
        );
        a.release(vec![], vec![], 4).await.unwrap();
        assert_eq!(a.released_through().await.unwrap(), 7);
        assert_eq!(b.released_through().await.unwrap(), 7);

        // One redaction key for every replica: equal values hash equally.
        let (ka, kb) = (
            snapshots.redaction_key().await.unwrap(),
            NatsSnapshots::open(&js, &bucket.stream, 1)
                .await
                .unwrap()
                .redaction_key()
                .await
                .unwrap(),
        );
        assert_eq!(
            ka.hash("mobilePhone", &json!("555-0100")),
            kb.hash("mobilePhone", &json!("555-0100"))
        );
        assert_eq!(format!("{ka:?}"), "***");

        // The bucket keeps values as long as the stream keeps events: a new retention is
        // applied to the bucket at the next open.
        assert_eq!(bucket_max_age(&js, &bucket.stream).await, hour);
        let _reopened = open(2 * hour).await;
        assert_eq!(bucket_max_age(&js, &bucket.stream).await, 2 * hour);
    })
    .await;
}
