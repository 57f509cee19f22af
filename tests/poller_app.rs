//! The System Log poller inside the real app (in-process, loopback ports, the embedded
//! journal), beside the hook, against the fake Okta org: what an operator and a gRPC client
//! see. Issue 5: "hook + poller together → no duplicates and the hook-miss count is right",
//! "Subscribe clients see polled events exactly like hooked ones", and "wrong credentials →
//! a clear error and no hot loop" (log, metric, health).

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::app::{TestApp, delivery};
use common::fake_okta::{FakeAuth, FakeOkta, log_event};
use common::within;
use okta_stream::grpc::SubscribeResponse;
use okta_stream::mapping::{Delivery, map_event};
use okta_stream::okta::{Credentials, PollerConfig, Secret, StartFrom};
use okta_stream::proto::{self, EventFilter, event_filter::Start};
use serde_json::Value;
use tonic::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;

const TYPE: &str = "user.account.update_profile";
const TOKEN: &str = "00SSWS-app-test-token";
const LIMIT: Duration = Duration::from_secs(40);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Everything the app logs in this test process (tracing output, no colours).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Sink)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        Mutex::new(Vec::new())
    })
}

/// The poller settings of these tests: the fake org over loopback HTTP, polled every 200 ms
/// from a day back, refusals retried every second.
fn poller(fake: &FakeOkta, token: &str) -> PollerConfig {
    let mut config =
        PollerConfig::new(fake.base.clone(), Credentials::ApiToken(Secret::new(token)));
    config.poll_interval = ms(200);
    config.start = StartFrom::Since(chrono::Utc::now() - chrono::Duration::days(1));
    config.auth_retry_interval = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(5);
    config.hook_enabled = true;
    config
}

