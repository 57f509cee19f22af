//! The edges of the data (issue 12 items 2 and 5): every stored event fits what a default gRPC
//! client accepts (a larger one is quarantined, and grpcurl and the Python client keep
//! streaming past it), the quarantine pages in bounded answers, gzip deliveries, uuids by the
//! one rule, `from_oldest: false`, `after` exclusive both ways, and a live subscriber overtaken
//! by retention ended as a slow consumer.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::app::{SECRET, TestApp, delivery, profile_update};
use common::within;
use okta_stream::grpc::Kind;
use okta_stream::proto::event_filter::Start;
use okta_stream::proto::{EventFilter, GetEventRequest, ListEventsRequest, ListQuarantinedRequest};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(120);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    within(LIMIT, command.output()).await.unwrap()
}

fn clients_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// A profile update whose debug data carries `bytes` of padding.
fn padded(uuid: &str, bytes: usize) -> Value {
    let mut event = profile_update(uuid, "thor@avengers.org", "lastName");
    event["debugContext"]["debugData"]["padding"] = json!("x".repeat(bytes));
    event
}

async fn post(app: &TestApp, id: &str, events: Vec<Value>) {
    let response = app.post_hook(&delivery(id, events)).await;
    assert_eq!(response.status(), 204, "delivery {id}");
}

