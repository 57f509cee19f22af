//! A full disk that clears heals without a restart, against the real binary: the data dir is a
//! small tmpfs this test mounts (and always unmounts), filled until the journal cannot grow.
//! While full, the hook answers 503 and `/readyz` says not ready; once space is freed, the next
//! delivery is stored and readiness follows, with nothing acknowledged lost or duplicated.
//!
//! The profile store in the same file follows the journal when it reopens the file (in
//! process, on the same kind of tmpfs).
//!
//! Mounting needs root, as CI runs; elsewhere the test fails saying so.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::app::{SECRET, delivery, profile_update};
use common::binary::{Service, all_events};
use common::within;
use okta_stream::hub::Hub;
use okta_stream::journal::embedded::RedbJournal;
use okta_stream::journal::{Batch, Journal, NewEvent, Retention};
use okta_stream::profile::{
    AttributeRules, RedactionKey, RedbSnapshots, Snapshot, SnapshotStore, ValuesStore,
};
use okta_stream::proto;

/// Bound on the test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A tmpfs mounted on a fresh temporary directory; unmounted (lazily, so a process still
/// holding a file cannot keep it) on drop, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().expect("id runs");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "this test mounts a tmpfs and must run as root (as CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk may still fit byte by byte.
    while file.write_all(&[0x5a]).is_ok() {}
    path
}

/// A delivery of `count` events with uuids `{prefix}-{n}`.
fn events(prefix: &str, count: usize) -> (Vec<String>, serde_json::Value) {
    let uuids: Vec<String> = (0..count).map(|n| format!("{prefix}-{n}")).collect();
    let events = uuids
        .iter()
        .map(|u| profile_update(u, "thor@avengers.org", "lastName"))
        .collect();
    (uuids, delivery(prefix, events))
}

async fn ready(http: &reqwest::Client, service: &Service) -> bool {
    http.get(format!("http://{}/readyz", service.admin))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Polls readiness until it equals `want`, failing after 15 s.
async fn wait_ready(http: &reqwest::Client, service: &Service, want: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ready(http, service).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz did not become {}",
            if want { "ready" } else { "not ready" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_disk_that_clears_heals_without_a_restart() {
    within(TEST_TIMEOUT, async {
        let tmpfs = Tmpfs::mount("4m");
        let data_dir = tmpfs.path().join("data");
        let service = Service::start(&data_dir, &[("OKTA_STREAM_HOOK_SECRETS", SECRET)]).await;
        let http = reqwest::Client::new();
        let post = |body: serde_json::Value| {
            http.post(format!("http://{}/okta/hook", service.http))
                .header("authorization", SECRET)
                .json(&body)
                .send()
        };
        let mut acknowledged = Vec::new();
        let (uuids, body) = events("before", 10);
        assert!(post(body).await.unwrap().status().is_success());
        acknowledged.extend(uuids);

        // Fill the disk, then deliver until the journal cannot grow: 503, not ready.
        let filler = fill(tmpfs.path());
        let mut refused = false;
        for n in 0..200 {
            let (uuids, body) = events(&format!("full-{n}"), 50);
            let status = post(body).await.unwrap().status();
            if status.is_success() {
                acknowledged.extend(uuids);
            } else {
                assert_eq!(status, 503, "a full disk is a retryable 503");
                refused = true;
                break;
            }
        }
        assert!(refused, "the journal kept committing on a full disk");
        wait_ready(&http, &service, false).await;

        // Space comes back: the very next delivery is stored, and readiness follows.
        std::fs::remove_file(&filler).unwrap();
        let (uuids, body) = events("after", 10);
        let status = post(body).await.unwrap().status();
        assert!(
            status.is_success(),
            "the first delivery after the disk cleared: {status}"
        );
        acknowledged.extend(uuids);
        wait_ready(&http, &service, true).await;

        // Everything acknowledged is stored once, gap-free.
        let stored = all_events(service.grpc).await;
        let cursors: Vec<u64> = stored.iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, (1..=stored.len() as u64).collect::<Vec<_>>());
        let stored_uuids: Vec<String> = stored.into_iter().map(|e| e.uuid).collect();
        assert_eq!(stored_uuids, acknowledged);
        service.kill().await;
    })
    .await;
}

/// `count` events of about 1 KB with uuids `{prefix}-{n}`, as one append.
fn kilobyte_events(prefix: &str, count: usize) -> Batch {
    Batch {
        events: (0..count)
            .map(|n| {
                NewEvent::new(proto::Event {
                    uuid: format!("{prefix}-{n}"),
                    message: "x".repeat(1000),
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

/// A snapshot of a user whose title is `title`.
fn titled(title: &str) -> Snapshot {
    let rules = AttributeRules::new(&[], &[], RedactionKey::from_bytes([7; 32])).unwrap();
    let profile = serde_json::json!({"title": title});
    let at = chrono::DateTime::from_timestamp(1_764_580_000, 0).unwrap();
    Snapshot::from_profile(&rules, profile.as_object().unwrap(), at)
}

#[tokio::test]
async fn the_profile_store_follows_the_journal_when_it_reopens_its_file_after_a_full_disk() {
    within(TEST_TIMEOUT, async {
        let tmpfs = Tmpfs::mount("4m");
        let data_dir = tmpfs.path().join("data");
        let journal = RedbJournal::open(&data_dir, Retention::keep_all(), Hub::new(1024, 0))
            .await
            .unwrap();
        let store = RedbSnapshots::in_journal(journal.clone()).await.unwrap();
        journal.append(kilobyte_events("before", 1)).await.unwrap();
        assert!(store.put("00uBefore", &titled("Engineer")).await.unwrap());
        let before = (1, Bytes::from_static(b"values of 1"));
        store
            .release(vec![before.clone()], Vec::new(), 1)
            .await
            .unwrap();

        // Fill the disk until a commit fails: redb then refuses the file until it is reopened.
        let filler = fill(tmpfs.path());
        let mut failed = false;
        for n in 0..500 {
            if journal
                .append(kilobyte_events(&format!("full-{n}"), 50))
                .await
                .is_err()
            {
                failed = true;
                break;
            }
        }
        assert!(failed, "the journal kept committing on a full disk");

        // Space comes back: the journal reopens its file (which it cannot while another
        // handle on the old one is held) and commits again.
        std::fs::remove_file(&filler).unwrap();
        let after = journal
            .append(kilobyte_events("after", 1))
            .await
            .expect("the journal reopened its file once space came back");
        let cursor = after.committed[0].cursor();

        // The store is on the reopened file: it reads what it stored before and stores again.
        assert_eq!(
            store.get("00uBefore").await.unwrap(),
            Some(titled("Engineer"))
        );
        assert!(store.put("00uAfter", &titled("Manager")).await.unwrap());
        let later = (cursor, Bytes::from_static(b"values after the reopen"));
        store
            .release(vec![later.clone()], Vec::new(), cursor)
            .await
            .unwrap();
        assert_eq!(store.released_through().await.unwrap(), cursor);
        assert_eq!(
            store.values(1, cursor).await.unwrap(),
            vec![before.clone(), later.clone()]
        );

        // And what it stored is in the journal's file, durably.
        journal.close().await;
        let journal = RedbJournal::open(&data_dir, Retention::keep_all(), Hub::new(16, 0))
            .await
            .unwrap();
        let store = RedbSnapshots::in_journal(journal.clone()).await.unwrap();
        assert_eq!(
            store.get("00uAfter").await.unwrap(),
            Some(titled("Manager"))
        );
        assert_eq!(store.values(1, cursor).await.unwrap(), vec![before, later]);
        journal.close().await;
    })
    .await;
}