/// The value of one metric sample on `/metrics` (0 if absent).
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn subscribe(app: &TestApp, filter: EventFilter) -> Streaming<SubscribeResponse> {
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

/// The next event of a stream, skipping heartbeats.
async fn next_event(stream: &mut Streaming<SubscribeResponse>) -> proto::Event {
    loop {
        let message = stream.message().await.unwrap().expect("stream open");
        if let Some(event) = message.decode_event() {
            return event.unwrap();
        }
    }
}

/// The record without what depends on how it arrived (cursor, hook envelope, headers,
/// source, receive time): what hook and poller must agree on for the same LogEvent.
fn content(mut event: proto::Event) -> proto::Event {
    event.cursor = 0;
    event.event_id.clear();
    event.event_time = None;
    event.headers.clear();
    event.source = None;
    event.ingest_source = 0;
    event.received = None;
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_and_poller_store_each_event_once_and_count_what_only_the_poller_found() {
    within(LIMIT, async {
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        let app = TestApp::start_with_poller(poller(&fake, TOKEN)).await;
        let mut everything = subscribe(&app, from_oldest()).await;
        let mut polled_only = subscribe(
            &app,
            EventFilter {
                ingest_sources: vec![proto::IngestSource::Poller as i32],
                ..from_oldest()
            },
        )
        .await;
        let raw: Vec<Value> = (0..10)
            .map(|i| log_event(&format!("h-{i}"), TYPE, "2026-11-28T10:00:00.000Z"))
            .collect();

        // The hook delivers the first five; the System Log then holds all ten.
        let response = app.post_hook(&delivery("evt-1", raw[..5].to_vec())).await;
        assert!(response.status().is_success(), "{}", response.status());
        for event in &raw {
            fake.push(event.clone());
        }

        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(next_event(&mut everything).await);
        }
        let uuids: Vec<&str> = seen.iter().map(|e| e.uuid.as_str()).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("h-{i}")).collect();
        assert_eq!(uuids, expected, "each event once, hooked ones first");
        let cursors: Vec<u64> = seen.iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, (1..=10).collect::<Vec<u64>>());
        for (event, raw) in seen.iter().zip(&raw) {
            let (source, uri) = if event.cursor <= 5 {
                (
                    proto::IngestSource::Hook,
                    "https://acme.okta.com/api/v1/eventHooks/whoTEST",
                )
            } else {
                (proto::IngestSource::Poller, fake.base.as_str())
            };
            assert_eq!(event.ingest_source, source as i32, "{}", event.uuid);
            assert_eq!(event.source.as_ref().unwrap().uri, uri, "{}", event.uuid);
            // Whichever path brought it, the record is the mapping of the same LogEvent.
            let mapped = map_event(raw.to_string().as_bytes(), &Delivery::default()).unwrap();
            let mapped = prost::Message::decode(mapped.encoded.as_slice()).unwrap();
            assert_eq!(content(event.clone()), content(mapped), "{}", event.uuid);
        }
        // A filter on the ingest path treats polled events like any others.
        for i in 5..10 {
            assert_eq!(next_event(&mut polled_only).await.uuid, format!("h-{i}"));
        }

        // The poller keeps polling the same org: nothing more is stored or streamed.
        let polls = fake.log_requests().len();
        common::eventually(LIMIT, "three more polls", || {
            fake.log_requests().len() >= polls + 3
        })
        .await;
        let more = tokio::time::timeout(ms(300), next_event(&mut everything)).await;
        assert!(more.is_err(), "unexpected event {more:?}");
        assert_eq!(app.head().await, 10);
        assert_eq!(
            metric(&app, "okta_stream_poller_hook_misses_total").await,
            5.0
        );
        assert_eq!(
            metric(&app, "okta_stream_poller_duplicates_total").await,
            5.0
        );
        assert_eq!(
            metric(&app, "okta_stream_poller_events_committed_total").await,
            5.0
        );
        app.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_make_the_service_unready_with_a_clear_error_and_no_hot_loop() {
    within(LIMIT, async {
        let logs = captured_logs();
        let wrong = "00WRONG-app-token-zzz";
        let fake = FakeOkta::start(FakeAuth::Ssws(TOKEN.to_owned())).await;
        let app = TestApp::start_with_poller(poller(&fake, wrong)).await;
        let readyz = || {
            let request = app.http_client().get(format!("{}/readyz", app.admin));
            async move { request.send().await.unwrap().status().as_u16() }
        };

        // The service is ready first (the poller has not been refused yet, or was just
        // started): wait for Okta's refusal, then for readiness (re-evaluated every 2 s) to
        // follow it, on HTTP and on gRPC health alike.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metric(&app, "okta_stream_poller_refusals_total").await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Okta never refused the poller"
            );
            tokio::time::sleep(ms(100)).await;
        }
        while readyz().await != 503 {
            assert!(tokio::time::Instant::now() < deadline, "/readyz stays 200");
            tokio::time::sleep(ms(100)).await;
        }
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut status;
        loop {
            status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: okta_stream::ops::EVENT_STREAM_SERVICE.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if status == ServingStatus::NotServing as i32 || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            tokio::time::sleep(ms(50)).await;
        }
        assert_eq!(status, ServingStatus::NotServing as i32);
        assert_eq!(
            readyz().await,
            503,
            "readiness stays down while Okta refuses the poller"
        );
        assert!(metric(&app, "okta_stream_poller_refusals_total").await >= 1.0);

        // Retried once a second (the configured refusal retry), never in a loop.
        let before = fake.log_requests().len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let requests = fake.log_requests();
        let during = requests.len() - before;
        assert!((1..=4).contains(&during), "{during} requests in 3 s");
        assert!(requests.iter().all(|r| r.status == 401));
        assert_eq!(app.head().await, 0);

        let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("Okta refused the poller's request"),
            "no clear log line:\n{logs}"
        );
        assert!(logs.contains("E0000011"), "the log names Okta's error code");
        assert!(!logs.contains(wrong), "the token was logged");
        app.stop().await.unwrap();
    })
    .await;
}
