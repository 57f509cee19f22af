//! Subscribe, GetEvent and ListEvents as a gRPC client sees them: filters, replay then live
//! with no gap and no duplicate, slow subscribers, retention, limits, auth and shutdown.

mod common;

use common::within;

use std::time::Duration;

use common::app::{TestApp, WAIT, delivery, post_many, profile_update};
use okta_stream::grpc::{Kind, SubscribeResponse};
use okta_stream::proto::{self, EventFilter, event_filter::Start};
use serde_json::json;
use tonic::{Code, Streaming};

/// The next event of a stream, skipping heartbeats.
async fn next_event(stream: &mut Streaming<SubscribeResponse>) -> proto::Event {
    loop {
        let message = stream
            .message()
            .await
            .expect("stream ok")
            .expect("stream open");
        if let Some(event) = message.decode_event() {
            return event.unwrap();
        }
    }
}

/// The status a stream ends with, skipping events and heartbeats.
async fn final_status(stream: &mut Streaming<SubscribeResponse>) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => return status,
        }
    }
}

async fn subscribe(app: &TestApp, filter: EventFilter) -> Streaming<SubscribeResponse> {
    app.client()
        .await
        .subscribe(filter)
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_live_subscriber_gets_matching_events_as_they_are_acknowledged() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let mut stream = subscribe(
            &app,
            EventFilter {
                okta_users: vec!["Thor@Avengers.org".into()],
                changed_attributes: vec!["MOBILEPHONE".into()],
                ..Default::default()
            },
        )
        .await;
        let events = vec![
            profile_update("a", "thor@avengers.org", "lastName"),
            profile_update("b", "loki@asgard.org", "mobilePhone"),
            profile_update("c", "thor@avengers.org", "firstName,mobilePhone"),
        ];
        assert_eq!(app.post_hook(&delivery("d", events)).await.status(), 204);
        let event = next_event(&mut stream).await;
        assert_eq!(event.uuid, "c");
        assert_eq!(event.cursor, 3);
        assert_eq!(event.okta_user.unwrap().alternate_id, "thor@avengers.org");
    })
    .await
}

