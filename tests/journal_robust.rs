//! A journal that never silently loses or stalls, against the real binary: a damaged, vanished
//! or too new journal stops the start with a message saying what to do; a record that cannot
//! be read ends streams with `DATA_LOSS` naming its cursor and turns readiness off; and
//! `okta-stream journal check` finds it offline.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::app::{SECRET, delivery, profile_update};
use common::binary::Service;
use common::within;
use okta_stream::grpc::Kind;
use okta_stream::journal::embedded::{FILE_NAME, MARKER_FILE_NAME};
use okta_stream::proto;
use okta_stream::proto::event_filter::Start;
use okta_stream::proto::event_stream_client::EventStreamClient;
use tokio::process::Command;

/// Bound on each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What a run of the binary that ended by itself left.
struct Exit {
    code: Option<i32>,
    stderr: String,
}

/// Runs `okta-stream` with `args` on `data_dir` (loopback port 0), expecting it to end by
/// itself within 30 s.
async fn run(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Exit {
    let mut command = Command::new(env!("CARGO_BIN_EXE_okta-stream"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0")
        .env("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0")
        .env("OKTA_STREAM_ADMIN_ADDR", "127.0.0.1:0")
        .env("OKTA_STREAM_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("okta-stream ends by itself")
        .expect("okta-stream runs");
    Exit {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts the binary on `data_dir`, stores `count` events (uuids `e-0000`, ...; cursor = n + 1)
/// and kills it.
async fn journal_with_events(data_dir: &Path, count: usize) {
    let service = Service::start(data_dir, &[("OKTA_STREAM_HOOK_SECRETS", SECRET)]).await;
    let client = reqwest::Client::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let events = chunk
            .iter()
            .map(|n| profile_update(&format!("e-{n:04}"), "thor@avengers.org", "lastName"))
            .collect();
        let response = client
            .post(format!("http://{}/okta/hook", service.http))
            .header("authorization", SECRET)
            .json(&delivery(&format!("d-{}", chunk[0]), events))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    service.kill().await;
}

/// Asserts that a start on `data_dir` is refused with exit 1 and a message containing `needles`.
async fn assert_start_refused(data_dir: &Path, needles: &[&str]) {
    let exit = run(data_dir, &["serve"], &[]).await;
    assert_eq!(exit.code, Some(1), "stderr: {}", exit.stderr);
    for needle in needles {
        assert!(
            exit.stderr.contains(needle),
            "stderr should contain {needle:?}: {}",
            exit.stderr
        );
    }
}

#[tokio::test]
async fn a_zero_byte_journal_is_refused_and_left_as_it_is() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"").unwrap();
        assert_start_refused(
            dir.path(),
            &[
                &path.display().to_string(),
                "the file is empty",
                "restore it from a backup",
                "move it away",
            ],
        )
        .await;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_file_that_is_not_a_journal_is_refused() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = "this is a shopping list, not a journal\n".repeat(200);
        std::fs::write(&path, &text).unwrap();
        assert_start_refused(
            dir.path(),
            &[
                &path.display().to_string(),
                "not a usable journal",
                "restore it from a backup",
            ],
        )
        .await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    })
    .await;
}

#[tokio::test]
async fn a_truncated_journal_is_refused() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        journal_with_events(dir.path(), 300).await;
        let path = dir.path().join(FILE_NAME);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len / 2).unwrap();
        drop(file);
        assert_start_refused(
            dir.path(),
            &[
                &path.display().to_string(),
                "not a usable journal",
                "move it away",
            ],
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_journal_restored_without_its_write_ahead_file_is_refused_not_guessed() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // Killed: the acknowledged groups are in journal.wal, not yet checkpointed.
        journal_with_events(dir.path(), 200).await;
        let backup = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join(FILE_NAME), backup.path().join(FILE_NAME)).unwrap();
        // A later run applies those, then acknowledges more groups into a restarted journal.wal.
        journal_with_events(dir.path(), 300).await;
        // journal.redb from the backup beside the newer journal.wal: its records do not continue
        // the file, so neither a start nor a check applies them.
        std::fs::copy(backup.path().join(FILE_NAME), dir.path().join(FILE_NAME)).unwrap();
        assert_start_refused(dir.path(), &["journal.wal", "move journal.wal away"]).await;
        let check = run(dir.path(), &["journal", "check"], &[]).await;
        assert_eq!(check.code, Some(1), "{}", check.stderr);
        assert!(check.stderr.contains("journal.wal"), "{}", check.stderr);
    })
    .await;
}

