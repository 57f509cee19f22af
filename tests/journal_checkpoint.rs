//! The embedded journal checkpoints in quiet moments: once its write-ahead file is half full
//! and no append has come for a few milliseconds, the groups committed since the last
//! checkpoint are made durable in `journal.redb` itself, so the next append does not wait for
//! a full write-ahead file's checkpoint. A quiet moment after a group too large to log
//! checkpoints too, saving the allocator state that group's commit left out, so a crash then
//! costs the next open no check of the whole file.
//!
//! What a checkpoint leaves is read the way a backup would: a copy of `journal.redb` alone,
//! opened in another data dir, holds every acknowledged event.

use std::path::Path;
use std::time::{Duration, Instant};

use okta_stream::hub::Hub;
use okta_stream::journal::embedded::{FILE_NAME, RedbJournal};
use okta_stream::journal::wal::MAX_RECORDS;
use okta_stream::journal::{Batch, Journal, NewEvent, Retention};
use okta_stream::proto;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the checkpoint may take to show after the last append: far beyond the quiet time
/// it waits for, so that only a missing checkpoint fails the test.
const CHECKPOINT_WITHIN: Duration = Duration::from_secs(10);

fn event(n: u64) -> NewEvent {
    event_saying(n, format!("event {n}"))
}

fn event_saying(n: u64, message: String) -> NewEvent {
    NewEvent::new(proto::Event {
        uuid: format!("00000000-0000-4000-8000-{n:012x}"),
        message,
        ..Default::default()
    })
}

/// The journal in `dir`, keeping every event.
async fn open(dir: &Path) -> std::sync::Arc<RedbJournal> {
    RedbJournal::open(dir, Retention::keep_all(), Hub::new(16, 0))
        .await
        .unwrap()
}

/// The uuids of the events a copy of the journal file alone holds, read in cursor order. A
/// copy taken while a checkpoint is writing may not open; that is an `Err`, to try again.
async fn uuids_in_a_copy_of(journal_file: &Path) -> Result<Vec<String>, String> {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(journal_file, copy.path().join(FILE_NAME)).unwrap();
    let journal = RedbJournal::open(copy.path(), Retention::keep_all(), Hub::new(16, 0))
        .await
        .map_err(|e| format!("the copy does not open: {e}"))?;
    let mut uuids = Vec::new();
    let mut after = 0;
    let read = loop {
        match journal.read_after(after, 1000).await {
            Ok(page) => {
                let Some(last) = page.last() else {
                    break Ok(uuids);
                };
                after = last.cursor();
                uuids.extend(page.iter().map(|e| e.uuid().to_owned()));
            }
            Err(e) => break Err(format!("the copy does not read: {e}")),
        }
    };
    journal.close().await;
    read
}

#[tokio::test]
async fn a_quiet_journal_makes_a_half_full_write_ahead_file_durable_in_its_own_file() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let journal = open(dir.path()).await;
        // One small group per append: half of the records the write-ahead file takes, and
        // a few more, but far from the full file that forces a checkpoint.
        let appends = MAX_RECORDS / 2 + 8;
        let mut expected = Vec::new();
        for n in 1..=appends {
            let batch = Batch {
                events: vec![event(n)],
                ..Default::default()
            };
            let appended = journal.append(batch).await.unwrap();
            assert_eq!(appended.committed.len(), 1, "append {n}");
            expected.push(appended.committed[0].uuid().to_owned());
        }

        let path = dir.path().join(FILE_NAME);
        let deadline = Instant::now() + CHECKPOINT_WITHIN;
        let held = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let held = uuids_in_a_copy_of(&path).await;
            if held.as_ref() == Ok(&expected) || Instant::now() >= deadline {
                break held;
            }
        };
        let held = held.expect("a copy of the quiet journal's file opens and reads");
        assert_eq!(
            held.len(),
            expected.len(),
            "the journal file alone holds {} of the {} acknowledged events after {CHECKPOINT_WITHIN:?} without appends",
            held.len(),
            expected.len()
        );
        assert_eq!(held, expected, "in cursor order");

        // The write-ahead file started over: appends go on, and a reopen finds them all.
        let more = journal
            .append(Batch {
                events: vec![event(appends + 1)],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(more.committed[0].cursor(), appends + 1);
        journal.close().await;
        let reopened = open(dir.path()).await;
        assert_eq!(
            reopened.read_after(0, 1000).await.unwrap().len() as u64,
            appends + 1
        );
        reopened.close().await;
    })
    .await
    .expect("the test timed out");
}