#[tokio::test]
async fn a_5_mib_event_is_quarantined_and_grpcurl_and_python_keep_streaming_past_it() {
    let app = TestApp::start_with(|config| config.grpc.heartbeat = Duration::from_secs(1)).await;
    post(&app, "d-before", vec![padded("before", 10)]).await;
    post(&app, "d-huge", vec![padded("huge", 5 * 1024 * 1024)]).await;
    post(&app, "d-after", vec![padded("after", 10)]).await;

    assert!(app.journal.get("huge").await.unwrap().is_none());
    let quarantined = app.journal.quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    let entry = &quarantined[0];
    assert!(
        entry.reason.contains("bytes") && entry.reason.contains("OKTA_STREAM_MAX_EVENT_BYTES"),
        "{}",
        entry.reason
    );
    assert!(entry.is_truncated() && entry.raw_bytes > 5 * 1024 * 1024);
    assert!(entry.raw.len() <= okta_stream::journal::MAX_QUARANTINE_RAW_BYTES);

    // grpcurl, default limits: replays both stored events.
    let addr = app.grpc_addr.to_string();
    let mut grpcurl = Command::new("grpcurl")
        .args(["-plaintext", "-d", r#"{"from_oldest": true}"#, &addr])
        .arg("okta.events.v1.EventStream/Subscribe")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = grpcurl.stdout.take().unwrap();
    let mut seen = String::new();
    within(LIMIT, async {
        let mut buf = [0u8; 4096];
        while !seen.contains("\"after\"") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "grpcurl ended early: {seen}");
            seen.push_str(&text(&buf[..n]));
        }
    })
    .await;
    grpcurl.kill().await.unwrap();
    assert!(
        seen.contains("\"before\"") && !seen.contains("\"huge\""),
        "{seen}"
    );

    // The generated Python client, default limits.
    let stubs = tempfile::tempdir().unwrap();
    let generated = run(Command::new("bash")
        .arg(clients_dir("python").join("generate.sh"))
        .arg(stubs.path()))
    .await;
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let python = run(Command::new("python3")
        .arg(clients_dir("python").join("example.py"))
        .args(["--stubs", stubs.path().to_str().unwrap(), "--target", &addr])
        .args(["--from-oldest", "--until-caught-up"]))
    .await;
    assert!(python.status.success(), "{}", text(&python.stderr));
    let uuids: Vec<String> = text(&python.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(uuids, ["before", "after"]);
}

#[tokio::test]
async fn the_quarantine_pages_in_answers_any_client_accepts() {
    within(LIMIT, async {
        let app = TestApp::start().await;
        // 20 entries of ~250 KiB each (no uuid): 5 MB in all, more than one answer may hold.
        for i in 0..20 {
            let mut event = padded("unused", 250 * 1024);
            event["uuid"] = Value::Null;
            event["displayMessage"] = json!(format!("entry-{i:02}"));
            post(&app, &format!("d-q{i}"), vec![event]).await;
        }
        let mut client = app.client().await;
        let mut pages = 0;
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_quarantined(ListQuarantinedRequest {
                    limit: 1000,
                    page_token: token.clone(),
                    newest_first: false,
                })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            assert!(!page.entries.is_empty());
            for entry in &page.entries {
                let at = entry.raw.find("entry-").unwrap();
                seen.push(entry.raw[at..at + 8].to_owned());
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert!(pages >= 2, "one answer held 5 MB");
        let expected: Vec<String> = (0..20).map(|i| format!("entry-{i:02}")).collect();
        assert_eq!(seen, expected);

        let newest = client
            .list_quarantined(ListQuarantinedRequest {
                limit: 2,
                page_token: String::new(),
                newest_first: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(newest.entries.len(), 2);
        assert!(newest.entries[0].raw.contains("entry-19"));
        assert!(newest.entries[1].raw.contains("entry-18"));
        assert!(!newest.next_page_token.is_empty());
        let status = client
            .list_quarantined(ListQuarantinedRequest {
                limit: 1,
                page_token: "c12".into(),
                newest_first: false,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_token"));

        // `okta-stream quarantine list` pages through all of them.
        let output = run(Command::new(env!("CARGO_BIN_EXE_okta-stream"))
            .args(["quarantine", "list", "--grpc-url"])
            .arg(format!("http://{}", app.grpc_addr))
            .env_clear())
        .await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert_eq!(text(&output.stdout).lines().count(), 20);
    })
    .await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_deliveries_are_accepted_within_the_limit_and_other_encodings_refused() {
    within(LIMIT, async {
        let app = TestApp::start_with(|config| config.hook.max_body_bytes = 64 * 1024).await;
        let hook = format!("{}/okta/hook", app.http);
        let send = |encoding: &'static str, body: Vec<u8>| {
            app.http_client()
                .post(&hook)
                .header("authorization", SECRET)
                .header("content-type", "application/json")
                .header("content-encoding", encoding)
                .body(body)
                .send()
        };
        let body = serde_json::to_vec(&delivery(
            "d-gzip",
            vec![profile_update("gzip-1", "thor@avengers.org", "lastName")],
        ))
        .unwrap();
        assert_eq!(send("gzip", gzip(&body)).await.unwrap().status(), 204);
        assert!(app.journal.get("gzip-1").await.unwrap().is_some());

        let refused = send("br", body.clone()).await.unwrap();
        assert_eq!(refused.status(), 415);
        assert!(refused.text().await.unwrap().contains("`br`"));

        // 1 MB of JSON whitespace compresses to ~1 kB: the limit counts what it inflates to.
        let mut bomb = body.clone();
        bomb.splice(1..1, std::iter::repeat_n(b' ', 1024 * 1024));
        let compressed = gzip(&bomb);
        assert!(compressed.len() < 64 * 1024);
        let refused = send("gzip", compressed).await.unwrap();
        assert_eq!(refused.status(), 413);

        let refused = send("gzip", b"not gzip at all".to_vec()).await.unwrap();
        assert_eq!(refused.status(), 400);
        assert!(refused.text().await.unwrap().contains("gzip"));
    })
    .await
}

#[tokio::test]
async fn blank_or_oversized_uuids_are_quarantined_by_the_rule_get_event_enforces() {
    within(LIMIT, async {
        let app = TestApp::start().await;
        let long = "u".repeat(100_000);
        post(
            &app,
            "d-uuids",
            vec![
                profile_update("   ", "thor@avengers.org", "lastName"),
                profile_update(&long, "thor@avengers.org", "lastName"),
                profile_update("fine", "thor@avengers.org", "lastName"),
            ],
        )
        .await;
        let quarantined = app.journal.quarantined(10).await.unwrap();
        assert_eq!(quarantined.len(), 2, "{quarantined:?}");
        assert!(quarantined.iter().all(|q| q.reason.starts_with("uuid")));
        assert_eq!(app.head().await, 1);
        let mut client = app.client().await;
        for uuid in ["   ".to_owned(), long] {
            let status = client
                .get_event(GetEventRequest { uuid })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().contains("uuid"));
        }
    })
    .await
}

#[tokio::test]
async fn from_oldest_false_is_live_and_after_is_exclusive_in_both_directions() {
    within(LIMIT, async {
        let app = TestApp::start().await;
        for i in 1..=5 {
            post(&app, &format!("d-{i}"), vec![padded(&format!("e{i}"), 1)]).await;
        }
        let mut client = app.client().await;
        let list = |after: u64, newest_first: bool| ListEventsRequest {
            filter: Some(EventFilter {
                start: Some(Start::After(after)),
                ..Default::default()
            }),
            newest_first,
            ..Default::default()
        };
        let cursors = |events: Vec<okta_stream::proto::Event>| -> Vec<u64> {
            events.iter().map(|e| e.cursor).collect()
        };
        let up = client
            .list_events(list(3, false))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cursors(up.events), [4, 5]);
        let down = client
            .list_events(list(3, true))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cursors(down.events), [2, 1]);

        let mut live = client
            .subscribe(EventFilter {
                start: Some(Start::FromOldest(false)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        post(&app, "d-6", vec![padded("e6", 1)]).await;
        let first = loop {
            let message = live.message().await.unwrap().unwrap();
            if let Some(event) = message.decode_event() {
                break event.unwrap();
            }
        };
        assert_eq!(first.uuid, "e6", "nothing is replayed");
    })
    .await
}

#[tokio::test]
async fn a_live_subscriber_overtaken_by_retention_ends_as_a_slow_consumer() {
    within(LIMIT, async {
        let app = TestApp::start_in(tempfile::tempdir().unwrap(), 4, |config| {
            config.retention_max_bytes = Some(64 * 1024);
            config.retention_check_interval = Duration::from_millis(100);
        })
        .await;
        let mut client = app.client().await;
        let mut stream = client
            .subscribe(EventFilter::default())
            .await
            .unwrap()
            .into_inner();
        post(&app, "d-first", vec![padded("first", 1)]).await;
        let message = stream.message().await.unwrap().unwrap();
        assert!(matches!(message.kind, Some(Kind::Event(_))));
        // The subscriber stops reading; 4 MB arrive, retention keeps 64 kB of them.
        for chunk in 0..40 {
            let events = (0..10)
                .map(|i| padded(&format!("bulk-{chunk}-{i}"), 10 * 1024))
                .collect();
            post(&app, &format!("d-bulk-{chunk}"), events).await;
        }
        loop {
            let bounds = app.journal.bounds().await.unwrap();
            if bounds.oldest.is_some_and(|oldest| oldest > 300) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("cursor"), "{}", status.message());
        assert!(!status.message().contains("after:"), "{}", status.message());
        let metrics = app.metrics().await;
        let disconnects = metrics
            .lines()
            .find(|l| l.starts_with("okta_stream_slow_consumer_disconnects_total"))
            .unwrap();
        assert!(disconnects.ends_with(" 1"), "{disconnects}");
    })
    .await
}