#[tokio::test]
async fn a_vanished_journal_is_refused_unless_starting_empty_is_accepted() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        journal_with_events(dir.path(), 3).await;
        assert!(dir.path().join(MARKER_FILE_NAME).exists());
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();

        assert_start_refused(
            dir.path(),
            &[
                &dir.path().join(FILE_NAME).display().to_string(),
                "is missing",
                "restore the journal from a backup",
                "--accept-empty-journal",
            ],
        )
        .await;
        assert!(!dir.path().join(FILE_NAME).exists(), "nothing was created");

        // The flag alone is a switch; the service then starts, empty.
        let mut child = Command::new(env!("CARGO_BIN_EXE_okta-stream"))
            .args(["serve", "--accept-empty-journal"])
            .env_clear()
            .env("OKTA_STREAM_HTTP_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_GRPC_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_ADMIN_ADDR", "127.0.0.1:0")
            .env("OKTA_STREAM_DATA_DIR", dir.path())
            .env("OKTA_STREAM_HOOK_SECRETS", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        let first = lines.next_line().await.unwrap().unwrap_or_default();
        assert!(first.starts_with("listening http="), "{first}");
        child.kill().await.unwrap();

        // And the environment variable does the same; the next start needs neither.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let service = Service::start(
            dir.path(),
            &[
                ("OKTA_STREAM_ACCEPT_EMPTY_JOURNAL", "true"),
                ("OKTA_STREAM_HOOK_SECRETS", SECRET),
            ],
        )
        .await;
        let mut client = EventStreamClient::connect(format!("http://{}", service.grpc))
            .await
            .unwrap();
        let listed = client
            .list_events(proto::ListEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.events.is_empty());
        service.kill().await;
        let service = Service::start(dir.path(), &[("OKTA_STREAM_HOOK_SECRETS", SECRET)]).await;
        service.kill().await;
    })
    .await;
}

#[tokio::test]
async fn a_journal_of_a_newer_format_is_refused() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        journal_with_events(dir.path(), 3).await;
        let path = dir.path().join(FILE_NAME);
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
                let mut meta = txn.open_table(meta).unwrap();
                meta.insert("format_version", 99).unwrap();
            }
            txn.commit().unwrap();
        }
        assert_start_refused(
            dir.path(),
            &[
                &path.display().to_string(),
                "journal format version 99",
                "newer than this okta-stream supports",
                "run a newer okta-stream",
            ],
        )
        .await;
        // Nothing was migrated or overwritten: the file still says version 99.
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let meta = txn.open_table(meta).unwrap();
            assert_eq!(meta.get("format_version").unwrap().unwrap().value(), 99);
        }
        let check = run(dir.path(), &["journal", "check"], &[]).await;
        assert_eq!(check.code, Some(1));
        assert!(
            check.stderr.contains("format version 99"),
            "{}",
            check.stderr
        );
    })
    .await;
}

/// The cursor a `DATA_LOSS` message names: "the event at cursor N cannot be read: ...".
fn named_cursor(message: &str) -> u64 {
    message
        .strip_prefix("the event at cursor ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cursor named in {message:?}"))
}

#[tokio::test]
async fn a_damaged_record_ends_streams_with_data_loss_and_turns_readiness_off() {
    within(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        journal_with_events(dir.path(), 1000).await;
        let path = dir.path().join(FILE_NAME);
        let sound = run(dir.path(), &["journal", "check"], &[]).await;
        assert_eq!(sound.code, Some(0), "{}", sound.stderr);

        // 64 bytes flipped where event e-0500 is stored, as a bad disk or a stray write would
        // (at every copy of it in the file: a stale one may linger in free space).
        let mut bytes = std::fs::read(&path).unwrap();
        let needle = b"e-0500";
        let spots: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| w == needle)
            .map(|(at, _)| at)
            .collect();
        assert!(!spots.is_empty(), "e-0500 is not in the journal file");
        for at in spots {
            let end = (at + 64).min(bytes.len());
            for byte in &mut bytes[at..end] {
                *byte ^= 0xff;
            }
        }
        std::fs::write(&path, bytes).unwrap();

        // Offline, the check names the first bad cursor.
        let check = run(dir.path(), &["journal", "check"], &[]).await;
        assert_eq!(check.code, Some(1), "{}", check.stderr);
        let bad = check
            .stderr
            .strip_prefix("okta-stream: ")
            .map(named_cursor)
            .unwrap_or_else(|| panic!("{}", check.stderr));
        assert!((1..=1000).contains(&bad), "{bad}");

        let service = Service::start(dir.path(), &[("OKTA_STREAM_HOOK_SECRETS", SECRET)]).await;
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = EventStreamClient::new(channel.clone());

        // A replay delivers everything before the damage, then ends with DATA_LOSS naming it
        // instead of stalling.
        let mut stream = client
            .subscribe(proto::EventFilter {
                start: Some(Start::FromOldest(true)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut delivered = Vec::new();
        let status = loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    if let Some(Kind::Event(event)) = message.kind {
                        let event = <proto::Event as prost::Message>::decode(event).unwrap();
                        delivered.push(event.cursor);
                    }
                }
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
        assert_eq!(named_cursor(status.message()), bad, "{status:?}");
        assert_eq!(delivered, (1..bad).collect::<Vec<_>>());

        // ListEvents pages up to the damage, then says the same.
        let mut token = String::new();
        let status = loop {
            match client
                .list_events(proto::ListEventsRequest {
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(page) => {
                    let page = page.into_inner();
                    assert!(page.events.iter().all(|e| e.cursor < bad));
                    assert!(
                        !page.next_page_token.is_empty(),
                        "listing ended before the damage"
                    );
                    token = page.next_page_token;
                }
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
        assert_eq!(named_cursor(status.message()), bad, "{status:?}");

        // Readiness and gRPC health say the journal is not serving.
        let readyz = format!("http://{}/readyz", service.admin);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let status = reqwest::get(&readyz).await.unwrap().status();
            if status == 503 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz still {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "okta.events.v1.EventStream".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            serving,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        );
        service.kill().await;
    })
    .await;
}
