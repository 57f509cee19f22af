//! Old → new profile values on the NATS journal (issue 13): two replicas share one JetStream
//! stream on a private `nats-server`, with the feature on. Both must serve the same values
//! (the first replica to store an event's values wins), hash a redacted attribute with the
//! same key, sweep once between them, and a restarted replica loses and duplicates nothing.

mod common;
#[path = "common/nats_cluster.rs"]
mod nats_cluster;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::app::{TestApp, delivery, next_event};
use common::fake_okta::{FakeAuth, FakeOkta, log_event};
use common::within;
use nats_cluster::NatsCluster;
use okta_stream::config::{Config, JournalKind};
use okta_stream::grpc::SubscribeResponse;
use okta_stream::profile::RedactionKey;
use okta_stream::proto::event_filter::Start;
use okta_stream::proto::{self, EventFilter, ProfileValuesStatus as Status};
use serde_json::{Value, json};
use tonic::Streaming;

const TOKEN: &str = "00SSWS-profile-values-nats-token";
const LIMIT: Duration = Duration::from_secs(120);
/// Bound on one wait for an event (a replica may wait for its values up to its timeout).
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// A replica on `stream` at `nats`, with the feature on against `fake`, redacting
/// `mobilePhone`, its update events waiting at most `timeout` for their values.
fn replica(
    fake: &FakeOkta,
    nats: &str,
    stream: &str,
    timeout: Duration,
) -> impl FnOnce(&mut Config) {
    let (base, nats, stream) = (fake.base.clone(), nats.to_owned(), stream.to_owned());
    move |config| {
        config.journal = JournalKind::Nats {
            servers: vec![nats],
        };
        config.nats.stream = stream;
        config.okta.org.org_url = Some(base.parse().unwrap());
        config.okta.org.api_token = Some(okta_stream::secret::Secret::new(TOKEN));
        config.okta.poll_lease = Duration::from_secs(4);
        config.profile.enabled = true;
        config.profile.timeout = timeout;
        config.profile.attributes = vec!["title".into(), "mobilePhone".into()];
        config.profile.redact = vec!["mobilePhone".into()];
    }
}

fn update(uuid: &str, user: &str, published: DateTime<Utc>, changed: &str) -> Value {
    let published = published.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut event = log_event(uuid, "user.account.update_profile", &published);
    event["target"] = json!([{"id": user, "type": "User", "alternateId": format!("{user}@example.com"), "displayName": "Jane Doe"}]);
    event["debugContext"]["debugData"]["changedAttributes"] = json!(changed);
    event
}

async fn post(app: &TestApp, event: Value) {
    let uuid = event["uuid"].as_str().unwrap().to_owned();
    let response = app
        .post_hook(&delivery(&format!("d-{uuid}"), vec![event]))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
}

async fn subscribe(app: &TestApp, start: Option<Start>) -> Streaming<SubscribeResponse> {
    app.client()
        .await
        .subscribe(EventFilter {
            start,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn text(value: &Option<prost_types::Value>) -> String {
    match value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(prost_types::value::Kind::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => "-".to_owned(),
    }
}

/// `attribute: old → new` per change.
fn changes(event: &proto::Event) -> Vec<String> {
    event
        .profile_changes
        .iter()
        .map(|c| {
            format!(
                "{}: {} → {}",
                c.attribute,
                text(&c.old_value),
                text(&c.new_value)
            )
        })
        .collect()
}

fn status(event: &proto::Event) -> Status {
    Status::try_from(event.profile_values_status).unwrap()
}

/// The value of the counter `name` (after the registry's prefix) in a Prometheus text, 0 when
/// absent.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name || metric.ends_with(&format!("_{name}"))).then(|| value.parse().ok())?
        })
        .unwrap_or(0)
}

async fn sweeps(app: &TestApp) -> u64 {
    counter(&app.metrics().await, "profile_sweeps_total")
}

/// The redaction key as stored in the stream's profile bucket.
async fn bucket_redaction_key(nats: &str, stream: &str) -> RedactionKey {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let kv = js
        .get_key_value(format!("{stream}_PROFILES"))
        .await
        .unwrap();
    let bytes = kv.get("meta.redaction_key").await.unwrap().expect("a key");
    RedactionKey::from_bytes(bytes.as_ref().try_into().expect("32 bytes"))
}