/// The uuids of every event `journal` holds, in cursor order.
async fn uuids_in(journal: &RedbJournal) -> Vec<String> {
    let mut uuids = Vec::new();
    let mut after = 0;
    loop {
        let page = journal.read_after(after, 500).await.unwrap();
        let Some(last) = page.last() else {
            return uuids;
        };
        after = last.cursor();
        uuids.extend(page.iter().map(|e| e.uuid().to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_many_checkpoints_read_back_while_they_land_and_after_reopening() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let journal = open(dir.path()).await;
        // One-event groups from four appenders, enough to fill a half of the write-ahead file
        // several times: every checkpoint's writes and syncs run behind the appends after it,
        // and readers read pages those checkpoints are still writing.
        let per_appender = 2 * MAX_RECORDS;
        let appenders: Vec<_> = (0..4u64)
            .map(|a| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for n in 0..per_appender {
                        let batch = Batch {
                            events: vec![event(a * 1_000_000 + n)],
                            ..Default::default()
                        };
                        let appended = journal.append(batch).await.unwrap();
                        acked.push(appended.committed[0].uuid().to_owned());
                        if n % 97 == 0 {
                            let seen = uuids_in(&journal).await;
                            assert!(
                                seen.contains(acked.last().unwrap()),
                                "an append reads back at once"
                            );
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut acked = std::collections::HashSet::new();
        for appender in appenders {
            acked.extend(appender.await.unwrap());
        }
        let stored = uuids_in(&journal).await;
        assert_eq!(stored.len() as u64, 4 * per_appender, "every append, once");
        assert_eq!(
            stored
                .iter()
                .cloned()
                .collect::<std::collections::HashSet<_>>(),
            acked
        );

        journal.close().await;
        let reopened = open(dir.path()).await;
        assert_eq!(
            uuids_in(&reopened).await,
            stored,
            "the same events in the same order"
        );
        let more = reopened
            .append(Batch {
                events: vec![event(9_999_999)],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            more.committed[0].cursor(),
            4 * per_appender + 1,
            "no gap after reopening"
        );
        reopened.close().await;
    })
    .await
    .expect("the test timed out");
}

/// Whether redb checks the whole of a copy of `journal_file` (as a crash would leave it) before
/// opening it: it does when the last durable commit saved no snapshot of its page allocator.
/// `Err` when the copy does not open (taken while a commit was writing), to try again.
fn a_copy_is_checked_whole(journal_file: &Path) -> Result<bool, String> {
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join(FILE_NAME);
    std::fs::copy(journal_file, &path).unwrap();
    let checked = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = checked.clone();
    let db = redb::Database::builder()
        .set_repair_callback(move |_| seen.set(true))
        .open(&path)
        .map_err(|e| format!("the copy does not open: {e}"))?;
    drop(db);
    Ok(checked.get())
}

#[tokio::test]
async fn after_a_group_too_large_to_log_a_quiet_moment_makes_reopening_after_a_crash_quick() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let journal = open(dir.path()).await;
        // 2.4 MB in one group: more than the write-ahead file takes as one record, so the
        // group commits durably in the journal file itself.
        let large = Batch {
            events: (1..=600).map(|n| event_saying(n, "x".repeat(4000))).collect(),
            ..Default::default()
        };
        let appended = journal.append(large).await.unwrap();
        assert_eq!(appended.committed.len(), 600);

        let path = dir.path().join(FILE_NAME);
        let deadline = Instant::now() + CHECKPOINT_WITHIN;
        let checked = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let checked = a_copy_is_checked_whole(&path);
            if checked == Ok(false) || Instant::now() >= deadline {
                break checked;
            }
        };
        assert_eq!(
            checked,
            Ok(false),
            "{CHECKPOINT_WITHIN:?} after the large group, a crash still costs the next open a check of the whole file"
        );
        let held = uuids_in_a_copy_of(&path).await.expect("the copy opens");
        assert_eq!(held.len(), 600, "the copy holds the acknowledged group");
        journal.close().await;
    })
    .await
    .expect("the test timed out");
}