#[tokio::test]
async fn live_only_is_the_default_and_after_resumes_exclusively() {
    within(WAIT, async {
        let app = TestApp::start().await;
        post_many(&app, "old", 5).await;
        let mut live = subscribe(&app, EventFilter::default()).await;
        let mut resumed = subscribe(
            &app,
            EventFilter {
                start: Some(Start::After(3)),
                ..Default::default()
            },
        )
        .await;
        post_many(&app, "new", 1).await;
        assert_eq!(
            next_event(&mut live).await.uuid,
            "new-0",
            "live-only starts after the head"
        );
        let cursors = [
            next_event(&mut resumed).await.cursor,
            next_event(&mut resumed).await.cursor,
            next_event(&mut resumed).await.cursor,
        ];
        assert_eq!(
            cursors,
            [4, 5, 6],
            "after is exclusive, then live without a seam"
        );
        let mut oldest = subscribe(
            &app,
            EventFilter {
                start: Some(Start::FromOldest(true)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(next_event(&mut oldest).await.cursor, 1);
    })
    .await
}

#[tokio::test]
async fn replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_ingestion() {
    within(WAIT, async {
        let app = std::sync::Arc::new(TestApp::start().await);
        post_many(&app, "pre", 50).await;
        let writer = {
            let app = app.clone();
            tokio::spawn(async move { post_many(&app, "during", 300).await })
        };
        // Subscribers join while ingestion is running, at different points of the replay.
        let mut streams = Vec::new();
        for after in [0u64, 10, 49] {
            streams.push((
                after,
                subscribe(
                    &app,
                    EventFilter {
                        start: Some(Start::After(after)),
                        ..Default::default()
                    },
                )
                .await,
            ));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.await.unwrap();
        for (after, mut stream) in streams {
            let expected: Vec<u64> = (after + 1..=350).collect();
            let mut got = Vec::new();
            while got.len() < expected.len() {
                got.push(next_event(&mut stream).await.cursor);
            }
            assert_eq!(got, expected, "subscriber after {after}");
        }
    })
    .await
}

#[tokio::test]
async fn a_slow_subscriber_with_a_tiny_live_buffer_still_gets_every_event_in_order() {
    within(WAIT, async {
        let app = TestApp::start_in(tempfile::tempdir().unwrap(), 2, |_| {}).await;
        let mut stream = subscribe(&app, EventFilter::default()).await;
        // 400 events in 8 deliveries while the subscriber reads nothing: its live buffer of 2
        // overflows many times over.
        for d in 0..8 {
            let events = (0..50)
                .map(|i| profile_update(&format!("slow-{d}-{i}"), "thor@avengers.org", "lastName"))
                .collect();
            assert_eq!(
                app.post_hook(&delivery(&format!("d{d}"), events))
                    .await
                    .status(),
                204
            );
        }
        for expected in 1..=400u64 {
            let event = next_event(&mut stream).await;
            assert_eq!(event.cursor, expected);
            if expected % 97 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_subscriber_that_falls_too_far_behind_is_ended_with_its_last_cursor() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| config.grpc.max_subscriber_lag = 10).await;
        let mut stream = subscribe(&app, EventFilter::default()).await;
        post_many(&app, "first", 1).await;
        assert_eq!(next_event(&mut stream).await.cursor, 1);
        let burst = (0..100)
            .map(|i| profile_update(&format!("burst-{i}"), "thor@avengers.org", "lastName"))
            .collect();
        assert_eq!(app.post_hook(&delivery("burst", burst)).await.status(), 204);
        let status = final_status(&mut stream).await;
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("resume after cursor 1"),
            "{}",
            status.message()
        );
        // Ingestion never waited for it, and resuming from the cursor works.
        let mut resumed = subscribe(
            &app,
            EventFilter {
                start: Some(Start::After(1)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(next_event(&mut resumed).await.uuid, "burst-0");
    })
    .await
}

#[tokio::test]
async fn since_replays_events_published_from_that_time() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let at = |uuid: &str, published: &str| {
            let mut event = profile_update(uuid, "thor@avengers.org", "lastName");
            event["published"] = json!(published);
            event
        };
        let events = vec![
            at("early", "2026-11-28T10:00:00Z"),
            at("late", "2026-11-28T12:00:00Z"),
        ];
        assert_eq!(app.post_hook(&delivery("t", events)).await.status(), 204);
        let since = prost_types::Timestamp {
            seconds: 1_795_863_600,
            nanos: 0,
        }; // 2026-11-28T11:00:00Z
        let mut stream = subscribe(
            &app,
            EventFilter {
                start: Some(Start::Since(since)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(next_event(&mut stream).await.uuid, "late");
    })
    .await
}

#[tokio::test]
async fn bad_filters_and_impossible_cursors_are_rejected_with_the_field_named() {
    within(WAIT, async {
        let app = TestApp::start().await;
        post_many(&app, "x", 2).await;
        let mut client = app.client().await;
        let status = client
            .subscribe(EventFilter {
                changed_attributes: vec!["".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("changed_attributes:"),
            "{}",
            status.message()
        );
        let status = client
            .subscribe(EventFilter {
                min_severity: 9,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            status.message().starts_with("min_severity:"),
            "{}",
            status.message()
        );
        let status = client
            .subscribe(EventFilter {
                start: Some(Start::After(99)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(status.message().contains("head 2"), "{}", status.message());
    })
    .await
}

#[tokio::test]
async fn idle_streams_get_heartbeats_with_the_head_cursor() {
    within(WAIT, async {
        let app =
            TestApp::start_with(|config| config.grpc.heartbeat = Duration::from_millis(200)).await;
        post_many(&app, "hb", 3).await;
        let mut stream = subscribe(
            &app,
            EventFilter {
                event_types: vec!["nothing.matches".into()],
                ..Default::default()
            },
        )
        .await;
        let message = stream.message().await.unwrap().unwrap();
        match message.kind {
            Some(Kind::Heartbeat(heartbeat)) => {
                assert_eq!(heartbeat.head_cursor, 3);
                assert!(heartbeat.time.is_some());
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn the_subscriber_limit_and_bearer_tokens_are_enforced() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| {
            config.grpc.max_subscribers = 1;
            config.grpc.tokens = vec![okta_stream::secret::Secret::new("reader-token")];
        })
        .await;
        let mut client = app.client().await;
        let status = client.subscribe(EventFilter::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = client
            .get_event(proto::GetEventRequest { uuid: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        let authorized = |filter: EventFilter| {
            let mut request = tonic::Request::new(filter);
            request
                .metadata_mut()
                .insert("authorization", "Bearer reader-token".parse().unwrap());
            request
        };
        let first = client
            .subscribe(authorized(EventFilter::default()))
            .await
            .unwrap()
            .into_inner();
        let status = client
            .subscribe(authorized(EventFilter::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        drop(first);
        // The slot is freed when the first stream goes away.
        let mut freed = false;
        for _ in 0..50 {
            if client
                .subscribe(authorized(EventFilter::default()))
                .await
                .is_ok()
            {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(freed);
    })
    .await
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_a_resumable_status() {
    within(WAIT, async {
        let app = TestApp::start().await;
        post_many(&app, "s", 2).await;
        let mut stream = subscribe(
            &app,
            EventFilter {
                start: Some(Start::FromOldest(true)),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(next_event(&mut stream).await.cursor, 1);
        assert_eq!(next_event(&mut stream).await.cursor, 2);
        let stopped = tokio::spawn(app.stop());
        let status = final_status(&mut stream).await;
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("resume after cursor 2"),
            "{}",
            status.message()
        );
        stopped.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn get_event_finds_by_uuid() {
    within(WAIT, async {
        let app = TestApp::start().await;
        post_many(&app, "get", 2).await;
        let mut client = app.client().await;
        let event = client
            .get_event(proto::GetEventRequest {
                uuid: "get-1".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .event
            .unwrap();
        assert_eq!(event.cursor, 2);
        assert_eq!(event.event_type, "user.account.update_profile");
        let missing = client
            .get_event(proto::GetEventRequest {
                uuid: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let empty = client
            .get_event(proto::GetEventRequest { uuid: "".into() })
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        assert!(empty.message().starts_with("uuid:"));
    })
    .await
}

#[tokio::test]
async fn list_events_pages_both_ways_with_a_filter() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let events = (0..25)
            .map(|i| {
                profile_update(
                    &format!("l-{i}"),
                    if i % 2 == 0 {
                        "even@example.com"
                    } else {
                        "odd@example.com"
                    },
                    "email",
                )
            })
            .collect();
        assert_eq!(app.post_hook(&delivery("list", events)).await.status(), 204);
        let mut client = app.client().await;
        let filter = EventFilter {
            okta_users: vec!["even@example.com".into()],
            ..Default::default()
        };
        for newest_first in [false, true] {
            let mut token = String::new();
            let mut cursors = Vec::new();
            loop {
                let page = client
                    .list_events(proto::ListEventsRequest {
                        filter: Some(filter.clone()),
                        page_size: 5,
                        page_token: token.clone(),
                        newest_first,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(page.events.len() <= 5);
                cursors.extend(page.events.iter().map(|e| e.cursor));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let mut expected: Vec<u64> = (1..=25).step_by(2).collect();
            if newest_first {
                expected.reverse();
            }
            assert_eq!(cursors, expected, "newest_first={newest_first}");
        }
        let bad = client
            .list_events(proto::ListEventsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(bad.message().starts_with("page_token:"));
        let bad = client
            .list_events(proto::ListEventsRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(bad.message().starts_with("page_size:"));
    })
    .await
}

#[tokio::test]
async fn health_follows_the_service_state() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let health = |path: &'static str| {
            let client = app.http_client().clone();
            let url = format!("{}{path}", app.admin);
            async move { client.get(url).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(health("/healthz").await, 200);
        assert_eq!(health("/readyz").await, 200);
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc_health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = grpc_health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "okta.events.v1.EventStream".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    })
    .await
}

#[tokio::test]
async fn events_removed_by_retention_are_out_of_range_never_a_silent_jump() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| {
            config.retention_max_bytes = Some(8 * 1024);
            config.retention_check_interval = Duration::from_millis(200);
        })
        .await;
        let events = (0..60)
            .map(|i| profile_update(&format!("old-{i}"), "thor@avengers.org", "lastName"))
            .collect();
        assert_eq!(app.post_hook(&delivery("old", events)).await.status(), 204);
        let oldest = loop {
            let bounds = app.journal.bounds().await.unwrap();
            match bounds.oldest {
                Some(oldest) if oldest > 1 => break oldest,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut client = app.client().await;
        let status = client
            .subscribe(EventFilter {
                start: Some(Start::After(0)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(
            status.message().contains("oldest available cursor is"),
            "{}",
            status.message()
        );
        let long_ago = prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        };
        let status = client
            .subscribe(EventFilter {
                start: Some(Start::Since(long_ago)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        // From the oldest retained event is always possible.
        let mut stream = subscribe(
            &app,
            EventFilter {
                start: Some(Start::FromOldest(true)),
                ..Default::default()
            },
        )
        .await;
        assert!(next_event(&mut stream).await.cursor >= oldest);
    })
    .await
}

#[tokio::test]
async fn grpc_can_be_served_over_tls() {
    within(WAIT, async {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let app = TestApp::start_with(|config| {
            config.grpc.tls_cert = Some(cert.clone());
            config.grpc.tls_key = Some(key.clone());
        })
        .await;
        post_many(&app, "tls", 1).await;

        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                certified.cert.pem(),
            ))
            .domain_name("localhost");
        let channel = tonic::transport::Channel::from_shared(format!("https://{}", app.grpc_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = proto::event_stream_client::EventStreamClient::new(channel);
        let event = client
            .get_event(proto::GetEventRequest {
                uuid: "tls-0".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(event.event.unwrap().cursor, 1);

        // Plaintext is refused on a TLS port.
        let plaintext = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect()
            .await;
        if let Ok(channel) = plaintext {
            let mut client = proto::event_stream_client::EventStreamClient::new(channel);
            assert!(
                client
                    .get_event(proto::GetEventRequest {
                        uuid: "tls-0".into()
                    })
                    .await
                    .is_err()
            );
        }
    })
    .await
}

#[tokio::test]
async fn grpc_web_answers_browser_preflights_only_for_configured_origins() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| {
            config.grpc.cors_origins = vec!["https://console.example.com".into()]
        })
        .await;
        let preflight = |origin: &'static str| {
            reqwest::Client::new()
                .request(
                    reqwest::Method::OPTIONS,
                    format!(
                        "http://{}/okta.events.v1.EventStream/Subscribe",
                        app.grpc_addr
                    ),
                )
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type,x-grpc-web")
                .send()
        };
        let allowed = preflight("https://console.example.com").await.unwrap();
        assert_eq!(
            allowed.headers()["access-control-allow-origin"],
            "https://console.example.com"
        );
        let other = preflight("https://evil.example.net").await.unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none());
    })
    .await
}

/// Reads gRPC-Web response chunks into `body` until one whole message is in; takes that
/// message off the front of `body` and returns it.
async fn next_grpc_web_message(response: &mut reqwest::Response, body: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if body.len() >= 5 {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            if body.len() >= 5 + len {
                assert_eq!(body[0], 0, "a data frame, not trailers");
                let message = body[5..5 + len].to_vec();
                body.drain(..5 + len);
                return message;
            }
        }
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream stays open");
        body.extend_from_slice(&chunk);
    }
}

/// Native gRPC clients are served by the copy-free Subscribe path, browsers (gRPC-Web over
/// HTTP/1.1) by tonic: both see the same message bytes for a replayed and for a live event.
#[tokio::test]
async fn grpc_web_and_native_subscribers_get_the_same_messages() {
    use prost::Message as _;
    within(WAIT, async {
        let app = TestApp::start().await;
        let first = vec![profile_update("w1", "thor@avengers.org", "lastName")];
        assert_eq!(app.post_hook(&delivery("d1", first)).await.status(), 204);

        let filter = EventFilter {
            start: Some(Start::FromOldest(true)),
            ..Default::default()
        };
        let mut native = app
            .client()
            .await
            .subscribe(filter.clone())
            .await
            .unwrap()
            .into_inner();
        let mut request = vec![0u8];
        let encoded = filter.encode_to_vec();
        request.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        request.extend_from_slice(&encoded);
        let mut web = reqwest::Client::new()
            .post(format!(
                "http://{}/okta.events.v1.EventStream/Subscribe",
                app.grpc_addr
            ))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(request)
            .send()
            .await
            .unwrap();
        assert_eq!(web.status(), 200);
        let mut web_body = Vec::new();

        let second = vec![profile_update("w2", "loki@asgard.org", "mobilePhone")];
        assert_eq!(app.post_hook(&delivery("d2", second)).await.status(), 204);
        for uuid in ["w1", "w2"] {
            let native_message = loop {
                let message = native.message().await.unwrap().expect("stream open");
                if matches!(message.kind, Some(Kind::Event(_))) {
                    break message;
                }
            };
            let web_message = loop {
                let bytes = next_grpc_web_message(&mut web, &mut web_body).await;
                let message = SubscribeResponse::decode(&bytes[..]).unwrap();
                if matches!(message.kind, Some(Kind::Event(_))) {
                    assert_eq!(
                        bytes,
                        native_message.encode_to_vec(),
                        "same bytes both ways"
                    );
                    break message;
                }
            };
            assert_eq!(web_message.decode_event().unwrap().unwrap().uuid, uuid);
        }
    })
    .await
}
