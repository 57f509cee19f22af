//! The embedded journal's file keeps the kernel's page cache for the pages commits rewrite,
//! not for event data it has made durable: ingest does not grow the page cache by every byte
//! it stores, and the events still read back.
//!
//! What is in the page cache is read with `mincore` on a mapping of the file. The data dir is
//! a temporary directory on disk (tmpfs pages cannot be dropped).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Duration;

use okta_stream::hub::Hub;
use okta_stream::journal::embedded::{FILE_NAME, RedbJournal};
use okta_stream::journal::file::JournalFile;
use okta_stream::journal::{Batch, Journal, NewEvent, Retention};
use okta_stream::proto;
use redb::backends::FileBackend;
use redb::{Database, Durability, ReadableDatabase, StorageBackend, TableDefinition};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

const BLOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("blobs");

/// Bytes of the file at `path` that are in the kernel's page cache now.
fn cached_bytes(path: &Path) -> usize {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096;
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: a read-only shared mapping of a file nobody truncates meanwhile, never
    // dereferenced; `mincore` writes one byte per page into `resident`, which has a byte for
    // every page of the mapping.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap {}", path.display());
        let status = libc::mincore(map, len, resident.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(status, 0, "mincore {}", path.display());
    }
    resident.iter().filter(|&&b| b & 1 == 1).count() * page
}

/// Commits `value` durably as one row of a redb database on `backend` at `path`, and returns
/// how many bytes of the file that commit added to the page cache.
fn cached_by_a_durable_commit(path: &Path, backend: impl StorageBackend, value: &[u8]) -> usize {
    let db = Database::builder().create_with_backend(backend).unwrap();
    let before = cached_bytes(path);
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::Immediate).unwrap();
    txn.open_table(BLOBS).unwrap().insert(1, value).unwrap();
    txn.commit().unwrap();
    let added = cached_bytes(path).saturating_sub(before);
    let read = db.begin_read().unwrap();
    let stored = read.open_table(BLOBS).unwrap().get(1).unwrap().unwrap();
    assert_eq!(stored.value(), value, "the row reads back");
    added
}

fn open(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

#[test]
fn a_durable_commit_leaves_its_large_pages_out_of_the_page_cache_where_redb_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![0x5a; 1 << 20];

    let plain = dir.path().join("plain.redb");
    let kept = cached_by_a_durable_commit(&plain, FileBackend::new(open(&plain)).unwrap(), &value);
    assert!(
        kept >= value.len(),
        "redb's own backend keeps the row's pages cached ({kept} bytes): the measure sees them"
    );

    let journal = dir.path().join("journal.redb");
    let added =
        cached_by_a_durable_commit(&journal, JournalFile::new(open(&journal)).unwrap(), &value);
    assert!(
        added < 64 << 10,
        "a 1 MiB row left {added} bytes in the page cache"
    );
}

#[tokio::test]
async fn ingested_events_do_not_stay_in_the_page_cache_and_still_read_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let journal = RedbJournal::open(dir.path(), Retention::keep_all(), Hub::new(16, 0))
            .await
            .unwrap();
        let path = dir.path().join(FILE_NAME);
        let before = cached_bytes(&path);
        // Two batches of 4 MiB each: each is its own durable commit (too large to log).
        let message = "x".repeat(2000);
        let mut stored = 0;
        for round in 0..2 {
            let events = (0..2000)
                .map(|n| {
                    NewEvent::new(proto::Event {
                        uuid: format!("00000000-0000-4000-8000-{round:04x}{n:08x}"),
                        message: message.clone(),
                        ..Default::default()
                    })
                })
                .collect();
            let appended = journal
                .append(Batch {
                    events,
                    ..Default::default()
                })
                .await
                .unwrap();
            stored += appended.committed.len();
        }
        assert_eq!(stored, 4000);
        let added = cached_bytes(&path).saturating_sub(before);
        assert!(
            added < 2 << 20,
            "8 MiB of events left {added} bytes of the journal file in the page cache"
        );
        let mut read = Vec::new();
        let mut after = 0;
        loop {
            let page = journal.read_after(after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.cursor();
            read.extend(page);
        }
        assert_eq!(read.len(), 4000, "every event reads back");
        assert!(read.iter().all(|e| e.record().unwrap().message == message));
        journal.close().await;
    })
    .await
    .expect("the test timed out");
}
