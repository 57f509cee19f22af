//! Old → new profile values through the real app (issue 13): the fake Okta serves the Users
//! API, events come through the hook (and the poller), and subscribers, GetEvent and
//! ListEvents must all see the same values, with the status each case calls for.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use common::app::{TestApp, WAIT, delivery, next_event};
use common::fake_okta::{FakeAuth, FakeOkta, log_event};
use common::within;
use okta_stream::config::Config;
use okta_stream::grpc::SubscribeResponse;
use okta_stream::okta::{Credentials, PollerConfig, Secret, StartFrom};
use okta_stream::proto::event_filter::Start;
use okta_stream::proto::{self, EventFilter, ListEventsRequest, ProfileValuesStatus as Status};
use serde_json::{Value, json};
use tonic::Streaming;

const TOKEN: &str = "00SSWS-profile-values-token";
const LIMIT: Duration = Duration::from_secs(60);

fn profile_values(fake: &FakeOkta, config: &mut Config) {
    config.okta.org.org_url = Some(fake.base.parse().unwrap());
    config.okta.org.api_token = Some(okta_stream::secret::Secret::new(TOKEN));
    config.profile.enabled = true;
}

async fn start(fake: &FakeOkta, configure: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::start_with(|config| {
        profile_values(fake, config);
        configure(config);
    })
    .await
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A `user.account.update_profile` LogEvent about `user`, published at `published`.
fn update(uuid: &str, user: &str, published: DateTime<Utc>, changed: &str) -> Value {
    let mut event = log_event(uuid, "user.account.update_profile", &millis(published));
    event["target"] = json!([{"id": user, "type": "User", "alternateId": format!("{user}@example.com"), "displayName": "Jane Doe"}]);
    event["debugContext"]["debugData"]["changedAttributes"] = json!(changed);
    event
}

async fn post(app: &TestApp, event: Value) {
    let uuid = event["uuid"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let response = app
        .post_hook(&delivery(&format!("d-{uuid}"), vec![event]))
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the hook's acknowledgement waited {:?}",
        started.elapsed()
    );
}

async fn subscribe(app: &TestApp) -> Streaming<SubscribeResponse> {
    subscribe_with(app, EventFilter::default()).await
}

/// Subscribes with `filter` (the default: live from now).
async fn subscribe_with(app: &TestApp, filter: EventFilter) -> Streaming<SubscribeResponse> {
    app.client()
        .await
        .subscribe(filter)
        .await
        .unwrap()
        .into_inner()
}

fn from_oldest() -> EventFilter {
    EventFilter {
        start: Some(Start::FromOldest(true)),
        ..Default::default()
    }
}

fn text(value: &Option<prost_types::Value>) -> Option<String> {
    match value.as_ref()?.kind.as_ref()? {
        prost_types::value::Kind::StringValue(s) => Some(s.clone()),
        prost_types::value::Kind::NullValue(_) => Some("null".to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// `attribute: old → new` per change (`-` for an absent old value).
fn changes(event: &proto::Event) -> Vec<String> {
    event
        .profile_changes
        .iter()
        .map(|c| {
            format!(
                "{}: {} → {}",
                c.attribute,
                text(&c.old_value).unwrap_or_else(|| "-".to_owned()),
                text(&c.new_value).unwrap_or_else(|| "-".to_owned())
            )
        })
        .collect()
}

fn status(event: &proto::Event) -> Status {
    Status::try_from(event.profile_values_status).unwrap()
}

fn as_of(event: &proto::Event) -> DateTime<Utc> {
    let t = event.profile_as_of.unwrap();
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

#[tokio::test]
async fn never_seen_then_complete_then_newer_than_event_and_everyone_sees_the_same() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        let app = start(&fake, |_| {}).await;
        seeded(&app).await;
        // Created after the seeding sweep: never seen.
        fake.add_user("00uJANE", json!({"title": "Engineer", "department": "R&D"}));
        let mut stream = subscribe(&app).await;

        // Never seen before: new values only.
        let t1 = fake.update_user("00uJANE", json!({"title": "Manager"}));
        post(&app, update("e1", "00uJANE", t1, "title")).await;
        let e1 = next_event(&mut stream, WAIT).await;
        assert_eq!(e1.uuid, "e1");
        assert_eq!(status(&e1), Status::NoBaseline);
        assert_eq!(changes(&e1), ["title: - → Manager"]);
        assert_eq!(as_of(&e1), t1);

        // The snapshot of that read is the baseline of the next update.
        let t2 = fake.update_user("00uJANE", json!({"title": "Director", "department": null}));
        post(&app, update("e2", "00uJANE", t2, "title,department")).await;
        let e2 = next_event(&mut stream, WAIT).await;
        assert_eq!(e2.uuid, "e2");
        assert_eq!(status(&e2), Status::Complete);
        assert_eq!(
            changes(&e2),
            ["title: Manager → Director", "department: R&D → null"]
        );

        // Updated twice in quick succession: the read already holds the second change.
        let t3 = fake.update_user("00uJANE", json!({"title": "VP"}));
        fake.update_user("00uJANE", json!({"title": "CEO"}));
        post(&app, update("e3", "00uJANE", t3, "title")).await;
        let e3 = next_event(&mut stream, WAIT).await;
        assert_eq!(status(&e3), Status::NewerThanEvent);
        assert_eq!(changes(&e3), ["title: Director → CEO"]);
        assert!(as_of(&e3) > t3);

        // GetEvent, ListEvents and a replay show the very same values.
        for event in [&e1, &e2, &e3] {
            assert_eq!(&app.get_event(&event.uuid).await, event);
        }
        let listed = app
            .client()
            .await
            .list_events(ListEventsRequest {
                filter: Some(EventFilter::default()),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        assert_eq!(listed, vec![e1.clone(), e2.clone(), e3.clone()]);
        let mut replay = subscribe_with(&app, from_oldest()).await;
        for event in [&e1, &e2, &e3] {
            assert_eq!(&next_event(&mut replay, WAIT).await, event);
        }

        // A restart reads nothing again and shows the same values.
        let user_reads = || {
            fake.user_requests()
                .iter()
                .filter(|r| r.path.starts_with("/api/v1/users/"))
                .count()
        };
        let requests = user_reads();
        let dir = app.stop_keeping_data().await;
        let app = TestApp::start_in(dir, okta_stream::hub::DEFAULT_LIVE_CAPACITY, |c| {
            profile_values(&fake, c);
        })
        .await;
        let mut replay = subscribe_with(&app, from_oldest()).await;
        for event in [&e1, &e2, &e3] {
            assert_eq!(&next_event(&mut replay, WAIT).await, event);
        }
        assert_eq!(user_reads(), requests, "values are stored once");
        let metrics = app.metrics().await;
        assert!(metrics.contains("profile_fetches_ok_total"), "{metrics}");
    })
    .await;
}

/// Waits until the seeding sweep completed.
async fn seeded(app: &TestApp) {
    for _ in 0..200 {
        if app.metrics().await.contains("profile_sweeps_total 1") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the seeding sweep did not complete");
}

#[tokio::test]
async fn the_seeding_sweep_makes_the_first_update_complete_and_pages_every_user() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        for i in 0..450 {
            fake.add_user(&format!("00u{i:04}"), json!({"title": "Engineer"}));
        }
        let app = start(&fake, |_| {}).await;
        seeded(&app).await;
        let lists: Vec<_> = fake
            .user_requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/users")
            .collect();
        assert_eq!(lists.len(), 3, "450 users, 200 a page");
        assert_eq!(lists[0].param("limit").as_deref(), Some("200"));
        assert!(
            app.metrics()
                .await
                .contains("profile_sweep_users_total 450")
        );

        let mut stream = subscribe(&app).await;
        let t1 = fake.update_user("00u0042", json!({"title": "Manager"}));
        post(&app, update("s1", "00u0042", t1, "title")).await;
        let event = next_event(&mut stream, WAIT).await;
        assert_eq!(status(&event), Status::Complete);
        assert_eq!(changes(&event), ["title: Engineer → Manager"]);

        // A restart sweeps incrementally from the stored watermark.
        let dir = app.stop_keeping_data().await;
        let app = TestApp::start_in(dir, okta_stream::hub::DEFAULT_LIVE_CAPACITY, |c| {
            profile_values(&fake, c);
        })
        .await;
        seeded(&app).await;
        let last = fake
            .user_requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/users")
            .last()
            .unwrap();
        let search = last.param("search").expect("an incremental sweep searches");
        assert!(search.starts_with("lastUpdated gt \""), "{search}");
    })
    .await;
}

#[tokio::test]
async fn only_allowlisted_attributes_and_redacted_ones_as_hashes() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user(
            "00uRED",
            json!({"title": "Engineer", "mobilePhone": "555-0100", "ssn": "1"}),
        );
        let app = start(&fake, |c| {
            c.profile.attributes = vec!["title".into(), "mobilePhone".into()];
            c.profile.redact = vec!["mobilePhone".into()];
        })
        .await;
        let mut stream = subscribe(&app).await;
        let t1 = fake.update_user("00uRED", json!({"title": "Manager"}));
        post(&app, update("r1", "00uRED", t1, "title")).await;
        let first = next_event(&mut stream, WAIT).await;
        assert_eq!(first.profile_changes.len(), 1);
        assert_eq!(
            text(&first.profile_changes[0].new_value).unwrap(),
            "Manager"
        );

        let t2 = fake.update_user("00uRED", json!({"mobilePhone": "555-0199", "ssn": "2"}));
        post(&app, update("r2", "00uRED", t2, "ssn,mobilePhone")).await;
        let event = next_event(&mut stream, WAIT).await;
        assert_eq!(status(&event), Status::Complete);
        assert_eq!(event.profile_changes.len(), 1, "ssn is not allowlisted");
        let phone = &event.profile_changes[0];
        assert_eq!(phone.attribute, "mobilePhone");
        let (old, new) = (
            text(&phone.old_value).unwrap(),
            text(&phone.new_value).unwrap(),
        );
        assert!(
            old.starts_with("sha256:") && new.starts_with("sha256:"),
            "{old} {new}"
        );
        assert_ne!(old, new);
        let shown = format!("{event:?}");
        assert!(!shown.contains("555-01"), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn users_api_down_gives_unavailable_after_the_timeout_and_neighbours_wait_at_most_that() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user("00uDOWN", json!({"title": "Engineer"}));
        fake.set_users_down(true);
        let app = start(&fake, |c| c.profile.timeout = Duration::from_secs(2)).await;
        let mut stream = subscribe(&app).await;
        let t1 = fake.update_user("00uDOWN", json!({"title": "Manager"}));
        let started = Instant::now();
        post(&app, update("d1", "00uDOWN", t1, "title")).await;
        let mut neighbour = log_event("d2", "user.session.start", &millis(t1));
        neighbour["debugContext"]["debugData"] = json!({});
        post(&app, neighbour).await;
        let first = next_event(&mut stream, WAIT).await;
        let waited = started.elapsed();
        assert_eq!(first.uuid, "d1", "cursor order is kept");
        assert_eq!(status(&first), Status::Unavailable);
        assert!(
            first.profile_values_reason.contains("2s")
                && first.profile_values_reason.contains("503"),
            "{}",
            first.profile_values_reason
        );
        assert!(first.profile_changes.is_empty());
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        let second = next_event(&mut stream, WAIT).await;
        assert_eq!(second.uuid, "d2");
        assert_eq!(second.profile_values_status, 0, "not an update event");
        assert!(!fake.user_requests().is_empty());
        assert!(
            app.metrics()
                .await
                .contains("profile_events_unavailable_total 1")
        );
    })
    .await;
}

