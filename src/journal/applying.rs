//! The group the writer has answered but not yet committed to redb.
//!
//! A group is durable once its write-ahead record is synced, so the writer answers its appends
//! then, and commits the redb transaction (no sync of its own) after: a caller waits for the
//! sync, not for redb's commit or the publication. Until that commit lands, readers would not
//! find the events an append just returned; [`Applying::wait`] holds them back until it has,
//! so every read that starts after an append returned sees its events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::lock;

/// Whether an answered group is still being committed, and the readers waiting for it.
#[derive(Debug, Default)]
pub struct Applying {
    /// Set from answering a group until its commit returned (or failed).
    pending: AtomicBool,
    /// How many readers wait on `applied`; the writer wakes them only when there are any.
    waiters: Mutex<usize>,
    applied: Condvar,
}

impl Applying {
    /// Marks a group as answered and not yet committed; the guard ends it when dropped, also
    /// if the commit fails or the writer unwinds, so no reader waits forever.
    pub fn start(&self) -> Pending<'_> {
        self.pending.store(true, Ordering::Release);
        Pending(self)
    }

    /// Returns once no answered group is waiting for its commit.
    pub fn wait(&self) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let mut waiters = lock(&self.waiters);
        *waiters += 1;
        while self.pending.load(Ordering::Acquire) {
            waiters = self
                .applied
                .wait(waiters)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *waiters -= 1;
    }

    fn finish(&self) {
        // Under the lock: a reader counted itself and checked `pending` under it, so it is
        // either woken here or sees `pending` already cleared.
        let waiters = lock(&self.waiters);
        self.pending.store(false, Ordering::Release);
        if *waiters > 0 {
            self.applied.notify_all();
        }
    }
}

/// An answered group's commit in progress; see [`Applying::start`].
#[derive(Debug)]
pub struct Pending<'a>(&'a Applying);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[test]
    fn with_nothing_pending_a_reader_does_not_wait() {
        let applying = Applying::default();
        applying.wait();
        drop(applying.start());
        applying.wait();
    }

    #[test]
    fn a_reader_waits_until_the_pending_commit_ends() {
        let applying = Arc::new(Applying::default());
        let read = Arc::new(AtomicUsize::new(0));
        let pending = applying.start();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (applying, read) = (applying.clone(), read.clone());
                std::thread::spawn(move || {
                    applying.wait();
                    read.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            read.load(Ordering::SeqCst),
            0,
            "no reader passes a pending commit"
        );
        drop(pending);
        for reader in readers {
            reader.join().expect("reader thread");
        }
        assert_eq!(read.load(Ordering::SeqCst), 3);
        assert_eq!(*lock(&applying.waiters), 0);
    }
}
