//! The hook endpoint, as Okta and a user see it: verification, authentication, every bad
//! input's status (with nothing stored), batches, duplicates and quarantine.

mod common;

use common::within;

use common::app::{SECRET, TestApp, WAIT, delivery, profile_update};
use okta_stream::proto;
use serde_json::{Value, json};

#[tokio::test]
async fn verification_echoes_the_challenge_to_an_authenticated_get() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let url = format!("{}/okta/hook", app.http);
        let response = app
            .http_client()
            .get(&url)
            .header("authorization", SECRET)
            .header("X-Okta-Verification-Challenge", "abc123-challenge")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"verification": "abc123-challenge"})
        );

        let unauthenticated = app
            .http_client()
            .get(&url)
            .header("X-Okta-Verification-Challenge", "abc123-challenge")
            .send()
            .await
            .unwrap();
        assert_eq!(unauthenticated.status(), 401);

        let without_challenge = app
            .http_client()
            .get(&url)
            .header("authorization", SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(without_challenge.status(), 400);
        let body: Value = without_challenge.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("x-okta-verification-challenge"),
            "{body}"
        );
    })
    .await
}

#[tokio::test]
async fn deliveries_need_the_whole_secret_in_the_configured_header_and_secrets_rotate() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| {
            config.hook.auth_header = http::HeaderName::from_static("x-okta-secret");
            config.hook.secrets = vec![
                okta_stream::secret::Secret::new("Basic old"),
                okta_stream::secret::Secret::new("Basic new"),
            ];
        })
        .await;
        let body = delivery(
            "d1",
            vec![profile_update("u-auth", "thor@avengers.org", "lastName")],
        );
        let post = |header: Option<(&'static str, &'static str)>| {
            let mut request = app
                .http_client()
                .post(format!("{}/okta/hook", app.http))
                .json(&body);
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            request.send()
        };
        assert_eq!(post(None).await.unwrap().status(), 401, "missing secret");
        assert_eq!(
            post(Some(("x-okta-secret", "Basic wrong")))
                .await
                .unwrap()
                .status(),
            401,
            "wrong secret"
        );
        assert_eq!(
            post(Some(("x-okta-secret", "Basic")))
                .await
                .unwrap()
                .status(),
            401,
            "a prefix of a secret"
        );
        assert_eq!(
            post(Some(("authorization", "Basic new")))
                .await
                .unwrap()
                .status(),
            401,
            "wrong header"
        );
        let rejected = post(None).await.unwrap().json::<Value>().await.unwrap();
        assert!(
            rejected["error"]
                .as_str()
                .unwrap()
                .contains("x-okta-secret"),
            "{rejected}"
        );
        assert_eq!(app.head().await, 0, "a rejected delivery stores nothing");

        assert_eq!(
            post(Some(("x-okta-secret", "Basic old")))
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(
            post(Some(("x-okta-secret", "Basic new")))
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(app.head().await, 1, "the same event twice is stored once");
    })
    .await
}

#[tokio::test]
async fn every_bad_input_gets_its_status_a_message_and_changes_nothing() {
    within(WAIT, async {
        let app = TestApp::start_with(|config| config.hook.max_body_bytes = 2048).await;
        let url = format!("{}/okta/hook", app.http);
        let send = |content_type: &'static str, body: Vec<u8>| {
            app.http_client()
                .post(&url)
                .header("authorization", SECRET)
                .header("content-type", content_type)
                .body(body)
                .send()
        };
        let cases: Vec<(&str, &'static str, Vec<u8>, u16, &str)> = vec![
            (
                "too large",
                "application/json",
                vec![b' '; 4096],
                413,
                "larger than 2048 bytes",
            ),
            (
                "not JSON content",
                "text/plain",
                b"{}".to_vec(),
                415,
                "application/json",
            ),
            (
                "not JSON",
                "application/json",
                b"{not json".to_vec(),
                400,
                "JSON",
            ),
            (
                "not an object",
                "application/json",
                b"[1,2]".to_vec(),
                400,
                "",
            ),
            (
                "no events",
                "application/json",
                br#"{"eventType":"com.okta.event_hook","data":{}}"#.to_vec(),
                400,
                "events",
            ),
            (
                "events not a list",
                "application/json",
                br#"{"data":{"events":{}}}"#.to_vec(),
                400,
                "events",
            ),
        ];
        for (name, content_type, body, status, needle) in cases {
            let response = send(content_type, body).await.unwrap();
            assert_eq!(response.status(), status, "{name}");
            let message = response.json::<Value>().await.unwrap()["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(!message.is_empty(), "{name}: the error names the problem");
            assert!(
                message.contains(needle),
                "{name}: {message:?} should mention {needle:?}"
            );
        }
        assert_eq!(app.head().await, 0);
        assert!(app.journal.quarantined(10).await.unwrap().is_empty());
    })
    .await
}

