//! How the journal writer waits for its next request: a short spin before it sleeps, while
//! requests have lately followed each other closely.
//!
//! Why: waking a sleeping thread costs tens of microseconds on a virtual machine (the woken
//! virtual CPU has to be scheduled by the host), and one sender delivering one event at a time
//! paid that on every delivery, on top of the durable write it waits for. Spinning pays only
//! when the next request comes soon, so the writer spins for at most [`MAX_SPIN`], yielding
//! its core at every turn to any other thread that wants it, and only while requests keep
//! coming within that time: after [`LONG_GAPS_BEFORE_SLEEPING`] longer gaps in a row it sleeps
//! at once, so a service whose deliveries come milliseconds or more apart spends nothing on
//! it. One late request (a wake-up delayed by the host) does not stop the spinning of a steady
//! sender. The price is paid at rates where gaps are often short: at 2,000 one-event
//! deliveries a second, about 45 µs of CPU per event, for one sender's deliveries answered
//! about 20% sooner (`cargo bench --bench load -- ingest` and `-- profile`, BENCHMARKS.md,
//! issue 15).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// Longest spin before sleeping, and the longest gap after which the writer spins again.
/// One sender's next one-event delivery reaches the writer 60-150 µs after the last answer.
pub const MAX_SPIN: Duration = Duration::from_micros(200);

/// Gaps of at least [`MAX_SPIN`] in a row after which the writer stops spinning.
pub const LONG_GAPS_BEFORE_SLEEPING: u32 = 4;

/// The writer's recent pace: how many of the last waits for a request were long, in a row.
#[derive(Debug)]
pub struct Pace {
    long_gaps: u32,
}

impl Default for Pace {
    /// A new writer has seen no request yet: it sleeps until a short gap is seen.
    fn default() -> Self {
        Self {
            long_gaps: LONG_GAPS_BEFORE_SLEEPING,
        }
    }
}

impl Pace {
    /// How long to spin for the next request before sleeping.
    pub fn spin_budget(&self) -> Duration {
        if self.long_gaps < LONG_GAPS_BEFORE_SLEEPING {
            MAX_SPIN
        } else {
            Duration::ZERO
        }
    }

    /// Records how long the writer waited for its last request (spinning or sleeping).
    pub fn waited(&mut self, gap: Duration) {
        self.long_gaps = if gap < MAX_SPIN {
            0
        } else {
            self.long_gaps
                .saturating_add(1)
                .min(LONG_GAPS_BEFORE_SLEEPING)
        };
    }
}

/// The next request of `queue`: spins for it as long as `pace` allows, then sleeps until it
/// comes. `None` once the queue is closed and empty.
pub fn next_request<T>(queue: &mut mpsc::Receiver<T>, pace: &mut Pace) -> Option<T> {
    let started = Instant::now();
    let budget = pace.spin_budget();
    loop {
        match queue.try_recv() {
            Ok(request) => {
                pace.waited(started.elapsed());
                return Some(request);
            }
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if started.elapsed() < budget => std::thread::yield_now(),
            Err(TryRecvError::Empty) => break,
        }
    }
    let request = queue.blocking_recv();
    pace.waited(started.elapsed());
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_spins_after_a_short_gap_until_long_gaps_follow_in_a_row() {
        let mut pace = Pace::default();
        assert_eq!(
            pace.spin_budget(),
            Duration::ZERO,
            "a new writer sleeps at once"
        );
        pace.waited(Duration::from_micros(80));
        assert_eq!(pace.spin_budget(), MAX_SPIN);
        for _ in 1..LONG_GAPS_BEFORE_SLEEPING {
            pace.waited(MAX_SPIN);
            assert_eq!(
                pace.spin_budget(),
                MAX_SPIN,
                "one late request keeps it spinning"
            );
        }
        pace.waited(Duration::from_secs(3));
        assert_eq!(pace.spin_budget(), Duration::ZERO);
        pace.waited(Duration::from_secs(3));
        assert_eq!(pace.spin_budget(), Duration::ZERO);
        pace.waited(Duration::from_micros(10));
        assert_eq!(pace.spin_budget(), MAX_SPIN);
    }

    #[test]
    fn a_request_already_queued_is_taken_and_counts_as_a_short_gap() {
        let (sender, mut queue) = mpsc::channel(4);
        sender.try_send(7).expect("room in the queue");
        let mut pace = Pace::default();
        assert_eq!(next_request(&mut queue, &mut pace), Some(7));
        assert_eq!(pace.spin_budget(), MAX_SPIN);
    }

    #[test]
    fn a_request_after_a_long_gap_wakes_the_sleeping_writer() {
        let (sender, mut queue) = mpsc::channel(4);
        let mut pace = Pace::default();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.blocking_send(9).expect("the writer is waiting");
            sender
        });
        assert_eq!(next_request(&mut queue, &mut pace), Some(9));
        assert_eq!(pace.spin_budget(), Duration::ZERO);
        drop(late.join().expect("the sender thread ends"));
        assert_eq!(
            next_request(&mut queue, &mut pace),
            None,
            "a closed, empty queue ends the writer"
        );
    }
}
