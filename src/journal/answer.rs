//! How an append waits for the writer's answer: polling it for a short while before it
//! sleeps, while answers have lately come quickly.
//!
//! Why: the writer answers from its own thread. An append that sleeps on the answer leaves its
//! runtime worker idle, the worker parks, and the answer has to wake it again, which costs tens
//! of microseconds on a virtual machine (the same cost the writer's spin avoids on its side,
//! `journal/idle.rs`). One sender delivering one event at a time paid that on every delivery.
//! Polling between yields keeps the worker running, and other tasks run at every yield. Only
//! while answers come within [`MAX_POLL`]: after a few longer waits in a row
//! ([`LONG_GAPS_BEFORE_SLEEPING`](super::idle::LONG_GAPS_BEFORE_SLEEPING)), appends sleep at
//! once, so under concurrent load (where the answers take milliseconds and the workers have
//! other work) no worker burns its time polling. The pace is the writer's own ([`Pace`]). The price is the worker's
//! CPU for the answer's time at one sender, for deliveries answered sooner
//! (`cargo bench --bench load -- ingest`, BENCHMARKS.md, issue 15).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::idle::Pace;

/// Longest an append polls for its answer before it sleeps; and the longest wait after which
/// appends poll again. One event's answer comes 100-250 µs after it was queued.
pub const MAX_POLL: Duration = Duration::from_micros(400);

/// The writer's answer on `answer`, polled while `pace` allows and then slept for; `None` if
/// the writer dropped the request unanswered.
pub async fn wait_for<T>(mut answer: oneshot::Receiver<T>, pace: &Pace) -> Option<T> {
    let started = Instant::now();
    let budget = pace.spin_budget();
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_polled_answer_and_a_slept_for_answer_both_arrive() {
        let pace = Pace::new(MAX_POLL);
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