#[tokio::test]
async fn a_batch_is_committed_whole_in_order_before_the_answer() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let events = (0..200)
            .map(|i| profile_update(&format!("batch-{i}"), "thor@avengers.org", "lastName"))
            .collect();
        let response = app.post_hook(&delivery("big", events)).await;
        assert_eq!(response.status(), 204);
        assert_eq!(
            response.text().await.unwrap(),
            "",
            "Okta expects an empty body"
        );
        // Acknowledged means stored: readable right after the answer, in delivery order.
        let stored = app.journal.read_after(0, 1000).await.unwrap();
        assert_eq!(stored.len(), 200);
        for (i, event) in stored.iter().enumerate() {
            assert_eq!(event.cursor(), i as u64 + 1);
            assert_eq!(event.uuid(), format!("batch-{i}"));
            assert_eq!(event.record().unwrap().event_id, "big");
        }
    })
    .await
}

#[tokio::test]
async fn duplicates_from_okta_become_one_record() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let same = delivery(
            "d-1",
            vec![profile_update("dup-1", "thor@avengers.org", "lastName")],
        );
        assert_eq!(app.post_hook(&same).await.status(), 204);
        assert_eq!(
            app.post_hook(&same).await.status(),
            204,
            "a retried delivery is acknowledged again"
        );
        let other_envelope = delivery(
            "d-2",
            vec![
                profile_update("dup-1", "thor@avengers.org", "lastName"),
                profile_update("dup-2", "thor@avengers.org", "lastName"),
                profile_update("dup-2", "thor@avengers.org", "lastName"),
            ],
        );
        assert_eq!(app.post_hook(&other_envelope).await.status(), 204);
        let stored = app.journal.read_after(0, 100).await.unwrap();
        let uuids: Vec<_> = stored.iter().map(|e| e.uuid()).collect();
        assert_eq!(uuids, ["dup-1", "dup-2"]);
        assert_eq!(
            stored[0].record().unwrap().event_id,
            "d-1",
            "the first delivery's record stays"
        );
    })
    .await
}

#[tokio::test]
async fn a_poisoned_event_is_quarantined_and_its_neighbours_are_stored() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let mut bad_time = profile_update("bad-time", "thor@avengers.org", "lastName");
        bad_time["published"] = json!("2017-09-31T25:61:00Z");
        let no_uuid = json!({"eventType": "user.account.update_profile", "published": "2026-11-22T18:07:13Z"});
        let body = delivery(
            "mixed",
            vec![
                profile_update("good-1", "a@example.com", "email"),
                bad_time,
                no_uuid,
                json!("not an event"),
                profile_update("good-2", "b@example.com", "email"),
            ],
        );
        assert_eq!(app.post_hook(&body).await.status(), 204);
        let stored = app.journal.read_after(0, 100).await.unwrap();
        let uuids: Vec<_> = stored.iter().map(|e| e.uuid()).collect();
        assert_eq!(uuids, ["good-1", "good-2"]);
        let quarantined = app.journal.quarantined(100).await.unwrap();
        assert_eq!(quarantined.len(), 3);
        assert!(quarantined[0].reason.contains("published"), "{:?}", quarantined[0]);
        assert!(quarantined[0].raw.contains("bad-time"));
        assert!(quarantined[1].reason.contains("uuid"), "{:?}", quarantined[1]);
        assert!(quarantined.iter().all(|q| q.origin.contains("mixed")));
        let metrics = app.metrics().await;
        assert!(metrics.contains("okta_stream_events_quarantined_total{path=\"hook\"} 3"), "{metrics}");
    })
    .await
}

#[tokio::test]
async fn a_too_deep_event_is_quarantined_byte_for_byte_and_its_neighbours_are_stored() {
    within(WAIT, async {
        let app = TestApp::start().await;
        // Deeper than MAX_DEPTH counted from the event, well within the body's own cap.
        let mut deep = profile_update("too-deep", "a@example.com", "email");
        let mut inner = json!("leaf");
        for _ in 0..okta_stream::mapping::MAX_DEPTH {
            inner = json!({ "n": inner });
        }
        deep["nested"] = inner;
        let raw = deep.to_string();
        let body = delivery(
            "deep",
            vec![
                profile_update("good-1", "a@example.com", "email"),
                deep,
                profile_update("good-2", "b@example.com", "email"),
            ],
        );
        assert_eq!(
            app.post_hook(&body).await.status(),
            204,
            "the delivery is not rejected"
        );
        let stored = app.journal.read_after(0, 100).await.unwrap();
        let uuids: Vec<_> = stored.iter().map(|e| e.uuid()).collect();
        assert_eq!(uuids, ["good-1", "good-2"]);
        let quarantined = app.journal.quarantined(100).await.unwrap();
        assert_eq!(quarantined.len(), 1);
        assert!(
            quarantined[0]
                .reason
                .contains("nested deeper than 24 levels"),
            "{:?}",
            quarantined[0]
        );
        assert_eq!(
            quarantined[0].raw, raw,
            "the event's text exactly as in the body"
        );
    })
    .await
}