#[tokio::test]
async fn poller_events_get_values_too() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user(
            "00u1target",
            json!({"lastName": "Doe", "mobilePhone": null}),
        );
        let t1 = fake.update_user("00u1target", json!({"lastName": "Roe", "mobilePhone": "1"}));
        fake.push(log_event("p1", "user.account.update_profile", &millis(t1)));
        let mut poller =
            PollerConfig::new(fake.base.clone(), Credentials::ApiToken(Secret::new(TOKEN)));
        poller.poll_interval = Duration::from_millis(200);
        poller.start = StartFrom::Since(Utc::now() - chrono::Duration::days(1));
        let app = TestApp::start_with_poller_in(tempfile::tempdir().unwrap(), poller, |c| {
            profile_values(&fake, c);
        })
        .await;
        let mut stream = subscribe(&app).await;
        let event = next_event(&mut stream, WAIT).await;
        assert_eq!(event.uuid, "p1");
        assert_eq!(status(&event), Status::NoBaseline);
        assert_eq!(changes(&event), ["lastName: - → Roe", "mobilePhone: - → 1"]);
    })
    .await;
}

/// Runs the real binary with only `env` (and PATH) in its environment.
async fn binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_okta-stream"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    within(WAIT, command.output()).await.unwrap()
}

#[tokio::test]
async fn tail_and_get_print_the_changes() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        fake.add_user("00uCLI", json!({"title": "Engineer"}));
        let app = start(&fake, |_| {}).await;
        seeded(&app).await;
        let mut stream = subscribe(&app).await;
        let t1 = fake.update_user("00uCLI", json!({"title": "Manager"}));
        post(&app, update("c1", "00uCLI", t1, "title")).await;
        assert_eq!(
            status(&next_event(&mut stream, WAIT).await),
            Status::Complete
        );

        let grpc_url = format!("http://{}", app.grpc_addr);
        let env = [("OKTA_STREAM_GRPC_URL", grpc_url.as_str())];
        let text = binary(
            &[
                "tail",
                "--from-oldest",
                "--max-events",
                "1",
                "--output",
                "text",
            ],
            &env,
        )
        .await;
        assert!(text.status.success(), "{text:?}");
        let line = String::from_utf8_lossy(&text.stdout);
        assert!(line.contains("title: Engineer → Manager"), "{line}");

        let got = binary(&["get", "c1"], &env).await;
        assert!(got.status.success(), "{got:?}");
        let event: Value = serde_json::from_slice(&got.stdout).unwrap();
        assert_eq!(
            event["profileChanges"],
            json!([{"attribute": "title", "oldValue": "Engineer", "newValue": "Manager"}])
        );
        assert_eq!(
            event["profileValuesStatus"],
            "PROFILE_VALUES_STATUS_COMPLETE"
        );
    })
    .await;
}

#[tokio::test]
async fn profile_values_without_an_org_exit_64_naming_the_setting() {
    within(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let output = binary(
            &["serve", "--data-dir", data],
            &[("OKTA_STREAM_PROFILE_VALUES", "true")],
        )
        .await;
        assert_eq!(output.status.code(), Some(64), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("OKTA_STREAM_PROFILE_VALUES"), "{stderr}");
        assert!(stderr.contains("OKTA_ORG_URL"), "{stderr}");

        let output = binary(
            &["serve", "--data-dir", data],
            &[("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE", "1.5")],
        )
        .await;
        assert_eq!(output.status.code(), Some(64), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("OKTA_STREAM_PROFILE_RATE_LIMIT_SHARE"),
            "{stderr}"
        );
    })
    .await;
}
