//! The embedded journal's redb file: redb's own file backend, except that the event pages a
//! durable commit wrote leave the kernel's page cache once they are synced.
//!
//! Why: an event chunk is written once and then read through redb's own cache (redb moves the
//! pages it writes into it), or, once that has moved on, by a replay that reads old events in
//! order. A second copy in the kernel's page cache only grows it by every byte ingested, a
//! fresh page of memory per 4 KiB. Taking fresh memory is not free: a VM whose freed memory
//! goes back to the host (virtio-balloon free page reporting, as on this project's machines)
//! faults every new page in from the host, and 25% of the server's CPU at 16 senders × 50
//! events went to copying chunks into new page-cache pages (BENCHMARKS.md, issue 15, seventh
//! round). Dropped pages are reused at once by the next commit's writes. Smaller writes, redb's
//! index pages that commits keep rewriting, stay cached.
//!
//! A checkpoint's writes and syncs can also run behind the writer ([`SyncBehind`]): redb's
//! durable commit hands them over (its pages copied into a buffer kept for the next time) and
//! returns, and a thread of its own does them in order while the appends that follow go on.
//! A checkpoint after a few hundred one-event commits writes about 3 MB of pages and syncs
//! twice (quick-repair commits in two phases); in line that held the writer for a median of
//! 6 ms, handed over for 1 ms (BENCHMARKS.md, issue 15, tenth round). The file sees the same
//! order as in line: every later write, resize or sync waits for that thread first, and so
//! does a read of a page it has yet to write, so nothing reaches the file before the commit
//! it follows is durable. Only the journal's own bookkeeping (which write-ahead records the
//! file holds) must wait for [`SyncBehind::wait`] before it relies on the commit.

use std::fs::File;
use std::io::ErrorKind;
use std::num::NonZeroU64;
use std::ops::{Bound, Range};
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::backends::FileBackend;
use redb::{BackendError, DatabaseError, StorageBackend};

use super::lock;

/// The error type of redb's I/O methods (without its `experimental-api-5` feature).
type BackendIoError = std::io::Error;

/// A write at least this large is event data (chunks are rows of 128 KiB pages, see
/// [`crate::journal::chunk`]): dropped from the page cache once synced.
pub const DROPPED_WRITE_BYTES: usize = 64 << 10;

/// redb's file backend, remembering the large ranges written since the last sync.
#[derive(Debug)]
pub struct JournalFile {
    inner: FileBackend,
    shared: Arc<Shared>,
}

/// What the backend shares with its [`SyncBehind`] handle and the thread running behind.
#[derive(Debug)]
struct Shared {
    /// The same open file, for the cache advice and the writes behind.
    file: File,
    /// Ranges (offset, length) of large writes not yet synced, adjacent ones merged.
    unsynced: Mutex<Vec<(u64, u64)>>,
    behind: Mutex<Behind>,
}

/// The journal writer's handle on a checkpoint's writes and syncs, run behind it (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct SyncBehind {
    shared: Arc<Shared>,
}

/// Most bytes of the copy buffer kept from one checkpoint to the next; a larger one (after an
/// unusually large checkpoint) is let go.
const KEPT_BUFFER_BYTES: usize = 32 << 20;

/// One step of a commit handed over, done behind in the order given.
#[derive(Debug)]
enum Step {
    /// Write this range of the copies at this offset of the file.
    Write(u64, Range<usize>),
    Sync,
}

#[derive(Debug, Default)]
struct Behind {
    /// The file's writes and syncs are handed over (during one durable commit).
    defer: bool,
    /// What was handed over and is not yet running.
    steps: Vec<Step>,
    /// The bytes of the handed-over writes.
    copies: Vec<u8>,
    /// The file ranges (start, end) of handed-over writes, waiting or running: a read of one
    /// waits for them.
    pending: Vec<(u64, u64)>,
    /// The thread doing the steps; it gives the copy buffer back.
    running: Option<JoinHandle<std::io::Result<Vec<u8>>>>,
    /// A step behind failed: what was written before may not be durable, so every later read,
    /// write and sync fails too, and redb refuses the file until it is opened again.
    failed: Option<(ErrorKind, String)>,
}

impl Behind {
    /// Waits for the thread running behind; `Err` if it, or one before it, failed.
    fn settle(&mut self) -> std::io::Result<()> {
        if let Some(running) = self.running.take() {
            let result = running
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the journal-sync thread panicked")));
            match result {
                Ok(mut copies) => {
                    if self.steps.is_empty() && copies.capacity() <= KEPT_BUFFER_BYTES {
                        copies.clear();
                        self.copies = copies;
                    }
                }
                Err(error) => self.latch(&error),
            }
            if self.steps.is_empty() {
                self.pending.clear();
            }
        }
        match &self.failed {
            Some((kind, message)) => Err(std::io::Error::new(
                *kind,
                format!("an earlier write or sync of the journal failed: {message}"),
            )),
            None => Ok(()),
        }
    }