#[tokio::test]
async fn a_body_nested_past_the_hard_cap_is_rejected_and_nothing_is_stored() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let mut inner = json!("leaf");
        for _ in 0..okta_stream::mapping::MAX_BODY_DEPTH {
            inner = json!([inner]);
        }
        let mut event = profile_update("deep-body", "a@example.com", "email");
        event["nested"] = inner;
        let body = delivery(
            "hard-cap",
            vec![profile_update("ok", "a@example.com", "email"), event],
        );
        let response = app.post_hook(&body).await;
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(text.contains("nested deeper than 128 levels"), "{text}");
        assert!(app.journal.read_after(0, 10).await.unwrap().is_empty());
        assert!(app.journal.quarantined(10).await.unwrap().is_empty());
    })
    .await
}

#[tokio::test]
async fn the_record_keeps_the_delivery_context_with_secrets_redacted() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let response = app
            .http_client()
            .post(format!("{}/okta/hook", app.http))
            .header("authorization", SECRET)
            .header("cookie", "session=abc")
            .header("user-agent", "Okta Hook Service v1.0.0 - whoTEST")
            .header("x-tenant", "acme")
            .json(&delivery(
                "ctx-1",
                vec![profile_update(
                    "ctx-uuid",
                    "thor@avengers.org",
                    "lastName,mobilePhone",
                )],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let mut client = app.client().await;
        let event = client
            .get_event(proto::GetEventRequest {
                uuid: "ctx-uuid".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .event
            .unwrap();
        assert_eq!(event.event_id, "ctx-1");
        assert_eq!(event.ingest_source, proto::IngestSource::Hook as i32);
        let source = event.source.clone().unwrap();
        assert_eq!(
            source.uri,
            "https://acme.okta.com/api/v1/eventHooks/whoTEST"
        );
        assert_eq!(event.headers["authorization"], "[REDACTED]");
        assert_eq!(event.headers["cookie"], "[REDACTED]");
        assert_eq!(event.headers["x-tenant"], "acme");
        assert_eq!(
            event.headers["user-agent"],
            "Okta Hook Service v1.0.0 - whoTEST"
        );
        assert_eq!(event.changed_attributes, ["lastName", "mobilePhone"]);
        let stored = format!("{event:?}");
        assert!(!stored.contains(SECRET), "the secret is not in the record");
    })
    .await
}

#[tokio::test]
async fn without_a_configured_secret_one_is_generated_once_and_kept() {
    within(WAIT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let app = TestApp::start_in(dir, 16, |config| config.hook.secrets.clear()).await;
        let secret = std::fs::read_to_string(path.join("hook-secret")).unwrap();
        assert!(secret.len() >= 40);
        let body = delivery(
            "gen",
            vec![profile_update("gen-1", "thor@avengers.org", "lastName")],
        );
        let with = |value: String| {
            app.http_client()
                .post(format!("{}/okta/hook", app.http))
                .header("authorization", value)
                .json(&body)
                .send()
        };
        assert_eq!(with("anything".into()).await.unwrap().status(), 401);
        assert_eq!(with(secret.clone()).await.unwrap().status(), 204);
    })
    .await
}

#[tokio::test]
async fn a_journal_that_cannot_commit_answers_503_so_okta_retries() {
    within(WAIT, async {
        let app = TestApp::start().await;
        app.journal.close().await;
        let response = app
            .post_hook(&delivery(
                "d",
                vec![profile_update("u-503", "thor@avengers.org", "lastName")],
            ))
            .await;
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
        let metrics = app.metrics().await;
        assert!(
            metrics.contains("okta_stream_hook_rejected_total{reason=\"unavailable\"} 1"),
            "{metrics}"
        );
    })
    .await
}

#[tokio::test]
async fn metrics_show_what_was_ingested_and_the_journal() {
    within(WAIT, async {
        let app = TestApp::start().await;
        let events = (0..3)
            .map(|i| profile_update(&format!("m-{i}"), "thor@avengers.org", "lastName"))
            .collect();
        assert_eq!(app.post_hook(&delivery("m", events)).await.status(), 204);
        assert_eq!(
            app.post_hook(&delivery(
                "m",
                vec![profile_update("m-0", "thor@avengers.org", "lastName")]
            ))
            .await
            .status(),
            204
        );
        let _ = app
            .http_client()
            .post(format!("{}/okta/hook", app.http))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        // The journal gauges refresh every two seconds.
        let metrics = loop {
            let text = app.metrics().await;
            if text.contains("okta_stream_journal_head_cursor 3") {
                break text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        for line in [
            "okta_stream_events_ingested_total{path=\"hook\"} 3",
            "okta_stream_duplicates_dropped_total{path=\"hook\"} 1",
            "okta_stream_hook_rejected_total{reason=\"unauthorized\"} 1",
            "okta_stream_journal_oldest_cursor 1",
            "okta_stream_hook_ack_seconds_count 2",
        ] {
            assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
        }
        let size = metrics
            .lines()
            .find_map(|l| l.strip_prefix("okta_stream_journal_size_bytes "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("journal size gauge");
        assert!(size > 1000, "{size}");
        assert!(!metrics.contains(SECRET));
    })
    .await
}
