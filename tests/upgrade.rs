//! Upgrades keep data: a journal written by okta-stream 0.1.0 (`tests/fixtures/upgrade/`, see
//! its README and `examples/upgrade_fixtures.rs`) is opened by the current binary, embedded and
//! JetStream, and serves the same events at the same cursors; new events continue after them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::app::{SECRET, delivery, profile_update};
use common::binary::Service;
use common::within;
use okta_stream::proto::{self, event_stream_client::EventStreamClient};
use prost::Message as _;

/// Bound on each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The fixture's events are kept for a century; so must the service's retention, or the
/// events (committed when the fixture was made) age out.
const RETENTION_DAYS: &str = "36500";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// The events the fixture holds, as 0.1.0 stored them.
fn expected() -> Vec<proto::Event> {
    let text = std::fs::read_to_string(fixtures().join("expected.ndjson")).unwrap();
    text.lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let encoded = base64::engine::general_purpose::STANDARD
                .decode(line["encoded"].as_str().unwrap())
                .unwrap();
            let event = proto::Event::decode(encoded.as_slice()).unwrap();
            assert_eq!(event.cursor, line["cursor"].as_u64().unwrap());
            assert_eq!(event.uuid, line["uuid"].as_str().unwrap());
            event
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Asserts the service serves exactly the fixture's events (ListEvents and GetEvent), then
/// that a new delivery continues at the next cursor.
async fn assert_serves_the_fixture(service: &Service) {
    let expected = expected();
    let mut client = EventStreamClient::connect(format!("http://{}", service.grpc))
        .await
        .unwrap();
    let listed = client
        .list_events(proto::ListEventsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events, expected);
    for event in &expected {
        let got = client
            .get_event(proto::GetEventRequest {
                uuid: event.uuid.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .event;
        assert_eq!(got.as_ref(), Some(event));
    }

    let response = reqwest::Client::new()
        .post(format!("http://{}/okta/hook", service.http))
        .header("authorization", SECRET)
        .json(&delivery(
            "after-upgrade",
            vec![profile_update(
                "after-upgrade",
                "thor@avengers.org",
                "lastName",
            )],
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let next = expected.len() as u64 + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = client
            .get_event(proto::GetEventRequest {
                uuid: "after-upgrade".into(),
            })
            .await;
        if let Ok(got) = got {
            assert_eq!(got.into_inner().event.unwrap().cursor, next);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new event is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_embedded_journal_written_by_0_1_0_serves_the_same_events() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join("embedded"), dir.path());
        assert_the_service_serves_the_fixture(dir.path()).await;

        // Opened once, it carries the current format version, and `journal check` finds it sound.
        assert_checks_sound(dir.path(), 21).await;
    })
    .await;
}

#[tokio::test]
async fn journal_check_upgrades_an_embedded_journal_written_by_0_1_0_as_opening_would() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join("embedded"), dir.path());
        assert_checks_sound(dir.path(), 20).await;

        assert_the_service_serves_the_fixture(dir.path()).await;
    })
    .await;
}

/// The service started on the embedded fixture copied to `data_dir` serves its events (and
/// stores one more), then is killed.
async fn assert_the_service_serves_the_fixture(data_dir: &std::path::Path) {
    let env = [
        ("OKTA_STREAM_HOOK_SECRETS", SECRET),
        ("OKTA_STREAM_RETENTION_DAYS", RETENTION_DAYS),
    ];
    let service = Service::start(data_dir, &env).await;
    assert_serves_the_fixture(&service).await;
    service.kill().await;
}

/// `journal check` on `data_dir` succeeds, finding cursors 1 to `events` in the current format.
async fn assert_checks_sound(data_dir: &std::path::Path, events: u64) {
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_okta-stream"))
        .args(["journal", "check", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "sound: {events} events, cursors 1 to {events}, format version {}",
            okta_stream::journal::embedded::FORMAT_VERSION
        )),
        "{stdout}"
    );
}

/// A private `nats-server` on a free loopback port serving `store`; killed on drop.
struct NatsServer {
    child: tokio::process::Child,
    port: u16,
}

impl NatsServer {
    async fn start(store: &Path) -> NatsServer {
        let bin = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let system = PathBuf::from("/usr/sbin/nats-server");
                if system.exists() {
                    system
                } else {
                    "nats-server".into()
                }
            });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        NatsServer { child, port }
    }
}

#[tokio::test]
async fn a_jetstream_stream_written_by_0_1_0_serves_the_same_events() {
    within(TEST_TIMEOUT, async {
        let store = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join("jetstream"), store.path());
        let mut nats = NatsServer::start(store.path()).await;
        let data_dir = tempfile::tempdir().unwrap();
        let url = format!("nats://127.0.0.1:{}", nats.port);
        let env = [
            ("OKTA_STREAM_HOOK_SECRETS", SECRET),
            ("OKTA_STREAM_RETENTION_DAYS", RETENTION_DAYS),
            ("OKTA_STREAM_JOURNAL", url.as_str()),
        ];
        let service = Service::start(data_dir.path(), &env).await;
        assert_serves_the_fixture(&service).await;
        service.kill().await;
        nats.child.kill().await.unwrap();
    })
    .await;
}
