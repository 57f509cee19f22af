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

use std::fs::File;
use std::num::NonZeroU64;
use std::ops::Bound;
use std::sync::Mutex;

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
    /// The same open file, for the cache advice.
    file: File,
    /// Ranges (offset, length) of large writes not yet synced, adjacent ones merged.
    unsynced: Mutex<Vec<(u64, u64)>>,
}

impl JournalFile {
    /// Wraps the open journal file.
    pub fn new(file: File) -> Result<Self, DatabaseError> {
        let handle = file.try_clone()?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            file: handle,
            unsynced: Mutex::new(Vec::new()),
        })
    }

    /// Asks the kernel to drop the synced pages of `ranges` from its cache. Advice only: a
    /// refusal changes nothing stored, so it is not an error of the commit.
    fn drop_cached(&self, ranges: &[(u64, u64)]) {
        for &(offset, len) in ranges {
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
            if let Err(error) = rustix::fs::fadvise(
                &self.file,
                offset,
                NonZeroU64::new(len),
                rustix::fs::Advice::DontNeed,
            ) {
                tracing::debug!(%error, offset, len, "the kernel refused to drop synced journal pages");
            }
            #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
            let _ = (offset, NonZeroU64::new(len), &self.file);
        }
    }
}

impl StorageBackend for JournalFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        // Taken before the sync: every range in it is covered by this sync.
        let written = std::mem::take(&mut *lock(&self.unsynced));
        self.inner.sync_data()?;
        self.drop_cached(&written);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.inner.write(offset, data)?;
        if data.len() >= DROPPED_WRITE_BYTES {
            let len = data.len() as u64;
            let mut unsynced = lock(&self.unsynced);
            match unsynced.last_mut() {
                Some((start, run)) if *start + *run == offset => *run += len,
                _ => unsynced.push((offset, len)),
            }
        }
        Ok(())
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
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
