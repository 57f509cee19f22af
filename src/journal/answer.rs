//! How an append waits for the writer's answer: polling it for a short while before it
//! sleeps, while answers have lately come quickly.
//!
//! Why: the writer answers from its own thread. An append that sleeps on the answer leaves its
//! runtime worker idle, the worker parks, and the answer has to wake it again, which costs tens
//! of microseconds on a virtual machine (the same cost the writer's spin avoids on its side,
//! `journal/idle.rs`). One sender delivering one event at a time paid that on every delivery.
//! Polling between yields keeps the worker running, and other tasks run at every yield. Only
//! while answers come within [`MAX_POLL`]: after [`LONG_WAITS_BEFORE_SLEEPING`] longer waits in
//! a row, appends sleep at once, so under concurrent load (where the answers take milliseconds
//! and the workers have other work) no worker burns its time polling. The price is the worker's
//! CPU for the answer's time at one sender, for deliveries answered sooner
//! (`cargo bench --bench load -- ingest`, BENCHMARKS.md, issue 15).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Longest an append polls for its answer before it sleeps; and the longest wait after which
/// appends poll again. One event's answer comes 100-250 µs after it was queued.
pub const MAX_POLL: Duration = Duration::from_micros(400);

/// Waits of at least [`MAX_POLL`] in a row after which appends stop polling.
pub const LONG_WAITS_BEFORE_SLEEPING: u32 = 4;

/// The appends' recent waits for their answers, shared by every append of a journal.
#[derive(Debug)]
pub struct AnswerPace {
    long_waits: AtomicU32,
}

impl Default for AnswerPace {
    /// A new journal has answered nothing yet: appends sleep until one answer comes quickly.
    fn default() -> Self {
        Self {
            long_waits: AtomicU32::new(LONG_WAITS_BEFORE_SLEEPING),
        }
    }
}

impl AnswerPace {
    /// How long the next append polls for its answer before it sleeps.
    pub fn poll_budget(&self) -> Duration {
        if self.long_waits.load(Ordering::Relaxed) < LONG_WAITS_BEFORE_SLEEPING {
            MAX_POLL
        } else {
            Duration::ZERO
        }
    }

    /// Records how long an append waited for its answer.
    pub fn waited(&self, wait: Duration) {
        if wait < MAX_POLL {
            self.long_waits.store(0, Ordering::Relaxed);
        } else {
            let _ = self
                .long_waits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1).min(LONG_WAITS_BEFORE_SLEEPING))
                });
        }
    }
}

/// The writer's answer on `answer`, polled while `pace` allows and then slept for; `None` if
/// the writer dropped the request unanswered.
pub async fn wait_for<T>(mut answer: oneshot::Receiver<T>, pace: &AnswerPace) -> Option<T> {
    let started = Instant::now();
    let budget = pace.poll_budget();
    let result = loop {
        match answer.try_recv() {
            Ok(value) => break Some(value),
            Err(oneshot::error::TryRecvError::Empty) if started.elapsed() < budget => {
                tokio::task::yield_now().await;
            }
            Err(oneshot::error::TryRecvError::Empty) => break answer.await.ok(),
            Err(oneshot::error::TryRecvError::Closed) => break None,
        }
    };
    pace.waited(started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_poll_after_a_quick_answer_until_slow_answers_follow_in_a_row() {
        let pace = AnswerPace::default();
        assert_eq!(pace.poll_budget(), Duration::ZERO, "a new journal sleeps");
        pace.waited(Duration::from_micros(150));
        assert_eq!(pace.poll_budget(), MAX_POLL);
        for _ in 1..LONG_WAITS_BEFORE_SLEEPING {
            pace.waited(Duration::from_millis(5));
            assert_eq!(
                pace.poll_budget(),
                MAX_POLL,
                "one slow answer keeps polling"
            );
        }
        pace.waited(Duration::from_millis(5));
        assert_eq!(pace.poll_budget(), Duration::ZERO);
        pace.waited(Duration::from_micros(20));
        assert_eq!(pace.poll_budget(), MAX_POLL);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_polled_answer_and_a_slept_for_answer_both_arrive() {
        let pace = AnswerPace::default();
        pace.waited(Duration::ZERO);
        let (reply, answer) = oneshot::channel();
        reply.send(5).expect("the append waits");
        assert_eq!(wait_for(answer, &pace).await, Some(5));

        // Longer than the budget: the append goes to sleep and is woken by the answer.
        let (reply, answer) = oneshot::channel();
        let late = tokio::spawn(async move {
            tokio::time::sleep(MAX_POLL * 20).await;
            reply.send(6).expect("the append waits");
        });
        assert_eq!(wait_for(answer, &pace).await, Some(6));
        late.await.expect("the answering task ends");

        // Dropped unanswered, found while polling and while asleep.
        pace.waited(Duration::ZERO);
        let (reply, answer) = oneshot::channel::<u8>();
        drop(reply);
        assert_eq!(wait_for(answer, &pace).await, None);
        let (reply, answer) = oneshot::channel::<u8>();
        let dropped = tokio::spawn(async move {
            tokio::time::sleep(MAX_POLL * 20).await;
            drop(reply);
        });
        assert_eq!(wait_for(answer, &pace).await, None);
        dropped.await.expect("the dropping task ends");
    }
}
