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
    waiting: Mutex<Waiting>,
    applied: Condvar,
}

/// The readers waiting, and how many commits ended: a reader waits for the end of the one
/// pending when it came, not for a moment with none pending, which a busy writer may not leave.
#[derive(Debug, Default)]
struct Waiting {
    /// Readers waiting on `applied`; the writer wakes them only when there are any.
    readers: usize,
    /// Commits of answered groups that ended.
    ended: u64,
}

impl Applying {
    /// Marks a group as answered and not yet committed; the guard ends it when dropped, also
    /// if the commit fails or the writer unwinds, so no reader waits forever.
    pub fn start(&self) -> Pending<'_> {
        self.pending.store(true, Ordering::Release);
        Pending(self)
    }

    /// Returns once the answered group waiting for its commit when called, if any, has it.
    pub fn wait(&self) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let mut waiting = lock(&self.waiting);
        // Checked again under the lock, which `finish` takes to clear it: a reader that saw
        // it set is woken by that `finish`, or sees it cleared here.
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let ended = waiting.ended;
        waiting.readers += 1;
        while waiting.ended == ended {
            waiting = self
                .applied
                .wait(waiting)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        waiting.readers -= 1;
    }

    fn finish(&self) {
        let mut waiting = lock(&self.waiting);
        self.pending.store(false, Ordering::Release);
        waiting.ended += 1;
        if waiting.readers > 0 {
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
        assert_eq!(lock(&applying.waiting).readers, 0);
    }

    #[test]
    fn a_reader_waits_for_the_commit_pending_when_it_came_not_for_a_moment_without_one() {
        let applying = Arc::new(Applying::default());
        let first = applying.start();
        let reader = {
            let applying = applying.clone();
            std::thread::spawn(move || applying.wait())
        };
        while lock(&applying.waiting).readers == 0 {
            std::thread::yield_now();
        }
        // The next group is pending again before the reader runs: it passes all the same.
        drop(first);
        let _next = applying.start();
        reader
            .join()
            .expect("the reader passes once its commit ended");
    }
}