/// Waits until `app` completed a sweep.
async fn wait_for_sweep(app: &TestApp, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sweeps(app).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn list_requests(fake: &FakeOkta) -> usize {
    fake.user_requests()
        .iter()
        .filter(|r| r.path == "/api/v1/users")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_the_same_values_sweep_once_and_a_restart_loses_nothing() {
    within(LIMIT, async {
        let cluster = NatsCluster::start(1).await;
        let nats = cluster.urls()[0].clone();
        let stream = format!("PV_{:08x}", rand::random::<u32>());
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user(
            "00uJANE",
            json!({"title": "Engineer", "mobilePhone": "555-0100"}),
        );
        fake.add_users((0..250).map(|i| (format!("00u{i:04}"), json!({"title": "Engineer"}))));

        // A starts first and sweeps: 251 users are two pages.
        let a = TestApp::start_with(replica(&fake, &nats, &stream, Duration::from_secs(5))).await;
        wait_for_sweep(&a, "A's seeding sweep").await;
        // B starts beside it and does not sweep, also after longer than the lease TTL (it
        // would have taken the lease over by now if A did not hold it).
        let b = TestApp::start_with(replica(&fake, &nats, &stream, Duration::from_secs(5))).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!((sweeps(&a).await, sweeps(&b).await), (1, 0));
        assert_eq!(list_requests(&fake), 2, "one sweep of two pages");

        // An update posted to A reaches both with the same values; the redacted phone
        // hashes equally on both (one key for the deployment, from the bucket).
        let mut on_a = subscribe(&a, None).await;
        let mut on_b = subscribe(&b, None).await;
        let t1 = fake.update_user(
            "00uJANE",
            json!({"title": "Manager", "mobilePhone": "555-0199"}),
        );
        post(&a, update("n1", "00uJANE", t1, "title,mobilePhone")).await;
        let (e1_a, e1_b) = (
            next_event(&mut on_a, EVENT_WAIT).await,
            next_event(&mut on_b, EVENT_WAIT).await,
        );
        assert_eq!(e1_a.uuid, "n1");
        assert_eq!(status(&e1_a), Status::Complete);
        let shown = changes(&e1_a);
        assert_eq!(shown[0], "title: Engineer → Manager");
        assert!(
            shown[1].starts_with("mobilePhone: sha256:") && shown[1].contains("→ sha256:"),
            "{shown:?}"
        );
        assert!(!format!("{e1_a:?}").contains("555-01"));
        // The hash is keyed with the deployment's key from the bucket, not a per-replica file.
        let key = bucket_redaction_key(&nats, &stream).await;
        assert_eq!(
            text(&e1_a.profile_changes[1].new_value),
            key.hash("mobilePhone", &json!("555-0199"))
        );
        for app in [&a, &b] {
            let file = app
                .data_dir
                .path()
                .join(okta_stream::profile::rules::KEY_FILE_NAME);
            assert!(!file.exists(), "no key in a replica's data dir");
        }
        assert_eq!(e1_a, e1_b, "both replicas serve the same record");
        assert_eq!(a.get_event("n1").await, e1_a);
        assert_eq!(b.get_event("n1").await, e1_a);

        // The same phone set again, through B: its hash equals the one A computed.
        let t2 = fake.update_user("00uJANE", json!({"mobilePhone": "555-0100"}));
        post(&b, update("n2", "00uJANE", t2, "mobilePhone")).await;
        let (e2_a, e2_b) = (
            next_event(&mut on_a, EVENT_WAIT).await,
            next_event(&mut on_b, EVENT_WAIT).await,
        );
        assert_eq!(e2_a, e2_b);
        assert_eq!(status(&e2_a), Status::Complete);
        let phone = &e2_a.profile_changes[0];
        assert_eq!(
            text(&phone.old_value),
            text(&e1_a.profile_changes[1].new_value)
        );
        assert_eq!(
            text(&phone.new_value),
            text(&e1_a.profile_changes[1].old_value),
            "the value A hashed as the old one, B hashes the same"
        );

        // B stops; A takes more events; B restarts on its data dir: a replay on B shows
        // every event once, in cursor order, with the values A shows.
        let b_dir = b.stop_keeping_data().await;
        let t3 = fake.update_user("00uJANE", json!({"title": "Director"}));
        post(&a, update("n3", "00uJANE", t3, "title")).await;
        let mut neighbour = log_event("n4", "user.session.start", "2026-12-01T00:00:00.000Z");
        neighbour["debugContext"]["debugData"] = json!({});
        post(&a, neighbour).await;
        let e3 = next_event(&mut on_a, EVENT_WAIT).await;
        assert_eq!(changes(&e3), ["title: Manager → Director"]);
        let e4 = next_event(&mut on_a, EVENT_WAIT).await;
        assert_eq!(e4.uuid, "n4");
        // Reads of single users (a sweep taken over by A may list users meanwhile).
        let user_reads = || {
            fake.user_requests()
                .iter()
                .filter(|r| r.path.starts_with("/api/v1/users/"))
                .count()
        };
        let reads = user_reads();
        let b = TestApp::start_in(
            b_dir,
            okta_stream::hub::DEFAULT_LIVE_CAPACITY,
            replica(&fake, &nats, &stream, Duration::from_secs(5)),
        )
        .await;
        let mut replay = subscribe(&b, Some(Start::FromOldest(true))).await;
        for expected in [&e1_a, &e2_a, &e3, &e4] {
            assert_eq!(&next_event(&mut replay, EVENT_WAIT).await, expected);
        }
        assert_eq!(
            user_reads(),
            reads,
            "the restarted replica resolves nothing again: the values are stored once"
        );
        let mut on_b = subscribe(&b, None).await;
        post(
            &b,
            update(
                "n5",
                "00uJANE",
                fake.update_user("00uJANE", json!({"title": "VP"})),
                "title",
            ),
        )
        .await;
        let (e5_a, e5_b) = (
            next_event(&mut on_a, EVENT_WAIT).await,
            next_event(&mut on_b, EVENT_WAIT).await,
        );
        assert_eq!(e5_a, e5_b);
        assert_eq!(e5_a.cursor, e4.cursor + 1, "no gap, no duplicate");
        assert_eq!(changes(&e5_a), ["title: Director → VP"]);

        // A stops and releases the sweep lease: B takes it over and sweeps incrementally.
        a.stop().await.unwrap();
        wait_for_sweep(&b, "B's sweep after A stopped").await;
        let last = fake
            .user_requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/users")
            .last()
            .unwrap();
        assert!(last.param("search").is_some(), "an incremental sweep");
        drop(b);
    })
    .await;
}

/// First writer wins: A gives up on Okta after 1 s and stores UNAVAILABLE; B (a long timeout)
/// keeps asking, gets an answer once Okta is back, loses the race to store its values, and
/// serves A's, so both replicas show the same status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_the_race_serves_the_values_stored_first() {
    within(LIMIT, async {
        let cluster = NatsCluster::start(1).await;
        let nats = cluster.urls()[0].clone();
        let stream = format!("PV_{:08x}", rand::random::<u32>());
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user("00uRACE", json!({"title": "Engineer"}));
        let a = TestApp::start_with(replica(&fake, &nats, &stream, Duration::from_secs(1))).await;
        let b = TestApp::start_with(replica(&fake, &nats, &stream, Duration::from_secs(60))).await;
        let mut on_a = subscribe(&a, None).await;
        let mut on_b = subscribe(&b, None).await;

        fake.set_users_down(true);
        let t1 = fake.update_user("00uRACE", json!({"title": "Manager"}));
        post(&a, update("r1", "00uRACE", t1, "title")).await;
        let first = next_event(&mut on_a, EVENT_WAIT).await;
        assert_eq!(status(&first), Status::Unavailable);
        fake.set_users_down(false);
        let on_b_first = next_event(&mut on_b, EVENT_WAIT).await;
        assert_eq!(on_b_first, first, "B serves the values A stored first");
        assert!(
            counter(&b.metrics().await, "profile_fetches_ok_total") >= 1,
            "B did read the profile itself"
        );
        assert_eq!(b.get_event("r1").await, first);
        drop((a, b));
    })
    .await;
}