    /// Remembers that a step failed, for every later one to fail too.
    fn latch(&mut self, error: &std::io::Error) {
        self.failed = Some((error.kind(), error.to_string()));
    }

    /// Whether a handed-over write, waiting or running, covers part of `start..end`.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.pending.iter().any(|&(s, e)| s < end && start < e)
    }
}

impl SyncBehind {
    /// The file's writes and syncs, from now until [`Self::release`], are handed over instead
    /// of done (the checkpoint's durable commit about to run).
    pub fn defer_next(&self) {
        lock(&self.shared.behind).defer = true;
    }

    /// After the commit: what it handed over goes to a thread of its own, in order. Later
    /// reads of those pages, writes and syncs wait for it. If no thread can be started, the
    /// steps are not done and the file fails from then on, as after a failed write.
    pub fn release(&self) {
        let mut behind = lock(&self.shared.behind);
        behind.defer = false;
        if behind.steps.is_empty() {
            return;
        }
        if let Err(error) = self.shared.hand_over(&mut behind) {
            // An error here is redb's to find: the next write or sync fails the same way.
            tracing::warn!(%error, "writing the journal's checkpoint failed");
            behind.latch(&error);
        }
    }

    /// Waits until every step behind has landed; `Err` if one failed.
    pub fn wait(&self) -> std::io::Result<()> {
        lock(&self.shared.behind).settle()
    }

    /// Whether nothing runs behind (a finished thread counts as landed once [`Self::wait`]
    /// says so).
    pub fn idle(&self) -> bool {
        lock(&self.shared.behind)
            .running
            .as_ref()
            .is_none_or(|running| running.is_finished())
    }
}

impl JournalFile {
    /// Wraps the open journal file.
    pub fn new(file: File) -> Result<Self, DatabaseError> {
        let handle = file.try_clone()?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            shared: Arc::new(Shared {
                file: handle,
                unsynced: Mutex::default(),
                behind: Mutex::default(),
            }),
        })
    }

    /// The handle that hands this file's next commit over and waits for it.
    pub fn sync_behind(&self) -> SyncBehind {
        SyncBehind {
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    /// Waits for what runs behind and does what is handed over but not yet running, so the
    /// file is as redb expects it.
    fn catch_up(&self, behind: &mut Behind) -> std::io::Result<()> {
        behind.settle()?;
        if !behind.steps.is_empty() {
            let steps = std::mem::take(&mut behind.steps);
            let done = self.run(&steps, &behind.copies);
            behind.copies.clear();
            behind.pending.clear();
            if let Err(error) = &done {
                behind.latch(error);
            }
            done?;
        }
        Ok(())
    }

    /// Gives the handed-over steps to a thread of its own; `Err` if none can be started.
    fn hand_over(self: &Arc<Self>, behind: &mut Behind) -> std::io::Result<()> {
        behind.settle()?;
        let shared = self.clone();
        let steps = std::mem::take(&mut behind.steps);
        let copies = std::mem::take(&mut behind.copies);
        let spawned = std::thread::Builder::new()
            .name("journal-sync".to_owned())
            .spawn(move || {
                shared.run(&steps, &copies)?;
                Ok(copies)
            });
        // Without a thread, the steps went with the closure that never started: the file is
        // left as by a crash before them, and the caller latches the failure like a failed write.
        behind.running = Some(spawned?);
        Ok(())
    }

    /// Does `steps` in order.
    fn run(&self, steps: &[Step], copies: &[u8]) -> std::io::Result<()> {
        for step in steps {
            match step {
                Step::Write(offset, range) => {
                    let data = &copies[range.clone()];
                    self.file.write_all_at(data, *offset)?;
                    remember_large(&self.unsynced, *offset, data.len());
                }
                Step::Sync => self.sync()?,
            }
        }
        Ok(())
    }

    /// Syncs the file and drops the large ranges written before it from the page cache.
    fn sync(&self) -> std::io::Result<()> {
        // Taken before the sync: every range in it is covered by this sync.
        let written = std::mem::take(&mut *lock(&self.unsynced));
        self.file.sync_data()?;
        drop_cached(&self.file, &written);
        Ok(())
    }
}

/// Remembers a large write (event data) to drop from the page cache once synced.
fn remember_large(unsynced: &Mutex<Vec<(u64, u64)>>, offset: u64, len: usize) {
    if len >= DROPPED_WRITE_BYTES {
        let len = len as u64;
        let mut unsynced = lock(unsynced);
        match unsynced.last_mut() {
            Some((start, run)) if *start + *run == offset => *run += len,
            _ => unsynced.push((offset, len)),
        }
    }
}

/// Asks the kernel to drop the synced pages of `ranges` of `file` from its cache. Advice
/// only: a refusal changes nothing stored, so it is not an error of the commit.
fn drop_cached(file: &File, ranges: &[(u64, u64)]) {
    for &(offset, len) in ranges {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        if let Err(error) = rustix::fs::fadvise(
            file,
            offset,
            NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        ) {
            tracing::debug!(%error, offset, len, "the kernel refused to drop synced journal pages");
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        let _ = (offset, NonZeroU64::new(len), file);
    }
}

impl StorageBackend for JournalFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        // A page handed over to be written behind is read once it is in the file.
        let mut behind = lock(&self.shared.behind);
        if behind.failed.is_some() || behind.overlaps(offset, offset + out.len() as u64) {
            self.shared.catch_up(&mut behind)?;
        }
        drop(behind);
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.shared.catch_up(&mut lock(&self.shared.behind))?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        let mut behind = lock(&self.shared.behind);
        if behind.defer {
            behind.steps.push(Step::Sync);
            return Ok(());
        }
        self.shared.catch_up(&mut behind)?;
        drop(behind);
        self.shared.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut behind = lock(&self.shared.behind);
        if behind.defer {
            // Handed over: copied, to be written behind in order with the syncs.
            let start = behind.copies.len();
            behind.copies.extend_from_slice(data);
            let end = behind.copies.len();
            behind.steps.push(Step::Write(offset, start..end));
            behind.pending.push((offset, offset + data.len() as u64));
            return Ok(());
        }
        self.shared.catch_up(&mut behind)?;
        drop(behind);
        self.inner.write(offset, data)?;
        remember_large(&self.shared.unsynced, offset, data.len());
        Ok(())
    }

    fn close(&self) -> Result<(), BackendIoError> {
        let caught_up = self.shared.catch_up(&mut lock(&self.shared.behind));
        self.inner.close()?;
        caught_up
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal file backend over a fresh file of `len` zero bytes.
    fn backend(len: u64) -> (tempfile::TempDir, JournalFile, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(len).unwrap();
        let raw = File::open(&path).unwrap();
        (dir, JournalFile::new(file).unwrap(), raw)
    }

    fn raw_read(file: &File, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        file.read_exact_at(&mut out, offset).unwrap();
        out
    }

    #[test]
    fn a_handed_over_commit_reaches_the_file_in_order_and_reads_of_it_wait_for_it() {
        let (_dir, file, raw) = backend(1 << 20);
        let behind = file.sync_behind();
        behind.defer_next();
        // A commit in two phases: pages, sync, header, sync.
        file.write(8192, &[1; 4096]).unwrap();
        file.write(0, &[2; 512]).unwrap();
        file.sync_data().unwrap();
        file.write(0, &[3; 512]).unwrap();
        file.sync_data().unwrap();
        assert_eq!(
            raw_read(&raw, 8192, 4),
            vec![0; 4],
            "nothing is written during the commit"
        );
        behind.release();

        // A read of a handed-over page sees it, whether or not the thread got to it yet.
        let mut page = vec![0; 4096];
        file.read(8192, &mut page).unwrap();
        assert_eq!(page, vec![1; 4096]);
        // A write after the commit lands after its steps: the header's second write is not
        // undone by the first one arriving late.
        file.write(16384, &[4; 8]).unwrap();
        behind.wait().unwrap();
        assert!(behind.idle());
        assert_eq!(
            raw_read(&raw, 0, 512),
            vec![3; 512],
            "the later header write wins"
        );
        assert_eq!(raw_read(&raw, 16384, 8), vec![4; 8]);
    }

    #[test]
    fn without_a_hand_over_writes_and_syncs_are_done_in_line() {
        let (_dir, file, raw) = backend(1 << 16);
        file.write(4096, &[9; 100]).unwrap();
        assert_eq!(raw_read(&raw, 4096, 100), vec![9; 100]);
        file.sync_data().unwrap();
        let behind = file.sync_behind();
        assert!(behind.idle());
        behind.wait().unwrap();
        // Released without anything handed over: nothing changes.
        behind.defer_next();
        behind.release();
        file.write(0, &[5; 10]).unwrap();
        assert_eq!(
            raw_read(&raw, 0, 10),
            vec![5; 10],
            "a write after a release is in line"
        );
    }
}
